"""Pruning kinds: how counts (and bit-widths) become a pruned model, and what that model costs to store.

A kind edits the env's private copy of the model in place and answers size questions from the counts alone. Every
kind implements :class:`PruningKind`; :func:`make_kind` picks one from the env's settings:

- :class:`Unstructured`: the ``counts[i]`` lowest-ranked weights of layer ``i`` are zero. Moving a layer from ``k``
  to ``k'`` touches only the ``|k - k'|`` weights between the two positions of the cached order.
- :class:`Quantized`: unstructured pruning, then each layer's kept weights rounded to ``bits[i]`` bits
  (:mod:`prune_env.compression.quantize`); each changed layer is rewritten from its dense copy, so rounding never
  compounds.
- :class:`HiddenUnit`: layer ``i`` (a stacked recurrent layer) loses its ``counts[i]`` lowest-ranked hidden units
  per direction, with all their weights (:mod:`prune_env.pruning.structured`); :meth:`materialize` returns the
  physically smaller model.

Each takes an optional :class:`~prune_env.pruning.reconstruction.Calibrated`: with ``reconstruct="obs"`` the kept
weights of a pruned layer are re-fitted by least squares on the calibration inputs (for hidden units: the matrices
that read the removed units), and quantize method ``"gptq"`` rounds with GPTQ. Without it nothing changes: the
incremental in-place edits above stay the whole cost of a step.

A new kind is one new class with these methods.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from prune_env.compression.export import masks as zero_masks
from prune_env.compression.quantize import check_method, quantize
from prune_env.compression.size import encoding
from prune_env.pruning.analysis import Analysis
from prune_env.pruning.criteria import apply_counts
from prune_env.pruning.layers import get_param, rnn_modules
from prune_env.pruning.reconstruction import Calibrated
from prune_env.pruning.structured import shrink


@runtime_checkable
class PruningKind(Protocol):
    """What the env needs from a pruning kind. ``counts`` holds pruned weights (units) per action unit; ``bits``
    each unit's bit-width (32: float32) or ``None``."""

    analysis: Analysis
    #: whether the reward prices the stored size even in budget mode (bit-widths are not fixed by the budget)
    prices_size: bool

    def apply(self, counts: Sequence[int], bits: Sequence[int] | None = None) -> None:
        """Bring the model this kind edits to exactly ``counts`` (and ``bits``)."""

    def reset(self) -> None:
        """Restore the dense float32 weights."""

    def removed_params(self, counts: Sequence[int]) -> int:
        """Parameters of the whole model that ``counts`` remove (zeroed, or gone from the smaller model)."""

    def size_bits(self, counts: Sequence[int], bits: Sequence[int] | None = None) -> int:
        """Exact stored bits of the whole pruned model (see :mod:`prune_env.compression.size`)."""

    def size_fraction(self, counts: Sequence[int], bits: Sequence[int] | None = None) -> float:
        """Stored size of the prunable weights over their dense float32 size."""

    def masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Parameter name -> 0/1 mask of ``model`` (a copy of the edited model) to hold fixed when fine-tuning."""

    def finalize(self, model: nn.Module, bits: Sequence[int] | None) -> None:
        """Re-apply what fine-tuning may have undone (quantization), in place."""

    def materialize(self, source: nn.Module, counts: Sequence[int], bits: Sequence[int] | None,
                    device: torch.device) -> nn.Module:
        """A pruned copy of ``source`` (the task's model, or a fine-tuned scored copy) for ``counts`` and ``bits``,
        on ``device``."""

    def info(self, counts: Sequence[int], bits: Sequence[int] | None) -> dict[str, Any]:
        """Kind-specific entries of the final ``info``."""


class Unstructured:
    """Individual weights zeroed in place, incrementally.

    :param model: the module to edit (the env's private copy, never the user's).
    :param analysis: the model's unstructured :class:`~prune_env.pruning.analysis.Analysis`.
    """

    prices_size = False  # a budget fixes the size: the reward has no size term in budget mode

    def __init__(self, model: nn.Module, analysis: Analysis, calibrated: Calibrated | None = None):
        if analysis.plan is not None:
            raise ValueError(f"{type(self).__name__} needs an unstructured analysis")
        self.analysis = analysis
        self.calibrated = calibrated
        self.refit = calibrated is not None and calibrated.reconstruct is not None
        self.layers = analysis.layers
        self.params = [get_param(model, layer) for layer in self.layers]
        for layer, p in zip(self.layers, self.params):
            if not p.is_contiguous():
                raise ValueError(f"prunable weight {layer.name} is not contiguous; cannot edit it in place")
        self.dense = [d.to(p.device, p.dtype) for d, p in zip(analysis.dense, self.params)]
        self.orders = [o.to(p.device) for o, p in zip(analysis.orders, self.params)]
        self.counts = [0] * len(self.params)
        self._rnns = rnn_modules(model)

    def target(self, i: int, k: int) -> torch.Tensor:
        """Layer ``i``'s flat weights at count ``k`` (re-fitted with reconstruction), on the CPU."""
        if self.calibrated is not None:
            return self.calibrated.weight(i, k)
        w = self.analysis.dense[i].clone()
        w[self.analysis.orders[i][:int(k)]] = 0
        return w

    @torch.no_grad()
    def apply(self, counts: Sequence[int], bits: Sequence[int] | None = None) -> None:
        for i, k in enumerate(counts):
            k, old = int(k), self.counts[i]
            if k == old:
                continue
            flat = self.params[i].data.view(-1)
            if self.refit:  # re-fitted weights move as a whole
                flat.copy_(self.target(i, k))
            elif k > old:
                flat.index_fill_(0, self.orders[i][old:k], 0)
            else:
                idx = self.orders[i][k:old]
                flat.index_copy_(0, idx, self.dense[i].index_select(0, idx))
            self.counts[i] = k
        self._refresh()

    def reset(self) -> None:
        self.apply([0] * len(self.counts))

    def _refresh(self) -> None:
        for m in self._rnns:
            m.flatten_parameters()

    def removed_params(self, counts: Sequence[int]) -> int:
        return int(np.sum(counts))

    def size_bits(self, counts: Sequence[int], bits: Sequence[int] | None = None) -> int:
        tables = self.analysis.size_tables()
        if any(t is None for t in tables):  # a layer too large for a table is encoded from the model itself
            self.apply(counts)
        return self.analysis.fixed_size_bits + sum(
            encoding(p).total_bits if t is None else int(t[int(k)]) for t, k, p in zip(tables, counts, self.params))

    def size_fraction(self, counts: Sequence[int], bits: Sequence[int] | None = None) -> float:
        return 1.0 - self.removed_params(counts) / self.analysis.weight_numel

    def masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return zero_masks(model)

    def finalize(self, model: nn.Module, bits: Sequence[int] | None) -> None:
        return None

    @torch.no_grad()
    def materialize(self, source: nn.Module, counts: Sequence[int], bits: Sequence[int] | None,
                    device: torch.device) -> nn.Module:
        """A pruned copy of ``source``. With reconstruction, a layer of ``source`` that still holds the dense weights
        gets the re-fitted ones the env scored; one that does not (a fine-tuned model) is only masked."""
        model = copy.deepcopy(source).to(device)
        if self.calibrated is None:
            apply_counts(model, self.layers, self.analysis.orders, counts)
        else:
            for i, (layer, k) in enumerate(zip(self.layers, counts)):
                p = get_param(model, layer)
                if torch.equal(p.detach().reshape(-1).cpu(), self.analysis.dense[i]):
                    p.copy_(self._final(i, int(k), None if bits is None else int(bits[i])).view_as(p))
                else:
                    p.view(-1)[self.analysis.orders[i][:int(k)].to(p.device)] = 0
            for m in rnn_modules(model):
                m.flatten_parameters()
        self.finalize(model, bits)
        return model

    def _final(self, i: int, k: int, bits: int | None) -> torch.Tensor:
        return self.target(i, k)

    def info(self, counts: Sequence[int], bits: Sequence[int] | None) -> dict[str, Any]:
        return {}


class Quantized(Unstructured):
    """Unstructured pruning plus per-layer bit-widths: kept weights rounded to ``bits[i]`` bits.

    :param model: the module to edit.
    :param analysis: the model's unstructured analysis.
    :param method: ``"linear"`` (per-output-channel symmetric), ``"kmeans"`` (shared codebook per layer) or
        ``"gptq"`` (the linear grid, rounded by GPTQ on the calibration inputs; needs ``calibrated``).
    :param calibrated: calibration-aware weights (reconstruction and/or GPTQ), or ``None``.
    """

    prices_size = True  # the budget fixes the sparsity; the size term prices the bits

    def __init__(self, model: nn.Module, analysis: Analysis, method: str = "linear",
                 calibrated: Calibrated | None = None):
        super().__init__(model, analysis, calibrated)
        self.method = check_method(method)
        if self.method == "gptq" and calibrated is None:
            raise ValueError("quantize method 'gptq' needs calibration statistics (`calibrated`)")
        self.bits = [32] * len(self.params)
        self._encoded: list[tuple[tuple[int, int], int] | None] = [None] * len(self.params)

    @torch.no_grad()
    def apply(self, counts: Sequence[int], bits: Sequence[int] | None = None) -> None:
        bits = [32] * len(self.params) if bits is None else bits
        for i, (k, b) in enumerate(zip(counts, bits)):
            k, b = int(k), int(b)
            if k == self.counts[i] and b == self.bits[i]:
                continue
            self.params[i].copy_(self._final(i, k, b).view_as(self.params[i]))
            self.counts[i], self.bits[i] = k, b
        self._refresh()

    def _final(self, i: int, k: int, bits: int | None) -> torch.Tensor:
        b = 32 if bits is None else int(bits)
        if self.method == "gptq":
            return self.calibrated.rounded(i, k, b).to(self.params[i].device)
        w = self.target(i, k).to(self.params[i].device)
        return quantize(w, b, self.method)

    def _layer_bits(self, counts: Sequence[int], bits: Sequence[int] | None) -> list[int]:
        """Stored bits of each prunable weight (quantization can add zeros, so the model is encoded)."""
        bits = [32] * len(self.params) if bits is None else bits
        self.apply(counts, bits)
        out = []
        for i, p in enumerate(self.params):
            key = (int(counts[i]), int(bits[i]))
            cached = self._encoded[i]
            if cached is None or cached[0] != key:
                cached = (key, encoding(p, key[1], self.method).total_bits)
                self._encoded[i] = cached
            out.append(cached[1])
        return out

    def size_bits(self, counts: Sequence[int], bits: Sequence[int] | None = None) -> int:
        return self.analysis.fixed_size_bits + sum(self._layer_bits(counts, bits))

    def size_fraction(self, counts: Sequence[int], bits: Sequence[int] | None = None) -> float:
        return sum(self._layer_bits(counts, bits)) / (32 * self.analysis.weight_numel)

    @torch.no_grad()
    def finalize(self, model: nn.Module, bits: Sequence[int] | None) -> None:
        """Quantize ``model``'s prunable weights to ``bits`` (idempotent on weights already on the grid); GPTQ
        re-rounds weights moved by fine-tuning with the calibration inputs, zeros kept."""
        for i, (layer, b) in enumerate(zip(self.layers, [] if bits is None else bits)):
            p = get_param(model, layer)
            if self.method == "gptq" and int(b) != 32:
                if torch.equal(quantize(p, int(b), "linear"), p):  # already on the grid (idempotence)
                    continue
                mask = (p == 0).reshape(p.shape[0], -1).cpu()
                p.copy_(self.calibrated.rounded(i, 0, int(b), weight=p, mask=mask).view_as(p))
            else:
                p.copy_(quantize(p, int(b), self.method))

    def info(self, counts: Sequence[int], bits: Sequence[int] | None) -> dict[str, Any]:
        bits = [32] * len(self.params) if bits is None else bits
        return {"layer_bits": {layer.name: int(b) for layer, b in zip(self.layers, bits)},
                "size_fraction": self.size_fraction(counts, bits)}


class HiddenUnit:
    """Whole hidden units removed from stacked recurrent layers (both directions of a layer together).

    Only the parameters a changed layer touches are rewritten (``dense * mask``).

    With ``calibrated`` (``reconstruct="obs"``), every prunable weight a removal touches is re-fitted by least
    squares instead: the columns that read removed units are gone, and the rest of each row is moved to keep the
    row's pre-activation on the calibration inputs (the consuming matrices absorb what the removed units carried).

    :param model: the module to edit.
    :param analysis: the model's ``hidden_unit`` analysis.
    :param calibrated: calibration statistics for the re-fit, or ``None``.
    """

    prices_size = False

    def __init__(self, model: nn.Module, analysis: Analysis, calibrated: Calibrated | None = None):
        if analysis.plan is None:
            raise ValueError("HiddenUnit needs a hidden_unit analysis")
        self.analysis = analysis
        self.calibrated = calibrated
        self.plan = analysis.plan
        named = dict(model.named_parameters())
        self.params = [named[t.name] for t in self.plan.tensors]
        self.dense = [d.to(p.device, p.dtype) for d, p in zip(analysis.dense, self.params)]
        self.counts = [0] * analysis.num_layers
        self._rnns = rnn_modules(model)
        self._removed: tuple[tuple[int, ...], int] | None = None

    def keep(self, counts: Sequence[int]) -> list[list[torch.Tensor]]:
        """Boolean keep masks per group and direction for ``counts``."""
        return self.plan.keep_masks(self.analysis.orders, counts)

    @torch.no_grad()
    def apply(self, counts: Sequence[int], bits: Sequence[int] | None = None) -> None:
        changed = {i for i, k in enumerate(counts) if int(k) != self.counts[i]}
        if not changed:
            return
        self.counts = [int(k) for k in counts]
        keep = self.keep(self.counts)
        for t, p, dense in zip(self.plan.tensors, self.params, self.dense):
            if t.groups() & changed:
                p.copy_(self._masked(t, dense, self.plan.tensor_mask(t, keep, p.shape), self.counts))
        for m in self._rnns:
            m.flatten_parameters()

    def _masked(self, t, dense: torch.Tensor, mask: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
        mask = mask.to(dense.device, dense.dtype)
        if self.calibrated is None:
            return dense * mask
        key = ("unit", t.name, tuple(int(counts[g]) for g in sorted(t.groups())))
        refit = self.calibrated.refit(t.name, key, dense, mask == 0)
        return dense * mask if refit is None else refit.to(dense.device, dense.dtype)

    def reset(self) -> None:
        self.apply([0] * len(self.counts))

    def removed_params(self, counts: Sequence[int]) -> int:
        key = tuple(int(k) for k in counts)
        if self._removed is None or self._removed[0] != key:
            keep = self.keep(key)
            removed = sum(int((self.plan.tensor_mask(t, keep, p.shape) == 0).sum())
                          for t, p in zip(self.plan.tensors, self.params))
            self._removed = (key, removed)
        return self._removed[1]

    def size_bits(self, counts: Sequence[int], bits: Sequence[int] | None = None) -> int:
        # The physically smaller model stores its kept float32 parameters densely.
        return 32 * (self.analysis.total_params - self.removed_params(counts))

    def size_fraction(self, counts: Sequence[int], bits: Sequence[int] | None = None) -> float:
        return 1.0 - self.removed_params(counts) / self.analysis.weight_numel

    def masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return self.plan.param_masks(self.keep(self.counts), model)

    def finalize(self, model: nn.Module, bits: Sequence[int] | None) -> None:
        return None

    @torch.no_grad()
    def materialize(self, source: nn.Module, counts: Sequence[int], bits: Sequence[int] | None,
                    device: torch.device) -> nn.Module:
        model = copy.deepcopy(source).to(device)
        keep = self.keep(counts)
        named = dict(model.named_parameters())
        for t, dense in zip(self.plan.tensors, self.analysis.dense):
            p = named[t.name]
            mask = self.plan.tensor_mask(t, keep, p.shape).to(p.device)
            if self.calibrated is not None and torch.equal(p.detach().cpu(), dense):
                p.copy_(self._masked(t, dense, mask.cpu(), counts))  # the dense source: re-fitted as the env scored
            else:
                p.mul_(mask)
        return shrink(model, self.plan, keep)

    def info(self, counts: Sequence[int], bits: Sequence[int] | None) -> dict[str, Any]:
        return {"weight_sparsity": self.removed_params(counts) / self.analysis.weight_numel}


def make_kind(model: nn.Module, analysis: Analysis, quantize: str | None = None,
              calibrated: Calibrated | None = None) -> PruningKind:
    """The pruning kind for an analysis (its granularity), an optional quantization method and optional
    calibration-aware weights (:class:`~prune_env.pruning.reconstruction.Calibrated`)."""
    if analysis.plan is not None:
        if quantize:
            raise ValueError("`quantize` needs granularity='unstructured' (bit-widths are chosen per weight tensor)")
        return HiddenUnit(model, analysis, calibrated)
    if quantize:
        return Quantized(model, analysis, quantize, calibrated)
    return Unstructured(model, analysis, calibrated)
