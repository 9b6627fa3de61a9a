"""``random``: random search over allocations; keeps the best on validation.

Each candidate is an action drawn uniformly from the env's action space (every layer's requested sparsity uniform
in ``[0, max_sparsity]``), which the env projects onto the target (joint mode) or walls in (sequential mode).
Draws come from a generator seeded by ``seed``, so the same seed gives the same candidates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.core.cap import EvalCap
from agents.registry import AgentSpec

SPEC = AgentSpec(name="random", run="agents.searchers.random_search:run", evals=None, deterministic=False,
                 batching=True, description="random allocations projected onto the target; best on validation")


def run(env: EvalCap, seed: int) -> dict[str, Any]:
    """Score random allocations until the evaluation cap is reached.

    :param env: the capped env (:class:`~agents.core.cap.EvalCap`).
    :param seed: seeds the candidate draws.
    """
    rng = np.random.default_rng(seed)
    shape = env.action_space.shape
    if env.unwrapped.mode == "joint":
        # Row by row the same draws as one at a time, so the result does not depend on `vector_envs`.
        while not env.exhausted:
            n = min(max(1, env.vector_envs), env.remaining)
            env.evaluate_actions(rng.uniform(-1.0, 1.0, (n, *shape)).astype(np.float32))
        return {}
    while not env.exhausted:
        env.reset()
        terminated = truncated = False
        while not (terminated or truncated):
            _, _, terminated, truncated, _ = env.step(rng.uniform(-1.0, 1.0, shape).astype(np.float32))
    return {}
