"""``uniform``: the same sparsity in every layer. One evaluation."""

from __future__ import annotations

from typing import Any

from agents.core.cap import EvalCap, submit
from agents.registry import AgentSpec
from agents.rules.shared import target_of

SPEC = AgentSpec(name="uniform", run="agents.rules.uniform:run", evals=1, deterministic=True, batching=False,
                 description="the target sparsity in every layer (1 evaluation)")


def run(env: EvalCap, seed: int, sparsity: float | None = None) -> dict[str, Any]:
    """Prune every layer to the target sparsity.

    Layers are rounded to whole weights, so the overall sparsity can differ from the target by a few weights; in
    budget mode the env's projection fixes that by largest remainder.

    :param env: the capped env (:class:`~agents.core.cap.EvalCap`).
    :param seed: unused (deterministic).
    :param sparsity: the sparsity in penalty mode; must be omitted or equal to the env's target otherwise.
    """
    target = target_of(env, sparsity)
    submit(env, {name: target for name in env.unwrapped.layer_names})
    return {}
