"""The one-off analysis of a task's model: everything about the dense model that never changes during a search.

:func:`analyse` computes it once per (task, criterion, granularity) and caches it, so several envs on one task, the
sub-environments of a :class:`~prune_env.PruneRNNVectorEnv` and the agents all share one :class:`Analysis` through
``env.analysis``. The cache key also holds every parameter's storage and in-place version counter, so a model edited
in place after an env was built is analysed afresh. An :class:`Analysis` is immutable (its arrays are read-only)
and pickles, which is what a multi-model env needs to hold one per model.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from prune_env.compression.size import SIZE_TABLE_MAX_NUMEL, encoding, model_size, size_table
from prune_env.pruning import allocation as B
from prune_env.pruning.calibration import CalibrationStats, calibration_inputs, calibration_stats
from prune_env.pruning.criteria import (
    CALIBRATED,
    calibrated_order,
    check_criterion,
    compute_gradients,
    importance,
    prune_order,
)
from prune_env.pruning.layers import PrunableLayer, find_prunable_layers, get_param
from prune_env.pruning.stats import layer_features, raw_layer_stats
from prune_env.pruning.structured import UnitPlan, group_tensors
from prune_env.pruning.structured.declared import unit_plan
from prune_env.task import RNNTask

GRANULARITIES = ("unstructured", "hidden_unit")


@dataclass(frozen=True, eq=False)
class Analysis:
    """Statistics, gradients, prune orders and sizes of a dense model, for one criterion and granularity.

    :param criterion: the within-layer ranking (``"magnitude"``, ``"gradient"``, ``"saliency"``, or the calibrated
        ``"wanda"`` and ``"obs"``, whose calibration statistics are then kept under ``cached("calibration")``).
    :param granularity: ``"unstructured"`` or ``"hidden_unit"``.
    :param weight_layers: every prunable weight tensor of the model.
    :param layers: the action units: ``weight_layers`` (unstructured) or the hidden-unit groups.
    :param plan: the :class:`~prune_env.pruning.structured.UnitPlan` at ``hidden_unit`` granularity, else ``None``.
    :param grads: weight name -> gradient of ``task.loss`` (``None`` without a loss).
    :param orders: per action unit, indices from least to most important (per direction for unit groups).
    :param dense: the dense tensors a pruning kind edits, on the CPU: each action layer's flat weight
        (unstructured), or each parameter of ``plan.tensors`` (hidden units).
    :param layer_stats: per action unit, the raw statistics of :func:`~prune_env.pruning.stats.raw_layer_stats`.
    :param features: the ``(num_layers, len(FEATURES))`` normalised static features (read-only).
    :param numels: weights (or units per direction) per action unit (read-only).
    :param total_params: parameters of the whole model.
    :param weight_numel: prunable weights of the whole model.
    :param fixed_size_bits: stored bits of everything but the prunable weights (biases, buffers, raw).
    """

    criterion: str
    granularity: str
    weight_layers: tuple[PrunableLayer, ...]
    layers: tuple[PrunableLayer, ...]
    plan: UnitPlan | None
    grads: dict[str, torch.Tensor] | None
    orders: tuple[Any, ...]
    dense: tuple[torch.Tensor, ...]
    layer_stats: tuple[dict[str, float], ...]
    features: np.ndarray
    numels: np.ndarray
    total_params: int
    weight_numel: int
    fixed_size_bits: int
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def caps(self, max_sparsity: float) -> np.ndarray:
        """The most weights (units) each action unit may lose under ``max_sparsity``; a recurrent layer always
        keeps one unit."""
        cap = B.caps(self.numels, max_sparsity)
        return np.minimum(cap, self.numels - 1) if self.plan is not None else cap

    def size_tables(self) -> list[np.ndarray | None]:
        """Unstructured float32 weights: each layer's exact stored bits at every count (see
        :func:`~prune_env.compression.size.size_table`), or ``None`` for a layer above ``SIZE_TABLE_MAX_NUMEL`` values.
        Built on first use, then shared."""
        if self.plan is not None:
            raise ValueError("size tables count weights; hidden-unit pruning stores the smaller model densely")
        if "size_tables" not in self._memo:
            self._memo["size_tables"] = [
                size_table(d, o, d.numel()) if d.numel() <= SIZE_TABLE_MAX_NUMEL else None
                for d, o in zip(self.dense, self.orders)]
        return self._memo["size_tables"]

    def dense_score(self, key: Any, compute) -> tuple[float, dict[str, float]]:
        """The dense model's validation score for ``key`` (device type and precision), computed once by
        ``compute()``."""
        return self.cached(("dense_score", key), compute)

    def cached(self, key: Any, compute: Callable[[], Any], *, max_entries: int | None = None) -> Any:
        """A value derived from this analysis alone, computed once by ``compute()`` and kept with it (rankings,
        costs, calibration statistics, reconstructed weights). Thread-safe; ``compute`` may run twice in a race,
        the first result stored wins.

        :param key: any hashable key; modules use their own prefix (e.g. ``("obd_costs", batches)``).
        :param compute: builds the value on a miss.
        :param max_entries: store the value only while the cache holds fewer entries (a bounded memo for keys drawn
            from a continuum, e.g. targets); it is still returned.
        """
        try:
            return self._memo[key]
        except KeyError:
            pass
        value = compute()
        with _MEMO_LOCK:
            if max_entries is None or len(self._memo) < max_entries:
                value = self._memo.setdefault(key, value)
        return value


_CACHE: dict[tuple, tuple[weakref.ref, Analysis]] = {}
_LOCK = threading.Lock()
_MEMO_LOCK = threading.Lock()


def analyse(task: RNNTask, criterion: str = "magnitude", granularity: str = "unstructured") -> Analysis:
    """The :class:`Analysis` of ``task.model`` for ``criterion`` and ``granularity``, cached per task.

    :param task: the task (its model is read, never modified).
    :param criterion: ``"magnitude"``, ``"gradient"`` or ``"saliency"`` (the last two need ``task.loss``), or
        ``"wanda"`` or ``"obs"`` (unstructured only; they need calibration data, see
        :func:`~prune_env.pruning.calibration.calibration_inputs`).
    :param granularity: ``"unstructured"`` or ``"hidden_unit"``.
    :raises ValueError: for an unknown criterion or granularity, or a criterion the task cannot support.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown `granularity` {granularity!r}; expected one of {GRANULARITIES}")
    check_criterion(criterion, task.loss is not None)
    if criterion in CALIBRATED and granularity != "unstructured":
        raise ValueError(f"`criterion`={criterion!r} ranks single weights within rows; granularity={granularity!r} "
                         "ranks hidden units: use 'magnitude', 'gradient' or 'saliency' (with reconstruct='obs' to "
                         "re-fit the consuming weights)")
    key = (id(task), criterion, granularity, _fingerprint(task.model))
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit[0]() is task:
            return hit[1]
    result = _compute(task, criterion, granularity)
    with _LOCK:
        for k in [k for k, (ref, _) in _CACHE.items() if ref() is None]:  # drop entries of collected tasks
            del _CACHE[k]
        _CACHE[key] = (weakref.ref(task), result)
    return result


def _fingerprint(model: torch.nn.Module) -> tuple:
    return tuple((p.data_ptr(), p._version, tuple(p.shape)) for p in model.parameters())


def _compute(task: RNNTask, criterion: str, granularity: str) -> Analysis:
    model = task.model
    weight_layers = tuple(find_prunable_layers(model))
    grads = compute_gradients(model, weight_layers, task.loss) if task.loss is not None else None
    named = {layer.name: get_param(model, layer).detach().cpu() for layer in weight_layers}
    plan = None
    if granularity == "hidden_unit":
        plan = unit_plan(model, task.unit_consumers)
        layers: tuple[PrunableLayer, ...] = tuple(plan.groups)
        pairs = group_tensors(plan, named, grads)
        orders = tuple(plan.unit_orders(criterion, named, grads))
        params = dict(model.named_parameters())
        dense = tuple(params[t.name].detach().cpu().clone() for t in plan.tensors)
    else:
        layers = weight_layers
        pairs = [(named[layer.name], grads[layer.name] if grads else None) for layer in layers]
        if criterion in CALIBRATED:
            stats = calibration_stats(model, weight_layers, calibration_inputs(task, "criterion"))
            orders = tuple(calibrated_order(criterion, layer, w, stats[layer.name])
                           for layer, (w, _) in zip(layers, pairs))
        else:
            orders = tuple(prune_order(importance(criterion, w, g)) for w, g in pairs)
        dense = tuple(w.reshape(-1).clone() for w, _ in pairs)
    layer_stats = tuple(raw_layer_stats(w, g) for w, g in pairs)
    features = layer_features(layers, layer_stats)
    numels = np.array([layer.numel for layer in layers], dtype=np.int64)
    weight_bits = sum(encoding(w, 32).total_bits for w in named.values())
    for array in (features, numels):
        array.setflags(write=False)
    memo = {"calibration": stats} if criterion in CALIBRATED and granularity == "unstructured" else {}
    return Analysis(_memo=memo, criterion=criterion, granularity=granularity, weight_layers=weight_layers,
                    layers=layers, plan=plan, grads=grads, orders=orders, dense=dense, layer_stats=layer_stats,
                    features=features,
                    numels=numels, total_params=sum(p.numel() for p in model.parameters()),
                    weight_numel=sum(layer.numel for layer in weight_layers),
                    fixed_size_bits=model_size(model).total_bits - weight_bits)


def calibration(analysis: Analysis, task: RNNTask, argument: str = "reconstruct") -> CalibrationStats:
    """The calibration statistics of every prunable weight of ``task.model`` (:mod:`prune_env.pruning.calibration`),
    captured once and kept with ``analysis`` (the analysis of ``task``).

    :param argument: the setting that needs them, named in the error of a task without calibration data.
    :raises ValueError: for a task with neither ``calibration_batches`` nor ``train_loss``.
    """
    return analysis.cached("calibration", lambda: calibration_stats(
        task.model, analysis.weight_layers, calibration_inputs(task, argument)))
