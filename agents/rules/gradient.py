"""``gradient``: the gradient-magnitude baseline. No learning; one evaluation.

Two variants, both driven by the gradient of ``task.loss`` on the dense model (the env computes it once):

- ``"layer"`` (default): each layer keeps a fraction of its weights proportional to ``mean|g| ** beta``, so a layer
  whose weights barely move the loss is pruned harder; the constant is set so the total meets the target, with
  every layer kept within ``[0, max_sparsity]``. ``beta = 0`` is uniform pruning.
- ``"global"``: one ``|g|`` threshold across all layers (as :mod:`agents.rules.global_magnitude` does with ``|w|``),
  layers capped at ``max_sparsity``.

Within a layer the env's own ``criterion`` still decides which weights go.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.core.cap import EvalCap, submit
from agents.registry import AgentSpec
from agents.rules.shared import allocation_of, caps, density_counts, global_threshold_counts, target_of, total_count
from prune_env.checks import check_choice, check_number

VARIANTS = ("layer", "global")

SPEC = AgentSpec(name="gradient", run="agents.rules.gradient:run", evals=1, deterministic=True, batching=False,
                 description="layers with small mean |g| pruned harder; variant='global' for one |g| threshold "
                             "(1 evaluation)",
                 needs_loss=True)


def run(env: EvalCap, seed: int, variant: str = "layer", beta: float = 1.0,
        sparsity: float | None = None) -> dict[str, Any]:
    """Allocate sparsity from gradient magnitudes and submit it.

    :param env: the capped env (:class:`~agents.core.cap.EvalCap`); its task needs ``loss``.
    :param seed: unused (deterministic).
    :param variant: ``"layer"`` (per-layer mean ``|g|``) or ``"global"`` (one ``|g|`` threshold).
    :param beta: strength of the per-layer rule, ``>= 0`` (0: uniform).
    :param sparsity: the sparsity in penalty mode; must be omitted or equal to the env's target otherwise.
    """
    base = env.unwrapped
    check_choice("variant", variant, VARIANTS)
    check_number("beta", beta, 0.0)
    if base.task.loss is None:
        raise ValueError("agent 'gradient' needs gradients: give the task a `loss(model) -> Tensor`")
    total = total_count(env, target_of(env, sparsity))
    if variant == "layer":
        g = np.array([s["grad_mean"] for s in base.layer_stats], dtype=np.float64)
        counts = density_counts(np.maximum(g, 1e-30) ** float(beta), base.numels, total, caps(env))
    else:
        if base.analysis.plan is not None:
            raise ValueError("gradient variant='global' thresholds weights; use variant='layer' with hidden units")
        grads = base.analysis.grads  # computed once per model by the env's analysis
        scores = [grads[n].abs().reshape(-1).numpy() for n in base.layer_names]
        counts = global_threshold_counts(scores, total, caps(env))
    submit(env, allocation_of(env, counts))
    return {"variant": variant}
