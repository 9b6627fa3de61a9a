"""``PruneRNNEnv``: learn how much of each layer of a trained recurrent network to prune."""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from prune_env.checks import check_finite_weights, check_number
from prune_env.compression.finetune import finetune
from prune_env.devices import autocast, check_precision, model_device, resolve_device
from prune_env.envs.actions import action_to_bits, action_to_sparsity, bits_array, bits_to_action, sparsity_to_action
from prune_env.envs.config import DEFAULTS, MODES, env_config
from prune_env.pruning import allocation as B
from prune_env.pruning.analysis import Analysis, analyse, calibration
from prune_env.pruning.calibration import calibration_inputs
from prune_env.pruning.coverage import CoverageReport, check_coverage, coverage_report, removed_matrix_weights
from prune_env.pruning.criteria import CALIBRATED, sparsity_to_count
from prune_env.pruning.kinds import PruningKind, make_kind
from prune_env.pruning.reconstruction import Calibrated, sequential_prune
from prune_env.pruning.stats import FEATURES, layer_table
from prune_env.task import EvaluationError, RNNTask, split_score

__all__ = ["DYNAMIC", "MODES", "PruneRNNEnv"]
#: Names of the dynamic (episode-dependent) features that follow the per-layer chosen sparsities.
DYNAMIC = ("target_sparsity", "removed", "still_needed", "prev_action", "progress", "rest_share")


class PruneRNNEnv(gym.Env):
    """
    ## Description

    An agent decides how much of each layer of a trained recurrent network (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``,
    with their ``nn.Embedding`` inputs and ``nn.Linear`` heads) to prune. Each prunable weight (every stacked layer
    and direction of a recurrent module, every embedding and linear weight; never biases) is one "layer" of the
    allocation, named as in ``model.named_parameters()``, e.g. ``lstm.weight_hh_l0``. Within a layer the weights
    with the lowest ``criterion`` score are pruned, exactly as many as the chosen sparsity asks for. The pruned model
    is scored on the task's validation data with one forward pass. How counts become a model is a *pruning kind*
    (:mod:`prune_env.pruning.kinds`); the dense model's statistics, gradients and prune orders are one shared
    :class:`~prune_env.pruning.analysis.Analysis` (``env.analysis``).

    Modes: ``"joint"``, one step per episode whose action holds every layer's sparsity; ``"sequential"`` (AMC
    style), one layer per step in the order of ``layer_names``, intermediate rewards 0.

    Granularities: ``"unstructured"`` zeroes individual weights; ``"hidden_unit"`` makes each stacked recurrent
    layer one unit of the allocation (``rnn.l0``, ...; both directions together) and a sparsity the fraction of its
    hidden units removed, with all their weights; :meth:`pruned_model` is then physically smaller.

    ## Action Space

    ``Box(-1, 1, (num_layers,))`` in joint mode, ``Box(-1, 1, (1,))`` in sequential mode, float32. An action ``a``
    asks for sparsity ``s = (a + 1) / 2 * max_sparsity`` (:mod:`prune_env.envs.actions`); actions outside [-1, 1] are
    clipped, NaN, inf or a wrong shape raise ``ValueError``. With ``quantize`` the action doubles (sparsities, then
    bit coordinates split into equal bins over :data:`~prune_env.compression.quantize.BITS`).

    In budget mode (``target_sparsity`` set) every episode ends at exactly ``round(target_sparsity * N)`` pruned
    weights (``N`` = prunable weights): joint mode projects the request onto the budget with one common shift
    (:func:`~prune_env.pruning.allocation.project_to_budget`; a uniform request gives uniform pruning); sequential
    mode applies AMC's action wall and the last layer takes the remainder. No layer exceeds ``max_sparsity``.

    ## Observation Space

    ``Box(0, 1, float32)``. Joint mode: the static features of every layer (``num_layers x len(FEATURES)``,
    row-major; see :mod:`prune_env.pruning.stats`: kind one-hot, depth, parameter share, log fan-out/fan-in, ``|w|``
    statistics, quantiles and histogram, log mean gradient and saliency); sequential mode: those of the layer about
    to be pruned (zeros after the last). Then the sparsity already chosen for each layer and :data:`DYNAMIC`: the
    target (0 in penalty mode), fraction removed, fraction still needed, previous applied sparsity, progress, share
    of weights after the current layer. ``quantize`` adds each layer's bits / 32 and the compressed size fraction.

    ## Rewards

    With ``rel = 1 + (score - dense_score) / |dense_score|`` (``score / dense_score`` for a positive dense score):
    ``rel`` in budget mode, ``rel - size_penalty * remaining_fraction`` in penalty mode; with ``quantize`` always
    ``rel - size_penalty * size_fraction`` (compressed bits of the prunable weights over float32). Given at the last
    step; its terms are in ``info["reward_terms"]``. With ``finetune_steps`` a copy of the pruned model is
    fine-tuned (masks fixed, batches from ``task.train_loss`` seeded by ``np_random``) before it is scored. Only
    ``task.evaluate`` (validation) is used; the test score never reaches the reward or ``info``.

    ## Starting State and Episode End

    The dense model: every episode's counts start at zero (the private model copy keeps the last masks until it is
    next scored, when each layer moves straight to its new count). Terminates after one step (joint) or after the
    last layer (sequential); never truncates.

    ## Info

    At the end of an episode: ``score``, ``dense_score``, ``overall_sparsity`` (over the prunable weights),
    ``model_sparsity`` (over every weight tensor of two or more dimensions, pruned or not; see ``env.coverage``),
    ``layer_sparsity`` (name -> sparsity), ``nonzero_params`` (parameters of the whole model kept, biases
    included), ``size_bytes`` (the exact encoded size, :mod:`prune_env.compression.size`), ``reward_terms`` and the
    task's extra metrics (e.g. ``perplexity``).
    ``hidden_unit`` adds ``weight_sparsity``; ``quantize`` adds ``layer_bits`` and ``size_fraction``. Earlier
    sequential steps carry ``layer_sparsity`` and ``overall_sparsity``.

    ## Arguments

    - ``task``: an :class:`~prune_env.RNNTask` or a preset name (``prune_env.tasks.PRESETS``); a ``dict`` in its
      place is taken as ``config`` (RLlib-style construction).
    - ``target_sparsity``: overall sparsity every episode must reach, in [0, 1); ``None`` for penalty mode.
    - ``mode``: ``"joint"`` or ``"sequential"``; ``size_penalty``: weight of the size term.
    - ``criterion``: ranking within a layer: ``"magnitude"`` ``|w|``, ``"gradient"`` ``|g|`` or ``"saliency"``
      ``|w * g|`` (the last two need ``task.loss``; for hidden units: L2 norms, or ``(sum w * g) ** 2``), or, from
      the task's calibration inputs (:mod:`prune_env.pruning.calibration`), ``"wanda"`` ``|w| * ||x_j||`` or
      ``"obs"`` ``w**2 / [H^-1]_jj``, both compared within each (gate) row and pruned row-balanced
      (:mod:`prune_env.pruning.obs`).
    - ``reconstruct``: ``None`` (kept weights keep their dense values) or ``"obs"``: each pruned layer's kept
      weights are re-fitted by least squares to the dense layer's outputs on the calibration inputs (SparseGPT /
      Optimal Brain Compression; for hidden units, the matrices that read the removed units). With ``criterion``
      this is the *operator* (:mod:`prune_env.pruning.reconstruction`); ``quantize="gptq"`` rounds by GPTQ on
      the same inputs. Both need the task's ``calibration_batches`` or ``train_loss`` (a ``ValueError`` naming the
      setting otherwise).
    - ``max_sparsity``: the most any one layer may be pruned, in (0, 1].
    - ``device``: where the env's copy of the model runs; default ``"cuda"`` when available, else ``"cpu"``.
    - ``task_kwargs``: keyword arguments for building a preset task (e.g. ``{"seed": 1}``).
    - ``granularity``: ``"unstructured"`` or ``"hidden_unit"``.
    - ``quantize``: ``False``, ``True``/``"linear"``, ``"kmeans"`` or ``"gptq"``: per-layer bit-widths join the
      action.
    - ``finetune_steps``: Adam steps of recovery fine-tuning before each episode is scored (0: none).
    - ``precision``: ``"fp32"`` or ``"bf16"`` (scores under ``torch.autocast``; refused with a ``ValueError`` where
      the device has no bf16 kernel for the model's recurrent layers, see :mod:`prune_env.devices`).
    - ``strict_coverage``: raise ``ValueError`` instead of warning when weight tensors of two or
      more dimensions that no layer adapter prunes hold over 5 % of the model's parameters
      (:mod:`prune_env.pruning.coverage`).
    - ``config``: a dict merged over :meth:`default_config` and the keyword arguments; its entries win.

    ## Example

    >>> import prune_env
    >>> env = prune_env.PruneRNNEnv("digits", target_sparsity=0.5, task_kwargs={"progress": False})
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> terminated, round(info["overall_sparsity"], 3)
    (True, 0.5)

    ## Version History

    - v0: initial release.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        """The defaults that ``config`` and the keyword arguments are merged over."""
        return dict(DEFAULTS)

    def __init__(self, task: RNNTask | str | dict | None = None, *, target_sparsity: float | None = None,
                 mode: str = "joint", size_penalty: float = 0.5, criterion: str = "magnitude",
                 max_sparsity: float = 0.98, device: str | torch.device | None = None,
                 render_mode: str | None = None, task_kwargs: dict | None = None,
                 granularity: str = "unstructured", quantize: bool | str = False, finetune_steps: int = 0,
                 precision: str = "fp32", reconstruct: str | None = None, strict_coverage: bool = False,
                 config: dict | None = None):
        if isinstance(task, dict):
            if config is not None:
                raise ValueError("pass `config` either positionally or as `config=`, not both")
            task, config = None, task
        arguments = dict(target_sparsity=target_sparsity, mode=mode, size_penalty=size_penalty, criterion=criterion,
                         max_sparsity=max_sparsity, device=device, render_mode=render_mode, task_kwargs=task_kwargs,
                         granularity=granularity, quantize=quantize, finetune_steps=finetune_steps,
                         precision=precision, reconstruct=reconstruct, strict_coverage=strict_coverage,
                         **({} if task is None else {"task": task}))
        self.config = cfg = env_config(arguments, config)
        self.mode, self.criterion, self.granularity = cfg["mode"], cfg["criterion"], cfg["granularity"]
        self.max_sparsity, self.size_penalty = cfg["max_sparsity"], cfg["size_penalty"]
        self.render_mode, self.finetune_steps = cfg["render_mode"], cfg["finetune_steps"]
        self.precision, self.quantize, self.reconstruct = cfg["precision"], cfg["quantize"], cfg["reconstruct"]
        self.device = resolve_device(cfg["device"])

        from prune_env.tasks import resolve_task

        self.task = resolve_task(cfg["task"], **(cfg["task_kwargs"] or {}))  # raises TaskError
        check_finite_weights(self.task.model, f"task {self.task.name!r}'s model")
        check_precision(self.task.model, self.device, self.precision)
        #: the shared, immutable one-off analysis of the task's model (see :mod:`prune_env.pruning.analysis`)
        self.analysis: Analysis = analyse(self.task, self.criterion, self.granularity)
        a = self.analysis
        self.layers, self.layer_names, self.layer_stats = list(a.layers), a.layer_names, list(a.layer_stats)
        self.numels, self.num_layers, self.total_params = a.numels, a.num_layers, a.total_params
        self.cap = self.analysis.caps(self.max_sparsity)
        #: which weights this env prunes and which matrices it leaves dense (:mod:`prune_env.pruning.coverage`)
        self.coverage: CoverageReport = coverage_report(self.task.model, a.weight_layers)
        check_coverage(self.coverage, strict=cfg["strict_coverage"], what=f"task {self.task.name!r}")
        self.target_sparsity = self._check_target(cfg["target_sparsity"])

        self._model = copy.deepcopy(self.task.model).to(self.device).eval().requires_grad_(False)
        #: how counts (and bits) become a pruned model and its size (see :mod:`prune_env.pruning.kinds`)
        self.kind: PruningKind = make_kind(self._model, self.analysis, self.quantize, self._calibrated())
        self.dense_score, self._dense_extras = self.analysis.dense_score(
            (str(self.device), self.precision), lambda: self._evaluate(self._model))

        n_obs = (self.num_layers * len(FEATURES) if self.mode == "joint" else len(FEATURES))
        n_obs += self.num_layers + len(DYNAMIC) + (self.num_layers + 1 if self.quantize else 0)
        self.observation_space = spaces.Box(0.0, 1.0, (n_obs,), np.float32)
        n_act = (self.num_layers if self.mode == "joint" else 1) * (2 if self.quantize else 1)
        self.action_space = spaces.Box(-1.0, 1.0, (n_act,), np.float32)
        self._counts = np.zeros(self.num_layers, dtype=np.int64)
        self._bits = np.full(self.num_layers, 32, dtype=np.int64)
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # the last finished episode's counts and bits
        self._last_scored: torch.nn.Module | None = None  # its fine-tuned model (finetune_steps only)
        self._t, self._prev_action = 0, 0.0
        self._was_reset = False  # step() before the first reset() raises gymnasium's ResetNeeded

    def _calibrated(self) -> Calibrated | None:
        """The shared calibration-aware weights of the analysis, when the operator or GPTQ needs them."""
        if not self.reconstruct and self.quantize != "gptq":
            return None
        stats = calibration(self.analysis, self.task, "reconstruct" if self.reconstruct else "quantize")
        return self.analysis.cached(("calibrated", self.reconstruct),
                                    lambda: Calibrated(self.analysis, stats, self.reconstruct))

    @property
    def operator(self) -> dict[str, Any]:
        """How a layer is pruned: ``criterion``, ``reconstruct``, the quantization method and, for the data-aware
        operators, the calibration data used (``batches`` and their SHA-256 ``digest``), for records."""
        calibrated = self.criterion in CALIBRATED or self.reconstruct or self.quantize == "gptq"
        stats = calibration(self.analysis, self.task) if calibrated else None
        return {"criterion": self.criterion, "reconstruct": self.reconstruct, "quantize": self.quantize,
                "calibration": None if stats is None else {"batches": stats.batches, "digest": stats.digest}}

    def _check_target(self, target: float | None) -> float | None:
        if target is None:
            return None
        target = check_number("target_sparsity", target, 0.0, 1.0, high_open=True)
        if B.budget_count(target, self.numels) > int(self.cap.sum()):
            raise ValueError(f"`target_sparsity`={target} is unreachable with `max_sparsity`={self.max_sparsity}; "
                             "raise max_sparsity or lower the target")
        return target

    # ------------------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "target_sparsity" in options:
            self.target_sparsity = self._check_target(options["target_sparsity"])
        self._counts[:], self._bits[:], self._t, self._prev_action = 0, 32, 0, 0.0
        self._was_reset = True
        return self._obs(), {"dense_score": self.dense_score}

    def step(self, action):
        return self.conclude(self.score() if self.advance(action) else None)

    def advance(self, action) -> bool:
        """Apply one action to the episode's counts (the model is not touched); returns whether the episode ended.

        With :meth:`score` and :meth:`conclude` this is :meth:`step` in three parts, so that a vector env can score
        many ended episodes in one batched pass (:class:`~prune_env.PruneRNNVectorEnv`).
        """
        if not self._was_reset:
            raise gym.error.ResetNeeded("step() called before reset(); call reset() first")
        if self._t >= self.episode_length:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        a = np.asarray(action, dtype=np.float64)
        a = a.reshape(1) if a.ndim == 0 and self.mode == "sequential" else a
        if a.shape != self.action_space.shape:
            raise ValueError(f"`action` must have shape {self.action_space.shape}, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"`action` must be finite, got {a.tolist()}")
        half = a.size // 2 if self.quantize else a.size
        sparsities = action_to_sparsity(a[:half], self.max_sparsity)
        if self.quantize:
            self._bits[self._t:self._t + 1 if self.mode == "sequential" else None] = action_to_bits(a[half:])
        if self.mode == "joint":
            self._counts[:] = self._joint_counts(sparsities)
            self._prev_action = float(np.mean(sparsities))
        else:
            i = self._t
            k = min(sparsity_to_count(float(sparsities[0]), int(self.numels[i])), int(self.cap[i]))
            if self.target_sparsity is not None:
                k = B.action_wall(k, i, int(self._counts[:i].sum()), self._budget_count(), self.cap)
            self._counts[i] = k
            self._prev_action = float(k / self.numels[i])
        self._t += 1
        return self._t >= self.episode_length

    def _joint_counts(self, sparsities: np.ndarray) -> np.ndarray:
        if self.target_sparsity is None:
            return np.minimum(B.counts_from_sparsities(sparsities, self.numels), self.cap)
        return B.project_to_budget(sparsities, self.numels, self._budget_count(), self.cap)

    def _budget_count(self) -> int:
        return B.budget_count(self.target_sparsity, self.numels)

    def score(self) -> tuple[float, dict[str, float]]:
        """The validation ``(score, extras)`` of the current episode's counts (fine-tuned first with
        ``finetune_steps``): ``task.evaluate`` at the env's precision."""
        return self.score_counts(self._counts, self._bits)

    def score_counts(self, counts, bits=None) -> tuple[float, dict[str, float]]:
        """Bring the env's model copy to ``counts`` (and ``bits``) and score it, as :meth:`score` does."""
        self.kind.apply(counts, bits)
        if not self.finetune_steps:
            self._last_scored = None
            return self._evaluate(self._model, counts)
        model = copy.deepcopy(self._model)
        seed = int(self.np_random.integers(2**63 - 1))
        finetune(model, self.task, self.finetune_steps, self.kind.masks(model), torch.Generator().manual_seed(seed))
        self.kind.finalize(model, bits)
        self._last_scored = model
        return self._evaluate(model, counts)

    def _evaluate(self, model: torch.nn.Module, counts=None) -> tuple[float, dict[str, float]]:
        try:
            with autocast(self.device, self.precision):
                return split_score(self.task.evaluate(model))
        except Exception as e:
            raise self._failure(counts, e) from e

    def _failure(self, counts, cause: BaseException | str) -> EvaluationError:
        where = "the dense model" if counts is None or not np.any(counts) else "allocation " + repr(
            {n: round(float(c / m), 6) for n, c, m in zip(self.layer_names, counts, self.numels)})
        why = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        return EvaluationError(f"task.evaluate failed on {where} of {self.task.name}: {why}")

    def conclude(self, scored: tuple[float, dict[str, float]] | None):
        """The step's 5-tuple, given the ended episode's ``(score, extras)`` from :meth:`score` (or a batched
        scorer), or ``None`` mid-episode."""
        if scored is None:
            return self._obs(), 0.0, False, False, self._progress_info()
        score, extras = scored
        if not np.isfinite(score):  # a batched scorer's result is checked here, task.evaluate's in _evaluate
            raise self._failure(self._counts, f"score {score}")
        self._last = (self._counts.copy(), self._bits.copy())
        rel = 1.0 + (score - self.dense_score) / (abs(self.dense_score) or 1.0)
        bits = self._bits if self.quantize else None
        priced = self.kind.prices_size or self.target_sparsity is None
        size_term = self.size_penalty * self.kind.size_fraction(self._counts, bits) if priced else 0.0
        info = {**self._progress_info(), **extras, **self.kind.info(self._counts, bits),
                "score": score, "dense_score": self.dense_score,
                "model_sparsity": self.coverage.model_sparsity(removed_matrix_weights(self.kind, self._counts)),
                "nonzero_params": int(self.total_params - self.kind.removed_params(self._counts)),
                "size_bytes": -(-self.kind.size_bits(self._counts, bits) // 8),
                "reward_terms": {"score_ratio": rel, "size_term": -size_term}}
        return self._obs(), float(rel - size_term), True, False, info

    def render(self):
        return self.layer_table() if self.render_mode == "ansi" else None

    # ----------------------------------------------------------------------------------------- helpers
    @property
    def episode_length(self) -> int:
        """Steps per episode: 1 (joint) or ``num_layers`` (sequential)."""
        return 1 if self.mode == "joint" else self.num_layers

    @property
    def counts(self) -> np.ndarray:
        """The current episode's pruned weights (units) per layer (a read-only view)."""
        view = self._counts.view()
        view.setflags(write=False)
        return view

    def _progress_info(self) -> dict[str, Any]:
        return {"overall_sparsity": float(self._counts.sum() / self.numels.sum()),
                "layer_sparsity": dict(zip(self.layer_names, (self._counts / self.numels).tolist()))}

    def _obs(self) -> np.ndarray:
        sequential = self.mode == "sequential"
        removed, needed, progress, rest = B.episode_fractions(self._counts, self.numels, self.target_sparsity,
                                                              self._t, sequential)
        if not sequential:
            static = self.analysis.features.reshape(-1)
        elif self._t < self.num_layers:
            static = self.analysis.features[self._t]
        else:
            static = np.zeros(len(FEATURES), np.float32)
        dynamic = np.array([self.target_sparsity or 0.0, removed, needed, self._prev_action, progress, rest])
        parts = [static, self._counts / self.numels, dynamic]
        if self.quantize:
            parts += [self._bits / 32.0, [self.kind.size_fraction(self._counts, self._bits)]]
        return np.clip(np.concatenate(parts).astype(np.float32), 0.0, 1.0)

    # ------------------------------------------------------------------------------------------ public
    @property
    def allocation(self) -> dict[str, float] | None:
        """The last finished episode's per-layer sparsities, or ``None`` before any episode ended."""
        return None if self._last is None else dict(zip(self.layer_names, (self._last[0] / self.numels).tolist()))

    @property
    def bit_allocation(self) -> dict[str, int] | None:
        """Quantize mode: the last finished episode's per-layer bit-widths (``None`` otherwise or before one)."""
        return None if self._last is None or not self.quantize else dict(zip(self.layer_names,
                                                                              self._last[1].tolist()))

    def joint_counts(self, action) -> np.ndarray:
        """The pruned counts a joint-mode ``action`` (one entry per layer; sparsities only) applies: clipped at each
        layer's cap and, in budget mode, projected onto the target, as :meth:`step` does, without an episode."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.size < self.num_layers or not np.all(np.isfinite(a)):
            raise ValueError(f"`action` must hold {self.num_layers} finite entries, got {a.tolist()}")
        return self._joint_counts(action_to_sparsity(a[:self.num_layers], self.max_sparsity))

    def counts_for(self, allocation: dict[str, float]) -> np.ndarray:
        """Pruned weight counts for an allocation dict (missing layers stay dense)."""
        return B.allocation_counts(allocation, self.layer_names, self.numels)

    def action_for(self, allocation: dict[str, float], bits: dict[str, int] | None = None) -> np.ndarray:
        """The joint-mode action that requests ``allocation`` (sparsities above ``max_sparsity`` are clipped); in
        budget mode the env still projects it, which leaves an allocation that meets the budget unchanged.

        :param allocation: layer name -> sparsity.
        :param bits: quantize mode only: layer name -> one of :data:`~prune_env.compression.quantize.BITS`
            (missing: 32).
        """
        action = sparsity_to_action(self.counts_for(allocation) / self.numels, self.max_sparsity)
        if self.quantize:
            action = np.concatenate([action, bits_to_action(self._bits_for(bits))])
        return action.astype(np.float32)

    def _bits_for(self, bits: dict[str, int] | None) -> np.ndarray:
        if bits is not None and not self.quantize:
            raise ValueError("`bits` needs an env with quantize=True")
        return bits_array(bits, self.layer_names)

    def pruned_model(self, allocation: dict[str, float] | None = None,
                     bits: dict[str, int] | None = None, *, sequential: bool = False) -> torch.nn.Module:
        """A pruned copy of the task's model, on the model's own device (never the task's model itself).

        ``hidden_unit``: physically smaller (:func:`prune_env.pruning.structured.shrink`); ``quantize``: weights hold
        the quantized values; ``reconstruct``: the re-fitted weights the env scored. With ``allocation=None`` and
        ``finetune_steps`` it is the fine-tuned model the last episode scored; an explicit allocation is not
        fine-tuned.

        :param allocation: dict of layer name -> sparsity; default: the last finished episode's allocation.
        :param bits: quantize mode: layer name -> bits (missing: 32); default: the last episode's bit-widths.
        :param sequential: with ``reconstruct``, re-fit the layers one after another, each on the inputs it reads
            in the model with the earlier layers already pruned (:func:`~prune_env.pruning.reconstruction.
            sequential_prune`), rather than the dense model's inputs the env scores with. Unstructured only.
        """
        if allocation is None and self._last is None:
            raise ValueError("no episode has finished yet: pass `allocation` or run an episode first")
        if sequential and (not self.reconstruct or self.granularity != "unstructured"):
            raise ValueError("`sequential` needs reconstruct='obs' and granularity='unstructured'")
        counts = self._last[0] if allocation is None else self.counts_for(allocation)
        chosen = self._bits_for(bits) if bits is not None else (self._last[1] if self._last is not None else None)
        reuse = allocation is None and bits is None and self._last_scored is not None
        source = self._last_scored if reuse else self.task.model
        device = model_device(self.task.model)
        if sequential and not reuse:
            batches = calibration_inputs(self.task, "reconstruct")
            source = sequential_prune(copy.deepcopy(self.task.model).cpu(), self.analysis.layers,
                                      self.analysis.orders, counts, batches)
        return self.kind.materialize(source, counts, chosen if self.quantize else None, device)

    def layer_table(self) -> str:
        """A plain-text table of the prunable layers and their current sparsities."""
        return layer_table(self.layers, self.layer_stats, self._counts / self.numels, self.dense_score)
