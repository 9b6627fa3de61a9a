"""Shared arithmetic of the heuristic agents: turning per-weight or per-layer scores into budget-meeting counts."""

from __future__ import annotations

from typing import Any

import numpy as np

from prune_env.checks import check_number
from prune_env.rules import global_threshold_counts

__all__ = ["allocation_of", "caps", "density_counts", "global_threshold_counts", "target_of", "total_count"]


def target_of(env: Any, sparsity: float | None) -> float:
    """The overall sparsity a heuristic aims at: the env's budget, or ``sparsity`` in penalty mode.

    :param env: the (wrapped) env.
    :param sparsity: the caller's sparsity, required when the env has no ``target_sparsity``.
    :raises ValueError: when neither is given, or they disagree.
    """
    target = env.unwrapped.target_sparsity
    if target is None:
        if sparsity is None:
            raise ValueError("the env has no `target_sparsity` (penalty mode): pass `sparsity=` to this agent")
        target = sparsity
    elif sparsity is not None and abs(sparsity - target) > 1e-12:
        raise ValueError(f"`sparsity`={sparsity} differs from the env's target_sparsity={target}; omit it")
    return check_number("sparsity", target, 0.0, 1.0, high_open=True)


def total_count(env: Any, target: float) -> int:
    """Weights to prune for ``target`` (the env's own rounding)."""
    from prune_env import budget as B

    return B.budget_count(target, env.unwrapped.numels)


def caps(env: Any) -> np.ndarray:
    """The most weights (units) each layer may lose: the env's caps (``max_sparsity``; a recurrent layer keeps one
    hidden unit)."""
    return env.unwrapped.cap


def density_counts(weights: np.ndarray, numels: np.ndarray, total: int, cap: np.ndarray) -> np.ndarray:
    """Counts whose kept fraction is proportional to ``weights`` (clipped to each layer's range), meeting ``total``.

    Solves ``sum_i n_i * clip(c * w_i, 1 - cap_i / n_i, 1) = N - total`` for ``c`` by bisection, then rounds with
    the env's own largest-remainder rule (via :func:`prune_env.budget.project_to_budget`).

    :param weights: positive per-layer density weights (larger: keep more).
    :param numels: weights per layer.
    :param total: weights to prune in all.
    :param cap: most weights each layer may lose.
    """
    from prune_env import budget as B

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


def allocation_of(env: Any, counts: np.ndarray) -> dict[str, float]:
    """Layer name -> sparsity for per-layer pruned counts."""
    base = env.unwrapped
    return {n: float(c / m) for n, c, m in zip(base.layer_names, counts, base.numels)}
