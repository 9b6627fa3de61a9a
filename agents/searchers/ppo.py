"""``ppo``: Stable-Baselines3 PPO (or any SB3 algorithm with a Box action space) on vectorized envs.

The evaluation cap is split into exact per-env quotas (:func:`agents.core.cap.split_max_evals`); each env copy
sits in its own :class:`~agents.core.cap.EvalCap`. SB3 rolls out in fixed chunks of ``n_steps * n_envs`` steps and
may ask for a few steps past the cap: those get free terminal transitions (reward 0, nothing scored), and
:class:`BestAllocationCallback` stops ``learn`` as soon as every quota is spent. ``total_timesteps`` is set to
``max_evals * episode_length`` so SB3's own counter agrees. Results are read from the step ``infos``, so the best
allocation is tracked the same way whether the envs run in-process (``DummyVecEnv``) or in worker processes
(``SubprocVecEnv``).

With ``search(..., vector_envs=K)`` (K > 1) the K envs are instead one :class:`~prune_env.PruneRNNVectorEnv`
behind :class:`~prune_env.SB3VecEnv`, so the K episodes that end in a step are scored in one batched pass where
that is faster. Its sub-envs end their episodes together, so there are no per-env quotas: the callback records
the first ``max_evals`` evaluations and stops; the vector env's ``max_evals`` is the same cap, so when K does not
divide it the last step scores only what is left and ends the other episodes unscored (reward 0,
``over_max_evals``).

In joint budget mode the env's projection ignores a common shift of all requested sparsities, so a policy's mean
could drift along that direction until every action clips at the bound and the allocation collapses to uniform.
:class:`CenteredActions` removes the common shift before the env sees the action (the same fix as
:mod:`agents.searchers.reinforce`), and gives the learner a wider box so one layer's clipping does not stall the others.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnvWrapper

from agents.core.cap import EvalCap, Tracker, split_max_evals
from agents.core.checkpoint import (
    CheckpointError,
    check_checkpoint_path,
    load_checkpoint,
    save_checkpoint,
    search_fingerprint,
    set_global_rng_state,
)
from agents.core.options import parse_options
from agents.registry import AgentSpec
from prune_env.checks import check_choice, check_int
from prune_env.envs.actions import sparsity_to_action

SPEC = AgentSpec(name="ppo", run="agents.searchers.ppo:run", evals=None, deterministic=False, batching=True,
                 description="Stable-Baselines3 PPO (or algo=SAC/TD3/A2C) on vectorized envs")

ALGOS = ("PPO", "A2C", "SAC", "TD3", "DDPG")
VEC_ENVS = ("dummy", "subproc")
#: Half-width of the learner's action box under :class:`CenteredActions`.
CENTERED_BOUND = 2.0


@dataclass
class Args:
    """Options of :func:`run` (SB3 keyword arguments go in ``algo_kwargs``)."""

    algo: str = "PPO"
    """SB3 algorithm: one of PPO, A2C, SAC, TD3, DDPG"""
    n_envs: int = 4
    """env copies stepped together"""
    vec_env: str = "dummy"
    """'dummy' (in-process) or 'subproc' (one worker process per env)"""
    learning_rate: float = 3e-3
    """optimizer step size"""
    n_steps: int = 4
    """rollout steps per env between updates (PPO, A2C)"""
    batch_size: int = 16
    """minibatch size (PPO, SAC, TD3, DDPG)"""
    n_epochs: int = 10
    """passes over each rollout (PPO)"""
    log_std_init: float = -1.0
    """initial log standard deviation of the Gaussian policy (PPO, A2C)"""
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    """hidden layers of the policy and value networks"""
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    """extra keyword arguments for the SB3 algorithm's constructor (they win over the fields above)"""
    tensorboard_log: str | None = None
    """TensorBoard log directory; None: no logging"""
    progress_bar: bool = False
    """show SB3's progress bar (tqdm + rich)"""
    save_path: str | None = None
    """where to save the trained model (.zip); None: not saved"""
    verbose: int = 0
    """SB3 verbosity"""
    checkpoint: str | None = None
    """checkpoint file of a resumable search (PPO and A2C, joint mode, ``vec_env="dummy"``, no ``vector_envs``):
    resumed from if it exists, else written every ``checkpoint_every`` evaluations (at the next rollout start)
    and at the end, atomically; None: no checkpoints (see ``docs/agents.md``, "Checkpointing long searches")"""
    checkpoint_every: int = 100
    """evaluations between checkpoints"""


#: :class:`Args` fields that do not change the search's result: a checkpoint resumes whatever their values.
_NOT_IN_FINGERPRINT = ("tensorboard_log", "progress_bar", "save_path", "verbose", "checkpoint", "checkpoint_every")


class CenteredActions(gym.ActionWrapper):
    """Joint budget mode: subtract the action's mean and add the uniform request, then clip to [-1, 1].

    :param env: a joint-mode env in budget mode.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._center = uniform_center(env)
        n = env.action_space.shape[0]
        self.action_space = gym.spaces.Box(-CENTERED_BOUND, CENTERED_BOUND, (n,), np.float32)

    def action(self, action: np.ndarray) -> np.ndarray:
        return center_actions(action, self._center)


class CenteredVecActions(VecEnvWrapper):
    """:class:`CenteredActions` for a whole SB3 ``VecEnv`` (one row per sub-environment).

    :param venv: a vector env of joint-mode envs in budget mode.
    :param center: the uniform request, ``2 * target_sparsity / max_sparsity - 1``.
    """

    def __init__(self, venv: Any, center: float):
        n = venv.action_space.shape[0]
        super().__init__(venv, action_space=gym.spaces.Box(-CENTERED_BOUND, CENTERED_BOUND, (n,), np.float32))
        self.center = center

    def reset(self) -> np.ndarray:
        return self.venv.reset()

    def step_async(self, actions: np.ndarray) -> None:
        self.venv.step_async(center_actions(actions, self.center))

    def step_wait(self):
        return self.venv.step_wait()


def uniform_center(env: gym.Env) -> float | None:
    """The action of uniform pruning at ``env``'s target in joint budget mode (``None`` in any other mode)."""
    base = env.unwrapped
    if base.mode != "joint" or base.target_sparsity is None:
        return None
    return float(sparsity_to_action(base.target_sparsity, base.max_sparsity))


def center_actions(actions: np.ndarray, center: float) -> np.ndarray:
    """Each action (the last axis) shifted to mean ``center``, clipped to [-1, 1], as float32."""
    a = np.asarray(actions, dtype=np.float64)
    return np.clip(a - a.mean(-1, keepdims=True) + center, -1.0, 1.0).astype(np.float32)


class BestAllocationCallback(BaseCallback):
    """Records every real evaluation from the step infos, keeps the best, and stops at the evaluation cap.

    :param tracker: where evaluations are recorded.
    :param max_evals: total evaluations over all envs.
    """

    def __init__(self, tracker: Tracker, max_evals: int, targets: list[float | None], checkpoint: Any = None):
        super().__init__()
        self.tracker = tracker
        self.max_evals = max_evals
        self.targets = targets
        self.checkpoint = checkpoint  # called at each rollout start and at the end (resumable searches)

    def _on_rollout_start(self) -> None:
        if self.checkpoint is not None:
            self.checkpoint(final=False)

    def _on_training_end(self) -> None:
        if self.checkpoint is not None:
            self.checkpoint(final=True)

    def _on_step(self) -> bool:
        steps = zip(self.locals["dones"], self.locals["infos"], self.locals["rewards"])
        for i, (done, info, reward) in enumerate(steps):
            if done and "score" in info and not info.get("over_max_evals") and self.tracker.evals < self.max_evals:
                self.tracker.record(float(reward), info, self.targets[i])
                self.logger.record("prune/best_score", self.tracker.best_score)
                self.logger.record("prune/score", info["score"])
        return self.tracker.evals < self.max_evals


class PolicyAdapter:
    """An SB3 model in the custom-policy protocol (deterministic actions, centred like in training).

    :param model: the trained SB3 model, or its policy (anything with SB3's ``predict``).
    :param center: the uniform request to centre joint actions on, or ``None`` for no centring.
    """

    def __init__(self, model: Any, center: float | None):
        self.model = model
        self.center = center

    def act(self, obs: np.ndarray, info: dict[str, Any] | None = None) -> np.ndarray:
        """The deterministic action for ``obs``, as the env expects it."""
        a, _ = self.model.predict(obs, deterministic=True)
        if self.center is not None:
            return center_actions(a, self.center)
        return np.clip(np.asarray(a, dtype=np.float64), -1.0, 1.0).astype(np.float32)


def run(env: EvalCap, seed: int, **kwargs: Any) -> dict[str, Any]:
    """Train an SB3 agent on copies of ``env`` within the evaluation cap.

    :param env: the capped env; its inner env is copied ``n_envs - 1`` times.
    :param seed: seeds SB3 (``set_random_seed``) and the env copies.
    :param kwargs: fields of :class:`Args`.
    """
    args = _parse_args(kwargs)
    algo_cls = _algo_class(args.algo)
    base = env.unwrapped
    max_evals = env.remaining
    vector_envs = getattr(env, "vector_envs", 0)
    if vector_envs > 1 and args.vec_env != "dummy":
        raise ValueError(f"`vec_env`={args.vec_env!r} does not combine with vector_envs={vector_envs} (one batched "
                         "vector env in this process); leave vec_env at 'dummy'")
    if args.checkpoint:
        _check_resumable(args, base, vector_envs)
    n_envs = max(1, min(vector_envs if vector_envs > 1 else args.n_envs, max_evals))
    center = uniform_center(base)
    centered = center is not None
    if vector_envs > 1:
        from agents.searchers.sb3 import SB3VecEnv
        from prune_env import PruneRNNVectorEnv

        venv = PruneRNNVectorEnv.from_env(base, n_envs, autoreset_mode="SameStep")
        venv.max_evals = max_evals  # a hard cap: the last round scores only what is left of it
        vec: Any = SB3VecEnv(venv)
        if centered:
            vec = CenteredVecActions(vec, center)
    else:
        inner = env.env
        factories = [_factory(inner if i == 0 else copy.deepcopy(inner), q, centered)
                     for i, q in enumerate(split_max_evals(max_evals, n_envs))]
        vec = SubprocVecEnv(factories, start_method="spawn") if args.vec_env == "subproc" else DummyVecEnv(factories)
    vec.seed(seed)

    model = algo_cls("MlpPolicy", vec, seed=seed, verbose=args.verbose, tensorboard_log=args.tensorboard_log,
                     **_algo_kwargs(args, algo_cls, max_evals, n_envs))
    tracker = Tracker(base.target_sparsity)
    saver, resumed, resumed_at = None, None, 0
    if args.checkpoint:
        options = {k: v for k, v in dataclasses.asdict(args).items() if k not in _NOT_IN_FINGERPRINT}
        saver = _Checkpointer(args, search_fingerprint(env, "ppo", seed, options), env, model, vec, tracker)
        resumed = saver.resume()
        resumed_at = resumed or 0
    callback = BestAllocationCallback(tracker, max_evals, [base.target_sparsity] * n_envs, saver)
    try:
        # The vector env's sub-envs end their episodes together: whole rounds of n_envs episodes, of which the last
        # may be partly unscored (over the cap).
        episodes = -(-max_evals // n_envs) * n_envs if vector_envs > 1 else max_evals
        total = episodes * (1 if base.mode == "joint" else base.num_layers)
        if tracker.evals < max_evals:  # a finished search's checkpoint has nothing left to learn
            model.learn(total_timesteps=total - model.num_timesteps, callback=callback,
                        progress_bar=args.progress_bar, tb_log_name=args.algo, reset_num_timesteps=resumed is None)
    finally:
        vec.close()
    if args.save_path:
        save(model, args.save_path)
    # The outer wrapper saw none of these evaluations: hand the callback's tracker to `search`.
    return {"tracker": tracker, "policy": PolicyAdapter(model, center), "algo": args.algo,
            "save_path": args.save_path, "checkpoint": args.checkpoint, "resumed_at": resumed_at}


def _check_resumable(args: Args, base: gym.Env, vector_envs: int) -> None:
    """:raises ValueError: for the set-ups whose state a checkpoint does not capture."""
    name = args.algo.upper() if isinstance(args.algo, str) else getattr(args.algo, "__name__", "")
    why = ("`algo` must be PPO or A2C (off-policy algorithms keep a replay buffer)" if name not in ("PPO", "A2C")
           else "`vec_env` must be 'dummy' (subproc workers hold the env copies' state)" if args.vec_env != "dummy"
           else "`vector_envs` must be 0 or 1" if vector_envs > 1
           else "the env must be in joint mode (sequential episodes span rollouts)" if base.mode != "joint"
           else None)
    if why:
        raise ValueError(f"ppo `checkpoint` is supported for PPO and A2C in joint mode with vec_env='dummy' and no "
                         f"vector_envs: {why}")


class _Checkpointer:
    """Writes and restores a PPO/A2C search's state at rollout starts: the policy and its optimizer, the step
    count, the last observations, every env copy's cap, count and ``np_random``, the best-so-far, and (through
    :func:`~agents.core.checkpoint.save_checkpoint`) the global RNGs, which SB3 samples actions and minibatches from.

    At a rollout start in joint mode no episode is under way and the rollout buffer is empty, so that is all the
    learner's state.
    """

    def __init__(self, args: Args, fingerprint: dict[str, Any], env: EvalCap, model: Any, vec: Any,
                 tracker: Tracker):
        self.path, self.every = args.checkpoint, args.checkpoint_every
        self.fingerprint, self.env, self.model, self.vec, self.tracker = fingerprint, env, model, vec, tracker
        self.saved_at = 0

    def caps(self) -> list[EvalCap]:
        return [e.env if isinstance(e, CenteredActions) else e for e in self.vec.envs]

    def __call__(self, final: bool) -> None:
        evals = self.tracker.evals
        if not final and evals // self.every <= self.saved_at // self.every:
            return
        m = self.model
        state = {"policy": m.policy.state_dict(), "optimizer": m.policy.optimizer.state_dict(),
                 "num_timesteps": int(m.num_timesteps), "n_updates": int(m._n_updates),
                 "last_obs": torch.from_numpy(np.array(m._last_obs)),
                 "episode_starts": torch.from_numpy(np.array(m._last_episode_starts)),
                 "envs": [c.state_dict() for c in self.caps()], "tracker": self.tracker.state_dict()}
        save_checkpoint(self.path, self.fingerprint, self.env, state, evals=evals)
        self.saved_at = evals

    def resume(self) -> int | None:
        """Restore the checkpoint if there is one; returns the evaluations it records (None: no checkpoint)."""
        blob = load_checkpoint(self.path, self.fingerprint)
        if blob is None:
            return None
        a, m = blob["agent"], self.model
        try:
            m.policy.load_state_dict(a["policy"])
            m.policy.optimizer.load_state_dict(a["optimizer"])
            m.num_timesteps, m._n_updates = int(a["num_timesteps"]), int(a["n_updates"])
            m._last_obs = a["last_obs"].numpy()
            m._last_episode_starts = a["episode_starts"].numpy()
            caps = self.caps()
            if len(a["envs"]) != len(caps):
                raise ValueError(f"{len(a['envs'])} env copies in the checkpoint, {len(caps)} now")
            for cap, st in zip(caps, a["envs"]):
                cap.load_state_dict(st)
            self.tracker.load_state_dict(a["tracker"])
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise CheckpointError(f"the checkpoint's {type(m).__name__} state does not fit this search: "
                                  f"{type(e).__name__}: {e}") from None
        set_global_rng_state(blob["global_rng"])
        self.saved_at = self.tracker.evals
        return self.tracker.evals


def save(model: Any, path: str) -> None:
    """Save an SB3 model atomically (SB3 appends ``.zip`` when missing, so the final name always ends in it)."""
    from prune_env.io import atomic_write_with

    final = path if path.endswith(".zip") else f"{path}.zip"
    atomic_write_with(final, model.save)


def load(path: str, algo: str = "PPO", env: Any | None = None) -> PolicyAdapter:
    """Load the policy of a model saved by :func:`run` as a custom-policy-protocol object, without running code.

    Stable-Baselines3's own ``load`` cloudpickle-loads entries of the zip (a crafted file runs code), so this reads
    only the zip's ``policy.pth`` (``torch.load(weights_only=True)``) and the plain-JSON ``policy_kwargs``, and
    rebuilds the algorithm's ``MlpPolicy`` for ``env``'s spaces.

    :param path: the ``.zip`` file.
    :param algo: the SB3 algorithm it was trained with.
    :param env: the (unwrapped) env it will act on: its spaces shape the policy; its mode and target decide the
        centring.
    :raises ValueError: for a file that is not such a policy (or whose ``policy_kwargs`` are pickled objects).
    """
    import io
    import json
    import zipfile

    if env is None:
        raise ValueError("`env` is required: the policy is rebuilt for its observation and action spaces")
    algo_cls = _algo_class(algo)
    try:
        with zipfile.ZipFile(path) as z:
            data = json.loads(z.read("data"))
            state = torch.load(io.BytesIO(z.read("policy.pth")), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # a bad zip, missing members, a pickle that would run code...
        raise ValueError(f"{path!r} is not a readable Stable-Baselines3 policy zip: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from None
    kwargs = data.get("policy_kwargs", {}) if isinstance(data, dict) else None
    if not isinstance(kwargs, dict) or ":serialized:" in kwargs:
        raise ValueError(f"{path!r}: its policy_kwargs are pickled objects, which are not loaded (they could run "
                         "code); only policies trained with plain policy_kwargs (as agents.searchers.ppo saves them) "
                         "load")
    policy_cls = algo_cls.policy_aliases["MlpPolicy"]
    base = env.unwrapped
    policy = policy_cls(base.observation_space, base.action_space, lambda _: 0.0, **kwargs)
    try:
        policy.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise ValueError(f"{path!r} holds a {algo_cls.__name__} policy that does not fit this env "
                         f"({str(e).splitlines()[0]})") from None
    policy.set_training_mode(False)
    return PolicyAdapter(policy, uniform_center(env))


def _factory(env: gym.Env, quota: int, centered: bool):
    def make() -> gym.Env:
        wrapped: gym.Env = EvalCap(env, quota)
        return CenteredActions(wrapped) if centered else wrapped

    return make


def _algo_class(algo: Any):
    import stable_baselines3 as sb3

    if isinstance(algo, str):
        if algo.upper() not in ALGOS:
            raise ValueError(f"unknown `algo` {algo!r}; expected one of {ALGOS} or an SB3 algorithm class")
        return getattr(sb3, algo.upper())
    if isinstance(algo, type):
        return algo
    raise ValueError(f"`algo` must be an SB3 algorithm name or class, got {type(algo).__name__}")


def _algo_kwargs(args: Args, algo_cls: type, max_evals: int, n_envs: int) -> dict[str, Any]:
    name = algo_cls.__name__
    kw: dict[str, Any] = {"learning_rate": args.learning_rate, "policy_kwargs": {"net_arch": list(args.net_arch)}}
    if name in ("PPO", "A2C"):
        # SB3 needs a rollout of at least 2 steps; with max_evals=1 the second one is a free step past the cap.
        kw["n_steps"] = max(2 if n_envs == 1 else 1, min(args.n_steps, max_evals // n_envs))
        kw["policy_kwargs"]["log_std_init"] = args.log_std_init
        kw["gamma"] = 0.99
    if name == "PPO":
        kw["batch_size"] = max(2, min(args.batch_size, kw["n_steps"] * n_envs))
        kw["n_epochs"] = args.n_epochs
    if name in ("SAC", "TD3", "DDPG"):
        kw["batch_size"] = args.batch_size
        kw["learning_starts"] = max(1, min(100, max_evals // 5))
    kw.update(args.algo_kwargs)
    return kw


def _parse_args(kwargs: dict[str, Any]) -> Args:
    args = parse_options(Args, kwargs, "ppo")
    check_choice("vec_env", args.vec_env, VEC_ENVS)
    check_int("n_envs", args.n_envs, 1)
    _algo_class(args.algo)
    check_int("checkpoint_every", args.checkpoint_every, 1)
    args.checkpoint = check_checkpoint_path("checkpoint", args.checkpoint)
    return args
