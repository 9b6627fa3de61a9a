"""The gradual pruning run (:func:`gradual_prune`) and what it returns (:class:`GradualResult`)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from prune_env.checks import check_choice, check_int, check_number, is_int
from prune_env.compression.gradual.movement import MovementScores
from prune_env.compression.gradual.pruners import ScoredUnitPruner, UnitPruner, WeightPruner
from prune_env.compression.gradual.regularize import (
    REGULARIZERS,
    SCOPES,
    STRENGTH_SCHEDULES,
    GroupLassoProx,
    L1Prox,
    check_strength,
    strength_at,
)
from prune_env.compression.gradual.schedule import cosine_factor, cubic_schedule
from prune_env.compression.gradual.trainer import MaskedTrainer, evaluate_model, refresh_rnns
from prune_env.compression.quantize import check_method
from prune_env.devices import autocast, model_device
from prune_env.envs.actions import bits_array
from prune_env.pruning import allocation as B
from prune_env.pruning.layers import find_prunable_layers, get_param
from prune_env.pruning.structured import shrink
from prune_env.task import RNNTask, split_score

#: Optimizers :func:`gradual_prune` accepts.
OPTIMIZERS = ("adam", "sgd")
#: Learning-rate schedules of :func:`gradual_prune`.
LR_SCHEDULES = ("constant", "cosine")
#: Pruning criteria of unstructured :func:`gradual_prune` runs (``None``: the env's).
CRITERIA = ("magnitude", "movement")
#: Checkpoint selection criteria of :func:`gradual_prune`.
SELECT = ("score", "nll")
#: What removes weights (units) during a regularised run's ramp: the cubic schedule, or the penalty alone.
REMOVALS = ("schedule", "penalty")


@dataclass
class GradualResult:
    """What :func:`gradual_prune` returns.

    :param model: the best checkpoint at full sparsity (a new module, on the task model's device, eval mode): pruned
        weights are zero; ``hidden_unit`` gives the physically smaller model, quantized runs the quantized values.
    :param score: ``task.evaluate(model)`` (validation), higher is better.
    :param extras: the other entries ``evaluate`` returned (e.g. ``perplexity``).
    :param step: optimizer steps done when the checkpoint was taken (``>= end``).
    :param end: the step of the last pruning step; checkpoints count from there.
    :param losses: the training loss of every optimizer step.
    :param curve: ``(step, validation score)`` of every evaluation (before the ramp ends too).
    :param schedule: pruning step -> layer name -> pruned weights (units for ``hidden_unit``) from that step on
        (regularised runs: what each step actually pruned).
    :param counts: layer name -> final pruned weights (units).
    :param bits: layer name -> bit-width of a quantized run, else ``None``.
    :param info: the settings the run used (granularity, optimizer, lr, frequency, start, ``qat_start``, seed,
        criterion, regularizer and its strength and schedule), ``train_seconds`` (wall time of the training steps
        and proximal steps, evaluations excluded), and for regularised runs ``pruned_by_penalty`` (layer -> weights,
        or units per direction, that were exactly zero when a pruning step removed them: the penalty's share of the
        final count, the rest being the lowest magnitudes the schedule took), ``zero_at_end`` (layer -> weights or
        units per direction exactly zero but not yet pruned just before the last pruning step), ``kept_units`` and
        ``removed_units`` (``group_lasso``: layer -> units kept per direction, and the indices removed in each
        direction).
    """

    model: nn.Module
    score: float
    extras: dict[str, float]
    step: int
    end: int
    losses: list[float]
    curve: list[tuple[int, float]]
    schedule: dict[int, dict[str, int]]
    counts: dict[str, int]
    bits: dict[str, int] | None = None
    info: dict[str, Any] = field(default_factory=dict)


def gradual_prune(source, allocation: Mapping[str, float] | None = None, *, steps: int, start: int = 0,
                  end: int | None = None, frequency: int | None = None, initial_sparsity: float = 0.0,
                  lr: float = 1e-3, optimizer: str = "adam", momentum: float = 0.9, clip: float | None = 1.0,
                  eval_every: int | None = None, seed: int = 0, bits: Mapping[str, int] | int | None = None,
                  qat_fraction: float | None = None, method: str | None = None, lr_schedule: str = "constant",
                  select: str = "score", criterion: str | None = None, regularizer: str | None = None,
                  regularizer_strength: float = 0.1, regularizer_schedule: str = "ramp",
                  regularizer_scope: str = "all", removal: str = "schedule",
                  device: str | torch.device | None = None, progress: bool = False,
                  callback: Callable[[int, nn.Module], None] | None = None) -> GradualResult:
    """Prune a copy of the task's model gradually to ``allocation`` while fine-tuning it; keep the best checkpoint.

    :param source: a :class:`~prune_env.PruneRNNEnv` (its task, granularity, criterion, prune orders, quantization
        method and device) or an :class:`~prune_env.RNNTask` (unstructured, magnitude, on the model's device).
    :param allocation: layer name -> final sparsity (missing layers stay dense; counts round half up as in
        :func:`prune_env.pruning.allocation.allocation_counts`); default: the env's last episode
        (``env.allocation``). For ``hidden_unit`` the layers are the env's unit groups and every layer keeps at
        least one unit.
    :param steps: optimizer steps in all, ``>= 0`` (0: the pruning at ``end = 0`` only, i.e. one-shot).
    :param start: step of the first pruning step.
    :param end: step of the last pruning step, where every layer reaches its final count (``start <= end <= steps``);
        default ``start + (steps - start) // 2`` (the second half recovers at full sparsity).
    :param frequency: steps between pruning steps; default ``max(1, (end - start) // 10)``.
    :param initial_sparsity: ``s_i`` of the schedule (see :func:`cubic_schedule`).
    :param lr: learning rate, ``> 0``.
    :param optimizer: ``"adam"`` or ``"sgd"`` (with ``momentum``).
    :param momentum: SGD momentum, in ``[0, 1)``.
    :param clip: maximum gradient norm (of the unpruned weights' gradients), ``> 0``; ``None``: no clipping.
    :param eval_every: evaluate every this many steps (plus right after ``end`` and at the end); default
        ``max(1, steps // 10)``.
    :param seed: seeds the training batches (a ``torch.Generator`` passed to ``task.train_loss``) and any dropout; the
        same seed gives the same result bit for bit on a CPU.
    :param bits: quantize: layer name -> bit-width (one of :data:`prune_env.compression.quantize.BITS`; missing
        layers 32) or one int for every layer; default: ``env.bit_allocation`` when the env quantizes, else no
        quantization.
    :param qat_fraction: quantized runs: the fraction of ``steps``, at the end, trained with straight-through
        rounding; it must begin at or after ``end``. Default: every step after ``end``.
    :param method: quantization method, ``"linear"`` or ``"kmeans"``; default the env's, else ``"linear"``.
    :param lr_schedule: ``"constant"`` (``lr`` throughout) or ``"cosine"`` (``lr`` during the ramp, then a cosine
        decay to 0 over the recovery steps after ``end``).
    :param select: which checkpoint to keep: ``"score"`` (highest validation score) or ``"nll"`` (lowest validation
        NLL, for language models whose figure of merit is perplexity; the task's ``evaluate`` must report ``nll``).
    :param criterion: unstructured runs: ``"magnitude"`` (the lowest ``|w|`` of the current weights at each pruning
        step) or ``"movement"`` (the lowest movement scores accumulated over the fine-tuning steps; see
        :mod:`~prune_env.compression.gradual.movement`); default ``None``: the env's criterion (magnitude of the
        current weights, or the env's fixed prune order for another criterion).
    :param regularizer: ``None``, ``"l1"`` (unstructured) or ``"group_lasso"`` (``hidden_unit``: ISS groups, Wen et
        al. 2018): a penalty applied by proximal steps after every optimizer step of the ramp (see
        :mod:`~prune_env.compression.gradual.regularize`). Each pruning step removes the schedule's count, what the
        penalty zeroed first and then the lowest magnitudes (group norms), and also locks in any further zeros of the
        penalty (at most the final count); so the step at ``end`` prunes to the final count exactly, and a weak
        penalty gives gradual pruning by current magnitude. The env's criterion is not used.
    :param regularizer_strength: the penalty's strength, ``> 0`` (relative to the learning rate: the threshold of a
        step is ``lr * strength``, times ``sqrt(group size)`` for groups).
    :param regularizer_schedule: ``"ramp"`` (the strength grows linearly over the ramp) or ``"constant"``.
    :param regularizer_scope: ``"all"`` (every weight or unit of a pruned layer) or ``"candidates"`` (at each step
        only the final count of lowest magnitudes or group norms, so that the kept ones are not shrunk).
    :param removal: regularised runs: ``"schedule"`` (each pruning step removes the cubic schedule's count, see
        ``regularizer``) or ``"penalty"`` (during the ramp only what the penalty zeroed leaves, locked in after every
        step, as in Wen et al.'s ISS; the step at ``end`` removes the rest by lowest magnitude or group norm).
    :param device: where to train; default the env's device, or the task model's.
    :param progress: show a progress bar.
    :param callback: ``callback(step, model)`` after every optimizer step (``step`` = steps done), with the working
        model (do not modify it).
    :returns: a :class:`GradualResult`.
    :raises ValueError: on a bad argument (the message names it) or a task without ``train_loss`` or ``loss``.
    """
    from prune_env.envs.env import PruneRNNEnv

    if isinstance(source, PruneRNNEnv):
        env, task = source, source.task
    elif isinstance(source, RNNTask):
        env, task = None, source
    else:
        raise ValueError(f"`source` must be a PruneRNNEnv or an RNNTask, got {type(source).__name__}")

    granularity = env.granularity if env is not None else "unstructured"
    if env is not None:
        names, numels = list(env.layer_names), np.asarray(env.numels)
    else:
        layers = find_prunable_layers(task.model)
        names, numels = [la.name for la in layers], np.array([la.numel for la in layers], dtype=np.int64)

    if allocation is None:
        allocation = env.allocation if env is not None else None
        if allocation is None:
            raise ValueError("`allocation` is required (layer name -> sparsity); the env has no finished episode")
    final = B.allocation_counts(dict(allocation) if isinstance(allocation, Mapping) else allocation, names, numels)
    if granularity == "hidden_unit" and np.any(final >= numels):
        full = [n for n, k, m in zip(names, final, numels) if k >= m]
        raise ValueError(f"`allocation` removes every hidden unit of {full}; each layer must keep at least one unit")

    steps = check_int("steps", steps, 0)
    start = check_int("start", start, 0)
    if start > steps:
        raise ValueError(f"`start` must be <= steps ({steps}), got {start}")
    end = start + (steps - start) // 2 if end is None else end
    end = check_int("end", end, 0)
    if not start <= end <= steps:
        raise ValueError(f"`end` must satisfy start ({start}) <= end <= steps ({steps}), got {end}")
    frequency = max(1, (end - start) // 10) if frequency is None else check_int("frequency", frequency, 1)
    lr = check_number("lr", lr, 0.0, low_open=True)
    optimizer = check_choice("optimizer", optimizer, OPTIMIZERS)
    momentum = check_number("momentum", momentum, 0.0, 1.0, high_open=True)
    if clip is not None:
        clip = check_number("clip", clip, 0.0, low_open=True)
    eval_every = max(1, steps // 10) if eval_every is None else check_int("eval_every", eval_every, 1)
    lr_schedule = check_choice("lr_schedule", lr_schedule, LR_SCHEDULES)
    select = check_choice("select", select, SELECT)
    if not is_int(seed):
        raise ValueError(f"`seed` must be an int, got {seed!r}")
    regularizer_strength = check_learned(granularity, criterion, regularizer, regularizer_strength,
                                         regularizer_schedule, regularizer_scope)
    removal = check_choice("removal", removal, REMOVALS)
    if removal == "penalty":
        if regularizer is None:
            raise ValueError("`removal`='penalty' needs a `regularizer` (the penalty decides what leaves)")
        frequency = 1  # zeros are locked in after every step; the counts wait for the penalty until `end`
    schedule = cubic_schedule(final, numels, start, end, frequency, initial_sparsity)
    if removal == "penalty":
        schedule = {t: (c if t == end else np.zeros_like(c)) for t, c in schedule.items()}

    layer_bits, method = _bits(env, bits, names, method)
    qat_start = steps
    if layer_bits is not None:
        if qat_fraction is None:
            qat_start = end
        else:
            f = check_number("qat_fraction", qat_fraction, 0.0, 1.0)
            qat_start = steps - int(round(f * steps))
            if qat_start < end:
                raise ValueError(f"`qat_fraction`={qat_fraction} starts straight-through training at step "
                                 f"{qat_start}, before the ramp ends (end={end}); lower it or end the ramp earlier")
    elif qat_fraction is not None:
        raise ValueError("`qat_fraction` needs quantization: pass `bits` (or an env with quantize=True)")

    if steps and getattr(task, "train_loss", None) is None and task.loss is None:
        raise ValueError("gradual pruning needs the task's `train_loss(model, generator)` or `loss(model)`")

    if device is None:
        device = env.device if env is not None else model_device(task.model)
    device = torch.device(device)
    precision = env.precision if env is not None else "fp32"
    model = copy.deepcopy(task.model).to(device)

    pruner, prox, movement = _pruner(env, model, granularity, criterion, regularizer, final, regularizer_scope)
    quant_params = None if layer_bits is None else [
        (p, int(b)) for p, b in zip(pruner.params, layer_bits) if int(b) != 32]

    run = MaskedTrainer(model, task, device, precision, lr, optimizer, momentum, clip, seed, quant_params, method,
                        select)
    if movement is not None:
        run.grad_hooks.append(movement.accumulate)
    zeroed: list[int] | None = None
    by_penalty = np.zeros(len(names), dtype=np.int64)
    train_seconds = 0.0
    best: dict[str, Any] | None = None
    curve: list[tuple[int, float]] = []
    bar = _progress(steps, progress)
    try:
        for t in range(steps + 1):
            if t in schedule:
                if prox is None:
                    run.set_masks(pruner.prune(schedule[t]))
                else:  # the schedule's count, what the penalty zeroed first, and lock in its other zeros
                    zero, before = _zero_masks(prox), _pruned_masks(pruner)
                    if t == end:
                        zeroed = [int((z & ~b).sum()) for z, b in zip(zero, before)]
                    pruner.prune(schedule[t])
                    run.set_masks(pruner.prune(final, zeros_only=True))
                    by_penalty += [int((z & a & ~b).sum()) for z, a, b in zip(zero, _pruned_masks(pruner), before)]
                    schedule[t] = _pruned_counts(pruner)
            if t == end or (t > 0 and (t % eval_every == 0 or t == steps)):
                # From the end of the ramp on, a better score replaces the checkpoint (the first one always does).
                score, key, state = run.evaluate(t >= end, None if best is None else best["key"])
                curve.append((t, score))
                if state is not None:
                    best = {"score": score, "key": key, "step": t, "state": state}
            if t == steps:
                break
            if lr_schedule == "cosine":
                run.set_lr(lr * cosine_factor(t, end, steps))
            t0 = time.perf_counter()
            loss = run.train_step(straight_through=t >= qat_start)
            if prox is not None and start <= t < end:
                prox.step(run.lr * strength_at(t, start, end, regularizer_strength, regularizer_schedule))
            train_seconds += time.perf_counter() - t0
            if callback is not None:
                callback(t + 1, model)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
    finally:
        if bar is not None:
            bar.close()
    assert best is not None  # t == end is always evaluated

    result_model = copy.deepcopy(task.model).to(device)
    result_model.load_state_dict(best["state"])
    del best["state"]
    kept_units = removed_units = None
    if isinstance(pruner, ScoredUnitPruner):  # the units this run kept, not the env's order
        keep = pruner.keep()
        kept_units = {n: [int(k.sum()) for k in per_dir] for n, per_dir in zip(names, keep)}
        removed_units = {n: [torch.nonzero(~k).reshape(-1).tolist() for k in per_dir]
                         for n, per_dir in zip(names, keep)}
        named = dict(result_model.named_parameters())
        with torch.no_grad():
            for name, mask in pruner.plan.param_masks(keep, result_model).items():
                named[name].mul_(mask.to(named[name].device, named[name].dtype))
        result_model = shrink(result_model, pruner.plan, keep)
    elif granularity == "hidden_unit":
        result_model = env.kind.materialize(result_model, final, None, device)
    result_model.eval()
    refresh_rnns(result_model)
    with autocast(device, precision):
        score, extras = split_score(evaluate_model(task, result_model))
    result_model = result_model.to(model_device(task.model))
    refresh_rnns(result_model)
    return GradualResult(
        model=result_model, score=score, extras=extras, step=best["step"], end=end, losses=run.losses, curve=curve,
        schedule={t: dict(zip(names, (int(k) for k in c))) for t, c in schedule.items()},
        counts=dict(zip(names, (int(k) for k in final))),
        bits=None if layer_bits is None else dict(zip(names, (int(b) for b in layer_bits))),
        info={"granularity": granularity, "optimizer": optimizer, "lr": lr, "lr_schedule": lr_schedule,
              "select": select, "frequency": frequency, "start": start,
              "qat_start": qat_start if layer_bits is not None else None, "seed": int(seed),
              "criterion": criterion, "regularizer": regularizer,
              **({"regularizer_strength": regularizer_strength, "regularizer_schedule": regularizer_schedule,
                  "regularizer_scope": regularizer_scope, "removal": removal,
                  "zero_at_end": None if zeroed is None else dict(zip(names, (z // _dirs(pruner, i) for i, z in
                                                                              enumerate(zeroed)))),
                  "pruned_by_penalty": dict(zip(names, (int(k) // _dirs(pruner, i) for i, k in
                                                        enumerate(by_penalty)))),
                  "kept_units": kept_units, "removed_units": removed_units} if regularizer is not None else {}),
              "train_seconds": round(train_seconds, 4)})


def check_learned(granularity: str, criterion: str | None = None, regularizer: str | None = None,
                  strength: float = 0.1, schedule: str = "ramp", scope: str = "all") -> float:
    """Check a combination of :func:`gradual_prune`'s ``granularity`` (the env's), ``criterion``, ``regularizer``,
    ``regularizer_strength``, ``regularizer_schedule`` and ``regularizer_scope``; returns the strength as a float.

    :raises ValueError: naming the argument, for an unknown value or a combination gradual pruning does not support.
    """
    if criterion is not None:
        check_choice("criterion", criterion, CRITERIA)
        if granularity != "unstructured":
            raise ValueError(f"`criterion`={criterion!r} needs granularity='unstructured' (hidden units rank by the "
                             "env's unit order, or by group norms with regularizer='group_lasso')")
    if regularizer is not None:
        check_choice("regularizer", regularizer, REGULARIZERS)
        need = "unstructured" if regularizer == "l1" else "hidden_unit"
        if granularity != need:
            raise ValueError(f"`regularizer`={regularizer!r} needs granularity={need!r}, got {granularity!r}")
        if criterion == "movement":
            raise ValueError("`criterion`='movement' and a `regularizer` do not combine: pass one of them")
    check_choice("regularizer_schedule", schedule, STRENGTH_SCHEDULES)
    check_choice("regularizer_scope", scope, SCOPES)
    return check_strength(strength) if regularizer is not None else strength


def _pruner(env, model: nn.Module, granularity: str, criterion: str | None, regularizer: str | None,
            final: np.ndarray, scope: str = "all") -> tuple[Any, Any, MovementScores | None]:
    """The pruner of a run, its proximal penalty (or ``None``) and its movement scores (or ``None``)."""
    if granularity == "hidden_unit":
        if regularizer is None:
            return UnitPruner(model, env.kind), None, None
        plan = env.kind.plan
        prox = GroupLassoProx(plan, model, final, scope)
        return ScoredUnitPruner(model, plan, prox.scores, prox.zero_units), prox, None
    weight_layers = list(env.layers) if env is not None else find_prunable_layers(model)
    params = [get_param(model, layer) for layer in weight_layers]
    if regularizer is not None:
        prox = L1Prox(params, final, scope)
        return WeightPruner(model, weight_layers, None, prox.score), prox, None
    if criterion == "movement":
        movement = MovementScores(params)
        return WeightPruner(model, weight_layers, None, movement.score), None, movement
    fixed = env is not None and env.criterion != "magnitude" and criterion is None
    return WeightPruner(model, weight_layers, env.analysis.orders if fixed else None), None, None


def _zero_masks(prox) -> list[torch.Tensor]:
    """Per layer, which weights (units, directions concatenated) are exactly zero now."""
    if isinstance(prox, L1Prox):
        return [(p.detach() == 0).reshape(-1).cpu() for p in prox.params]
    return [torch.cat([z.cpu() for z in per_dir]) for per_dir in prox.zero_units()]


def _pruned_masks(pruner) -> list[torch.Tensor]:
    if isinstance(pruner, ScoredUnitPruner):
        return [torch.cat(per_dir).clone() for per_dir in pruner.pruned]
    return [m.cpu().clone() for m in pruner.pruned]


def _dirs(pruner, i: int) -> int:
    return len(pruner.pruned[i]) if isinstance(pruner, ScoredUnitPruner) else 1


def _pruned_counts(pruner) -> np.ndarray:
    if isinstance(pruner, ScoredUnitPruner):
        return np.array([int(per_dir[0].sum()) for per_dir in pruner.pruned], dtype=np.int64)
    return np.array([int(m.sum()) for m in pruner.pruned], dtype=np.int64)


def _bits(env, bits, names: list[str], method: str | None) -> tuple[np.ndarray | None, str]:
    """Per-layer bit-widths (or ``None``: no quantization) and the quantization method."""
    quantizing_env = env is not None and bool(env.quantize)
    if method is None:
        method = env.kind.method if quantizing_env else "linear"
    method = check_method(method)
    if bits is None and quantizing_env:
        bits = env.bit_allocation
        if bits is None:
            raise ValueError("the env quantizes: pass `bits` (layer name -> bit-width) or finish an episode first")
    if bits is None:
        return None, method
    if env is not None and env.granularity != "unstructured":
        raise ValueError("`bits` needs granularity='unstructured' (bit-widths are chosen per weight tensor)")
    if is_int(bits):
        bits = {n: int(bits) for n in names}
    if not isinstance(bits, Mapping):
        raise ValueError(f"`bits` must be a dict of layer name -> bit-width or an int, got {type(bits).__name__}")
    return bits_array(dict(bits), names), method


def _progress(steps: int, show: bool):
    if not show or not steps:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc="gradual pruning", leave=False)
