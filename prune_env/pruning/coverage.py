"""Coverage: which weights of a model an env prunes, which matrices it leaves dense, and the sparsity of the whole
model.

An env prunes the weights its layer adapters name (:mod:`prune_env.pruning.adapters`). A module type without an
adapter (a third-party recurrent cell, a custom attention) keeps its weights dense, and ``overall_sparsity``, which
counts the prunable weights only, then overstates how sparse the model is. So every env carries a
:class:`CoverageReport` (``env.coverage``):

- the prunable weights (``pruned``);
- every weight tensor of two or more dimensions that no adapter names (``dense``), with its share of all the model's
  parameters;
- ``model_sparsity``: the sparsity over *every* weight tensor of two or more dimensions, pruned or not (biases,
  norms' scales and other vectors excluded), which the env reports in ``info`` beside ``overall_sparsity``.

Construction warns (:class:`CoverageWarning`) when the dense matrices exceed :data:`THRESHOLD` of the model's
parameters, and raises ``ValueError`` instead with ``strict_coverage=True``.

``model_sparsity`` is computed from the counts the env already has (no weight is scanned per step); at
``hidden_unit`` granularity it counts every matrix entry the removed units take with them (their rows, recurrent
columns and the input columns of their consumers).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from prune_env.pruning.layers import PrunableLayer, find_prunable_layers, get_param

__all__ = ["THRESHOLD", "CoverageReport", "CoverageWarning", "DenseWeight", "check_coverage", "coverage_report",
           "matrix_zeros", "removed_matrix_weights", "whole_model_sparsity"]

#: The share of a model's parameters that dense matrices may hold before construction warns (or, strict, fails).
THRESHOLD = 0.05


class CoverageWarning(UserWarning):
    """The env leaves more than :data:`THRESHOLD` of the model's parameters in matrices it does not prune."""


@dataclass(frozen=True)
class DenseWeight:
    """A weight tensor of two or more dimensions that the env does not prune.

    :param name: its name in ``model.named_parameters()``.
    :param module_type: the class name of the module holding it.
    :param shape: its shape.
    :param share: its elements over all the model's parameters.
    """

    name: str
    module_type: str
    shape: tuple[int, ...]
    share: float

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class CoverageReport:
    """Which weights an env prunes and which matrices it leaves dense.

    :param pruned: the prunable weights' names (the env's layers at unstructured granularity).
    :param pruned_numel: their elements.
    :param dense: every weight tensor of two or more dimensions not among them, largest first.
    :param weight_numel: the elements of every weight tensor of two or more dimensions (pruned and dense), the
        denominator of ``model_sparsity``.
    :param total_params: every parameter of the model (each shared tensor once).
    """

    pruned: tuple[str, ...]
    pruned_numel: int
    dense: tuple[DenseWeight, ...]
    weight_numel: int
    total_params: int

    @property
    def dense_numel(self) -> int:
        """Elements of the matrices left dense."""
        return sum(d.numel for d in self.dense)

    @property
    def dense_share(self) -> float:
        """Their share of all the model's parameters."""
        return self.dense_numel / self.total_params if self.total_params else 0.0

    def model_sparsity(self, removed: int) -> float:
        """The sparsity over every weight tensor of two or more dimensions when ``removed`` of their elements are
        pruned."""
        return float(removed) / self.weight_numel if self.weight_numel else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values, for reports and results files."""
        return {"pruned": list(self.pruned), "pruned_numel": self.pruned_numel,
                "dense": [{"name": d.name, "module_type": d.module_type, "shape": list(d.shape), "share": d.share}
                          for d in self.dense],
                "dense_share": self.dense_share, "weight_numel": self.weight_numel,
                "total_params": self.total_params}

    def table(self) -> str:
        """A plain-text summary: what is pruned, and each matrix left dense with its share."""
        lines = [f"prunes {len(self.pruned)} weight tensors ({self.pruned_numel} of the model's "
                 f"{self.total_params} parameters, {self.pruned_numel / max(1, self.total_params):.1%})"]
        if not self.dense:
            lines.append("leaves no weight tensor of two or more dimensions dense")
        else:
            lines.append(f"leaves {len(self.dense)} weight tensor{'s' if len(self.dense) > 1 else ''} of two or more "
                         "dimensions dense "
                         f"({self.dense_share:.1%} of the parameters):")
            lines += [f"  {d.name:<36} {d.module_type:<20} {'x'.join(map(str, d.shape)):<14} {d.share:7.2%}"
                      for d in self.dense]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def coverage_report(model: nn.Module, layers: Sequence[PrunableLayer] | None = None) -> CoverageReport:
    """The :class:`CoverageReport` of ``model`` when ``layers`` (default: :func:`find_prunable_layers`) are pruned.

    Parameters are compared by identity, so a tensor shared by two modules (a tied embedding and head) counts once.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    layers = find_prunable_layers(model) if layers is None else layers
    pruned_ids = {id(get_param(model, layer)) for layer in layers}
    owners = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners.setdefault(id(p), type(module).__name__)
    total = weight_numel = 0
    dense: list[tuple[str, str, tuple[int, ...], int]] = []
    for name, p in model.named_parameters():
        total += p.numel()
        if p.dim() < 2:
            continue
        weight_numel += p.numel()
        if id(p) not in pruned_ids:
            dense.append((name, owners.get(id(p), ""), tuple(p.shape), p.numel()))
    dense.sort(key=lambda d: (-d[3], d[0]))
    return CoverageReport(pruned=tuple(layer.name for layer in layers),
                          pruned_numel=sum(layer.numel for layer in layers),
                          dense=tuple(DenseWeight(n, t, s, k / total) for n, t, s, k in dense),
                          weight_numel=weight_numel, total_params=total)


def check_coverage(report: CoverageReport, *, strict: bool = False, threshold: float = THRESHOLD,
                   what: str = "the model") -> None:
    """Warn (:class:`CoverageWarning`), or with ``strict`` raise ``ValueError``, when the matrices ``report`` leaves
    dense exceed ``threshold`` of the model's parameters.

    :param what: names the model in the message (e.g. the task's name).
    """
    if report.dense_share <= threshold:
        return
    top = ", ".join(f"{d.name} ({d.module_type}, {d.share:.1%})" for d in report.dense[:4])
    more = f" and {len(report.dense) - 4} more" if len(report.dense) > 4 else ""
    message = (f"{what}: {report.dense_share:.1%} of the parameters are in weight tensors no layer adapter prunes: "
               f"{top}{more}; overall_sparsity counts the prunable weights only, model_sparsity the whole model. "
               "Register an adapter for those module types (prune_env.pruning.adapters.register_adapter)")
    if strict:
        raise ValueError(f"strict_coverage: {message}")
    warnings.warn(message, CoverageWarning, stacklevel=3)


def removed_matrix_weights(kind: Any, counts: Sequence[int]) -> int:
    """Elements of weight tensors of two or more dimensions that ``counts`` remove, from the counts alone.

    Unstructured (and quantized) kinds prune exactly ``sum(counts)`` weights. At ``hidden_unit`` granularity the
    kind's removed parameters (cached per counts) lose the removed units' biases, which are vectors.
    """
    plan = kind.analysis.plan
    if plan is None:
        return int(np.sum(counts))
    vectors = sum(int(counts[t.rows[0]]) * plan.groups[t.rows[0]].gates
                  for t, p in zip(plan.tensors, kind.params) if p.dim() < 2 and t.rows is not None)
    return int(kind.removed_params(counts)) - vectors


@torch.no_grad()
def matrix_zeros(model: nn.Module) -> tuple[int, int]:
    """``(zeros, elements)`` over every weight tensor of two or more dimensions of ``model``, counted in its weights
    (for a materialized or loaded model; the env itself counts from its counts)."""
    zeros = total = 0
    for p in model.parameters():
        if p.dim() >= 2:
            total += p.numel()
            zeros += p.numel() - int(torch.count_nonzero(p))
    return zeros, total


@torch.no_grad()
def whole_model_sparsity(model: nn.Module, dense: nn.Module) -> float:
    """The sparsity of ``model`` over every weight tensor of two or more dimensions of ``dense``, the model it was
    pruned from: its non-zero matrix entries against ``dense``'s (entries a physically smaller model no longer has
    count as removed). Counted in the weights, for reports on materialized or loaded models."""
    kept = sum(int(torch.count_nonzero(p)) for p in model.parameters() if p.dim() >= 2)
    total = sum(p.numel() for p in dense.parameters() if p.dim() >= 2)
    return 1.0 - kept / total if total else 0.0
