"""``PruneRNNZooEnv``: one pruning problem per episode, drawn from many models and targets.

Each ``reset`` draws a model (one of ``tasks``) and a target sparsity from ``np_random``, then the episode is an
ordinary :class:`~prune_env.PruneRNNEnv` episode on that model in budget mode. The observation space is the same
whatever the model, so one policy can act on every model of a zoo (and, by reading per-layer statistics, on models
it has never seen):

- **joint** mode: ``max_layers`` rows of :data:`ROW` (the layer's static features; the sparsity each one-shot rule,
  LAMP, ERK, global magnitude and the loss-aware OBD rule, gives it at the target; its share of the model's estimated
  loss increase under LAMP's allocation; the sparsity chosen for it; and 1 for a real layer / 0 for padding), then
  :data:`CONTEXT`. The action is ``Box(-1, 1, (max_layers,))``; entries past the model's layers are ignored.
- **sequential** mode: the row of the layer about to be pruned, then :data:`CONTEXT`; the action is one sparsity.

``observation_format=4`` uses the longer row :data:`ROW_V4`: the columns of :data:`ROW` (the same values, bit for bit)
with the calibration-aware, evaluation-free layer features of :mod:`prune_env.pruning.layer_features` before
``chosen`` and ``valid`` (pre-activation errors with and without reconstruction and the training-loss increase of
pruning the layer alone to its LAMP share, the OWL outlier share, the heavy-tail exponent and the layer's role).
They read training batches only; the task needs calibration data.

:data:`CONTEXT` is the model-level state: the target, the fraction removed and still needed, the previous applied
sparsity, the progress, the share of weights after the current layer, the number of layers over ``max_layers`` and
the log10 of the prunable weights over 10. The analysis of each model is computed once and shared
(:func:`prune_env.pruning.analysis.analyse`); each model's env is built on its first draw and kept.

>>> from prune_env.tasks import make_task
>>> models = [make_task("digits", seed=s, progress=False, hidden=16, epochs=2) for s in (0, 1)]
>>> env = PruneRNNZooEnv(models, target_sparsity=(0.5, 0.9))
>>> obs, info = env.reset(seed=0)
>>> env.observation_space.shape == obs.shape, 0.5 <= info["target_sparsity"] <= 0.9
(True, True)
>>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
>>> terminated, abs(info["overall_sparsity"] - info["target_sparsity"]) < 1e-3
(True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from prune_env.checks import check_number
from prune_env.envs.config import MODES
from prune_env.envs.env import PruneRNNEnv
from prune_env.pruning import allocation as B
from prune_env.pruning import rules as R
from prune_env.pruning.analysis import analyse
from prune_env.pruning.fisher import has_loss, obd_costs
from prune_env.pruning.layer_features import COLUMNS as LAYER_COLUMNS
from prune_env.pruning.layer_features import feature_columns
from prune_env.pruning.stats import FEATURES
from prune_env.task import RNNTask

#: Model-level context features that follow the per-layer rows.
CONTEXT = ("target_sparsity", "removed", "still_needed", "prev_action", "progress", "rest_share", "num_layers",
           "log_params")
#: The one-shot rules whose allocation at the episode's target each row carries (over ``max_sparsity``, so
#: ``2 * lamp - 1`` is LAMP's action); all computed without an evaluation (:mod:`prune_env.pruning.rules`).
RULE_COLUMNS = ("lamp", "erk", "global", "obd")
#: Per-layer row: the static features, the rules' sparsities, ``obd_share`` (the layer's share of the model's
#: Optimal Brain Damage cost under LAMP's allocation, from training batches: :mod:`prune_env.pruning.fisher`), then the
#: chosen sparsity and a validity flag.
ROW = (*FEATURES, *RULE_COLUMNS, "obd_share", "chosen", "valid")
#: The row of observation format 2, which policies v1-v3 were trained on: they read these columns of :data:`ROW` by
#: name.
ROW_V2 = (*FEATURES, "lamp", "chosen", "valid")
#: The row of observation format 4: :data:`ROW`'s columns with the layer features of
#: :mod:`prune_env.pruning.layer_features` before ``chosen`` and ``valid``.
ROW_V4 = (*FEATURES, *RULE_COLUMNS, "obd_share", *LAYER_COLUMNS, "chosen", "valid")
#: Observation format -> its per-layer row (format 3 is :data:`ROW`, the default).
OBSERVATION_FORMATS = {3: ROW, 4: ROW_V4}


class PruneRNNZooEnv(gym.Env):
    """Pruning episodes over many models and targets, with one observation space for all of them.

    :param tasks: the models: :class:`~prune_env.RNNTask` objects or names :func:`prune_env.tasks.resolve_task`
        understands (presets, ``module:function``, zoo names).
    :param target_sparsity: a fixed target, or ``(low, high)``: each episode draws one uniformly from ``np_random``.
    :param mode: ``"joint"`` or ``"sequential"``.
    :param max_layers: rows of the joint observation and action; default: the most layers of any task.
    :param observation_format: 3 (rows of :data:`ROW`) or 4 (rows of :data:`ROW_V4`, adding the calibration-aware
        layer features; every task then needs calibration data).
    :param env_kwargs: further :class:`~prune_env.PruneRNNEnv` arguments shared by every model (``criterion``,
        ``max_sparsity``, ``device``, ``precision``, ``granularity``, ``finetune_steps``).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(self, tasks: Sequence[RNNTask | str], target_sparsity: float | tuple[float, float] = (0.5, 0.95), *,
                 mode: str = "joint", max_layers: int | None = None, render_mode: str | None = None,
                 observation_format: int = 3, **env_kwargs: Any):
        from prune_env.tasks import resolve_task

        if isinstance(tasks, (str, RNNTask)) or not isinstance(tasks, Sequence) or not tasks:
            raise ValueError("`tasks` must be a non-empty sequence of RNNTasks or task names")
        for key in ("target_sparsity", "mode", "render_mode", "config", "task_kwargs", "quantize"):
            if key in env_kwargs:
                raise ValueError(f"`{key}` is not a per-model argument of PruneRNNZooEnv")
        if mode not in MODES:
            raise ValueError(f"unknown `mode` {mode!r}; expected one of {MODES}")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"unsupported `render_mode` {render_mode!r}; expected None or 'ansi'")
        if isinstance(observation_format, bool) or observation_format not in OBSERVATION_FORMATS:
            raise ValueError(f"unknown `observation_format` {observation_format!r}; expected one of "
                             f"{tuple(OBSERVATION_FORMATS)}")
        self.observation_format = int(observation_format)
        self.tasks = [resolve_task(t) for t in tasks]
        for t in self.tasks if self.observation_format == 4 else ():
            if t.calibration_batches is None and t.train_loss is None:
                raise ValueError(f"`observation_format`=4 needs calibration data: task {t.name!r} has neither "
                                 "`calibration_batches` nor `train_loss`")
        self.target_range = _target_range(target_sparsity)
        self.mode, self.render_mode, self.env_kwargs = mode, render_mode, dict(env_kwargs)
        criterion = env_kwargs.get("criterion", "magnitude")
        granularity = env_kwargs.get("granularity", "unstructured")
        self.analyses = [analyse(t, criterion, granularity) for t in self.tasks]
        most = max(a.num_layers for a in self.analyses)
        self.max_layers = most if max_layers is None else int(max_layers)
        if self.max_layers < most:
            raise ValueError(f"`max_layers`={max_layers} is below the {most} layers of the largest task")
        row = OBSERVATION_FORMATS[self.observation_format]
        n_obs = (self.max_layers if mode == "joint" else 1) * len(row) + len(CONTEXT)
        self.observation_space = spaces.Box(0.0, 1.0, (n_obs,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (self.max_layers if mode == "joint" else 1,), np.float32)
        self._envs: dict[int, PruneRNNEnv] = {}
        self.task_index = 0
        self._t, self._prev = 0, 0.0

    @property
    def env(self) -> PruneRNNEnv:
        """The current episode's :class:`~prune_env.PruneRNNEnv` (built on the model's first draw)."""
        i = self.task_index
        if i not in self._envs:
            self._envs[i] = PruneRNNEnv(self.tasks[i], mode=self.mode, target_sparsity=self.target_range[0],
                                        **self.env_kwargs)
        return self._envs[i]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Draw a model and a target; ``options`` may fix them: ``{"task_index": i, "target_sparsity": t}``."""
        super().reset(seed=seed)
        options = dict(options or {})
        i = options.get("task_index")
        self.task_index = int(self.np_random.integers(len(self.tasks))) if i is None else int(i)
        if not 0 <= self.task_index < len(self.tasks):
            raise ValueError(f"`options['task_index']` must be in [0, {len(self.tasks)}), got {i!r}")
        lo, hi = self.target_range
        target = options.get("target_sparsity")
        target = float(self.np_random.uniform(lo, hi)) if target is None else check_number(
            "options['target_sparsity']", target, 0.0, 1.0, high_open=True)
        self.env.reset(seed=int(self.np_random.integers(2**31 - 1)), options={"target_sparsity": target})
        self._t, self._prev = 0, 0.0
        return self._obs(), self._info({})

    def step(self, action):
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self.action_space.shape:
            raise ValueError(f"`action` must have shape {self.action_space.shape}, got {a.shape}")
        env = self.env
        inner = a[:env.num_layers] if self.mode == "joint" else a
        ended = env.advance(inner)
        _, reward, terminated, truncated, info = env.conclude(env.score() if ended else None)
        counts = env.counts
        self._prev = (float(np.mean(counts / env.numels)) if self.mode == "joint"
                      else float(counts[self._t] / env.numels[self._t]))
        self._t += 1
        return self._obs(), float(reward), bool(terminated), bool(truncated), self._info(info)

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        env = self.env
        return {**info, "task": env.task.name, "task_index": self.task_index,
                "target_sparsity": env.target_sparsity, "dense_score": env.dense_score}

    def _obs(self) -> np.ndarray:
        return observation(self.env, self.max_layers, self._t, self._prev,
                           observation_format=self.observation_format)

    def render(self):
        if self.render_mode == "ansi":
            return f"[{self.env.task.name}, target {self.env.target_sparsity:.3f}]\n{self.env.layer_table()}"
        return None


def observation(env: PruneRNNEnv, max_layers: int | None = None, t: int = 0, prev_action: float = 0.0,
                joint: bool | None = None, observation_format: int = 3) -> np.ndarray:
    """The zoo observation of any budget-mode :class:`~prune_env.PruneRNNEnv` in its current state.

    What :class:`PruneRNNZooEnv` observes, computed from the env's public state, so a policy trained on a zoo can act
    on a single env (``max_layers`` defaults to the env's own layer count).

    :param env: the env (joint or sequential mode, ``target_sparsity`` set).
    :param max_layers: joint-mode rows (padding past the env's layers).
    :param t: steps taken this episode (sequential mode: the layer about to be pruned).
    :param prev_action: the previous step's applied sparsity.
    :param joint: the joint layout (every layer's row) whatever the env's mode; default: the env's mode.
    :param observation_format: 3 (rows of :data:`ROW`) or 4 (:data:`ROW_V4`).
    """
    if env.target_sparsity is None:
        raise ValueError("the zoo observation needs an env in budget mode (target_sparsity set)")
    n = env.num_layers
    max_layers = n if max_layers is None else max_layers
    if isinstance(observation_format, bool) or observation_format not in OBSERVATION_FORMATS:
        raise ValueError(f"unknown `observation_format` {observation_format!r}; expected one of "
                         f"{tuple(OBSERVATION_FORMATS)}")
    row = OBSERVATION_FORMATS[observation_format]
    rows = np.zeros((max_layers, len(row)), np.float64)
    rows[:n, :len(FEATURES)] = env.analysis.features
    rows[:n, len(FEATURES):len(FEATURES) + len(RULE_COLUMNS) + 1] = rule_columns(env)
    if observation_format == 4:
        start = len(FEATURES) + len(RULE_COLUMNS) + 1
        rows[:n, start:start + len(LAYER_COLUMNS)] = layer_columns(env)
    rows[:n, -2] = env.counts / env.numels
    rows[:n, -1] = 1.0
    sequential = not ((env.mode == "joint") if joint is None else joint)
    removed, needed, progress, rest = B.episode_fractions(env.counts, env.numels, env.target_sparsity, t, sequential)
    block = (rows[t] if t < n else np.zeros(len(row))) if sequential else rows.reshape(-1)
    context = [env.target_sparsity, removed, needed, prev_action, progress, rest, n / max_layers,
               np.log10(int(env.numels.sum())) / 10.0]
    return np.clip(np.concatenate([block, context]), 0.0, 1.0).astype(np.float32)


def rule_columns(env: PruneRNNEnv) -> np.ndarray:
    """``(num_layers, len(RULE_COLUMNS) + 1)``: each rule's sparsity per layer at the env's target over
    ``max_sparsity``, then ``obd_share``. Computed once per (model, target) and kept with the analysis.

    At ``hidden_unit`` granularity, where the rules do not apply, every rule column is the target itself (uniform) and
    ``obd_share`` is 0. A task with neither ``train_loss`` nor ``loss`` has no OBD costs: its ``obd`` column repeats
    LAMP's and ``obd_share`` is 0.
    """
    a, target = env.analysis, env.target_sparsity
    return a.cached(("rule_columns", target, env.max_sparsity), lambda: _rule_columns(env), max_entries=4096)


def layer_columns(env: PruneRNNEnv) -> np.ndarray:
    """``(num_layers, len(LAYER_COLUMNS))``: the layer features of :mod:`prune_env.pruning.layer_features` at each
    layer's LAMP sparsity for the env's target, the loss measured under the env's ``reconstruct`` operator. No
    evaluation; training batches only. Computed once per (model, target) and kept with the analysis.

    :raises ValueError: for a task without calibration data (naming ``observation_format``).
    """
    a = env.analysis

    def compute() -> np.ndarray:
        shares = rule_columns(env)[:, RULE_COLUMNS.index("lamp")] * env.max_sparsity
        out = feature_columns(a, env.task, shares, env.reconstruct)
        out.setflags(write=False)
        return out

    return a.cached(("layer_columns", env.target_sparsity, env.max_sparsity, env.reconstruct), compute,
                    max_entries=4096)


def _rule_columns(env: PruneRNNEnv) -> np.ndarray:
    a, target = env.analysis, env.target_sparsity
    n = env.num_layers
    out = np.zeros((n, len(RULE_COLUMNS) + 1))
    if a.plan is not None:
        out[:, :-1] = target / env.max_sparsity
    else:
        total, cap = B.budget_count(target, env.numels), env.cap
        lamp = R.lamp_counts(a, total, cap)
        loss_aware = has_loss(env.task)
        counts = {"lamp": lamp, "erk": R.erk_counts(a, total, cap), "global": R.global_magnitude_counts(a, total, cap),
                  "obd": R.obd_counts(a, env.task, total, cap) if loss_aware else lamp}
        for j, rule in enumerate(RULE_COLUMNS):
            out[:, j] = counts[rule] / env.numels / env.max_sparsity
        if loss_aware:
            damage = np.array([c[:k].sum() for c, k in zip(obd_costs(a, env.task), lamp)])
            out[:, -1] = damage / damage.sum() if damage.sum() > 0 else 0.0
    out.setflags(write=False)  # kept for at most 4096 keys: targets drawn from a range are all distinct
    return out


def _target_range(target: float | tuple[float, float]) -> tuple[float, float]:
    if isinstance(target, (tuple, list)):
        if len(target) != 2:
            raise ValueError(f"`target_sparsity` must be a number or a (low, high) pair, got {target!r}")
        lo = check_number("target_sparsity[0]", target[0], 0.0, 1.0, high_open=True)
        hi = check_number("target_sparsity[1]", target[1], lo, 1.0, high_open=True)
        return lo, hi
    t = check_number("target_sparsity", target, 0.0, 1.0, high_open=True)
    return t, t


__all__ = ["CONTEXT", "LAYER_COLUMNS", "OBSERVATION_FORMATS", "ROW", "ROW_V2", "ROW_V4", "RULE_COLUMNS",
           "PruneRNNZooEnv", "layer_columns", "observation", "rule_columns"]
