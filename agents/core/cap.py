"""Counting evaluations and enforcing the hard evaluation cap, ``max_evals``.

An *evaluation* is one finished episode of :class:`~prune_env.PruneRNNEnv`: the one time a pruned model is scored on
validation. :class:`EvalCap` wraps the env, counts them, keeps the best allocation (:class:`Tracker`), and once
``max_evals`` is reached answers every further ``step`` with a terminal transition **without scoring anything**
(reward 0, ``info["over_max_evals"] = True``). Learners that roll out in fixed chunks (Stable-Baselines3) may
therefore ask for a few more steps than the cap; those steps cost nothing and are never reported as results.
:func:`submit` plays one allocation as one evaluation; :func:`split_max_evals` shares a cap among env copies.
Checkpoints of the cap's count travel in :mod:`agents.core.checkpoint`.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.core.checkpoint import CheckpointError
from prune_env.checks import check_int
from prune_env.envs.actions import sparsity_to_action

#: The info of a step refused past the cap. ``over_budget`` is the former key, still set for one release.
OVER_MAX_EVALS_INFO: dict[str, bool] = {"over_max_evals": True, "over_budget": True}


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

    def state_dict(self) -> dict[str, Any]:
        """Everything recorded so far, as plain values and tensors (for
        :func:`agents.core.checkpoint.save_checkpoint`)."""
        return {"target_sparsity": self.target_sparsity, "evals": self.evals,
                "history": torch.tensor(self.history, dtype=torch.float64), "best_score": self.best_score,
                "best_reward": self.best_reward, "best_allocation": self.best_allocation}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s record."""
        if state["target_sparsity"] != self.target_sparsity:
            raise CheckpointError(f"the checkpoint's tracker is for target sparsity {state['target_sparsity']}, "
                                  f"not {self.target_sparsity}")
        self.evals = int(state["evals"])
        self.history = [float(h) for h in state["history"].tolist()]
        self.best_score, self.best_reward = float(state["best_score"]), float(state["best_reward"])
        alloc = state["best_allocation"]
        self.best_allocation = None if alloc is None else {str(k): float(v) for k, v in alloc.items()}
        if len(self.history) != self.evals:
            raise CheckpointError(f"the checkpoint's tracker has {len(self.history)} history entries for "
                                  f"{self.evals} evaluations")


class EvalCap(gym.Wrapper):
    """Counts evaluations of the wrapped env and stops scoring after ``max_evals`` of them.

    :param env: a :class:`~prune_env.PruneRNNEnv` (possibly wrapped).
    :param max_evals: the most evaluations this wrapper lets through.
    :param tracker: where to record evaluations; a fresh :class:`Tracker` by default.
    :param vector_envs: ``K > 1`` lets :meth:`evaluate_actions` score batches of ``K`` joint actions in one
        batched pass of a :class:`~prune_env.PruneRNNVectorEnv` (built on first use from the env's task and
        config); ``0`` or ``1``: one episode at a time.
    """

    def __init__(self, env: gym.Env, max_evals: int, tracker: Tracker | None = None, vector_envs: int = 0):
        super().__init__(env)
        max_evals = check_int("max_evals", max_evals, 0)
        vector_envs = check_int("vector_envs", vector_envs, 0)
        self.max_evals = max_evals
        self.tracker = tracker or Tracker(env.unwrapped.target_sparsity)
        self.vector_envs = vector_envs
        self._vec: Any = None
        self._used = 0
        self._last_obs: np.ndarray | None = None

    @property
    def cap(self) -> int:
        """Deprecated name of :attr:`max_evals`."""
        warnings.warn("EvalCap.cap is deprecated; use EvalCap.max_evals", DeprecationWarning, stacklevel=2)
        return self.max_evals

    @property
    def used(self) -> int:
        """Evaluations this wrapper has let through."""
        return self._used

    @property
    def remaining(self) -> int:
        """Evaluations left."""
        return self.max_evals - self._used

    @property
    def exhausted(self) -> bool:
        """True once the cap is reached."""
        return self._used >= self.max_evals

    def state_dict(self) -> dict[str, Any]:
        """The evaluation cap, the evaluations used, the tracker's record and the env's ``np_random`` state (it seeds
        ``finetune_steps``), as plain values and tensors (for :func:`agents.core.checkpoint.save_checkpoint`)."""
        rng = self.env.unwrapped.np_random.bit_generator.state
        last = None if self._last_obs is None else torch.from_numpy(np.array(self._last_obs))
        return {"max_evals": self.max_evals, "used": self._used, "tracker": self.tracker.state_dict(),
                "env_rng": json.dumps(rng),  # a JSON string: PCG64's 128-bit ints as plain text
                "last_obs": last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue counting from :meth:`state_dict`: the evaluations already used count against the cap.

        :raises CheckpointError: if the checkpoint's cap is not this wrapper's, or it has used more than the cap.
        """
        cap, used = int(state["max_evals"] if "max_evals" in state else state["cap"]), int(state["used"])
        if cap != self.max_evals or not 0 <= used <= cap:
            raise CheckpointError(f"the checkpoint used {used} of max_evals={cap} evaluations; this search's "
                                  f"max_evals is {self.max_evals}")
        self.tracker.load_state_dict(state["tracker"])
        rng = json.loads(state["env_rng"])
        base = self.env.unwrapped
        gen = base.np_random
        if type(gen.bit_generator).__name__ != rng["bit_generator"]:
            base.np_random = gen = np.random.Generator(getattr(np.random, rng["bit_generator"])())
        gen.bit_generator.state = rng
        self._used = used
        last = state.get("last_obs")
        self._last_obs = None if last is None else last.numpy()

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._last_obs = obs
        return obs, info

    def step(self, action):
        if self.exhausted:
            # Never score past the cap: a free terminal transition ends whatever episode the learner is in.
            obs = self._last_obs if self._last_obs is not None else self.observation_space.sample() * 0
            return obs, 0.0, True, False, dict(OVER_MAX_EVALS_INFO)
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


def split_max_evals(max_evals: int, parts: int) -> list[int]:
    """Split an evaluation cap ``max_evals`` into ``parts`` near-equal integer quotas that sum to it exactly.

    :param max_evals: total evaluations.
    :param parts: number of environments.
    """
    base, extra = divmod(max_evals, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def submit(env: gym.Env, allocation: dict[str, float]) -> tuple[float, dict[str, Any]]:
    """Play one episode that requests ``allocation``, in joint or sequential mode: one evaluation.

    The env still applies its projection onto the target (joint) or action wall (sequential) to the request.

    :param env: the capped env.
    :param allocation: layer name -> requested sparsity.
    :returns: the final reward and info (``info["over_max_evals"]`` if the cap was already reached).
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
