"""``lamp``: layer-adaptive magnitude-based pruning (LAMP; Lee et al., "Layer-adaptive sparsity for the
magnitude-based pruning", ICLR 2021). No learning; one evaluation.

Within each layer the weights are sorted by ``|w|`` ascending (ties stable by index), and weight ``u`` scores

    ``w_u^2 / sum_{v >= u} w_v^2``

over the weights at or after ``u`` in that order (``u`` itself and every larger one). The score rescales each
layer's magnitudes by what is left of the layer, so a layer's largest weight always scores 1 and no layer is
emptied by a global threshold the way plain global magnitude pruning can. One global threshold over all layers'
scores then removes exactly the target's number of weights; a layer that reaches the env's ``max_sparsity`` cap
keeps its remaining weights and the threshold moves on through the other layers (the greedy rule of
:mod:`agents.rules.global_magnitude`). The scores are monotone in ``|w|`` within a layer, so with the env's default
``"magnitude"`` criterion the env prunes exactly the weights LAMP ranks lowest.
"""

from __future__ import annotations

from typing import Any

from agents.core.cap import EvalCap, submit
from agents.registry import AgentSpec
from agents.rules.shared import allocation_of, caps, target_of, total_count
from prune_env.pruning.rules import lamp_counts, lamp_scores

SPEC = AgentSpec(name="lamp", run="agents.rules.lamp:run", evals=1, deterministic=True, batching=False,
                 description="LAMP (Lee et al. 2021): one threshold on layer-adaptive magnitude scores, capped "
                             "(1 evaluation)",
                 granularities=("unstructured",), rival_order=1)

__all__ = ["lamp_scores", "run"]  # lamp_scores lives in prune_env.pruning.rules (the zoo observation uses it too)


def run(env: EvalCap, seed: int, sparsity: float | None = None) -> dict[str, Any]:
    """Prune the globally lowest LAMP scores to the target sparsity.

    :param env: the capped env (:class:`~agents.core.cap.EvalCap`); unstructured granularity.
    :param seed: unused (deterministic).
    :param sparsity: the sparsity in penalty mode; must be omitted or equal to the env's target otherwise.
    :raises ValueError: at ``granularity="hidden_unit"`` (LAMP ranks single weights).
    """
    base = env.unwrapped
    if base.analysis.plan is not None:
        raise ValueError("lamp/erk rank weights; use unstructured granularity (agent 'lamp')")
    target = target_of(env, sparsity)
    counts = lamp_counts(base.analysis, total_count(env, target), caps(env))
    capped = [n for n, c, k in zip(base.layer_names, counts, caps(env)) if c == k and k > 0]
    submit(env, allocation_of(env, counts))
    return {"capped_layers": capped}
