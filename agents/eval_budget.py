"""Counting evaluations and enforcing the hard evaluation cap.

"Budget" in this project means the sparsity target; the most evaluations a search may use is the *evaluation cap*
(the ``budget=`` argument of :func:`agents.search`, kept under that name for compatibility).

An *evaluation* is one finished episode of :class:`~prune_env.PruneRNNEnv`: the one time a pruned model is scored on
validation. :class:`EvalCap` wraps the env, counts them, keeps the best allocation, and once the cap is reached
answers every further ``step`` with a terminal transition **without scoring anything** (reward 0,
``info["over_budget"] = True``). Learners that roll out in fixed chunks (Stable-Baselines3) may therefore ask for
a few more steps than the cap; those steps cost nothing and are never reported as results.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from prune_env.actions import sparsity_to_action
from prune_env.checks import check_int


class Tracker:
    """The best allocation seen so far and the best-so-far curve, one entry per evaluation.

    Only evaluations at the search's own target sparsity can become the result: an agent may score other
    configurations (the sensitivity scan prunes one layer at a time), which count against the cap but are not
    valid answers.

    :param target_sparsity: the search's target sparsity (``None``: penalty mode, every evaluation is eligible).
    """

    def __init__(self, target_sparsity: float | None):
        self.target_sparsity = target_sparsity
        self.evals = 0
        self.history: list[float] = []
        self.best_score = float("-inf")
        self.best_reward = float("-inf")
        self.best_allocation: dict[str, float] | None = None

    def record(self, reward: float, info: dict[str, Any], target_sparsity: float | None) -> None:
        """Count one evaluation; keep it if it is eligible and has the highest reward so far.

        :param reward: the episode's final reward (the ranking key, so penalty mode trades score for size).
        :param info: the env's final ``info`` (``score``, ``layer_sparsity``).
        :param target_sparsity: the env's target during that episode.
        """
        self.evals += 1
        eligible = target_sparsity == self.target_sparsity
        if eligible and reward > self.best_reward:
            self.best_reward = float(reward)
            self.best_score = float(info["score"])
            self.best_allocation = dict(info["layer_sparsity"])
        self.history.append(self.best_score if self.best_allocation is not None else float("nan"))


class EvalCap(gym.Wrapper):
    """Counts evaluations of the wrapped env and stops scoring after ``cap`` of them.

    :param env: a :class:`~prune_env.PruneRNNEnv` (possibly wrapped).
    :param cap: the most evaluations this wrapper lets through.
    :param tracker: where to record evaluations; a fresh :class:`Tracker` by default.
    :param vector_envs: ``K > 1`` lets :meth:`evaluate_actions` score batches of ``K`` joint actions in one
        batched pass of a :class:`~prune_env.PruneRNNVectorEnv` (built on first use from the env's task and
        config); ``0`` or ``1``: one episode at a time.
    """

    def __init__(self, env: gym.Env, cap: int, tracker: Tracker | None = None, vector_envs: int = 0):
        super().__init__(env)
        cap = check_int("cap", cap, 0)
        vector_envs = check_int("vector_envs", vector_envs, 0)
        self.cap = cap
        self.tracker = tracker or Tracker(env.unwrapped.target_sparsity)
        self.vector_envs = vector_envs
        self._vec: Any = None
        self._used = 0
        self._last_obs: np.ndarray | None = None

    @property
    def used(self) -> int:
        """Evaluations this wrapper has let through."""
        return self._used

    @property
    def remaining(self) -> int:
        """Evaluations left."""
        return self.cap - self._used

    @property
    def exhausted(self) -> bool:
        """True once the cap is reached."""
        return self._used >= self.cap

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._last_obs = obs
        return obs, info

    def step(self, action):
        if self.exhausted:
            # Never score past the cap: a free terminal transition ends whatever episode the learner is in.
            obs = self._last_obs if self._last_obs is not None else self.observation_space.sample() * 0
            return obs, 0.0, True, False, {"over_budget": True}
        target = self.env.unwrapped.target_sparsity
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._last_obs = obs
        if terminated or truncated:
            self._used += 1
            self.tracker.record(reward, info, target)
        return obs, reward, terminated, truncated, info

    def evaluate_actions(self, actions: np.ndarray) -> list[tuple[float, dict[str, Any]]]:
        """Joint mode: play one episode per row of ``actions`` (at most :attr:`remaining` rows are played).

        Full batches of ``vector_envs`` rows are scored in one batched pass; the rest one by one. Either way
        each row is one evaluation, counted and recorded like any other.

        :param actions: ``(n, num_layers)`` joint actions.
        :returns: ``(reward, info)`` per played row.
        """
        base = self.env.unwrapped
        if base.mode != "joint":
            raise ValueError("evaluate_actions plays joint-mode episodes; this env is in sequential mode")
        actions = np.asarray(actions)[: self.remaining]
        out: list[tuple[float, dict[str, Any]]] = []
        k = self.vector_envs
        start = 0
        if k > 1:
            while len(actions) - start >= k:
                out += self._evaluate_vector(actions[start:start + k])
                start += k
        for a in actions[start:]:
            self.reset()
            _, reward, _, _, info = self.step(a)
            out.append((float(reward), info))
        return out

    def _evaluate_vector(self, actions: np.ndarray) -> list[tuple[float, dict[str, Any]]]:
        from prune_env import PruneRNNVectorEnv

        base = self.env.unwrapped
        if self._vec is None:
            self._vec = PruneRNNVectorEnv.from_env(base, self.vector_envs, autoreset_mode="Disabled")
        self._vec.reset()
        _, rewards, _, _, infos = self._vec.step(actions)
        out = []
        for i, alloc in enumerate(self._vec.allocations):
            info = {"score": float(infos["score"][i]), "layer_sparsity": alloc}
            self._used += 1
            self.tracker.record(float(rewards[i]), info, base.target_sparsity)
            out.append((float(rewards[i]), info))
        return out

    def release(self) -> None:
        """Free the batched scorer's env copies (the wrapped env stays open: it is the caller's)."""
        if self._vec is not None:
            self._vec.close()
            self._vec = None


def split_budget(budget: int, parts: int) -> list[int]:
    """Split an evaluation cap ``budget`` into ``parts`` near-equal integer quotas that sum to it exactly.

    :param budget: total evaluations.
    :param parts: number of environments.
    """
    base, extra = divmod(budget, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def submit(env: gym.Env, allocation: dict[str, float]) -> tuple[float, dict[str, Any]]:
    """Play one episode that requests ``allocation``, in joint or sequential mode: one evaluation.

    The env still applies its budget projection (joint) or action wall (sequential) to the request.

    :param env: the capped env.
    :param allocation: layer name -> requested sparsity.
    :returns: the final reward and info (``info["over_budget"]`` if the cap was already reached).
    """
    base = env.unwrapped
    # float64 on purpose: a float32 action loses ~1e-7 of each sparsity, enough to move whole weights between
    # layers when the env rounds the request back to counts.
    s = base.counts_for(allocation) / base.numels
    joint = sparsity_to_action(s, base.max_sparsity)
    env.reset()
    if base.mode == "joint":
        _, reward, _, _, info = env.step(joint)
        return float(reward), info
    for t in range(base.num_layers):
        _, reward, terminated, truncated, info = env.step(joint[t:t + 1])
        if terminated or truncated:
            break
    return float(reward), info
