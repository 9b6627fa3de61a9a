"""``global``: global magnitude pruning, one ``|w|`` threshold across all layers. One evaluation.

The threshold is the one that removes exactly the target's number of weights. A layer that would lose more than
the env's ``max_sparsity`` is held at that cap, and the threshold keeps rising through the other layers until the
target is met (the greedy rule "prune the globally smallest weight whose layer still has room"). So the result
always meets the target and the cap; what it gives up is pruning the capped layer further. The counts are then
submitted to the env, whose projection leaves an allocation that already meets the target unchanged.
"""

from __future__ import annotations

from typing import Any

from agents.core.cap import EvalCap, submit
from agents.registry import AgentSpec
from agents.rules.shared import allocation_of, caps, target_of, total_count
from prune_env.pruning.rules import global_magnitude_counts

SPEC = AgentSpec(name="global", run="agents.rules.global_magnitude:run", evals=1, deterministic=True, batching=False,
                 description="one |w| threshold across all layers, capped at max_sparsity (1 evaluation)",
                 granularities=("unstructured",), rival_order=3)


def run(env: EvalCap, seed: int, sparsity: float | None = None) -> dict[str, Any]:
    """Prune the globally smallest ``|w|`` to the target sparsity.

    :param env: the capped env (:class:`~agents.core.cap.EvalCap`).
    :param seed: unused (deterministic).
    :param sparsity: the sparsity in penalty mode; must be omitted or equal to the env's target otherwise.
    """
    base = env.unwrapped
    if base.analysis.plan is not None:
        raise ValueError("agent 'global' thresholds weights; use unstructured granularity (or 'uniform', 'gradient', "
                         "'random', 'reinforce' for hidden units)")
    target = target_of(env, sparsity)
    counts = global_magnitude_counts(base.analysis, total_count(env, target), caps(env))
    capped = [n for n, c, k in zip(base.layer_names, counts, caps(env)) if c == k and k > 0]
    submit(env, allocation_of(env, counts))
    return {"capped_layers": capped}
