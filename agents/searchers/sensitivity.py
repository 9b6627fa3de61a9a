"""``sensitivity``: the classical per-layer sensitivity scan (Distiller's ``sensitivity_analysis``), then a sweep.

1. **Scan.** Each layer alone is pruned to each sparsity of a grid, the rest of the model dense, and scored on
   validation: ``L * G`` evaluations. The env runs these in penalty mode (its target is switched off for the
   scan and restored after), so they count against the evaluation cap but are never returned as the result.
2. **Allocate.** For a tolerated score drop ``t``, every layer takes the largest sparsity whose scanned drop is at
   most ``t`` (linear between grid points, drops made monotone). The smallest ``t`` that meets the target is found
   by bisection: that is Distiller's "prune each layer as far as it tolerates" rule, fitted to a target.
3. **Sweep.** The remaining evaluations (up to ``len(FACTORS)``) try ``t`` scaled by a few factors (the env
   projects each request onto the target), and the best on validation wins.

With ``grid`` points per layer the scan needs ``L * grid`` evaluations; under a small evaluation cap the grid shrinks
to fit and at least one evaluation is kept for the sweep. With fewer than ``L + 1`` evaluations there is no room to
scan, and the agent submits the uniform allocation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.core.cap import EvalCap, submit
from agents.registry import AgentSpec
from agents.rules.shared import target_of, total_count
from prune_env.checks import check_int

SPEC = AgentSpec(name="sensitivity", run="agents.searchers.sensitivity:run", evals=None, deterministic=True,
                 batching=False, description="Distiller-style per-layer sensitivity scan, then a tolerance sweep")

#: Tolerance multipliers tried in the sweep, best guess first; a larger cap also tries a finer geometric grid.
FACTORS = (1.0, 0.5, 1.5, 0.75, 2.0, 3.0, 0.25, 5.0, *np.geomspace(0.1, 10.0, 25).round(4).tolist())


def run(env: EvalCap, seed: int, grid: int = 10, sparsity: float | None = None) -> dict[str, Any]:
    """Scan per-layer sensitivities, then sweep tolerances with the remaining evaluations.

    :param env: the capped env (:class:`~agents.core.cap.EvalCap`).
    :param seed: unused (deterministic).
    :param grid: sparsities per layer in the scan, evenly spaced in ``(0, max_sparsity]``.
    :param sparsity: the sparsity in penalty mode; must be omitted or equal to the env's target otherwise.
    """
    check_int("grid", grid, 1)
    base = env.unwrapped
    target = target_of(env, sparsity)
    n_layers = base.num_layers
    sweep = min(8, max(1, env.remaining // 10))
    g = min(grid, (env.remaining - sweep) // n_layers)
    if g < 1:
        submit(env, {n: target for n in base.layer_names})
        return {"scanned": False}
    levels = np.linspace(0.0, base.max_sparsity, g + 1)[1:]
    drops = _scan(env, levels, base.target_sparsity)
    total = total_count(env, target)
    t_star = _fit_tolerance(drops, levels, base.numels, total)
    tried = []
    for f in FACTORS:
        if env.exhausted:
            break
        alloc = _allocation(drops, levels, t_star * f)
        submit(env, dict(zip(base.layer_names, alloc)))
        tried.append(f)
    return {"levels": levels.tolist(), "drops": drops.tolist(), "tolerance": t_star, "factors_tried": tried}


def _scan(env: EvalCap, levels: np.ndarray, target: float | None) -> np.ndarray:
    """Score drop of each layer pruned alone to each level, ``(L, G)``, made non-decreasing in the level."""
    base = env.unwrapped
    drops = np.zeros((base.num_layers, len(levels)))
    env.reset(options={"target_sparsity": None})
    try:
        for i, name in enumerate(base.layer_names):
            for j, s in enumerate(levels):
                _, info = submit(env, {name: float(s)})
                drops[i, j] = base.dense_score - info["score"]
    finally:
        env.reset(options={"target_sparsity": target})
    return np.maximum.accumulate(np.maximum(drops, 0.0), axis=1)


def _allocation(drops: np.ndarray, levels: np.ndarray, tol: float) -> np.ndarray:
    """Per layer, the largest sparsity whose drop is at most ``tol`` (interpolated between grid points)."""
    xs = np.concatenate([[0.0], levels])
    out = np.zeros(drops.shape[0])
    for i, row in enumerate(drops):
        ys = np.concatenate([[0.0], row])
        ok = np.nonzero(ys <= tol)[0]
        k = int(ok[-1])
        if k + 1 < len(xs) and ys[k + 1] > ys[k]:
            frac = (tol - ys[k]) / (ys[k + 1] - ys[k])
            out[i] = xs[k] + frac * (xs[k + 1] - xs[k])
        else:
            out[i] = xs[k]
    return out


def _fit_tolerance(drops: np.ndarray, levels: np.ndarray, numels: np.ndarray, total: int) -> float:
    """The smallest tolerance whose allocation prunes at least ``total`` weights (the largest drop if none does)."""
    lo, hi = 0.0, float(drops.max()) + 1e-9
    if (_allocation(drops, levels, hi) * numels).sum() < total:
        return hi
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if (_allocation(drops, levels, mid) * numels).sum() >= total:
            hi = mid
        else:
            lo = mid
    return hi
