"""Turning requested per-layer sparsities into exact pruned counts that meet an overall target sparsity.

Joint mode projects the whole request onto the target; sequential mode caps each action with AMC's "action
wall" so that the layers still to come can always meet the target. Both end at exactly ``round(target * N)``
pruned weights, where ``N`` is the number of prunable weights.
"""

from __future__ import annotations

import numpy as np

from prune_env.checks import check_number


def caps(numels: np.ndarray, max_sparsity: float) -> np.ndarray:
    """The most weights each layer may lose."""
    return np.floor(max_sparsity * numels + 1e-9).astype(np.int64)


def target_count(target_sparsity: float, numels: np.ndarray) -> int:
    """Total weights to prune for ``target_sparsity``."""
    return int(target_sparsity * int(numels.sum()) + 0.5)


def counts_from_sparsities(sparsities: np.ndarray, numels: np.ndarray) -> np.ndarray:
    """Round each layer's requested sparsity to a weight count (penalty mode: no target)."""
    return np.minimum(numels, np.floor(sparsities * numels + 0.5)).astype(np.int64)


def project_to_target(sparsities: np.ndarray, numels: np.ndarray, total: int, cap: np.ndarray) -> np.ndarray:
    """The allocation closest to the request that prunes exactly ``total`` weights.

    Finds the common shift ``lam`` such that ``sum_i n_i * clip(s_i + lam, 0, c_i / n_i) = total``, i.e. the
    projection of ``s`` onto the target set in the parameter-weighted Euclidean norm. The relative order of the
    request survives: a layer asked to be sparser stays sparser. The left side is piecewise linear and
    non-decreasing in ``lam`` with kinks at ``-s_i`` and ``c_i / n_i - s_i``, so ``lam`` is solved exactly on the
    segment between the two kinks that bracket ``total`` (no iterative search in the env's step). Fractional
    counts are then rounded by largest remainder so that the sum is exact.

    :param sparsities: requested per-layer sparsities.
    :param numels: weights per layer.
    :param total: weights to prune in all, ``0 <= total <= cap.sum()``.
    :param cap: most weights each layer may lose.

    Asked for sparsities 0.3 and 0.5 of layers of 100 and 300 weights under an overall target of 0.5, both layers
    move up by the same 0.05:

    >>> numels = np.array([100, 300])
    >>> project_to_target(np.array([0.3, 0.5]), numels, target_count(0.5, numels), caps(numels, 0.98))
    array([ 35, 165])
    """
    if total > int(cap.sum()):
        raise ValueError(f"a target of {total} pruned weights exceeds what `max_sparsity` allows ({int(cap.sum())})")
    upper = cap / numels
    real = np.clip(sparsities + _shift(sparsities, numels, upper, total), 0.0, upper) * numels
    counts = np.minimum(np.floor(real + 1e-9).astype(np.int64), cap)
    _fix_sum(counts, real - counts, total, cap)
    return counts


def _shift(sparsities: np.ndarray, numels: np.ndarray, upper: np.ndarray, total: int) -> float:
    """The smallest ``lam`` with ``sum_i n_i * clip(s_i + lam, 0, u_i) = total``, solved on its linear segment."""
    kinks = np.unique(np.concatenate([-sparsities, upper - sparsities]))
    pruned = (np.clip(sparsities[None, :] + kinks[:, None], 0.0, upper[None, :]) * numels[None, :]).sum(axis=1)
    j = int(np.searchsorted(pruned, total, side="left"))  # first kink at or past the total
    if j == 0:
        return float(kinks[0])
    if j == len(kinks):
        return float(kinks[-1])
    f0, f1 = pruned[j - 1], pruned[j]
    return float(kinks[j - 1] + (kinks[j] - kinks[j - 1]) * (total - f0) / (f1 - f0))


def _fix_sum(counts: np.ndarray, remainder: np.ndarray, total: int, cap: np.ndarray) -> None:
    """Adjust ``counts`` in place, one weight per layer per pass, until it sums to ``total``.

    Largest remainder first when short, smallest first when over, so rounding never moves more than one weight
    per layer (per pass) and the result stays as close as possible to the real-valued projection.
    """
    short = total - int(counts.sum())
    step = 1 if short > 0 else -1
    order = np.argsort(-remainder if short > 0 else remainder, kind="stable")
    while short != 0:
        moved = False
        for i in order:
            if short == 0:
                break
            if (counts[i] < cap[i]) if step > 0 else (counts[i] > 0):
                counts[i] += step
                short -= step
                moved = True
        if not moved:
            raise RuntimeError(f"cannot prune exactly {total} weights within the per-layer caps")


def action_wall(requested: int, layer: int, pruned_so_far: int, total: int, cap: np.ndarray) -> int:
    """AMC's action wall for sequential mode: cap layer ``layer``'s count so the target stays exactly reachable.

    The layer must prune at least what the later layers cannot absorb even at their caps, and at most what is
    still needed; the last layer therefore takes exactly the remainder.
    """
    rest = int(cap[layer + 1:].sum())
    need = total - pruned_so_far
    lo = max(0, need - rest)
    hi = min(int(cap[layer]), need)
    return int(min(max(requested, lo), hi))


def allocation_counts(allocation: dict[str, float], names: list[str], numels: np.ndarray) -> np.ndarray:
    """Pruned counts for an allocation dict layer name -> sparsity (missing layers stay dense; round half up).

    :raises ValueError: for a non-dict, an unknown layer name or a sparsity outside [0, 1].
    """
    if not isinstance(allocation, dict):
        raise ValueError(f"`allocation` must be a dict of layer name -> sparsity, got {type(allocation).__name__}")
    unknown = set(allocation) - set(names)
    if unknown:
        raise ValueError(f"`allocation` has unknown layers {sorted(unknown)}; layers: {names}")
    sparsities = [check_number(f"allocation[{n!r}]", allocation.get(n, 0.0), 0.0, 1.0) for n in names]
    return np.array([min(int(m), int(s * int(m) + 0.5)) for s, m in zip(sparsities, numels)], dtype=np.int64)


def episode_fractions(counts: np.ndarray, numels: np.ndarray, target: float | None, t: int,
                      sequential: bool) -> tuple[float, float, float, float]:
    """The observation's episode state: fraction of weights removed, fraction still needed for the target (0 in
    penalty mode), progress (sequential: ``t / layers``; joint: ``t``, 0 or 1) and the share of weights after the
    current layer (sequential; 0 in joint mode and after the last layer)."""
    total = int(numels.sum())
    removed = int(counts.sum())
    needed = max(0, target_count(target, numels) - removed) if target is not None else 0
    n = numels.size
    if not sequential:
        return removed / total, needed / total, float(t), 0.0
    return removed / total, needed / total, t / n, (float(numels[t + 1:].sum() / total) if t < n else 0.0)


#: Former names, kept as aliases for one release.
budget_count = target_count
project_to_budget = project_to_target
