"""``rllib-ppo``: RLlib PPO (new API stack) with env runners in other processes or on other machines of a Ray cluster.

Needs the Ray extra (``pip install -e ".[ray]"``, which pins ``ray[rllib,tune]==2.60.0``).

>>> result = agents.search("rllib-ppo", env, max_evals=1000, seed=0, num_env_runners=2)   # doctest: +SKIP

**The evaluation cap across processes.** Each env runner builds its own copy of the env from an ``env_config``
(the driver env's :attr:`~prune_env.PruneRNNEnv.config`, with its current target), wrapped in :class:`RunnerEnv`.
One Ray actor, the *ledger* (:class:`Ledger`), holds the cap: before a runner's env scores an ended episode it asks
the ledger for a permit (a synchronous call, counted under the actor's lock), scores only if it got one, and reports
the result (reward, score, allocation) back to the ledger before ``step`` returns. Past the cap every ended episode
gets the same free terminal transition as :class:`~agents.core.cap.EvalCap` gives (reward 0, nothing scored,
``info["over_max_evals"] = True``); a runner that was refused once never asks again. The driver trains until the ledger
has handed out every permit, then replays the ledger's records, in the order they were scored, into a
:class:`~agents.core.cap.Tracker`, which :func:`agents.search` returns as a normal ``SearchResult`` with
``evals <= max_evals``. The driver's own env is never stepped.

Each runner checks that the model it rebuilt is the driver's (layer names and sizes, dense validation score) and
refuses to start otherwise. With more than one runner the order in which episodes reach the ledger depends on
timing, so results are not bit-reproducible (the evaluation cap is exact either way).

**Where Ray runs.** Without ``address`` and with no Ray running in this process, a local Ray instance is started
(``ray.init(num_cpus=max(2, num_env_runners), include_dashboard=False)``, ``OMP_NUM_THREADS=1`` and this process's
``sys.path`` for its workers) and shut down afterwards. ``address="auto"`` (or ``"HOST:6379"``) joins a running
cluster (``ray start --head`` ...); every node then needs this package and the task (a preset name, a
``module:function`` importable there, or an :class:`~prune_env.RNNTask` that pickles). If Ray is already initialised
(``ray.init`` by the caller), it is used as it is and left running.

To train RLlib on the envs yourself, without the cap, build them from ``env_config`` dicts: ``PruneRNNEnv`` takes the
dict as its first argument; :func:`make_env` also builds a :class:`~prune_env.PruneRNNZooEnv` from a dict with
``"tasks"``; :class:`RLlibEnv` is :func:`make_env` as an env class for ``PPOConfig().environment(RLlibEnv, ...)``.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from agents.core.cap import OVER_MAX_EVALS_INFO, EvalCap, Tracker
from agents.core.options import parse_options
from agents.registry import AgentSpec
from prune_env.checks import check_int, check_number
from prune_env.envs.actions import sparsity_to_action

SPEC = AgentSpec(name="rllib-ppo", run="agents.searchers.rllib_ppo:run", evals=None, deterministic=False,
                 batching=False, extras=("ray",),
                 description="RLlib PPO with env runners in Ray worker processes or on a cluster (needs the ray "
                             "extra)")

#: Half-width of the learner's action box in joint budget mode (as :data:`agents.searchers.ppo.CENTERED_BOUND`).
CENTERED_BOUND = 2.0
#: The key of ``env_config`` that carries the cap's ledger (name, namespace) and the driver env's fingerprint.
CAP_KEY = "_rllib_cap"
_MISSING = 'agent \'rllib-ppo\' needs the ray extra: pip install -e ".[ray]"  (ray[rllib,tune]==2.60.0)'


@dataclass
class Args:
    """Options of :func:`run`."""

    num_env_runners: int = 2
    """RLlib env runners (Ray actors, one CPU each), each with its own env copy"""
    num_envs_per_env_runner: int = 1
    """env copies each runner steps together"""
    train_batch_size: int = 64
    """env steps per PPO update (over all runners)"""
    minibatch_size: int = 32
    """SGD minibatch size"""
    num_epochs: int = 10
    """passes over each train batch"""
    lr: float = 3e-3
    """Adam step size"""
    entropy_coeff: float = 0.0
    """entropy bonus"""
    clip_param: float = 0.2
    """PPO clip range"""
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    """hidden layers of the policy and value networks"""
    log_std_init: float | None = -1.0
    """initial log standard deviation of the Gaussian policy (a free, state-independent parameter), in RLlib's
    normalised action units; None: RLlib's default (a state-dependent output, initially about 0)"""
    centered: bool = True
    """joint budget mode: remove the common shift of the requested sparsities, as agent ``ppo`` does"""
    address: str | None = None
    """Ray cluster to join ("auto", "HOST:PORT", "ray://HOST:10001"); None: the running Ray of this process, or a
    local instance started (and stopped) here"""
    num_cpus: int | None = None
    """CPUs of a local Ray instance started here; default max(2, num_env_runners)"""
    max_iterations: int | None = None
    """stop after this many PPO iterations even if permits are left (None: until the cap is reached)"""
    config_overrides: dict[str, Any] = field(default_factory=dict)
    """further ``PPOConfig`` settings, section -> keyword arguments, e.g. ``{"training": {"gamma": 0.9}}``"""
    verbose: int = 0
    """1: one line per PPO iteration; Ray's own log lines are shown too"""


# ------------------------------------------------------------------------------------------- envs from a dict
def make_env(env_config: dict[str, Any]) -> gym.Env:
    """A :class:`~prune_env.PruneRNNEnv`, or with ``"tasks"`` a :class:`~prune_env.PruneRNNZooEnv`, from a plain dict.

    :param env_config: ``PruneRNNEnv``'s config keys (``task``, ``target_sparsity``, ``task_kwargs``, ...), or
        ``PruneRNNZooEnv``'s arguments (``tasks``, ``target_sparsity``, ``mode``, ``max_layers``, per-model env
        keywords). RLlib's ``EnvContext`` is accepted (its runner facts are not keys).
    """
    from prune_env import PruneRNNEnv, PruneRNNZooEnv

    cfg = {k: v for k, v in dict(env_config).items() if k not in ("num_envs", CAP_KEY)}
    if "tasks" in cfg:
        return PruneRNNZooEnv(**cfg)
    return PruneRNNEnv(cfg)


class RLlibEnv(gym.Wrapper):
    """:func:`make_env` as an env class RLlib builds from ``env_config`` in each runner (one torch thread).

    With the cap key (set by :func:`run`) the env is also capped through the ledger (see :class:`RunnerEnv`).
    """

    def __init__(self, env_config: dict[str, Any] | None = None):
        import torch

        torch.set_num_threads(1)
        env_config = dict(env_config or {})
        cap = env_config.get(CAP_KEY)
        env = make_env(env_config)
        if cap is not None:
            env = RunnerEnv(env, cap)
            if cap.get("centered"):
                env = _Centered(env)
        super().__init__(env)


class RunnerEnv(gym.Wrapper):
    """A runner's env copy, capped by the ledger actor: scores an ended episode only with a permit.

    :param env: a :class:`~prune_env.PruneRNNEnv` built from the driver env's config.
    :param cap: ``{"ledger": name, "namespace": ns, "expect": {...}}`` as :func:`run` sets it.
    :raises ValueError: if the rebuilt model is not the driver's.
    """

    def __init__(self, env: gym.Env, cap: dict[str, Any]):
        super().__init__(env)
        base = env.unwrapped
        if not hasattr(base, "advance"):
            raise ValueError("the capped rllib-ppo env must be a PruneRNNEnv")
        _check_same_model(base, cap["expect"])
        import ray

        self._ledger = ray.get_actor(cap["ledger"], namespace=cap["namespace"])
        self._refused = False
        self._last_obs: np.ndarray | None = None

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._last_obs = obs
        return obs, info

    def step(self, action):
        import ray

        base = self.env.unwrapped
        target = base.target_sparsity
        ended = base.advance(action)
        if ended and (self._refused or not ray.get(self._ledger.acquire.remote())):
            # Never score past the cap: the same free terminal transition as EvalCap's.
            self._refused = True
            obs = self._last_obs if self._last_obs is not None else np.zeros(self.observation_space.shape,
                                                                             np.float32)
            return obs, 0.0, True, False, dict(OVER_MAX_EVALS_INFO)
        try:
            obs, reward, terminated, truncated, info = base.conclude(base.score() if ended else None)
        except BaseException:
            if ended:
                ray.get(self._ledger.give_back.remote())
            raise
        self._last_obs = obs
        if ended:
            ray.get(self._ledger.record.remote(float(reward), float(info["score"]),
                                               {k: float(v) for k, v in info["layer_sparsity"].items()}, target))
        return obs, reward, terminated, truncated, info


class _Centered(gym.ActionWrapper):
    """Joint budget mode: the action minus its mean plus the uniform request, clipped to [-1, 1] (as
    :class:`agents.searchers.ppo.CenteredActions`, without importing Stable-Baselines3 in every runner)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        base = env.unwrapped
        self.center = float(sparsity_to_action(base.target_sparsity, base.max_sparsity))
        n = env.action_space.shape[0]
        self.action_space = gym.spaces.Box(-CENTERED_BOUND, CENTERED_BOUND, (n,), np.float32)

    def action(self, action: np.ndarray) -> np.ndarray:
        return _center(action, self.center)


def _center(action: np.ndarray, center: float) -> np.ndarray:
    a = np.asarray(action, dtype=np.float64)
    return np.clip(a - a.mean(-1, keepdims=True) + center, -1.0, 1.0).astype(np.float32)


def _fingerprint(base: Any) -> dict[str, Any]:
    return {"layer_names": list(base.layer_names), "numels": [int(n) for n in base.numels],
            "dense_score": float(base.dense_score)}


def _check_same_model(base: Any, expect: dict[str, Any]) -> None:
    got = _fingerprint(base)
    same = (got["layer_names"] == expect["layer_names"] and got["numels"] == expect["numels"]
            and abs(got["dense_score"] - expect["dense_score"]) <= 1e-9 * max(1.0, abs(expect["dense_score"])))
    if not same:
        raise ValueError(f"rllib-ppo: the env rebuilt in this Ray worker is not the driver's (layers "
                         f"{got['layer_names'][:3]}..., dense score {got['dense_score']} vs "
                         f"{expect['dense_score']}): every node must build the same task (same code, data and "
                         "cached model)")


# --------------------------------------------------------------------------------------------------- the ledger
class Ledger:
    """The evaluation cap and the record of every scored episode, shared by all runners (a Ray actor).

    :param max_evals: the most permits it hands out.
    """

    def __init__(self, max_evals: int):
        self.max_evals = max_evals
        self.granted = 0
        self.records: list[tuple[float, float, dict[str, float], float | None]] = []

    def acquire(self) -> bool:
        """One permit to score an episode, while any are left."""
        if self.granted >= self.max_evals:
            return False
        self.granted += 1
        return True

    def give_back(self) -> None:
        """Return a permit whose scoring raised."""
        self.granted -= 1

    def record(self, reward: float, score: float, allocation: dict[str, float], target: float | None) -> None:
        """One scored episode."""
        self.records.append((reward, score, allocation, target))

    def counts(self) -> tuple[int, int]:
        """Permits handed out, episodes recorded."""
        return self.granted, len(self.records)

    def summary(self) -> dict[str, Any]:
        """Counts and the best score so far (for progress lines)."""
        best = max((r[1] for r in self.records), default=float("nan"))
        return {"granted": self.granted, "recorded": len(self.records), "best_score": best}

    def all_records(self) -> list[tuple[float, float, dict[str, float], float | None]]:
        return list(self.records)


# ------------------------------------------------------------------------------------------------------ run
def run(env: EvalCap, seed: int, **kwargs: Any) -> dict[str, Any]:
    """Train RLlib PPO on runner copies of ``env`` until the evaluation cap is spent.

    :param env: the capped env (:class:`~agents.core.cap.EvalCap` around a :class:`~prune_env.PruneRNNEnv`); its
        config is rebuilt in every runner, it is not stepped itself.
    :param seed: seeds RLlib (``debugging(seed=...)``: the module's initialisation and each runner's env).
    :param kwargs: fields of :class:`Args`.
    :raises ImportError: without the Ray extra.
    """
    args = _parse_args(kwargs)
    try:
        import ray
        from ray.rllib.algorithms.ppo import PPOConfig
    except ImportError as e:
        raise ImportError(f"{_MISSING} ({type(e).__name__}: {e})") from None

    base = env.unwrapped
    max_evals = env.remaining
    if max_evals <= 0:
        return {}
    if not hasattr(base, "advance"):
        raise ValueError("rllib-ppo searches a PruneRNNEnv")
    env_config = dict(base.config)
    env_config["target_sparsity"] = base.target_sparsity
    env_config["render_mode"] = None
    centered = args.centered and base.mode == "joint" and base.target_sparsity is not None and not base.quantize

    started = _init_ray(ray, args)
    name, namespace = f"prune-rnn-ledger-{uuid.uuid4().hex[:12]}", ray.get_runtime_context().namespace
    ledger = ray.remote(num_cpus=0)(Ledger).options(name=name, namespace=namespace).remote(max_evals)
    algo = None
    try:
        env_config[CAP_KEY] = {"ledger": name, "namespace": namespace, "expect": _fingerprint(base),
                               "centered": centered}
        config = _ppo_config(PPOConfig(), args, env_config, seed, max_evals)
        try:
            algo = config.build_algo() if hasattr(config, "build_algo") else config.build()
        except Exception:
            _explain_build_failure(ray, env_config)  # RLlib hides a runner's env error behind its own
            raise
        if args.log_std_init is not None:
            _set_log_std(algo, args.log_std_init)
        iterations, t0 = 0, time.perf_counter()
        while True:
            algo.train()
            iterations += 1
            granted, recorded = ray.get(ledger.counts.remote())
            if args.verbose:
                s = ray.get(ledger.summary.remote())
                print(f"rllib-ppo iteration {iterations}: {recorded}/{max_evals} evaluations, best score "
                      f"{s['best_score']:.4f}, {time.perf_counter() - t0:.1f} s", flush=True)
            if granted >= max_evals or (args.max_iterations is not None and iterations >= args.max_iterations):
                break
        records = ray.get(ledger.all_records.remote())
        policy = _module_policy(algo, base, centered)
    finally:
        if algo is not None:
            algo.stop()
        ray.kill(ledger)
        if started:
            ray.shutdown()
    tracker = Tracker(base.target_sparsity)
    for reward, score, allocation, target in records[:max_evals]:
        tracker.record(reward, {"score": score, "layer_sparsity": allocation}, target)
    return {"tracker": tracker, "policy": policy, "iterations": iterations, "num_env_runners": args.num_env_runners}


def _probe_env(env_config: dict[str, Any]) -> None:
    RLlibEnv(env_config).close()


def _explain_build_failure(ray: Any, env_config: dict[str, Any]) -> None:
    """Build one runner env in a Ray worker; :raises ValueError: with its error if that fails."""
    try:
        ray.get(ray.remote(num_cpus=0)(_probe_env).remote(env_config))
    except Exception as e:
        cause = getattr(e, "cause", None) or e
        raise ValueError(f"rllib-ppo: the env runners could not build their env: {type(cause).__name__}: "
                         f"{cause}") from None


def _set_log_std(algo: Any, value: float) -> None:
    """Set the policy's free log standard deviation in the learner, then send the weights to the env runners."""
    def fill(learner: Any) -> int:
        import torch

        n = 0
        with torch.no_grad():
            for module_id in learner.module.keys():
                for name, p in learner.module[module_id].named_parameters():
                    if name.split(".")[-1] == "log_std":
                        p.fill_(value)
                        n += 1
        return n

    algo.learner_group.foreach_learner(fill)
    algo.env_runner_group.sync_weights(from_worker_or_learner_group=algo.learner_group, inference_only=True)


def _init_ray(ray: Any, args: Args) -> bool:
    """Start or join Ray as ``args`` says; returns whether this call started it (and should stop it)."""
    import logging

    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": bool(args.verbose)}
    if args.address is not None:
        ray.init(address=args.address, **quiet)
        return True
    path = os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p)
    ray.init(num_cpus=args.num_cpus or max(2, args.num_env_runners), include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}}, **quiet)
    return True


def _ppo_config(config: Any, args: Args, env_config: dict[str, Any], seed: int, max_evals: int) -> Any:
    runners = args.num_env_runners
    batch = max(runners * args.num_envs_per_env_runner, min(args.train_batch_size, max_evals))
    config = (config
              .environment(RLlibEnv, env_config=env_config)
              .framework("torch")
              .env_runners(num_env_runners=runners, num_envs_per_env_runner=args.num_envs_per_env_runner,
                           rollout_fragment_length="auto", num_cpus_per_env_runner=1)
              .training(train_batch_size_per_learner=batch, minibatch_size=min(args.minibatch_size, batch),
                        num_epochs=args.num_epochs, lr=args.lr, entropy_coeff=args.entropy_coeff,
                        clip_param=args.clip_param, gamma=0.99)
              .rl_module(model_config={"fcnet_hiddens": list(args.net_arch), "fcnet_activation": "tanh",
                                       "free_log_std": args.log_std_init is not None})
              .debugging(seed=seed, log_level="WARN")
              .reporting(metrics_num_episodes_for_smoothing=1))
    for section, options in args.config_overrides.items():
        config = getattr(config, section)(**options)
    return config


class RLlibPolicy:
    """A trained RLlib module in the custom-policy protocol: the mean action, as the env sees it.

    :param module: the RLModule (torch).
    :param low: the learner's action box low bound; ``high`` the high bound (actions are unsquashed from [-1, 1]).
    :param center: the uniform request to centre joint actions on, or ``None``.
    """

    def __init__(self, module: Any, low: np.ndarray, high: np.ndarray, center: float | None):
        self.module, self.low, self.high, self.center = module, low, high, center

    def act(self, obs: np.ndarray, info: dict[str, Any] | None = None) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.module.forward_inference({"obs": torch.as_tensor(np.asarray(obs, np.float32))[None]})
        inputs = out["action_dist_inputs"][0].numpy()
        mean = np.clip(inputs[: len(inputs) // 2], -1.0, 1.0)
        a = self.low + (mean + 1.0) * (self.high - self.low) / 2.0
        if self.center is not None:
            return _center(a, self.center)
        return np.clip(a, -1.0, 1.0).astype(np.float32)


def _module_policy(algo: Any, base: Any, centered: bool) -> RLlibPolicy | None:
    try:
        module = algo.get_module()
    except Exception:  # a remote learner: no module in this process
        return None
    if module is None:
        return None
    n = base.action_space.shape[0]
    bound = CENTERED_BOUND if centered else 1.0
    center = float(sparsity_to_action(base.target_sparsity, base.max_sparsity)) if centered else None
    return RLlibPolicy(module, np.full(n, -bound), np.full(n, bound), center)


def _parse_args(kwargs: dict[str, Any]) -> Args:
    args = parse_options(Args, kwargs, "rllib-ppo")
    for name in ("num_env_runners", "num_envs_per_env_runner", "train_batch_size", "minibatch_size", "num_epochs"):
        check_int(name, getattr(args, name), 1)
    if args.num_cpus is not None:
        check_int("num_cpus", args.num_cpus, 1)
    if args.max_iterations is not None:
        check_int("max_iterations", args.max_iterations, 1)
    check_number("lr", args.lr, 0.0, low_open=True)
    check_number("entropy_coeff", args.entropy_coeff, 0.0)
    check_number("clip_param", args.clip_param, 0.0, low_open=True)
    if args.address is not None and not isinstance(args.address, str):
        raise ValueError(f"`address` must be a string such as 'auto' or 'HOST:6379', got {args.address!r}")
    if not isinstance(args.config_overrides, dict):
        raise ValueError("`config_overrides` must be a dict: PPOConfig section -> keyword arguments")
    return args
