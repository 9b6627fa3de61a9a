"""Pruning schedules of gradual pruning: Zhu & Gupta's (2017) cubic ramp of pruned counts, and the learning-rate
factor of the ``"cosine"`` schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from prune_env.checks import check_int, check_number


def round_half_up(x: np.ndarray) -> np.ndarray:
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
    k_i = np.minimum(final, round_half_up(s_i * numels))
    steps = list(range(start, end, frequency)) + [end]
    out: dict[int, np.ndarray] = {}
    for t in steps:
        remaining = 0.0 if end == start else (1.0 - (t - start) / (end - start)) ** 3
        out[t] = final if t == end else np.minimum(final, round_half_up(final + (k_i - final) * remaining))
    return out


def cosine_factor(t: int, end: int, steps: int) -> float:
    """The ``"cosine"`` learning-rate factor of step ``t`` (0-based): 1 up to ``end``, then half a cosine to 0 at
    ``steps`` (the last step trains at a small positive rate)."""
    if t < end or steps <= end:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (t - end) / (steps - end)))
