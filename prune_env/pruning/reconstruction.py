"""Reconstruction: the operator that re-fits a layer's remaining weights after pruning (``reconstruct="obs"``).

An *operator* is the pair (``criterion``, ``reconstruct``): the criterion picks which weights of a layer go (its
prune order, :mod:`prune_env.pruning.criteria`), ``reconstruct`` says what happens to the rest. With ``None`` they
keep their dense values; with ``"obs"`` each row's remaining weights are re-fitted by least squares to the row's
dense pre-activation on the task's calibration inputs (:func:`prune_env.pruning.obs.reconstruct`; SparseGPT,
Frantar and Alistarh, ICML 2023; Optimal Brain Compression, Frantar et al., NeurIPS 2022). Embeddings read one-hot
tokens, so there is nothing to re-fit: they are only zeroed. GPTQ rounding (quantize method ``"gptq"``) uses the
same statistics.

:class:`Calibrated` holds what one analysis needs for that, shared by every env on it (a vector env's
sub-environments and its batched scorer): the damped Gram matrices and a byte-bounded cache of reconstructed
weights per (layer, count) and of GPTQ-rounded weights per (layer, count, bits). A search revisits counts (a
sequential episode's early layers, a converging policy, the rules' allocations), and each miss is one batched
solve over the rows. :func:`sequential_prune` is the slower, more faithful variant for a final model: each layer
is re-fitted to inputs captured from the model with every earlier layer already pruned.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from prune_env.pruning import obs
from prune_env.pruning.calibration import calibration_stats
from prune_env.pruning.layers import PrunableLayer, get_param, rnn_modules

#: Values of ``reconstruct``.
RECONSTRUCT = (None, "obs")
#: Bytes of reconstructed weights one :class:`Calibrated` keeps (least recently used first out).
CACHE_BYTES = 512 << 20

__all__ = ["CACHE_BYTES", "RECONSTRUCT", "Calibrated", "check_reconstruct", "pruned_mask", "sequential_prune"]


def check_reconstruct(reconstruct: Any) -> str | None:
    """``None`` (also for ``"none"`` and ``False``) or ``"obs"``.

    :raises ValueError: naming ``reconstruct`` for anything else.
    """
    if reconstruct in (None, False, "none"):
        return None
    if reconstruct != "obs":
        raise ValueError(f"unknown `reconstruct` {reconstruct!r}; expected None or 'obs'")
    return "obs"


def pruned_mask(layer: PrunableLayer, order: torch.Tensor, count: int) -> torch.Tensor:
    """The ``(rows, in)`` boolean mask of the ``count`` first weights of ``order``."""
    mask = torch.zeros(layer.numel, dtype=torch.bool)
    mask[order[:int(count)]] = True
    return mask.reshape(layer.shape[0], -1)


def _refittable(layer: PrunableLayer, gram: torch.Tensor | None, rows: int) -> bool:
    fan_in = layer.numel // layer.shape[0]
    return layer.kind != "embedding" and gram is not None and rows > 0 and gram.shape[0] == fan_in


class Calibrated:
    """Reconstructed and GPTQ-rounded weights of one :class:`~prune_env.pruning.analysis.Analysis`, cached.

    :param analysis: an unstructured analysis (its dense weights and prune orders).
    :param stats: its :class:`~prune_env.pruning.calibration.CalibrationStats`.
    :param reconstruct: ``"obs"`` to re-fit the kept weights, ``None`` to keep them dense (GPTQ only).
    :param damp: relative damping of the Gram matrices (:func:`prune_env.pruning.obs.damped`).
    :param max_bytes: bytes of cached weights kept.
    """

    def __init__(self, analysis, stats, reconstruct: str | None = "obs", damp: float = obs.DAMP,
                 max_bytes: int = CACHE_BYTES):
        self.analysis = analysis
        self.stats = stats
        self.reconstruct = check_reconstruct(reconstruct)
        self.damp = float(damp)
        self.max_bytes = int(max_bytes)
        self._hessians: dict[str, torch.Tensor] = {}
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        #: cache hits and misses, for cost reports
        self.hits = self.misses = 0

    def __getstate__(self) -> dict[str, Any]:
        # Pickles (an env or analysis sent to a worker) carry the statistics, not the lock or the cache.
        state = {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_cache", "_hessians", "_names")}
        return {**state, "_bytes": 0, "hits": 0, "misses": 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock, self._cache, self._hessians = threading.Lock(), OrderedDict(), {}

    def hessian(self, layer: PrunableLayer) -> torch.Tensor | None:
        """The damped Gram matrix of ``layer``'s inputs, or ``None`` where nothing is re-fitted (embeddings,
        weights the calibration inputs never reached)."""
        inputs = self.stats[layer.name]
        if not _refittable(layer, inputs.gram, inputs.rows):
            return None
        with self._lock:
            if layer.name not in self._hessians:
                self._hessians[layer.name] = obs.damped(inputs.gram, self.damp)
            return self._hessians[layer.name]

    def _get(self, key: tuple, compute) -> torch.Tensor:
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return hit
            self.misses += 1
        value = compute()
        value.requires_grad_(False)
        size = value.numel() * value.element_size()
        with self._lock:
            if key not in self._cache and size <= self.max_bytes:
                self._cache[key] = value
                self._bytes += size
                while self._bytes > self.max_bytes:
                    _, old = self._cache.popitem(last=False)
                    self._bytes -= old.numel() * old.element_size()
        return value

    def refit(self, name: str, key: tuple, dense: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor | None:
        """The prunable weight ``name`` (dense values ``dense``, any shape) re-fitted with the entries ``pruned``
        zero, cached under ``key``; ``None`` for a tensor that is not a re-fittable prunable weight (a bias, an
        embedding). Hidden-unit pruning's masks come here."""
        layer = self._by_name().get(name)
        h = None if layer is None else self.hessian(layer)
        if h is None:
            return None
        rows = dense.shape[0]
        return self._get(key, lambda: obs.reconstruct(dense.detach().cpu().float().reshape(rows, -1),
                                                      pruned.cpu().reshape(rows, -1), h).reshape(dense.shape))

    def _by_name(self) -> dict[str, PrunableLayer]:
        if not hasattr(self, "_names"):
            self._names = {layer.name: layer for layer in self.analysis.weight_layers}
        return self._names

    def weight(self, i: int, count: int) -> torch.Tensor:
        """Layer ``i``'s flat float32 CPU weights with its ``count`` lowest-ranked weights zero, the rest
        re-fitted (``reconstruct="obs"``) or dense. Read-only: copy before editing."""
        layer, dense, order = self.analysis.layers[i], self.analysis.dense[i], self.analysis.orders[i]
        count = int(count)
        if count == 0:
            return dense
        h = self.hessian(layer) if self.reconstruct else None

        def compute() -> torch.Tensor:
            mask = pruned_mask(layer, order, count)
            w = dense.reshape(mask.shape)
            if h is None:
                return w.masked_fill(mask, 0.0).reshape(-1)
            return obs.reconstruct(w, mask, h).reshape(-1)

        return self._get(("w", i, count), compute)

    def rounded(self, i: int, count: int, bits: int, weight: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """GPTQ's rounding of :meth:`weight` ``(i, count)`` to ``bits`` bits, pruned entries 0; or, uncached, of
        ``weight`` with the pruned entries ``mask`` (``(rows, in)`` boolean)."""
        layer, order = self.analysis.layers[i], self.analysis.orders[i]
        h = self.hessian(layer)
        if mask is None:
            mask = pruned_mask(layer, order, count)

        def compute() -> torch.Tensor:
            w = (self.weight(i, count) if weight is None else weight.detach().cpu().float()).reshape(mask.shape)
            if h is None:  # no inputs to weigh the error by: round to nearest (exactly "linear")
                from prune_env.compression.quantize import quantize
                return quantize(w.masked_fill(mask, 0.0), bits, "linear").reshape(-1)
            return obs.gptq(w, mask, h, bits).reshape(-1)

        return compute() if weight is not None else self._get(("q", i, int(count), int(bits)), compute)


@torch.no_grad()
def sequential_prune(model: nn.Module, layers: Sequence[PrunableLayer], orders: Sequence[torch.Tensor],
                     counts: Sequence[int], batches: Sequence[Any], damp: float = obs.DAMP) -> nn.Module:
    """Prune ``model`` in place layer by layer in ``layers`` order, re-fitting each to the inputs it reads in the
    model as pruned so far (later layers see the already-pruned earlier ones); returns ``model``.

    :param model: the model to edit (a copy of the user's; its weights are the dense ones).
    :param layers: prunable layers in the model's order.
    :param orders: their prune orders.
    :param counts: weights to prune per layer.
    :param batches: calibration batches (training inputs).
    :param damp: relative damping of the Gram matrices.
    """
    for layer, order, k in zip(layers, orders, counts):
        if int(k) == 0:
            continue
        p = get_param(model, layer)
        mask = pruned_mask(layer, order, int(k))
        w = p.detach().reshape(mask.shape)
        new = w.masked_fill(mask.to(w.device), 0.0)
        if layer.kind != "embedding":
            inputs = calibration_stats(model, [layer], batches)[layer.name]
            if _refittable(layer, inputs.gram, inputs.rows):
                new = obs.reconstruct(w, mask, obs.damped(inputs.gram, damp))
        p.copy_(new.reshape(p.shape))
        for m in rnn_modules(model):
            m.flatten_parameters()
    return model
