"""Pruning criteria within a layer, and the in-place masker that applies per-layer sparsities.

Every criterion gives one importance score per weight; the ``k`` lowest-scored weights of a layer are pruned. The
ranking is computed once per model (:mod:`prune_env.pruning.analysis`); ties are broken by flat index (a stable
sort), so the achieved count is exact. The in-place editing lives in the pruning kinds (:mod:`prune_env.pruning.kinds`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prune_env.pruning.layers import PrunableLayer, get_param, rnn_modules

CRITERIA = ("magnitude", "gradient", "saliency", "wanda", "obs")
#: Criteria that read the task's calibration inputs (:mod:`prune_env.pruning.calibration`) and rank within rows.
CALIBRATED = ("wanda", "obs")


def check_criterion(criterion: str, have_gradients: bool) -> None:
    if criterion not in CRITERIA:
        raise ValueError(f"unknown `criterion` {criterion!r}; expected one of {CRITERIA}")
    if criterion in ("gradient", "saliency") and not have_gradients:
        raise ValueError(f"`criterion`={criterion!r} needs gradients: give the task a `loss(model) -> Tensor`")


def importance(criterion: str, weight: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
    """Per-weight importance: ``|w|`` (magnitude), ``|g|`` (gradient) or ``|w * g|`` (saliency, SNIP). The
    calibrated criteria are prune orders of their own (:func:`calibrated_order`)."""
    check_criterion(criterion, grad is not None)
    if criterion in CALIBRATED:
        raise ValueError(f"`criterion`={criterion!r} ranks with calibration inputs; use calibrated_order")
    if criterion == "magnitude":
        return weight.abs()
    assert grad is not None
    return grad.abs() if criterion == "gradient" else (weight * grad).abs()


def prune_order(scores: torch.Tensor) -> torch.Tensor:
    """Flat indices from least to most important; stable, so ties fall by index."""
    return torch.argsort(scores.reshape(-1), stable=True)


def calibrated_order(criterion: str, layer: PrunableLayer, weight: torch.Tensor, inputs) -> torch.Tensor:
    """The prune order of ``criterion`` ``"wanda"`` or ``"obs"`` for one weight and its calibration
    :class:`~prune_env.pruning.calibration.LayerInputs` (see :mod:`prune_env.pruning.obs`).

    Matrices are ranked within their (gate) rows and pruned row-balanced. An embedding reads one-hot tokens, so it
    has no input norms to compare within a row and no cross terms for OBS: both criteria rank its weights over the
    whole table by frequency-weighted magnitude ``|w| * sqrt(count + 1)`` (the ``+ 1`` keeps tokens the
    calibration data never showed ranked by magnitude among themselves).
    """
    from prune_env.pruning import obs

    if layer.kind == "embedding":
        counts = inputs.token_counts.double().reshape(-1, *([1] * (weight.dim() - 1)))
        return prune_order(weight.abs().double() * (counts + 1.0).sqrt())
    w = weight.reshape(weight.shape[0], -1)
    if criterion == "wanda":
        scores = obs.wanda_scores(w, inputs.sq_norms)
    else:
        scores = obs.obs_scores(w, obs.damped(inputs.gram))
    return obs.row_balanced_order(scores)


def sparsity_to_count(sparsity: float, numel: int) -> int:
    """Number of weights to prune for ``sparsity`` of ``numel`` weights (round half up)."""
    return min(numel, int(sparsity * numel + 0.5))


def compute_gradients(model: nn.Module, layers: Sequence[PrunableLayer], loss_fn) -> dict[str, torch.Tensor]:
    """Gradients of ``loss_fn(model)`` for each prunable weight, on a throwaway copy.

    Done in eval mode on the CPU: no dropout noise, and cuDNN's RNN backward refuses eval mode.
    """
    import copy

    work = copy.deepcopy(model).cpu().eval()
    for p in work.parameters():
        p.requires_grad_(True)
        p.grad = None
    with torch.enable_grad():
        loss = loss_fn(work)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError(f"task.loss must return a scalar tensor, got {type(loss).__name__}"
                             + (f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else ""))
        loss.backward()
    grads = {}
    for layer in layers:
        g = get_param(work, layer).grad
        grads[layer.name] = torch.zeros(layer.shape) if g is None else g.detach().clone()
    return grads


@torch.no_grad()
def apply_counts(model: nn.Module, layers: Sequence[PrunableLayer], orders: Sequence[torch.Tensor],
                 counts: Sequence[int]) -> nn.Module:
    """Zero the ``counts[i]`` lowest-ranked weights of each layer of ``model`` in place; returns ``model``."""
    for layer, order, k in zip(layers, orders, counts):
        p = get_param(model, layer)
        p.data.view(-1)[order[: int(k)].to(p.device)] = 0
    for m in rnn_modules(model):
        m.flatten_parameters()
    return model
