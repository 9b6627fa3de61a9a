"""``obd``: a loss-aware one-shot allocation from Optimal Brain Damage costs (LeCun et al., "Optimal Brain Damage",
NeurIPS 1989). No learning; one evaluation.

Zeroing weight ``i`` of a trained model raises the loss by about ``0.5 * F_i * w_i**2``, with ``F_i`` the diagonal
Fisher information, estimated as the mean squared gradient over 8 training batches (:mod:`prune_env.pruning.fisher`; the
task's ``train_loss``, or its fixed ``loss`` batch). Each layer's costs are read in the env's own prune order and
made non-decreasing along it, and one global threshold removes exactly the target's number of weights, no layer
past its cap (the greedy rule of :mod:`agents.rules.global_magnitude`). Only the allocation comes from the costs: within
a layer the env's ``criterion`` still decides which weights go. The validation split is never read before the one
evaluation. The zoo observation carries the same allocation (:func:`prune_env.envs.zoo.rule_columns`).
"""

from __future__ import annotations

from typing import Any

from agents.core.cap import EvalCap, submit
from agents.registry import AgentSpec
from agents.rules.shared import allocation_of, caps, target_of, total_count
from prune_env.pruning.fisher import has_loss
from prune_env.pruning.rules import obd_counts

SPEC = AgentSpec(name="obd", run="agents.rules.obd:run", evals=1, deterministic=True, batching=False,
                 description="Optimal Brain Damage: one threshold on 0.5*F*w^2, F from training-batch gradients, "
                             "capped (1 evaluation)",
                 needs_loss=True, granularities=("unstructured",), rival_order=4)


def run(env: EvalCap, seed: int, sparsity: float | None = None) -> dict[str, Any]:
    """Prune the globally cheapest weights by OBD cost to the target sparsity.

    :param env: the capped env (:class:`~agents.core.cap.EvalCap`); unstructured granularity.
    :param seed: unused (deterministic; the Fisher batches have a fixed seed).
    :param sparsity: the sparsity in penalty mode; must be omitted or equal to the env's target otherwise.
    :raises ValueError: at ``granularity="hidden_unit"``, or for a task with neither ``train_loss`` nor ``loss``.
    """
    base = env.unwrapped
    if base.analysis.plan is not None:
        raise ValueError("agent 'obd' ranks weights; use unstructured granularity")
    if not has_loss(base.task):
        raise ValueError("agent 'obd' needs a task with `train_loss(model, generator)` or `loss(model)` for its "
                         "Fisher estimate")
    target = target_of(env, sparsity)
    counts = obd_counts(base.analysis, base.task, total_count(env, target), caps(env))
    capped = [n for n, c, k in zip(base.layer_names, counts, caps(env)) if c == k and k > 0]
    submit(env, allocation_of(env, counts))
    return {"capped_layers": capped}
