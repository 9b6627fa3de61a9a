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
- ``criterion="movement"`` (unstructured): each pruning step removes the live weights of lowest movement score,
  ``-sum w * dL/dw`` accumulated over the fine-tuning steps (Sanh et al., 2020;
  :mod:`~prune_env.compression.gradual.movement`).
- ``regularizer="l1"`` (unstructured) or ``"group_lasso"`` (``hidden_unit``, over the ISS groups of Wen et al.,
  2018): a penalty applied by proximal steps after every optimizer step of the ramp drives weights or whole hidden
  units to exact zeros; each pruning step removes at least the schedule's count, what the penalty zeroed first
  (then the lowest current magnitudes or group norms), and locks in its other zeros, so the last one prunes to the
  final counts exactly (:mod:`~prune_env.compression.gradual.regularize`).
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

from prune_env.compression.gradual.regularize import REGULARIZERS, STRENGTH_SCHEDULES
from prune_env.compression.gradual.run import (
    CRITERIA,
    LR_SCHEDULES,
    OPTIMIZERS,
    SELECT,
    GradualResult,
    check_learned,
    gradual_prune,
)
from prune_env.compression.gradual.schedule import cubic_schedule

__all__ = ["CRITERIA", "GradualResult", "LR_SCHEDULES", "OPTIMIZERS", "REGULARIZERS", "SELECT", "STRENGTH_SCHEDULES",
           "check_learned", "cubic_schedule", "gradual_prune"]
