"""Gradual pruning with fine-tuning (Zhu & Gupta, 2017, "To prune, or not to prune"), for any allocation.

:func:`gradual_prune` prunes a copy of the task's model step by step while it trains, each layer ramping to its own
final sparsity on the cubic schedule

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3``  for ``t`` in ``{t0, t0 + dt, ..., t0 + n * dt}``

(``t0 = start``, ``dt = frequency``, ``t0 + n * dt = end``; see :func:`cubic_schedule`). Between pruning steps the
masks are fixed: gradients of pruned weights are zeroed before the optimizer step (so Adam's moments never move
them), the weights are re-masked after it, and the optimizer state of newly pruned weights is cleared. A pruned
weight is never revived: the mask only shrinks.

- ``unstructured`` with the ``magnitude`` criterion: each pruning step removes the lowest-``|w|`` live weights of
  the *current* (fine-tuned) weights of each layer. Other criteria follow the env's fixed prune order
  (``env.analysis.orders``, ranked on the dense model).
- ``hidden_unit``: each layer (a stacked recurrent layer) ramps the number of removed hidden units, in the env's
  unit order; the result is the physically smaller model (:meth:`prune_env.pruning.kinds.HiddenUnit.materialize`).
- quantized (``env.quantize`` or ``bits``): after the ramp, the last ``qat_fraction`` of the steps train with
  straight-through rounding (the forward pass sees ``quantize(w)``, the gradient reaches ``w`` unchanged, i.e.
  ``w + (quantize(w) - w).detach()``); the returned model holds the quantized values.

Validation (``task.evaluate``) runs every ``eval_every`` steps, right after the last pruning step and at the end;
the best checkpoint is kept among the evaluations from the end of the ramp on (before it the model is not at the
target sparsity). Quantized runs score (and keep) the quantized weights.

>>> import prune_env
>>> env = prune_env.PruneRNNEnv("digits", target_sparsity=0.9, task_kwargs={"progress": False})
>>> result = gradual_prune(env, {name: 0.9 for name in env.layer_names}, steps=10, eval_every=5)
>>> result.step >= result.end, len(result.losses)
(True, 10)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from prune_env.checks import check_choice, check_int, check_number, is_int
from prune_env.compression.finetune import training_loss
from prune_env.compression.quantize import check_method, quantize
from prune_env.devices import autocast, model_device
from prune_env.envs.actions import bits_array
from prune_env.pruning import allocation as B
from prune_env.pruning.layers import find_prunable_layers, get_param, rnn_modules
from prune_env.task import RNNTask, split_score

__all__ = ["GradualResult", "OPTIMIZERS", "cubic_schedule", "gradual_prune"]

#: Optimizers :func:`gradual_prune` accepts.
OPTIMIZERS = ("adam", "sgd")
#: Learning-rate schedules of :func:`gradual_prune`.
LR_SCHEDULES = ("constant", "cosine")
#: Checkpoint selection criteria of :func:`gradual_prune`.
SELECT = ("score", "nll")


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
    :param schedule: pruning step -> layer name -> pruned weights (units for ``hidden_unit``) from that step on.
    :param counts: layer name -> final pruned weights (units).
    :param bits: layer name -> bit-width of a quantized run, else ``None``.
    :param info: the settings the run used (granularity, optimizer, lr, frequency, start, ``qat_start``, seed).
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


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def cubic_schedule(final_counts: Sequence[int], numels: Sequence[int], start: int, end: int, frequency: int,
                   initial_sparsity: float = 0.0) -> dict[int, np.ndarray]:
    """The pruned count of every layer at each pruning step of Zhu & Gupta's cubic schedule.

    The pruning steps are ``start, start + frequency, ...`` below ``end``, and ``end`` itself (so ``end - start``
    need not be a multiple of ``frequency``; when it is, these are exactly ``t0 + k * dt``, ``k = 0..n``). At step
    ``t`` layer ``i`` holds ``round_half_up(k_f + (k_i - k_f) * (1 - (t - start) / (end - start)) ** 3)`` pruned
    weights, the formula in counts: ``k_f`` is its final count and ``k_i = min(k_f, round_half_up(initial_sparsity *
    n_i))``. So every layer is at exactly its final count at ``end``, and counts never decrease.

    :param final_counts: final pruned weights (units) per layer, ``0 <= k_f <= n``.
    :param numels: weights (units) per layer.
    :param start: first pruning step, ``>= 0``.
    :param end: last pruning step, ``>= start``.
    :param frequency: steps between pruning steps, ``>= 1``.
    :param initial_sparsity: ``s_i``, the sparsity of the first pruning step (capped at each layer's final one).
    :returns: step -> int64 counts per layer, in step order.
    :raises ValueError: on a bad argument.

    >>> {t: c.tolist() for t, c in cubic_schedule([80, 8], [100, 10], 0, 30, 10).items()}
    {0: [0, 0], 10: [56, 6], 20: [77, 8], 30: [80, 8]}
    """
    start = check_int("start", start, 0)
    end = check_int("end", end, start)
    frequency = check_int("frequency", frequency, 1)
    s_i = check_number("initial_sparsity", initial_sparsity, 0.0, 1.0)
    numels = np.asarray(numels, dtype=np.int64)
    final = np.asarray(final_counts, dtype=np.int64)
    if final.shape != numels.shape or np.any(final < 0) or np.any(final > numels):
        raise ValueError(f"`final_counts` must give 0 <= count <= numel per layer, got {final.tolist()} for "
                         f"numels {numels.tolist()}")
    k_i = np.minimum(final, _round_half_up(s_i * numels))
    steps = list(range(start, end, frequency)) + [end]
    out: dict[int, np.ndarray] = {}
    for t in steps:
        remaining = 0.0 if end == start else (1.0 - (t - start) / (end - start)) ** 3
        out[t] = final if t == end else np.minimum(final, _round_half_up(final + (k_i - final) * remaining))
    return out


# ------------------------------------------------------------------------------------------------ pruners
class _WeightPruner:
    """Unstructured: each layer's mask is its pruned weights; by current magnitude or by a fixed order."""

    def __init__(self, model: nn.Module, layers, orders: Sequence[torch.Tensor] | None):
        self.layers = list(layers)
        self.params = [get_param(model, layer) for layer in self.layers]
        self.orders = None if orders is None else [o.to(p.device) for o, p in zip(orders, self.params)]
        self.pruned = [torch.zeros(p.numel(), dtype=torch.bool, device=p.device) for p in self.params]

    @torch.no_grad()
    def prune(self, counts: Sequence[int]) -> list[tuple[nn.Parameter, torch.Tensor]]:
        for i, (p, k) in enumerate(zip(self.params, counts)):
            k = int(k)
            if self.orders is not None:
                idx = self.orders[i][:k]
            else:
                # The k lowest |w| of the current weights; already-pruned weights rank first, so they stay pruned.
                score = p.detach().reshape(-1).abs().float().masked_fill(self.pruned[i], -1.0)
                idx = torch.argsort(score, stable=True)[:k]
            self.pruned[i][idx] = True
        return self.masks()

    def masks(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        return [(p, (~m).to(p.dtype).view_as(p)) for p, m in zip(self.params, self.pruned)]


class _UnitPruner:
    """Hidden units: a group's mask covers every parameter its removed units touch (biases included)."""

    def __init__(self, model: nn.Module, kind):
        self.kind = kind
        self.model = model
        self.named = dict(model.named_parameters())

    @torch.no_grad()
    def prune(self, counts: Sequence[int]) -> list[tuple[nn.Parameter, torch.Tensor]]:
        keep = self.kind.keep([int(k) for k in counts])
        masks = self.kind.plan.param_masks(keep, self.model)
        return [(self.named[n], m.to(self.named[n].device, self.named[n].dtype)) for n, m in masks.items()]


# ---------------------------------------------------------------------------------------------- the run
def gradual_prune(source, allocation: Mapping[str, float] | None = None, *, steps: int, start: int = 0,
                  end: int | None = None, frequency: int | None = None, initial_sparsity: float = 0.0,
                  lr: float = 1e-3, optimizer: str = "adam", momentum: float = 0.9, clip: float | None = 1.0,
                  eval_every: int | None = None, seed: int = 0, bits: Mapping[str, int] | int | None = None,
                  qat_fraction: float | None = None, method: str | None = None, lr_schedule: str = "constant",
                  select: str = "score", device: str | torch.device | None = None, progress: bool = False,
                  callback: Callable[[int, nn.Module], None] | None = None) -> GradualResult:
    """Prune a copy of the task's model gradually to ``allocation`` while fine-tuning it; keep the best checkpoint.

    :param source: a :class:`~prune_env.PruneRNNEnv` (its task, granularity, criterion, prune orders, quantization
        method and device) or an :class:`~prune_env.RNNTask` (unstructured, magnitude, on the model's device).
    :param allocation: layer name -> final sparsity (missing layers stay dense; counts round half up as in
        :func:`prune_env.pruning.allocation.allocation_counts`); default: the env's last episode (``env.allocation``). For
        ``hidden_unit`` the layers are the env's unit groups and every layer keeps at least one unit.
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
    :param bits: quantize: layer name -> bit-width (one of :data:`prune_env.compression.quantize.BITS`; missing layers 32) or one
        int for every layer; default: ``env.bit_allocation`` when the env quantizes, else no quantization.
    :param qat_fraction: quantized runs: the fraction of ``steps``, at the end, trained with straight-through
        rounding; it must begin at or after ``end``. Default: every step after ``end``.
    :param method: quantization method, ``"linear"`` or ``"kmeans"``; default the env's, else ``"linear"``.
    :param lr_schedule: ``"constant"`` (``lr`` throughout) or ``"cosine"`` (``lr`` during the ramp, then a cosine
        decay to 0 over the recovery steps after ``end``).
    :param select: which checkpoint to keep: ``"score"`` (highest validation score) or ``"nll"`` (lowest validation
        NLL, for language models whose figure of merit is perplexity; the task's ``evaluate`` must report ``nll``).
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
    schedule = cubic_schedule(final, numels, start, end, frequency, initial_sparsity)

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

    if granularity == "hidden_unit":
        pruner: Any = _UnitPruner(model, env.kind)
    else:
        weight_layers = list(env.layers) if env is not None else find_prunable_layers(model)
        fixed = env is not None and env.criterion != "magnitude"
        pruner = _WeightPruner(model, weight_layers, env.analysis.orders if fixed else None)
    quant_params = None if layer_bits is None else [
        (p, int(b)) for p, b in zip(pruner.params, layer_bits) if int(b) != 32]

    run = _Run(model, task, device, precision, lr, optimizer, momentum, clip, seed, quant_params, method, select)
    best: dict[str, Any] | None = None
    curve: list[tuple[int, float]] = []
    bar = _progress(steps, progress)
    try:
        for t in range(steps + 1):
            if t in schedule:
                run.set_masks(pruner.prune(schedule[t]))
            if t == end or (t > 0 and (t % eval_every == 0 or t == steps)):
                # From the end of the ramp on, a better score replaces the checkpoint (the first one always does).
                score, key, state = run.evaluate(t >= end, None if best is None else best["key"])
                curve.append((t, score))
                if state is not None:
                    best = {"score": score, "key": key, "step": t, "state": state}
            if t == steps:
                break
            if lr_schedule == "cosine":
                run.set_lr(lr * _cosine(t, end, steps))
            loss = run.train_step(straight_through=t >= qat_start)
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
    if granularity == "hidden_unit":
        result_model = env.kind.materialize(result_model, final, None, device)
    result_model.eval()
    _refresh(result_model)
    with autocast(device, precision):
        score, extras = split_score(_eval(task, result_model))
    result_model = result_model.to(model_device(task.model))
    _refresh(result_model)
    return GradualResult(
        model=result_model, score=score, extras=extras, step=best["step"], end=end, losses=run.losses, curve=curve,
        schedule={t: dict(zip(names, (int(k) for k in c))) for t, c in schedule.items()},
        counts=dict(zip(names, (int(k) for k in final))),
        bits=None if layer_bits is None else dict(zip(names, (int(b) for b in layer_bits))),
        info={"granularity": granularity, "optimizer": optimizer, "lr": lr, "lr_schedule": lr_schedule,
              "select": select, "frequency": frequency, "start": start,
              "qat_start": qat_start if layer_bits is not None else None, "seed": int(seed)})


def _cosine(t: int, end: int, steps: int) -> float:
    """The ``"cosine"`` learning-rate factor of step ``t`` (0-based): 1 up to ``end``, then half a cosine to 0 at
    ``steps`` (the last step trains at a small positive rate)."""
    if t < end or steps <= end:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (t - end) / (steps - end)))


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


def _refresh(model: nn.Module) -> None:
    for m in rnn_modules(model):
        m.flatten_parameters()


def _eval(task: RNNTask, model: nn.Module):
    with torch.no_grad():
        return task.evaluate(model)


class _Run:
    """The working model, its optimizer and its fixed masks."""

    def __init__(self, model, task, device, precision, lr, optimizer, momentum, clip, seed, quant_params, method,
                 select="score"):
        self.model, self.task, self.device, self.precision = model, task, device, precision
        self.clip, self.quant_params, self.method, self.select = clip, quant_params, method, select
        self.params = list(model.parameters())
        for p in self.params:
            p.requires_grad_(True)
        if optimizer == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(self.params, lr=lr)
        else:
            self.opt = torch.optim.SGD(self.params, lr=lr, momentum=momentum)
        self.generator = torch.Generator().manual_seed(int(seed))
        # Dropout draws from the global RNG: a private, seeded stream keeps runs reproducible without touching it.
        self.rng_state = self._seeded_rng_state(int(seed))
        self.masks: list[tuple[nn.Parameter, torch.Tensor]] = []
        self.losses: list[float] = []

    def _seeded_rng_state(self, seed: int):
        with torch.random.fork_rng(devices=self._rng_devices()):
            torch.manual_seed(seed)
            return self._get_rng()

    def _rng_devices(self) -> list[int]:
        return [self.device.index or 0] if self.device.type == "cuda" else []

    def _get_rng(self):
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda

    def _set_rng(self, state) -> None:
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], self.device)

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    @torch.no_grad()
    def set_masks(self, masks: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
        """Hold ``masks`` fixed from now on; zero the newly pruned weights and their optimizer state."""
        self.masks = masks
        for p, m in masks:
            p.mul_(m)
            for value in self.opt.state.get(p, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == p.shape:
                    value.mul_(m)
        _refresh(self.model)

    def train_step(self, straight_through: bool) -> float:
        model = self.model
        saved = self._swap_in_quantized() if straight_through else None
        model.train()  # cuDNN can only backpropagate through RNNs in training mode
        try:
            with torch.random.fork_rng(devices=self._rng_devices()):
                self._set_rng(self.rng_state)
                with torch.enable_grad():
                    loss = training_loss(model, self.task, self.generator)
                    self.opt.zero_grad(set_to_none=True)
                    loss.backward()
                self.rng_state = self._get_rng()
        finally:
            if saved is not None:  # straight-through: the gradient at quantize(w) updates the float weights w
                self._restore(saved)
        with torch.no_grad():
            for p, m in self.masks:
                if p.grad is not None:
                    p.grad.mul_(m)
            if self.clip is not None:
                torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        with torch.no_grad():
            for p, m in self.masks:
                p.mul_(m)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ValueError(f"the training loss became {value} at step {len(self.losses) + 1}; lower `lr`")
        self.losses.append(value)
        return value

    @torch.no_grad()
    def _swap_in_quantized(self) -> list[torch.Tensor] | None:
        if not self.quant_params:
            return None
        saved = []
        for p, b in self.quant_params:
            saved.append(p.detach().clone())
            p.copy_(quantize(p.detach(), b, self.method))
        _refresh(self.model)
        return saved

    @torch.no_grad()
    def _restore(self, saved: list[torch.Tensor]) -> None:
        for (p, _), w in zip(self.quant_params, saved):
            p.copy_(w)
        _refresh(self.model)

    def evaluate(self, candidate: bool, beat: float | None
                 ) -> tuple[float, float, dict[str, torch.Tensor] | None]:
        """Validation score of the current model (quantized, for quantized runs), its selection key (higher is
        better: the score, or minus the NLL), and for a ``candidate`` whose key beats ``beat`` (``None``: the first
        candidate) a copy of its state as scored."""
        saved = self._swap_in_quantized()
        self.model.eval()
        try:
            with autocast(self.device, self.precision):
                score, extras = split_score(_eval(self.task, self.model))
            if self.select == "nll" and "nll" not in extras:
                raise ValueError("`select`='nll' needs a task whose evaluate reports 'nll'; this one reports "
                                 f"{sorted(extras) or 'only a score'}")
            key = -extras["nll"] if self.select == "nll" else score
            keep = candidate and (beat is None or key > beat)
            state = {k: v.detach().clone() for k, v in self.model.state_dict().items()} if keep else None
        finally:
            if saved is not None:
                self._restore(saved)
        return score, key, state


