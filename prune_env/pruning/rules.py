"""One-shot allocation arithmetic shared by the env's observations and the rule-based agents.

LAMP (Lee et al., ICLR 2021) scores each weight ``w_u^2 / sum_{v >= u} w_v^2`` over its layer's weights sorted by
magnitude; pruning the globally lowest scores gives a layer-adaptive allocation. The zoo observation carries each
layer's LAMP sparsity at the episode's target (:mod:`prune_env.envs.zoo`), so a learned policy starts from the
strongest one-shot rule we measured and learns how to depart from it; the ``lamp`` agent (:mod:`agents.rules.lamp`) is
the same arithmetic. The observation also carries the allocations of ERK, global magnitude and a loss-aware rule
(:func:`obd_counts`), all computed here without an evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["density_counts", "erk_counts", "erk_weights", "global_magnitude_counts", "global_threshold_counts",
           "lamp_counts", "lamp_scores", "obd_counts"]


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


def _global_order(scores: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Layer index of every weight in ascending global score order, and its rank within its own layer."""
    flat = np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1) for s in scores])
    lid = np.concatenate([np.full(np.asarray(s).size, i) for i, s in enumerate(scores)])
    lid = lid[np.argsort(flat, kind="stable")]
    rank = np.empty_like(lid)
    for i in range(len(scores)):
        where = lid == i
        rank[where] = np.arange(int(where.sum()))
    return lid, rank


def _take(lid: np.ndarray, rank: np.ndarray, total: int, cap: np.ndarray, n: int) -> np.ndarray:
    taken = lid[rank < np.asarray(cap)[lid]][:total]
    return np.bincount(taken, minlength=n).astype(np.int64)


def global_threshold_counts(scores: Sequence[np.ndarray], total: int, cap: np.ndarray) -> np.ndarray:
    """Per-layer counts of pruning the ``total`` lowest-scored weights of the whole model, no layer past its cap.

    Exactly the greedy rule "take the globally smallest score whose layer still has room": a layer that reaches
    its cap keeps its remaining weights and the threshold moves on through the other layers.

    :param scores: per layer, one importance score per weight (flattened).
    :param total: weights to prune in all.
    :param cap: most weights each layer may lose.
    """
    lid, rank = _global_order(scores)
    return _take(lid, rank, total, cap, len(scores))


def lamp_counts(analysis, total: int, cap: np.ndarray) -> np.ndarray:
    """Per-layer pruned counts of LAMP on an :class:`~prune_env.pruning.analysis.Analysis` (unstructured), meeting
    ``total``.

    The global LAMP order is computed once per analysis and kept with it; each call is then one pass.
    """
    lid, rank = _memo_order(analysis, "lamp_order", lambda: [lamp_scores(w.numpy()) for w in analysis.dense])
    return _take(lid, rank, total, cap, len(analysis.dense))


def _memo_order(analysis, key, scores):
    return analysis.cached(key, lambda: _global_order(scores()))


def global_magnitude_counts(analysis, total: int, cap: np.ndarray) -> np.ndarray:
    """Per-layer pruned counts of one global ``|w|`` threshold over the whole model (order kept with the analysis)."""
    lid, rank = _memo_order(analysis, "global_order", lambda: [w.abs().numpy() for w in analysis.dense])
    return _take(lid, rank, total, cap, len(analysis.dense))


def obd_counts(analysis, task, total: int, cap: np.ndarray) -> np.ndarray:
    """Per-layer pruned counts of one global threshold on the Optimal Brain Damage cost ``0.5 * F * w**2``
    (:func:`prune_env.pruning.fisher.obd_costs`; training batches only, no evaluation).

    Each layer's costs are read in the env's prune order and made non-decreasing along it (a running maximum), so a
    layer's count is the longest prefix whose marginal cost stays under the threshold.
    """
    from prune_env.pruning.fisher import obd_costs

    lid, rank = _memo_order(analysis, "obd_order",
                            lambda: [np.maximum.accumulate(c) for c in obd_costs(analysis, task)])
    return _take(lid, rank, total, cap, len(analysis.dense))


def erk_weights(shapes: Sequence[tuple[int, ...]]) -> np.ndarray:
    """The unscaled ERK densities ``sum(shape) / prod(shape)`` (``(fan_in + fan_out) / (fan_in * fan_out)`` in 2-D).

    >>> erk_weights([(4, 4), (2, 8)]).tolist()
    [0.5, 0.625]
    """
    return np.array([sum(s) / float(np.prod(s)) for s in shapes], dtype=np.float64)


def erk_counts(analysis, total: int, cap: np.ndarray) -> np.ndarray:
    """Per-layer pruned counts of ERK (Evci et al. 2020) meeting ``total``; see :mod:`agents.rules.erk`."""
    return density_counts(erk_weights([layer.shape for layer in analysis.layers]), analysis.numels, total, cap)


def density_counts(weights: np.ndarray, numels: np.ndarray, total: int, cap: np.ndarray) -> np.ndarray:
    """Counts whose kept fraction is proportional to ``weights`` (clipped to each layer's range), meeting ``total``.

    Solves ``sum_i n_i * clip(c * w_i, 1 - cap_i / n_i, 1) = N - total`` for ``c`` by bisection, then rounds with
    the env's own largest-remainder rule (via :func:`prune_env.pruning.allocation.project_to_budget`).

    :param weights: positive per-layer density weights (larger: keep more).
    :param numels: weights per layer.
    :param total: weights to prune in all.
    :param cap: most weights each layer may lose.
    """
    from prune_env.pruning import allocation as B
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.max()
    floor = 1.0 - cap / numels
    keep = float(numels.sum() - total)
    lo, hi = 0.0, 1.0 / max(float(w.min()), 1e-12)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if (np.clip(mid * w, floor, 1.0) * numels).sum() < keep:
            lo = mid
        else:
            hi = mid
    sparsities = 1.0 - np.clip(hi * w, floor, 1.0)
    return B.project_to_budget(sparsities, numels, total, cap)
