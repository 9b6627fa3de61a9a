"""Shared arithmetic of the heuristic agents: turning per-weight or per-layer scores into target-meeting counts."""

from __future__ import annotations

from typing import Any

import numpy as np

from prune_env.checks import check_number
from prune_env.pruning.rules import density_counts, global_threshold_counts

__all__ = ["allocation_of", "caps", "density_counts", "global_threshold_counts", "target_of", "total_count"]


def target_of(env: Any, sparsity: float | None) -> float:
    """The overall sparsity a heuristic aims at: the env's target, or ``sparsity`` in penalty mode.

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
    from prune_env.pruning import allocation as B
    return B.target_count(target, env.unwrapped.numels)


def caps(env: Any) -> np.ndarray:
    """The most weights (units) each layer may lose: the env's caps (``max_sparsity``; a recurrent layer keeps one
    hidden unit)."""
    return env.unwrapped.cap


def allocation_of(env: Any, counts: np.ndarray) -> dict[str, float]:
    """Layer name -> sparsity for per-layer pruned counts."""
    base = env.unwrapped
    return {n: float(c / m) for n, c, m in zip(base.layer_names, counts, base.numels)}
