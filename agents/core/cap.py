"""Counting evaluations and enforcing the hard evaluation cap.

"Budget" in this project means the sparsity target; the most evaluations a search may use is the *evaluation cap*
(the ``budget=`` argument of :func:`agents.search`, kept under that name for compatibility).

An *evaluation* is one finished episode of :class:`~prune_env.PruneRNNEnv`: the one time a pruned model is scored on
validation. :class:`EvalCap` wraps the env, counts them, keeps the best allocation, and once the cap is reached
answers every further ``step`` with a terminal transition **without scoring anything** (reward 0,
``info["over_budget"] = True``). Learners that roll out in fixed chunks (Stable-Baselines3) may therefore ask for
a few more steps than the cap; those steps cost nothing and are never reported as results.

Long searches can be checkpointed and resumed (:func:`save_checkpoint`, :func:`load_checkpoint`): the cap's count,
the best-so-far and its curve (:meth:`EvalCap.state_dict`), the env's ``np_random`` and the global RNGs travel with
the agent's own state, so the evaluation cap counts across an interruption.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from prune_env.checks import check_int
from prune_env.envs.actions import sparsity_to_action
from prune_env.tasks.cache import atomic_save


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
        """Everything recorded so far, as plain values and tensors (for :func:`save_checkpoint`)."""
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

    def state_dict(self) -> dict[str, Any]:
        """The cap, the evaluations used, the tracker's record and the env's ``np_random`` state (it seeds
        ``finetune_steps``), as plain values and tensors (for :func:`save_checkpoint`)."""
        rng = self.env.unwrapped.np_random.bit_generator.state
        last = None if self._last_obs is None else torch.from_numpy(np.array(self._last_obs))
        return {"cap": self.cap, "used": self._used, "tracker": self.tracker.state_dict(),
                "env_rng": json.dumps(rng),  # a JSON string: PCG64's 128-bit ints as plain text
                "last_obs": last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue counting from :meth:`state_dict`: the evaluations already used count against the cap.

        :raises CheckpointError: if the checkpoint's cap is not this wrapper's, or it has used more than the cap.
        """
        cap, used = int(state["cap"]), int(state["used"])
        if cap != self.cap or not 0 <= used <= cap:
            raise CheckpointError(f"the checkpoint used {used} of a cap of {cap} evaluations; this search's cap is "
                                  f"{self.cap}")
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


# ------------------------------------------------------------------------------------------------ checkpoints
#: What :func:`save_checkpoint` writes in ``"format"`` (and :func:`load_checkpoint` expects), and its version.
CHECKPOINT_FORMAT = "prune-rnn-gym search checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A search checkpoint that cannot be resumed: unreadable, corrupted, or written by a different search."""


def check_checkpoint_path(name: str, path: Any) -> str | None:
    """``path`` as a string (``None`` stays ``None``); :raises ValueError: naming ``name`` unless it is a path
    whose directory exists and that is not itself a directory."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"`{name}` must be a file path (str) or None, got {path!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"`{name}`: the directory {folder!r} of {path!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"`{name}` must be a file path, got the directory {path!r}")
    return path


def search_fingerprint(env: gym.Env, agent: str, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    """What makes a search the same search: the agent, its evaluation cap and seed, the options that change its
    result, and the task and env it runs on (task name, dense validation score, layer names and sizes, a hash of
    the model's weights, the env's settings and target). Plain values only.

    :param env: the capped env (:class:`EvalCap`).
    :param agent: the agent's name.
    :param seed: the search's seed.
    :param options: the agent's options that change its result (not where it logs or saves).
    """
    base = env.unwrapped
    digest = hashlib.sha256()
    for name, t in base.task.model.state_dict().items():
        digest.update(name.encode())
        digest.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                      if t.numel() else b"")
    settings = {k: v for k, v in base.config.items() if k not in ("task", "task_kwargs", "device", "render_mode")}
    settings["target_sparsity"] = base.target_sparsity
    return {"agent": agent, "budget": int(env.cap), "seed": int(seed), "options": _plain(options),
            "task": str(base.task.name), "dense_score": float(base.dense_score),
            "layer_names": list(base.layer_names), "numels": [int(n) for n in base.numels],
            "model_sha256": digest.hexdigest(), "env": _plain(settings)}


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists, NumPy scalars and arrays as Python values (what ``torch.load`` with
    ``weights_only=True`` reads back and ``==`` compares)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def global_rng_state() -> dict[str, Any]:
    """Python's, NumPy's (legacy global) and torch's CPU RNG states as plain values and tensors."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {"python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "torch": torch.get_rng_state()}


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`global_rng_state` recorded."""
    py, npy = state["python"], state["numpy"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), int(npy["pos"]),
                         int(npy["has_gauss"]), float(npy["cached_gaussian"])))
    torch.set_rng_state(state["torch"])


def save_checkpoint(path: str, fingerprint: dict[str, Any], cap: EvalCap, agent_state: dict[str, Any],
                    evals: int | None = None) -> None:
    """Write a search checkpoint to ``path`` atomically: a temporary file in the same directory, flushed to disk,
    then renamed over ``path``; a crash at any point leaves the previous checkpoint (or none) in place.

    :param path: the checkpoint file.
    :param fingerprint: :func:`search_fingerprint` of the search.
    :param cap: the search's capped env (its count, tracker and ``np_random``).
    :param agent_state: the agent's own state: tensors, state dicts, plain values (no objects: it is read back
        with ``torch.load(weights_only=True)``).
    :param evals: the evaluations the search has recorded; default ``cap.used`` (an agent that counts them
        elsewhere, like ``ppo`` with its env copies, passes its own count).
    """
    evals = cap.used if evals is None else int(evals)
    blob = {"fingerprint": fingerprint, "evals": evals, "cap": cap.state_dict(), "global_rng": global_rng_state(),
            "agent": agent_state}
    write_sealed(path, blob, CHECKPOINT_FORMAT, evals=evals)


def write_sealed(path: str | os.PathLike, blob: dict[str, Any], fmt: str, **header: Any) -> None:
    """Write ``blob`` (tensors and plain values) to ``path`` atomically, sealed under its SHA-256 and marked with
    ``fmt`` and :data:`CHECKPOINT_VERSION` (``header``: more plain values readable without unsealing).

    ``torch.load`` does not check the zip's CRCs: the content goes in as bytes under its SHA-256, so that any changed
    byte is caught by :func:`read_sealed`.
    """
    buf = io.BytesIO()
    torch.save(blob, buf)
    payload = buf.getvalue()
    outer = {"format": fmt, "version": CHECKPOINT_VERSION, **header, "sha256": hashlib.sha256(payload).hexdigest(),
             "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}
    atomic_save(outer, Path(path))


def load_checkpoint(path: str, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (as :func:`save_checkpoint` wrote it), or ``None`` if there is no file there.

    Read with ``torch.load(weights_only=True)``: tensors and plain values only, no code is unpickled.

    :param path: the checkpoint file.
    :param fingerprint: :func:`search_fingerprint` of the search that wants to resume.
    :raises CheckpointError: if the file is unreadable or corrupted, is not a search checkpoint, or was written by
        a different search (the message names what differs).
    """
    if not os.path.exists(path):
        return None
    blob = read_checkpoint(path)
    diff = differences(blob["fingerprint"], fingerprint)
    if diff:
        raise CheckpointError(f"checkpoint {path!r} was written by a different search ({'; '.join(diff)}); pass "
                              "the same agent, budget, seed, options, task and env to resume it, or another "
                              "checkpoint path to start afresh")
    return blob


def read_checkpoint(path: str) -> dict[str, Any]:
    """The content of the checkpoint at ``path``: ``fingerprint``, ``evals`` (evaluations it records), ``cap``,
    ``global_rng``, ``agent``. Read with ``torch.load(weights_only=True)``: no code is unpickled.

    :raises CheckpointError: if the file is unreadable, corrupted (its SHA-256 does not match) or not a checkpoint.
    """
    return read_sealed(path, CHECKPOINT_FORMAT, ("fingerprint", "evals", "cap", "global_rng", "agent"))


def read_sealed(path: str | os.PathLike, fmt: str, required: tuple[str, ...]) -> dict[str, Any]:
    """What :func:`write_sealed` wrote to ``path`` as ``fmt``, with the ``required`` keys. Read with
    ``torch.load(weights_only=True)``: no code is unpickled.

    :raises CheckpointError: if the file is unreadable, corrupted (its SHA-256 does not match), not a ``fmt``, of
        another version, or without a required key.
    """
    path = os.fspath(path)

    def unreadable(e: BaseException) -> CheckpointError:
        return CheckpointError(f"checkpoint {path!r} is unreadable (corrupted or not a checkpoint): "
                               f"{type(e).__name__}: {e}")

    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad magic, a pickle that is not plain data...
        raise unreadable(e) from None
    if not isinstance(outer, dict) or outer.get("format") != fmt:
        raise CheckpointError(f"{path!r} is not a {fmt}")
    if outer.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path!r} has version {outer.get('version')!r}; this code reads version "
                              f"{CHECKPOINT_VERSION}")
    payload = outer.get("payload")
    if not isinstance(payload, torch.Tensor) or payload.dtype != torch.uint8:
        raise CheckpointError(f"checkpoint {path!r} is incomplete (no payload)")
    data = payload.numpy().tobytes()
    if hashlib.sha256(data).hexdigest() != outer.get("sha256"):
        raise CheckpointError(f"checkpoint {path!r} is corrupted: its content does not match its SHA-256")
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise unreadable(e) from None
    missing = [k for k in required if not isinstance(blob, dict) or k not in blob]
    if missing:
        raise CheckpointError(f"checkpoint {path!r} is incomplete (no {missing})")
    return blob


def differences(saved: Any, now: Any, where: str = "") -> list[str]:
    """Human-readable differences between two fingerprints (the dense score compared to a relative 1e-9)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for k in sorted(set(saved) | set(now), key=str):
            key = f"{where}.{k}" if where else str(k)
            if k not in saved or k not in now:
                out.append(f"{key}: {saved.get(k, '<absent>')!r} in the checkpoint, {now.get(k, '<absent>')!r} now")
            else:
                out += differences(saved[k], now[k], key)
        return out
    if isinstance(saved, float) and isinstance(now, float) and where == "dense_score":
        same = math.isclose(saved, now, rel_tol=1e-9, abs_tol=1e-12)
    else:
        same = saved == now
    if same:
        return []
    shown = (lambda v: f"{str(v)[:80]}...") if isinstance(saved, list) else repr
    return [f"{where}: {shown(saved)} in the checkpoint, {shown(now)} now"]

