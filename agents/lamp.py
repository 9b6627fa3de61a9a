"""``lamp``: layer-adaptive magnitude-based pruning (LAMP; Lee et al., "Layer-adaptive sparsity for the
magnitude-based pruning", ICLR 2021). No learning; one evaluation.

Within each layer the weights are sorted by ``|w|`` ascending (ties stable by index), and weight ``u`` scores

    ``w_u^2 / sum_{v >= u} w_v^2``

over the weights at or after ``u`` in that order (``u`` itself and every larger one). The score rescales each
layer's magnitudes by what is left of the layer, so a layer's largest weight always scores 1 and no layer is
emptied by a global threshold the way plain global magnitude pruning can. One global threshold over all layers'
scores then removes exactly the budget's number of weights; a layer that reaches the env's ``max_sparsity`` cap
keeps its remaining weights and the threshold moves on through the other layers (the greedy rule of
:mod:`agents.global_magnitude`). The scores are monotone in ``|w|`` within a layer, so with the env's default
``"magnitude"`` criterion the env prunes exactly the weights LAMP ranks lowest.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._alloc import allocation_of, caps, global_threshold_counts, target_of, total_count
from .eval_budget import EvalCap, submit


def lamp_scores(weights: np.ndarray) -> np.ndarray:
    """LAMP scores of one layer's weights, in the weights' own (flat) order.

    >>> lamp_scores(np.array([3.0, -1.0, 2.0])).round(4).tolist()   # sorted 1, 2, 3: 1/14, 4/13, 9/9
    [1.0, 0.0714, 0.3077]

    :param weights: the layer's weights (any shape; flattened).
    :returns: one score per weight, flat; 0 for a layer of zeros.
    """
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    order = np.argsort(np.abs(w), kind="stable")
    sq = w[order] ** 2
    rest = np.cumsum(sq[::-1])[::-1]  # sum of the weight's own square and those of every larger weight
    sorted_scores = np.divide(sq, rest, out=np.zeros_like(sq), where=rest > 0)
    scores = np.empty_like(sorted_scores)
    scores[order] = sorted_scores
    return scores


def run(env: EvalCap, seed: int, sparsity: float | None = None) -> dict[str, Any]:
    """Prune the globally lowest LAMP scores to the target sparsity.

    :param env: the capped env (:class:`~agents.eval_budget.EvalCap`); unstructured granularity.
    :param seed: unused (deterministic).
    :param sparsity: the sparsity in penalty mode; must be omitted or equal to the env's target otherwise.
    :raises ValueError: at ``granularity="hidden_unit"`` (LAMP ranks single weights).
    """
    base = env.unwrapped
    if base.analysis.plan is not None:
        raise ValueError("lamp/erk rank weights; use unstructured granularity (agent 'lamp')")
    target = target_of(env, sparsity)
    scores = [lamp_scores(w.numpy()) for w in base.analysis.dense]  # each action layer's flat dense weight
    counts = global_threshold_counts(scores, total_count(env, target), caps(env))
    capped = [n for n, c, k in zip(base.layer_names, counts, caps(env)) if c == k and k > 0]
    submit(env, allocation_of(env, counts))
    return {"capped_layers": capped}
