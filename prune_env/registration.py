"""Registration of the preset environments with Gymnasium (idempotent, string entry points)."""

from __future__ import annotations

import gymnasium as gym

ENV_IDS = {
    "PruneRNN-v0": {"task": "digits"},
    "PruneRNN-pydoc-v0": {"task": "pydoc-char"},
}


def register_envs() -> None:
    """Register every preset id once; safe to call again (importing ``prune_env`` calls it)."""
    for env_id, kwargs in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="prune_env.env:PruneRNNEnv", kwargs=dict(kwargs))
