"""Stable-Baselines3 glue for the vector env: :class:`SB3VecEnv` exposes a :class:`~prune_env.PruneRNNVectorEnv` as an
SB3 ``VecEnv``. It lives in ``agents`` so that ``import prune_env`` never imports Stable-Baselines3."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv

from prune_env import PruneRNNVectorEnv


class SB3VecEnv(VecEnv):
    """Stable-Baselines3 ``VecEnv`` view of a :class:`PruneRNNVectorEnv`, so PPO & co. collect K episodes per pass.

    SB3 resets ended environments in the same step and puts the final observation in
    ``infos[i]["terminal_observation"]``, so the vector env must use ``autoreset_mode="SameStep"``.

    :param venv: the vector env to expose.
    """

    def __init__(self, venv: PruneRNNVectorEnv):
        if not isinstance(venv, PruneRNNVectorEnv):
            raise ValueError(f"`venv` must be a PruneRNNVectorEnv, got {type(venv).__name__}")
        if venv.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError("`venv` must be built with autoreset_mode='SameStep' (SB3 resets in the same step); "
                             f"got {venv.autoreset_mode.value!r}")
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        seeds = [int(s) if s is not None else None for s in self._seeds]
        options = self._options[0] if all(o == self._options[0] for o in self._options) else None
        obs, infos = self.venv.reset(seed=seeds, options=options or None)
        self.reset_infos = _split_infos(infos, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        final_infos = _split_infos(infos.pop("final_info", {}), self.num_envs)
        final_obs = infos.pop("final_obs", None)
        dones = terminated | truncated
        out = _split_infos(infos, self.num_envs)
        for i in np.flatnonzero(dones):
            # The reset info of a restarted env goes to reset_infos; the step's info is the final one, as in SB3.
            self.reset_infos[i] = out[i]
            out[i] = final_infos[i]
            out[i]["terminal_observation"] = final_obs[i]
        for i in range(self.num_envs):
            out[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, rewards.astype(np.float32), dones, out

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self.venv.envs[i], attr_name) for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        for i in self._get_indices(indices):
            setattr(self.venv.envs[i], attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        return [getattr(self.venv.envs[i], method_name)(*method_args, **method_kwargs)
                for i in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def _split_infos(infos: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Gymnasium's dict-of-arrays infos (with ``_key`` masks) as one dict per sub-environment."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, values in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get("_" + key, np.ones(n, dtype=bool))
        per_env = _split_infos(values, n) if isinstance(values, dict) else values
        for i in np.flatnonzero(mask):
            out[i][key] = per_env[i]
    return out


__all__ = ["SB3VecEnv"]
