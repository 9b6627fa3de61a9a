"""Registration of the preset environments with Gymnasium (idempotent, string entry points)."""

from __future__ import annotations

import gymnasium as gym

ENV_IDS = {
    "PruneRNN-v0": {"task": "digits"},
    "PruneRNN-pydoc-v0": {"task": "pydoc-char"},
}


def register_envs() -> None:
    """Register every preset id once; safe to call again (importing ``prune_env`` calls it).

    ``gym.make_vec(id, n)`` then builds one :class:`~prune_env.PruneRNNVectorEnv` (the registered vector entry point,
    which scores ended episodes in one batched pass); ``vectorization_mode="sync"`` or ``"async"`` give gymnasium's
    own vector envs of single envs.

    >>> import gymnasium as gym
    >>> env = gym.make("PruneRNN-v0", target_sparsity=0.5, task_kwargs={"progress": False})  # the digits preset
    >>> env.unwrapped.task.name, env.unwrapped.layer_names[0]
    ('digits', 'rnn.weight_ih_l0')
    >>> envs = gym.make_vec("PruneRNN-v0", 2, target_sparsity=0.5, task_kwargs={"progress": False})
    >>> type(envs).__name__, envs.num_envs
    ('PruneRNNVectorEnv', 2)
    """
    for env_id, kwargs in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="prune_env.envs.env:PruneRNNEnv", kwargs=dict(kwargs),
                         vector_entry_point="prune_env.envs.vector:PruneRNNVectorEnv")
