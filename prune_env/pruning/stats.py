"""Per-layer weight and gradient statistics: the static part of the observation.

Computed once per env, since the dense weights never change. Every feature is scaled into [0, 1]:

- magnitude statistics are divided by the largest ``|w|`` in the whole model, so layers stay comparable;
- sizes and gradient statistics span orders of magnitude, so they are log-scaled, then min-max normalised
  across layers (as AMC does); a feature that is equal in every layer becomes 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from prune_env.pruning.layers import KINDS, PrunableLayer

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
HIST_BINS = 8

#: Names of the static per-layer features, in observation order.
FEATURES: tuple[str, ...] = (
    *(f"kind_{k}" for k in KINDS),
    "depth",
    "param_share",
    "log_rows",
    "log_cols",
    "w_mean",
    "w_std",
    "w_max",
    "w_min",
    *(f"w_q{int(q * 100)}" for q in QUANTILES),
    *(f"w_hist{i}" for i in range(HIST_BINS)),
    "log_grad_mean",
    "log_saliency_mean",
)

_MAG = slice(FEATURES.index("w_mean"), FEATURES.index("w_q90") + 1)
_LOG_MINMAX = [FEATURES.index(f) for f in ("log_rows", "log_cols", "log_grad_mean", "log_saliency_mean")]


def raw_layer_stats(weight: torch.Tensor, grad: torch.Tensor | None) -> dict[str, float]:
    """Unnormalised statistics of one layer (also shown by ``render``)."""
    a = weight.detach().abs().reshape(-1).float().cpu()
    s = torch.sort(a).values
    n = s.numel()
    out = {
        "w_mean": a.mean().item(),
        "w_std": a.std().item() if n > 1 else 0.0,
        "w_max": s[-1].item(),
        "w_min": s[0].item(),
    }
    for q in QUANTILES:
        out[f"w_q{int(q * 100)}"] = s[int(round(q * (n - 1)))].item()
    top = out["w_max"] or 1.0
    hist = torch.histc(a / top, bins=HIST_BINS, min=0.0, max=1.0) / n
    for i, h in enumerate(hist.tolist()):
        out[f"w_hist{i}"] = h
    if grad is not None:
        g = grad.detach().reshape(-1).float().cpu()
        out["grad_mean"] = g.abs().mean().item()
        out["saliency_mean"] = (g * weight.detach().reshape(-1).float().cpu()).abs().mean().item()
    else:
        out["grad_mean"] = out["saliency_mean"] = 0.0
    return out


def layer_features(layers: Sequence[PrunableLayer], raw: Sequence[dict[str, float]]) -> np.ndarray:
    """The normalised ``(num_layers, len(FEATURES))`` float32 feature matrix."""
    n_layers = len(layers)
    total = sum(layer.numel for layer in layers)
    feats = np.zeros((n_layers, len(FEATURES)), dtype=np.float64)
    for i, (layer, r) in enumerate(zip(layers, raw)):
        feats[i, KINDS.index(layer.kind)] = 1.0
        feats[i, FEATURES.index("depth")] = i / max(1, n_layers - 1)
        feats[i, FEATURES.index("param_share")] = layer.numel / total
        rows = layer.shape[0]
        cols = layer.numel // rows
        feats[i, FEATURES.index("log_rows")] = np.log(rows)
        feats[i, FEATURES.index("log_cols")] = np.log(max(1, cols))
        for j, name in enumerate(FEATURES[_MAG], start=_MAG.start):
            feats[i, j] = r[name]
        for b in range(HIST_BINS):
            feats[i, FEATURES.index(f"w_hist{b}")] = r[f"w_hist{b}"]
        feats[i, FEATURES.index("log_grad_mean")] = np.log10(r["grad_mean"] + 1e-12)
        feats[i, FEATURES.index("log_saliency_mean")] = np.log10(r["saliency_mean"] + 1e-12)
    top = feats[:, FEATURES.index("w_max")].max()
    if top > 0:
        feats[:, _MAG] /= top
    for j in _LOG_MINMAX:
        col = feats[:, j]
        span = col.max() - col.min()
        feats[:, j] = (col - col.min()) / span if span > 0 else 0.0
    return np.clip(np.nan_to_num(feats, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0).astype(np.float32)


def layer_table(layers: Sequence[PrunableLayer], raw: Sequence[dict[str, float]], sparsities: Sequence[float],
                dense_score: float) -> str:
    """A plain-text table of the prunable layers, their mean ``|w|`` and sparsities (the env's ``render``)."""
    head = f"{'layer':<28} {'kind':<14} {'shape':<14} {'params':>9} {'mean|w|':>8} {'sparsity':>8}"
    lines = [head, "-" * len(head)]
    for layer, r, s in zip(layers, raw, sparsities):
        lines.append(f"{layer.name:<28} {layer.kind:<14} {'x'.join(map(str, layer.shape)):<14} {layer.numel:>9} "
                     f"{r['w_mean']:>8.4f} {s:>8.3f}")
    total = sum(layer.numel for layer in layers)
    overall = sum(s * layer.numel for s, layer in zip(sparsities, layers)) / total
    lines.append(f"overall sparsity {overall:.3f} of {total} prunable weights; dense score {dense_score:.4f}")
    return "\n".join(lines)
