"""The custom-policy protocol, and the ``policy`` agent that runs any object implementing it.

A policy is anything with ``act(obs, info) -> action``. It may also define ``observe(reward, info)``, called at the
end of every episode, to learn from the outcome. The learning agents return their trained policy in this form
(``SearchResult.policy``), so a trained policy and a hand-written rule are used the same way::

    class KeepHeadDense:
        def act(self, obs, info):
            return env.action_for({name: (0.0 if name == "head.weight" else 0.95) for name in env.layer_names})

    result = agents.search("policy", env, budget=10, policy=KeepHeadDense())
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np


@runtime_checkable
class Policy(Protocol):
    """Maps an observation (and the last ``info``) to an action of the env's action space."""

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """The action for ``obs``.

        :param obs: the env's observation.
        :param info: the ``info`` from the last ``reset``/``step``.
        """
        ...


def play(env: gym.Env, policy: Policy) -> tuple[float, dict[str, Any]]:
    """Play one episode with ``policy``; calls its ``observe(reward, info)`` if it has one.

    :param env: the env (capped or not); it is reset here.
    :param policy: an object with ``act(obs, info)``.
    :returns: the final reward and info.
    """
    obs, info = env.reset()
    while True:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
        if terminated or truncated:
            observe = getattr(policy, "observe", None)
            if callable(observe):
                observe(float(reward), info)
            return float(reward), info


def run(env: gym.Env, seed: int, policy: Policy | None = None, episodes: int | None = None) -> dict[str, Any]:
    """The ``policy`` agent: play ``policy`` until the evaluation cap is reached (or for ``episodes`` episodes).

    :param env: the capped env (:class:`~agents.eval_budget.EvalCap`).
    :param seed: unused beyond the env's reset (a custom policy seeds itself).
    :param policy: the object to run; must have ``act(obs, info)``.
    :param episodes: stop after this many episodes (a deterministic policy needs only 1); default: the evaluation cap.
    """
    if policy is None or not callable(getattr(policy, "act", None)):
        raise ValueError("agent 'policy' needs `policy=` an object with act(obs, info) -> action, got "
                         f"{type(policy).__name__}")
    n = env.remaining if episodes is None else min(int(episodes), env.remaining)
    for _ in range(n):
        play(env, policy)
    return {"policy": policy}
