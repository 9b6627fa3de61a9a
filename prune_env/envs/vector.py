"""``PruneRNNVectorEnv``: K pruning episodes of one model, their ended episodes scored in one batched pass.

Every sub-environment is a full :class:`~prune_env.PruneRNNEnv` with its own masked copy of the model (so its
observations, infos and sizes are exactly a single env's), but they share the task and the one-off analysis
(statistics, gradients, prune orders, dense weights, dense score), so building K of them costs one analysis. When
episodes end in a step, their allocations are scored together by a :class:`~prune_env.envs.batched.BatchedScorer`
(structured tasks), or one after the other with each sub-environment's own scoring.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from prune_env.checks import check_choice, check_int, is_int
from prune_env.devices import PRECISIONS
from prune_env.envs.batched import BatchedScorer
from prune_env.envs.env import PruneRNNEnv

#: Scores compared by the construction-time probe of the batched path must agree to this (absolute).
PROBE_TOLERANCE = 1e-5
#: The same under ``precision="bf16"``: the batched loop and the fused RNN kernels round differently in bf16.
PROBE_TOLERANCE_BF16 = 5e-3
#: ``batched=None`` keeps the batched path only if its time per candidate is below this share of sequential's.
CALIBRATION_MARGIN = 0.9


class PruneRNNVectorEnv(VectorEnv):
    """K copies of :class:`~prune_env.PruneRNNEnv` on one model, whose ended episodes are scored in one pass.

    A real :class:`gymnasium.vector.VectorEnv`: batched ``Box`` spaces, ``reset(seed=s)`` seeds sub-env ``i``
    with ``s + i``, infos are dicts of arrays with ``_key`` masks, and ``metadata["autoreset_mode"]`` says how
    ended sub-environments restart (gymnasium's default ``NEXT_STEP``: the step after the end resets and ignores
    its action; ``SAME_STEP``: the reset observation is returned at once and the final one is in
    ``infos["final_obs"]``; ``DISABLED``: reset them with ``reset(options={"reset_mask": ...})``). Use
    :class:`agents.searchers.sb3.SB3VecEnv` to hand it to Stable-Baselines3.

    Scoring: a structured task (``eval_batch`` + ``metric``) is scored by :class:`~prune_env.envs.batched.BatchedScorer`
    when that is correct and not slower per candidate; otherwise each ended episode is scored by ``task.evaluate``
    in turn. The choice is in :attr:`eval_path` and the reason in :attr:`eval_path_reason`.

    :param task: an :class:`~prune_env.RNNTask` or a preset name.
    :param num_envs: number of sub-environments K.
    :param batched: ``None`` (default) picks the batched path only if a construction-time probe finds it equal to
        sequential evaluation (to :data:`PROBE_TOLERANCE`) and faster per candidate on this device; ``True``
        requires it (the probe still runs, a failure raises); ``False`` always scores sequentially.
    :param max_batch: most candidates per batched pass (``None``: sized to memory, see ``BatchedScorer``).
    :param autoreset_mode: a :class:`gymnasium.vector.AutoresetMode` or its value (``"NextStep"``,
        ``"SameStep"``, ``"Disabled"``).
    :param max_evals: a hard cap on :attr:`evaluations` (``None``: none); see the attribute.
    :param env_kwargs: keyword arguments of :class:`~prune_env.PruneRNNEnv` (``target_sparsity``, ``mode``,
        ``size_penalty``, ``criterion``, ``max_sparsity``, ``device``, ``task_kwargs``, ...).

    >>> envs = PruneRNNVectorEnv("digits", 4, target_sparsity=0.5, task_kwargs={"progress": False})
    >>> obs, infos = envs.reset(seed=0)
    >>> obs, rewards, terminated, truncated, infos = envs.step(envs.action_space.sample())
    >>> obs.shape[0], bool(terminated.all()), infos["overall_sparsity"].tolist()
    (4, True, [0.5, 0.5, 0.5, 0.5])
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, task, num_envs: int = 8, *, batched: bool | None = None, max_batch: int | None = None,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP, max_evals: int | None = None,
                 **env_kwargs: Any):
        check_int("num_envs", num_envs, 1)
        if "max_evaluations" in env_kwargs:
            warnings.warn("PruneRNNVectorEnv(max_evaluations=...) is deprecated; use max_evals=...",
                          DeprecationWarning, stacklevel=2)
            if max_evals is not None:
                raise TypeError("got both `max_evals` and its deprecated name `max_evaluations`")
            max_evals = env_kwargs.pop("max_evaluations")
        if max_evals is not None:
            check_int("max_evals", max_evals, 0)
        check_choice("batched", batched, (None, True, False))
        try:
            self.autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            raise ValueError(f"unknown `autoreset_mode` {autoreset_mode!r}; expected one of "
                             f"{[m.value for m in AutoresetMode]}") from None
        if env_kwargs.get("render_mode") is not None:
            raise ValueError("PruneRNNVectorEnv does not render; leave `render_mode` unset")
        self.template = PruneRNNEnv(task, **env_kwargs)
        self.task = self.template.task
        self.device = self.template.device
        self.num_envs = int(num_envs)
        self.envs = [self._sub_env() for _ in range(self.num_envs)]
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = None
        self.single_observation_space = self.template.observation_space
        self.single_action_space = self.template.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._obs = np.zeros((self.num_envs, *self.single_observation_space.shape), np.float32)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self.calibration: dict[str, float] = {}
        #: candidates scored so far by :meth:`step` (the construction-time probe is not counted)
        self.evaluations = 0
        #: a hard cap on :attr:`evaluations` (``None``: none). Episodes that end past it are not scored: they end with
        #: reward 0 and ``info["over_max_evals"] = True`` (and the former key ``over_budget``, kept for one release),
        #: as :class:`agents.core.cap.EvalCap` answers.
        self.max_evals: int | None = max_evals
        self.scorer: BatchedScorer | None = None
        self.eval_path, self.eval_path_reason = self._choose_path(batched, max_batch)

    @classmethod
    def from_env(cls, env: gym.Env, num_envs: int, **kwargs: Any) -> PruneRNNVectorEnv:
        """``num_envs`` sub-environments with the task and configuration of ``env`` (its current target included).

        :param env: a :class:`~prune_env.PruneRNNEnv`, possibly wrapped (the wrappers are not copied).
        :param num_envs: number of sub-environments K.
        :param kwargs: ``batched``, ``max_batch``, ``autoreset_mode`` (see the class).
        """
        base = env.unwrapped
        if not isinstance(base, PruneRNNEnv):
            raise ValueError(f"`env` must be a PruneRNNEnv (possibly wrapped), got {type(base).__name__}")
        cfg = {k: v for k, v in base.config.items() if k not in ("task", "task_kwargs", "render_mode")}
        cfg["target_sparsity"] = base.target_sparsity
        return cls(base.task, num_envs, **kwargs, **cfg)

    # ------------------------------------------------------------------------------------------- set-up
    def _sub_env(self) -> PruneRNNEnv:
        """A sub-environment with the template's task and settings: it finds the template's analysis in the cache
        (:func:`prune_env.pruning.analysis.analyse`), so it costs one copy of the model, not another analysis."""
        cfg = {k: v for k, v in self.template.config.items() if k not in ("task", "task_kwargs")}
        env = PruneRNNEnv(self.task, **{**cfg, "target_sparsity": self.template.target_sparsity})
        assert env.analysis is self.template.analysis
        return env

    def _choose_path(self, batched: bool | None, max_batch: int | None) -> tuple[str, str]:
        if batched is False:
            return "sequential", "batched=False"
        if not self.task.structured:
            return self._fallback(batched, "the task has only a black-box `evaluate` (no eval_batch/metric)")
        env = self.template
        if env.granularity != "unstructured" or env.quantize or env.finetune_steps:
            return self._fallback(batched, "batched scoring covers unstructured pruning without quantize or "
                                           "finetune_steps")
        try:
            self.scorer = BatchedScorer(self.task, env.analysis.layers, env.analysis.orders, self.device,
                                        max_batch=max_batch, autocast=PRECISIONS[self.template.precision],
                                        weights=env.kind.target if env.reconstruct else None)
            return self._probe(batched)
        except Exception as e:  # any forward vmap cannot batch: fall back rather than fail the user's run
            self.scorer = None
            return self._fallback(batched, f"batched evaluation failed: {type(e).__name__}: {e}")

    def _fallback(self, batched: bool | None, reason: str) -> tuple[str, str]:
        if batched:
            raise ValueError(f"`batched=True` but {reason}")
        warnings.warn(f"PruneRNNVectorEnv scores candidates one by one: {reason}", stacklevel=3)
        return "sequential", reason

    def _probe(self, batched: bool | None) -> tuple[str, str]:
        """Check the batched scores against ``task.evaluate`` on two allocations; for ``batched=None`` also time
        both paths (best of two runs each) and keep batched only if it is clearly faster per candidate."""
        env = self.template
        probe = np.stack([np.zeros(env.num_layers, np.int64), env.cap // 2])
        seq = [env.dense_score, env.score_counts(probe[1])[0]]
        results = self.scorer.score(probe)
        got = [s for s, _ in results]
        diff = max(abs(a - b) for a, b in zip(got, seq))
        if diff > (PROBE_TOLERANCE if env.precision == "fp32" else PROBE_TOLERANCE_BF16):
            self.scorer = None
            return self._fallback(batched, f"batched scores differ from task.evaluate by {diff:.2e} (is "
                                           "`evaluate` the same as eval_batch + metric?)")
        k = min(self.num_envs, self.scorer.max_batch)
        if batched is None and k < 2:
            self.scorer = None
            return "sequential", "one candidate per pass: nothing to batch"
        if batched is None:
            # On a CPU the per-candidate cost hardly changes beyond a few candidates: time 8 at most.
            k = k if self.device.type == "cuda" else min(k, 8)
            t_seq = min(_seconds(lambda: env.score_counts(probe[1])) for _ in range(2))
            counts = np.resize(probe, (k, env.num_layers))
            t_batch = min(_seconds(lambda: self.scorer.score(counts)) for _ in range(2)) / k
            self.calibration = {"sequential_s_per_candidate": t_seq, "batched_s_per_candidate": t_batch,
                                "candidates_timed": float(k)}
            if t_batch > CALIBRATION_MARGIN * t_seq:
                self.scorer = None
                return "sequential", (f"sequential is faster per candidate on {self.device} ({t_seq * 1e3:.2f} "
                                      f"ms vs {t_batch * 1e3:.2f} ms batched at K={k})")
        return "batched", f"batched passes of up to {self.scorer.max_batch} candidates on {self.device}"

    # ------------------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        """Reset every sub-environment, or those in ``options["reset_mask"]``; returns ``(obs, infos)``.

        :param seed: ``None``, an int (sub-env ``i`` gets ``seed + i``) or one seed per sub-environment.
        :param options: passed to each sub-env's ``reset``; a ``"reset_mask"`` boolean array picks which reset.
        """
        seeds = self._seeds(seed)
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is None:
            mask = np.ones(self.num_envs, dtype=bool)
        elif not (isinstance(mask, np.ndarray) and mask.dtype == np.bool_ and mask.shape == (self.num_envs,)):
            raise ValueError(f"`options['reset_mask']` must be a bool array of shape ({self.num_envs},)")
        infos: dict[str, Any] = {}
        for i in np.flatnonzero(mask):
            self._obs[i], info = self.envs[i].reset(seed=seeds[i], options=options or None)
            infos = self._add_info(infos, info, i)
        self._autoreset[mask] = False
        return self._obs.copy(), infos

    def step(self, actions):
        """Step every sub-environment; episodes that end are scored together. Returns the batched 5-tuple."""
        actions = np.asarray(actions)
        if actions.shape[:1] != (self.num_envs,):
            raise ValueError(f"`actions` must have shape {self.action_space.shape}, got {actions.shape}")
        if self.autoreset_mode == AutoresetMode.DISABLED and self._autoreset.any():
            raise RuntimeError(f"sub-environments {np.flatnonzero(self._autoreset).tolist()} have ended; reset "
                               "them with reset(options={'reset_mask': ...}) (autoreset_mode=DISABLED)")
        rewards = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        resetting = self._autoreset.copy() if self.autoreset_mode == AutoresetMode.NEXT_STEP else None
        infos: dict[str, Any] = {}
        ended = []
        for i, env in enumerate(self.envs):
            if resetting is not None and resetting[i]:
                self._obs[i], info = env.reset()
                infos = self._add_info(infos, info, i)
            elif env.advance(actions[i]):
                ended.append(i)
            else:
                self._obs[i], _, _, _, info = env.conclude(None)
                infos = self._add_info(infos, info, i)
        allowed = len(ended) if self.max_evals is None else max(0, self.max_evals - self.evaluations)
        ended, unscored = ended[:allowed], ended[allowed:]
        self.evaluations += len(ended)
        for i in unscored:  # past the cap: the episode ends without being scored
            self._obs[i], _, _, _, _ = self.envs[i].conclude(None)
            terminated[i] = True
            infos = self._finish_unscored(infos, i)
        for i, scored in zip(ended, self._score(ended)):
            env = self.envs[i]
            self._obs[i], rewards[i], terminated[i], _, info = env.conclude(scored)
            if self.autoreset_mode == AutoresetMode.SAME_STEP:
                infos = self._add_info(infos, {"final_obs": self._obs[i].copy(), "final_info": info}, i)
                self._obs[i], info = env.reset()
            infos = self._add_info(infos, info, i)
        self._autoreset = terminated.copy() if self.autoreset_mode != AutoresetMode.SAME_STEP else self._autoreset
        return self._obs.copy(), rewards, terminated, np.zeros(self.num_envs, dtype=bool), infos

    def close_extras(self, **kwargs: Any) -> None:
        if hasattr(self, "template"):  # gymnasium 1.2's VectorEnv.__del__ also closes an env whose __init__ raised
            self.template.close()

    def _finish_unscored(self, infos: dict[str, Any], i: int) -> dict[str, Any]:
        info = {"over_max_evals": True, "over_budget": True}
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            infos = self._add_info(infos, {"final_obs": self._obs[i].copy(), "final_info": info}, i)
            self._obs[i], info = self.envs[i].reset()
        return self._add_info(infos, info, i)

    # ----------------------------------------------------------------------------------------- helpers
    def _seeds(self, seed: int | list[int | None] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if is_int(seed):
            return [int(seed) + i for i in range(self.num_envs)]
        if isinstance(seed, (list, tuple)) and len(seed) == self.num_envs:
            return list(seed)
        raise ValueError(f"`seed` must be None, an int or a list of {self.num_envs} seeds, got {seed!r}")

    def _score(self, ended: list[int]) -> list[tuple[float, dict[str, float]]]:
        """Scores of the ended sub-environments: one batched pass, or each env's own ``evaluate``."""
        if self.scorer is not None and ended:
            return self.scorer.score(np.stack([self.envs[i].counts for i in ended]))
        return [self.envs[i].score() for i in ended]

    @property
    def max_evaluations(self) -> int | None:
        """Deprecated name of :attr:`max_evals`."""
        warnings.warn("PruneRNNVectorEnv.max_evaluations is deprecated; use max_evals", DeprecationWarning,
                      stacklevel=2)
        return self.max_evals

    @max_evaluations.setter
    def max_evaluations(self, value: int | None) -> None:
        warnings.warn("PruneRNNVectorEnv.max_evaluations is deprecated; use max_evals", DeprecationWarning,
                      stacklevel=2)
        self.max_evals = value

    @property
    def allocations(self) -> list[dict[str, float] | None]:
        """Each sub-environment's last finished allocation (see :attr:`PruneRNNEnv.allocation`)."""
        return [env.allocation for env in self.envs]

    def __repr__(self) -> str:
        return (f"PruneRNNVectorEnv({self.task.name}, num_envs={self.num_envs}, mode={self.template.mode!r}, "
                f"eval_path={self.eval_path!r}, device={self.device})")


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


__all__ = ["PruneRNNVectorEnv"]
