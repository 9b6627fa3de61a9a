"""``PruneRNNEnv``: learn how much of each layer of a trained recurrent network to prune."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from . import budget as B
from .criteria import (
    CRITERIA,
    Masker,
    apply_counts,
    check_criterion,
    compute_gradients,
    importance,
    prune_order,
    sparsity_to_count,
)
from .export import masks as weight_masks
from .finetune import finetune
from .layers import find_prunable_layers, get_param
from .quantize import BITS, METHODS, QuantMasker
from .quantize import quantize as quantize_weight
from .size import SIZE_TABLE_MAX_NUMEL, encoding, model_size, size_table
from .stats import FEATURES, layer_features, raw_layer_stats
from .structured import UnitMasker, UnitPlan, group_tensors, shrink
from .task import RNNTask, split_score

MODES = ("joint", "sequential")
GRANULARITIES = ("unstructured", "hidden_unit")
#: ``precision`` -> autocast dtype of the scoring forward pass (``None``: plain float32).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
#: Names of the dynamic (episode-dependent) features that follow the per-layer chosen sparsities.
DYNAMIC = ("target_sparsity", "removed", "still_needed", "prev_action", "progress", "rest_share")


class PruneRNNEnv(gym.Env):
    """
    ## Description

    An agent decides how much of each layer of a trained recurrent network (``nn.LSTM``, ``nn.GRU``,
    ``nn.RNN``, with their ``nn.Embedding`` inputs and ``nn.Linear`` heads) to prune. Each prunable weight
    (every stacked layer and direction of a recurrent module, every embedding and linear weight; never biases)
    is one "layer" of the allocation, named as in ``model.named_parameters()``, e.g. ``lstm.weight_hh_l0``.
    Within a layer the weights with the lowest ``criterion`` score are pruned (set to zero), exactly as many as
    the chosen sparsity asks for, ties included. The pruned model is scored on the task's validation data with
    one forward pass.

    Two modes:

    - ``"joint"``: one step per episode; the action holds every layer's sparsity at once.
    - ``"sequential"`` (AMC style): one layer per step in the order of ``layer_names``; the episode ends after
      the last layer. Intermediate rewards are 0; the model is scored once, at the end.

    Two granularities:

    - ``"unstructured"`` (default): the layers above; individual weights are zeroed.
    - ``"hidden_unit"``: each stacked layer of a recurrent module is one layer of the allocation (named
      ``rnn.l0``, ``rnn.l1``, ...; both directions together) and a sparsity is the fraction of its hidden units
      removed in each direction, with all their weights (gate rows, recurrent column, the consumer's input column;
      see :mod:`prune_env.structured`). Budgets and ``overall_sparsity`` count units; every layer keeps one unit.
      :meth:`pruned_model` returns a physically smaller model that computes what the env scored.

    ## Action Space

    ``Box(-1, 1, (num_layers,), float32)`` in joint mode, ``Box(-1, 1, (1,), float32)`` in sequential mode.
    An action ``a`` maps linearly to a sparsity ``s = (a + 1) / 2 * max_sparsity``, so -1 keeps a layer dense and
    +1 prunes ``max_sparsity`` of it. Actions outside [-1, 1] are clipped; NaN, inf or a wrong shape raise
    ``ValueError``.

    With ``quantize`` the action doubles: joint ``(2 * num_layers,)`` = sparsities then bit-widths, sequential
    ``(2,)`` = ``[sparsity, bits]``; a bit coordinate's [-1, 1] is split into equal bins over
    :data:`prune_env.quantize.BITS` ``(2, 3, 4, 6, 8, 16, 32)``.

    In budget mode (``target_sparsity`` set) the requested sparsities are corrected so that every episode ends
    at exactly ``round(target_sparsity * N)`` pruned weights (``N`` = prunable weights):

    - joint: the request is projected onto the budget: one common shift ``lam`` is added to every requested
      sparsity and the result is clipped to ``[0, max_sparsity]``, with ``lam`` chosen so the total is met
      (see :func:`prune_env.budget.project_to_budget`). A uniform request therefore gives uniform pruning.
    - sequential: AMC's action wall caps each layer's count between what the later layers cannot absorb and
      what is still needed; the last layer takes the remainder.

    ## Observation Space

    ``Box(0, 1, float32)``, always finite. Joint mode: the static features of every layer (``num_layers x
    len(FEATURES)``, row-major) followed by the dynamic features. Sequential mode: the static features of the
    layer about to be pruned (zeros after the last one) followed by the dynamic features.

    Static features of a layer (computed once; see :mod:`prune_env.stats` for the scaling):

    | Feature                        | Meaning                                                            |
    |--------------------------------|--------------------------------------------------------------------|
    | kind_embedding .. kind_linear  | one-hot kind: embedding, input-hidden, hidden-hidden, linear       |
    | depth                          | position in ``layer_names``, 0 (first) to 1 (last)                 |
    | param_share                    | the layer's share of all prunable weights                          |
    | log_rows, log_cols             | log of the weight's fan-out / fan-in, min-max over layers          |
    | w_mean, w_std, w_max, w_min    | statistics of ``abs(w)``, divided by the model's largest ``abs(w)`` |
    | w_q10 .. w_q90                 | quantiles 10, 25, 50, 75, 90 % of ``abs(w)``, same scaling         |
    | w_hist0 .. w_hist7             | 8-bin histogram of ``abs(w) / max abs(w)`` of the layer, fractions |
    | log_grad_mean                  | log mean ``abs(g)`` of ``task.loss``'s gradient, min-max (0 without loss) |
    | log_saliency_mean              | log mean ``abs(w * g)``, min-max over layers (0 without ``loss``)  |

    Dynamic features (after the static block):

    | Feature               | Meaning                                                                     |
    |-----------------------|-----------------------------------------------------------------------------|
    | chosen_0 .. chosen_L-1| sparsity already applied to each layer this episode (0 if not yet chosen)   |
    | target_sparsity       | the budget (0 in penalty mode)                                              |
    | removed               | fraction of prunable weights removed so far                                 |
    | still_needed          | fraction still to remove to meet the budget (0 in penalty mode)            |
    | prev_action           | the previous step's applied sparsity                                        |
    | progress              | steps taken / ``num_layers`` (sequential), 0 or 1 (joint)                   |
    | rest_share            | share of prunable weights in the layers after the current one (sequential)  |
    | bits_0 .. bits_L-1    | ``quantize`` only: each layer's chosen bit-width / 32 (1 until chosen)      |
    | size_fraction         | ``quantize`` only: current compressed bits / float32 bits of prunable weights|

    ## Rewards

    With ``rel = 1 + (score - dense_score) / |dense_score|`` (that is ``score / dense_score`` for a positive
    dense score):

    - budget mode (``target_sparsity`` set): ``rel``;
    - penalty mode: ``rel - size_penalty * remaining_fraction``, where ``remaining_fraction`` is the fraction of
      prunable weights kept (``hidden_unit``: counted exactly from the removed units' weights);
    - ``quantize``, in both modes: ``rel - size_penalty * size_fraction``, where ``size_fraction`` is the
      compressed size (values x bits, sparse index, scales or codebooks; :mod:`prune_env.size`) of the prunable
      weights over their float32 size. The budget fixes the sparsity; the penalty prices the bits.

    With ``finetune_steps`` the pruned model is fine-tuned (a copy, masks fixed, batches from
    ``task.train_loss`` seeded by ``np_random``) before it is scored.

    The reward is given at the last step of an episode; its two terms are in ``info["reward_terms"]``. Only
    ``task.evaluate`` (validation) is used; the test score never reaches the reward or ``info``.

    ## Starting State

    The dense model, nothing pruned: every episode's counts start at zero. (For speed the env's private model copy
    keeps the last episode's masks until the episode's end, when each layer moves straight to its new count just
    before the model is scored; then it matches the episode's counts exactly.)

    ## Episode End

    Terminates after one step (joint) or after the last layer (sequential). Never truncates.

    ## Info

    At the end of an episode: ``score``, ``dense_score``, ``overall_sparsity``, ``layer_sparsity`` (dict name ->
    sparsity), ``nonzero_params`` (parameters of the whole model that are not pruned, biases included),
    ``size_bytes`` (see :mod:`prune_env.size`), ``reward_terms``, and any extra metrics the task's ``evaluate``
    returned (e.g. ``perplexity``). Earlier sequential steps carry ``layer_sparsity`` and ``overall_sparsity``.
    ``hidden_unit`` adds ``weight_sparsity`` (fraction of prunable weights removed); ``quantize`` adds
    ``layer_bits`` (dict name -> bits) and ``size_fraction``. ``size_bytes`` is the exact encoded size of the
    model (``hidden_unit``: the smaller model's float32 parameters).

    ## Arguments

    ```python
    PruneRNNEnv(task, *, target_sparsity=None, mode="joint", size_penalty=0.5, criterion="magnitude",
                max_sparsity=0.98, device=None, render_mode=None, task_kwargs=None, granularity="unstructured",
                quantize=False, finetune_steps=0, precision="fp32", config=None)
    ```

    - ``task``: an :class:`~prune_env.RNNTask` or a preset name (see ``prune_env.tasks.PRESETS``). A ``dict``
      in its place is taken as ``config`` (for RLlib-style construction).
    - ``target_sparsity``: overall sparsity every episode must reach, in [0, 1); ``None`` for penalty mode.
    - ``mode``: ``"joint"`` or ``"sequential"``.
    - ``size_penalty``: weight of the size term in penalty mode.
    - ``criterion``: ranking within a layer: ``"magnitude"`` ``abs(w)``, ``"gradient"`` ``abs(g)`` or
      ``"saliency"`` ``abs(w * g)``; the last two need ``task.loss``.
    - ``max_sparsity``: the most any one layer may be pruned, in (0, 1].
    - ``device``: where the env's copy of the model runs; default ``"cuda"`` when available, else ``"cpu"``.
    - ``task_kwargs``: keyword arguments for building a preset task (e.g. ``{"seed": 1}``).
    - ``granularity``: ``"unstructured"`` or ``"hidden_unit"``; with ``hidden_unit`` the ``criterion`` ranks units:
      L2 norm of the unit's weights, of their gradient, or ``(sum w * g) ** 2``.
    - ``quantize``: ``False``, ``True``/``"linear"`` (per-output-channel symmetric) or ``"kmeans"`` (shared
      codebook per layer); adds per-layer bit-widths to the action. Unstructured granularity only.
    - ``finetune_steps``: Adam steps of recovery fine-tuning before each episode is scored (0: none).
    - ``precision``: ``"fp32"`` or ``"bf16"``: scores (and the dense score the reward divides by) are computed
      under ``torch.autocast`` with bfloat16. Faster where the hardware has bf16 matrix units, at a small score
      deviation: measure it first (``benchmarks/precision.py``, ``docs/performance.md``). Statistics,
      gradients and fine-tuning stay fp32.
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
        return {
            "task": "digits",
            "target_sparsity": None,
            "mode": "joint",
            "size_penalty": 0.5,
            "criterion": "magnitude",
            "max_sparsity": 0.98,
            "device": None,
            "render_mode": None,
            "task_kwargs": None,
            "granularity": "unstructured",
            "quantize": False,
            "finetune_steps": 0,
            "precision": "fp32",
        }

    def __init__(self, task: RNNTask | str | dict | None = None, *, target_sparsity: float | None = None,
                 mode: str = "joint", size_penalty: float = 0.5, criterion: str = "magnitude",
                 max_sparsity: float = 0.98, device: str | torch.device | None = None,
                 render_mode: str | None = None, task_kwargs: dict | None = None,
                 granularity: str = "unstructured", quantize: bool | str = False, finetune_steps: int = 0,
                 precision: str = "fp32", config: dict | None = None):
        if isinstance(task, dict):
            if config is not None:
                raise ValueError("pass `config` either positionally or as `config=`, not both")
            task, config = None, task
        cfg = self.default_config()
        cfg.update(task=task if task is not None else cfg["task"], target_sparsity=target_sparsity, mode=mode,
                   size_penalty=size_penalty, criterion=criterion, max_sparsity=max_sparsity, device=device,
                   render_mode=render_mode, task_kwargs=task_kwargs, granularity=granularity, quantize=quantize,
                   finetune_steps=finetune_steps, precision=precision)
        if config is not None:
            unknown = set(config) - set(cfg)
            if unknown:
                raise ValueError(f"`config` has unknown keys {sorted(unknown)}; valid keys: {sorted(cfg)}")
            cfg.update(config)
        self.config = cfg
        self._check_config(cfg)

        self.task = _resolve_task(cfg["task"], cfg["task_kwargs"])
        self.mode = cfg["mode"]
        self.target_sparsity = cfg["target_sparsity"]
        self.size_penalty = float(cfg["size_penalty"])
        self.criterion = cfg["criterion"]
        self.max_sparsity = float(cfg["max_sparsity"])
        self.render_mode = cfg["render_mode"]
        self.device = torch.device(cfg["device"] or ("cuda" if torch.cuda.is_available() else "cpu"))

        self.granularity = cfg["granularity"]
        self.quantize: str | None = "linear" if cfg["quantize"] is True else (cfg["quantize"] or None)
        self.finetune_steps = int(cfg["finetune_steps"])
        self.precision = cfg["precision"]
        self._weight_layers = find_prunable_layers(self.task.model)
        self._plan = UnitPlan(self.task.model) if self.granularity == "hidden_unit" else None
        self.layers = self._plan.groups if self._plan else self._weight_layers
        self.layer_names = [layer.name for layer in self.layers]
        self.numels = np.array([layer.numel for layer in self.layers], dtype=np.int64)
        self.num_layers = len(self.layers)
        self.total_params = sum(p.numel() for p in self.task.model.parameters())
        self._cap = B.caps(self.numels, self.max_sparsity)
        if self._plan:  # every recurrent layer keeps at least one unit
            self._cap = np.minimum(self._cap, self.numels - 1)
        self._check_target(self.target_sparsity)

        self._analyse()
        self._model = copy.deepcopy(self.task.model).to(self.device).eval()
        for p in self._model.parameters():
            p.requires_grad_(False)
        self._bits = np.full(self.num_layers, 32, dtype=np.int64)
        self._masker = self._make_masker()
        self._lazy_masks = not (self._plan or self.quantize)  # only plain masks: nothing else reads them mid-episode
        self._init_size_accounting()
        self._last_bits: np.ndarray | None = None
        self._last_scored: torch.nn.Module | None = None
        self.dense_score, self._dense_extras = self._evaluate(self._model)

        n_obs = (self.num_layers * len(FEATURES) if self.mode == "joint" else len(FEATURES))
        n_obs += self.num_layers + len(DYNAMIC) + (self.num_layers + 1 if self.quantize else 0)
        self.observation_space = spaces.Box(0.0, 1.0, (n_obs,), np.float32)
        n_act = (self.num_layers if self.mode == "joint" else 1) * (2 if self.quantize else 1)
        self.action_space = spaces.Box(-1.0, 1.0, (n_act,), np.float32)

        self._counts = np.zeros(self.num_layers, dtype=np.int64)
        self._last_counts: np.ndarray | None = None
        self._t = 0
        self._prev_action = 0.0
        self._last_info: dict[str, Any] = {}

    # ----------------------------------------------------------------------------------------------- set-up
    @staticmethod
    def _check_config(cfg: dict[str, Any]) -> None:
        if cfg["mode"] not in MODES:
            raise ValueError(f"unknown `mode` {cfg['mode']!r}; expected one of {MODES}")
        if cfg["criterion"] not in CRITERIA:
            raise ValueError(f"unknown `criterion` {cfg['criterion']!r}; expected one of {CRITERIA}")
        ms = cfg["max_sparsity"]
        if not isinstance(ms, (int, float)) or not 0.0 < ms <= 1.0:
            raise ValueError(f"`max_sparsity` must be a number in (0, 1], got {ms!r}")
        sp = cfg["size_penalty"]
        if not isinstance(sp, (int, float)) or not np.isfinite(sp) or sp < 0:
            raise ValueError(f"`size_penalty` must be a finite number >= 0, got {sp!r}")
        if cfg["render_mode"] not in (None, "ansi"):
            raise ValueError(f"unsupported `render_mode` {cfg['render_mode']!r}; expected None or 'ansi'")
        if cfg["granularity"] not in GRANULARITIES:
            raise ValueError(f"unknown `granularity` {cfg['granularity']!r}; expected one of {GRANULARITIES}")
        q = cfg["quantize"]
        if q not in (False, True) and q not in METHODS:
            raise ValueError(f"`quantize` must be False, True (= 'linear') or one of {METHODS}, got {q!r}")
        if q and cfg["granularity"] != "unstructured":
            raise ValueError("`quantize` needs granularity='unstructured' (bit-widths are chosen per weight tensor)")
        ft = cfg["finetune_steps"]
        if isinstance(ft, bool) or not isinstance(ft, (int, np.integer)) or ft < 0:
            raise ValueError(f"`finetune_steps` must be an int >= 0, got {ft!r}")
        if not isinstance(cfg["precision"], str) or cfg["precision"] not in PRECISIONS:
            raise ValueError(f"unknown `precision` {cfg['precision']!r}; expected one of {tuple(PRECISIONS)}")

    def _check_target(self, target: float | None) -> None:
        if target is None:
            return
        if isinstance(target, bool) or not isinstance(target, (int, float, np.floating)) or not 0 <= target < 1:
            raise ValueError(f"`target_sparsity` must be a number in [0, 1) or None, got {target!r}")
        if B.budget_count(float(target), self.numels) > int(self._cap.sum()):
            raise ValueError(f"`target_sparsity`={target} is unreachable with `max_sparsity`="
                             f"{self.max_sparsity}; raise max_sparsity or lower the target")

    def _analyse(self) -> None:
        """Statistics, gradients and prune orders: computed once, since the dense weights never change."""
        self._grads = (compute_gradients(self.task.model, self._weight_layers, self.task.loss)
                       if self.task.loss is not None else None)
        check_criterion(self.criterion, self._grads is not None)
        if self._plan:
            named = {layer.name: get_param(self.task.model, layer) for layer in self._weight_layers}
            pairs = group_tensors(self._plan, named, self._grads)
            self._orders = self._plan.unit_orders(self.criterion, named, self._grads)
        else:
            pairs = [(get_param(self.task.model, layer).detach().cpu(), self._grads[layer.name] if self._grads
                      else None) for layer in self.layers]
            self._orders = [prune_order(importance(self.criterion, w, g)) for w, g in pairs]
        self.layer_stats = [raw_layer_stats(w, g) for w, g in pairs]
        self._features = layer_features(self.layers, self.layer_stats)

    def _init_size_accounting(self) -> None:
        """Everything but the pruned layers' encodings is fixed: count it once (the model is dense here)."""
        if self._plan:
            return
        self._size_method = self.quantize or "linear"
        self._size_params = [get_param(self._model, layer) for layer in self.layers]
        dense_layers = sum(encoding(p, 32, self._size_method).total_bits for p in self._size_params)
        self._fixed_size_bits = model_size(self._model, None, self._size_method).total_bits - dense_layers
        # Float32 weights: every count's exact size at once, so a step reads it instead of scanning the weights.
        # (Quantization moves zeros with the bit-width, so that path keeps the per-step search.)
        self._size_tables = None if self.quantize else [
            size_table(dense, order, dense.numel()) if dense.numel() <= SIZE_TABLE_MAX_NUMEL else None
            for dense, order in zip(self._masker.dense, self._orders)]

    def _make_masker(self):
        if self._plan:
            return UnitMasker(self._model, self._plan, self._orders)
        if self.quantize:
            return QuantMasker(self._model, self.layers, self._orders, self._bits, self.quantize)
        return Masker(self._model, self.layers, self._orders)

    # ------------------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "target_sparsity" in options:
            self._check_target(options["target_sparsity"])
            self.target_sparsity = options["target_sparsity"]
        if self.quantize:  # the observation reads the model's quantized size, so it must be dense again
            self._masker.reset()
        # Otherwise the model keeps the last episode's masks: scoring moves each layer straight from its old count
        # to its new one (|k - k'| weights, not a full restore and re-prune), so the model matches the episode's
        # counts whenever it is scored, at the episode's end.
        self._counts[:] = 0
        self._t = 0
        self._prev_action = 0.0
        return self._obs(), {"dense_score": self.dense_score}

    def step(self, action):
        terminated = self._advance(action)
        return self._conclude(self._score() if terminated else None)

    def _advance(self, action) -> bool:
        """Apply one action to the episode's counts and the model; returns whether the episode has ended."""
        if self._t >= self._episode_length:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        sparsities = self._to_sparsities(action)
        if self.quantize:
            self._bits[self._t:self._t + 1 if self.mode == "sequential" else None] = self._to_bits(action)
        if self.mode == "joint":
            self._counts[:] = self._joint_counts(sparsities)
            if not self._lazy_masks:
                self._masker.set_counts(self._counts)
            self._prev_action = float(np.mean(sparsities))
        else:
            i = self._t
            self._counts[i] = self._sequential_count(i, float(sparsities[0]))
            if self.quantize:
                self._masker.set_counts(self._counts)
            elif not self._lazy_masks:  # only layer i; later layers keep the last episode's counts until their turn
                pending = list(self._masker.counts)
                pending[i] = int(self._counts[i])
                self._masker.set_counts(pending)
            self._prev_action = float(self._counts[i] / self.numels[i])
        self._t += 1
        return self._t >= self._episode_length

    def _conclude(self, scored: tuple[float, dict[str, float]] | None):
        """The step's return; ``scored`` is the ended episode's ``(score, extras)``, ``None`` mid-episode.

        Split from :meth:`_advance` so that :class:`~prune_env.PruneRNNVectorEnv` can score many ended episodes in
        one batched pass, then conclude each.
        """
        reward, info = (self._finish(scored) if scored is not None else (0.0, self._progress_info()))
        self._last_info = info
        return self._obs(), float(reward), scored is not None, False, info

    def render(self):
        if self.render_mode == "ansi":
            return self.layer_table()
        return None

    # ----------------------------------------------------------------------------------------- helpers
    @property
    def _episode_length(self) -> int:
        return 1 if self.mode == "joint" else self.num_layers

    def _to_sparsities(self, action) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64)
        if self.mode == "sequential" and a.shape == ():
            a = a.reshape(1)
        if a.shape != self.action_space.shape:
            raise ValueError(f"`action` must have shape {self.action_space.shape}, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"`action` must be finite, got {a.tolist()}")
        s = (np.clip(a, -1.0, 1.0) + 1.0) / 2.0 * self.max_sparsity
        return s[: s.size // 2] if self.quantize else s

    def _to_bits(self, action) -> np.ndarray:
        """The bit-width half of a (validated) quantize-mode action: [-1, 1] split evenly over :data:`BITS`."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        half = np.clip(a[a.size // 2:], -1.0, 1.0)
        idx = np.minimum(((half + 1.0) / 2.0 * len(BITS)).astype(np.int64), len(BITS) - 1)
        return np.asarray(BITS)[idx]

    def _joint_counts(self, sparsities: np.ndarray) -> np.ndarray:
        if self.target_sparsity is None:
            counts = B.counts_from_sparsities(sparsities, self.numels)
            return np.minimum(counts, self._cap) if self._plan else counts
        total = B.budget_count(self.target_sparsity, self.numels)
        return B.project_to_budget(sparsities, self.numels, total, self._cap)

    def _sequential_count(self, i: int, sparsity: float) -> int:
        k = sparsity_to_count(sparsity, int(self.numels[i]))
        if self.target_sparsity is None:
            return min(k, int(self._cap[i])) if self._plan else k
        total = B.budget_count(self.target_sparsity, self.numels)
        return B.action_wall(k, i, int(self._counts[:i].sum()), total, self._cap)

    def _score(self) -> tuple[float, dict[str, float]]:
        self._sync_masks()
        return self._evaluate(self._finetuned() if self.finetune_steps else self._model)

    def _sync_masks(self) -> None:
        """Bring the model to the episode's counts. Plain unstructured masks are applied lazily, when the model is
        read: a vector env that scores its episodes in one batched pass never reads its sub-envs' models."""
        if self._lazy_masks:
            self._masker.set_counts(self._counts)

    def _evaluate(self, model: torch.nn.Module) -> tuple[float, dict[str, float]]:
        """``task.evaluate(model)`` at the env's ``precision`` (bf16: under ``torch.autocast``)."""
        dtype = PRECISIONS[self.precision]
        with contextlib.nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype):
            return split_score(self.task.evaluate(model))

    def _finetuned(self) -> torch.nn.Module:
        """A fine-tuned copy of the masked model (the masked model itself must stay as the masker left it)."""
        model = copy.deepcopy(self._model)
        masks = self._masker.masks() if self._plan else weight_masks(model)
        seed = int(self.np_random.integers(2**63 - 1))
        finetune(model, self.task, self.finetune_steps, masks, torch.Generator().manual_seed(seed))
        if self.quantize:
            with torch.no_grad():
                for layer, b in zip(self.layers, self._bits):
                    p = get_param(model, layer)
                    p.copy_(quantize_weight(p, int(b), self.quantize))
        self._last_scored = model
        return model

    def _removed_params(self) -> int:
        return self._masker.removed_params() if self._plan else int(self._counts.sum())

    def _size_fraction(self) -> float:
        """Stored size of the prunable weights over their dense float32 size: kept weights without quantization,
        bits (values, sparse index, scales or codebooks) with it."""
        dense = 32 * int(sum(layer.numel for layer in self._weight_layers))
        if not self.quantize:
            return 1.0 - self._removed_params() * 32 / dense
        report = model_size(self._model, dict(zip(self.layer_names, self._bits.tolist())), self.quantize)
        return sum(e.total_bits for e in report.layers.values()) / dense

    def _model_size_bytes(self) -> int:
        if self._plan:  # the physically smaller model stores its kept float32 parameters densely
            return 4 * (self.total_params - self._removed_params())
        # = size.size_bytes(self._model, bits, method), re-encoding only the layers the env prunes
        if self._size_tables is not None:  # read from the episode's counts (the model need not hold them)
            if any(table is None for table in self._size_tables):
                self._sync_masks()
            layer_bits = sum(encoding(p).total_bits if table is None else int(table[k])
                             for table, k, p in zip(self._size_tables, self._counts, self._size_params))
        else:
            layer_bits = sum(encoding(p, int(b), self._size_method).total_bits
                             for p, b in zip(self._size_params, self._bits))
        return -(-(self._fixed_size_bits + layer_bits) // 8)

    def _finish(self, scored: tuple[float, dict[str, float]]) -> tuple[float, dict[str, Any]]:
        score, extras = scored
        self._last_counts = self._counts.copy()
        rel = 1.0 + (score - self.dense_score) / (abs(self.dense_score) or 1.0)
        self._last_bits = self._bits.copy() if self.quantize else None
        if not self.finetune_steps:
            self._last_scored = None
        remaining = self._size_fraction() if (self.quantize or self._plan) else 1.0 - self._overall_sparsity()
        budgeted = self.target_sparsity is not None and not self.quantize
        size_term = 0.0 if budgeted else self.size_penalty * remaining
        info = self._progress_info()
        info.update(extras)
        info.update(score=score, dense_score=self.dense_score,
                    nonzero_params=int(self.total_params - self._removed_params()),
                    size_bytes=self._model_size_bytes(),
                    reward_terms={"score_ratio": rel, "size_term": -size_term})
        if self._plan:
            info["weight_sparsity"] = self._removed_params() / int(sum(x.numel for x in self._weight_layers))
        if self.quantize:
            info.update(layer_bits=dict(zip(self.layer_names, self._bits.tolist())), size_fraction=remaining)
        return rel - size_term, info

    def _overall_sparsity(self) -> float:
        return float(self._counts.sum() / self.numels.sum())

    def _progress_info(self) -> dict[str, Any]:
        return {"overall_sparsity": self._overall_sparsity(),
                "layer_sparsity": {n: float(c / m) for n, c, m in zip(self.layer_names, self._counts,
                                                                        self.numels)}}

    def _obs(self) -> np.ndarray:
        total = int(self.numels.sum())
        removed = int(self._counts.sum())
        target = self.target_sparsity or 0.0
        needed = max(0, B.budget_count(target, self.numels) - removed) if self.target_sparsity is not None else 0
        if self.mode == "joint":
            static = self._features.reshape(-1)
            progress, rest = float(self._t), 0.0
        else:
            i = self._t
            static = (self._features[i] if i < self.num_layers else np.zeros(len(FEATURES), np.float32))
            progress = i / self.num_layers
            rest = float(self.numels[i + 1:].sum() / total) if i < self.num_layers else 0.0
        dynamic = np.array([target, removed / total, needed / total, self._prev_action, progress, rest])
        chosen = self._counts / self.numels
        parts = [static, chosen, dynamic]
        if self.quantize:
            parts += [self._bits / 32.0, [self._size_fraction()]]
        obs = np.concatenate(parts).astype(np.float32)
        return np.clip(obs, 0.0, 1.0)

    # ------------------------------------------------------------------------------------------ public
    @property
    def allocation(self) -> dict[str, float] | None:
        """The last finished episode's per-layer sparsities, or ``None`` before any episode ended."""
        if self._last_counts is None:
            return None
        return {n: float(c / m) for n, c, m in zip(self.layer_names, self._last_counts, self.numels)}

    def counts_for(self, allocation: dict[str, float]) -> np.ndarray:
        """Pruned weight counts for an allocation dict (missing layers stay dense)."""
        if not isinstance(allocation, dict):
            raise ValueError(f"`allocation` must be a dict of layer name -> sparsity, got "
                             f"{type(allocation).__name__}")
        unknown = set(allocation) - set(self.layer_names)
        if unknown:
            raise ValueError(f"`allocation` has unknown layers {sorted(unknown)}; layers: {self.layer_names}")
        counts = np.zeros(self.num_layers, dtype=np.int64)
        for i, name in enumerate(self.layer_names):
            s = allocation.get(name, 0.0)
            if not isinstance(s, (int, float, np.floating)) or not 0.0 <= s <= 1.0:
                raise ValueError(f"`allocation`[{name!r}] must be a sparsity in [0, 1], got {s!r}")
            counts[i] = sparsity_to_count(float(s), int(self.numels[i]))
        return counts

    def action_for(self, allocation: dict[str, float], bits: dict[str, int] | None = None) -> np.ndarray:
        """The joint-mode action that requests ``allocation`` (the inverse of the action mapping).

        Sparsities above ``max_sparsity`` are clipped. In budget mode the env still projects the request onto the
        budget, which leaves an allocation that already meets it unchanged up to rounding.

        :param allocation: layer name -> sparsity.
        :param bits: quantize mode only: layer name -> one of :data:`~prune_env.quantize.BITS` (missing: 32).
        """
        s = self.counts_for(allocation) / self.numels
        action = np.clip(2.0 * s / self.max_sparsity - 1.0, -1.0, 1.0)
        if self.quantize:
            action = np.concatenate([action, self._bits_action(self._bits_for(bits))])
        elif bits is not None:
            raise ValueError("`bits` needs an env with quantize=True")
        return action.astype(np.float32)

    def _bits_for(self, bits: dict[str, int] | None) -> np.ndarray:
        bits = bits or {}
        unknown = set(bits) - set(self.layer_names)
        if unknown:
            raise ValueError(f"`bits` has unknown layers {sorted(unknown)}; layers: {self.layer_names}")
        out = np.array([bits.get(n, 32) for n in self.layer_names], dtype=np.int64)
        bad = [int(b) for b in out if b not in BITS]
        if bad:
            raise ValueError(f"`bits` values must be among {BITS}, got {bad}")
        return out

    @staticmethod
    def _bits_action(bits: np.ndarray) -> np.ndarray:
        """Centre of each bit-width's bin in [-1, 1] (the inverse of :meth:`_to_bits`)."""
        idx = np.array([BITS.index(int(b)) for b in bits])
        return (idx + 0.5) / len(BITS) * 2.0 - 1.0

    @property
    def bit_allocation(self) -> dict[str, int] | None:
        """Quantize mode: the last finished episode's per-layer bit-widths (``None`` otherwise or before one)."""
        if self._last_bits is None:
            return None
        return dict(zip(self.layer_names, self._last_bits.tolist()))

    def pruned_model(self, allocation: dict[str, float] | None = None,
                     bits: dict[str, int] | None = None) -> torch.nn.Module:
        """A pruned copy of the task's model, on the model's own device.

        With ``granularity="hidden_unit"`` it is physically smaller: a ``torch.fx.GraphModule`` of new, narrower
        ``nn.LSTM``/``nn.GRU``/``nn.RNN``/``nn.Linear`` modules (see :func:`prune_env.structured.shrink`). With
        ``quantize`` its weights hold the quantized values. With ``allocation=None`` and ``finetune_steps`` it is the
        fine-tuned model the last episode scored; an explicit allocation is not fine-tuned (see
        :func:`prune_env.finetune.finetune`).

        :param allocation: dict of layer name -> sparsity; default: the last finished episode's allocation.
        :param bits: quantize mode: layer name -> bits (missing: 32); default: the last episode's bit-widths.
        """
        if allocation is None:
            if self._last_counts is None:
                raise ValueError("no episode has finished yet: pass `allocation` or run an episode first")
            counts = self._last_counts
        else:
            counts = self.counts_for(allocation)
        if bits is not None and not self.quantize:
            raise ValueError("`bits` needs an env with quantize=True")
        if allocation is None and bits is None and self._last_scored is not None:
            model = copy.deepcopy(self._last_scored).to(_device_of(self.task.model))
            if self._plan:
                model = shrink(model, self._plan, self._plan.keep_masks(self._orders, counts))
            return model
        model = copy.deepcopy(self.task.model)
        if self._plan:
            keep = self._plan.keep_masks(self._orders, counts)
            with torch.no_grad():
                named = dict(model.named_parameters())
                for name, mask in self._plan.param_masks(keep, model).items():
                    named[name].mul_(mask.to(named[name].device))
            return shrink(model, self._plan, keep)
        model = apply_counts(model, self.layers, self._orders, counts)
        if self.quantize:
            chosen = self._bits_for(bits) if bits is not None else self._last_bits
            with torch.no_grad():
                for layer, b in zip(self.layers, chosen if chosen is not None else []):
                    p = get_param(model, layer)
                    p.copy_(quantize_weight(p, int(b), self.quantize))
        return model

    def layer_table(self) -> str:
        """A plain-text table of the prunable layers and their current sparsities."""
        head = f"{'layer':<28} {'kind':<14} {'shape':<14} {'params':>9} {'mean|w|':>8} {'sparsity':>8}"
        lines = [head, "-" * len(head)]
        for i, layer in enumerate(self.layers):
            shape = "x".join(map(str, layer.shape))
            lines.append(f"{layer.name:<28} {layer.kind:<14} {shape:<14} {layer.numel:>9} "
                         f"{self.layer_stats[i]['w_mean']:>8.4f} {self._counts[i] / self.numels[i]:>8.3f}")
        lines.append(f"overall sparsity {self._overall_sparsity():.3f} of {int(self.numels.sum())} prunable "
                     f"weights; dense score {self.dense_score:.4f}")
        return "\n".join(lines)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _resolve_task(task: RNNTask | str, task_kwargs: dict | None) -> RNNTask:
    if isinstance(task, RNNTask):
        if task_kwargs:
            raise ValueError("`task_kwargs` only applies to preset names, not to an RNNTask")
        return task
    if isinstance(task, str):
        from .tasks import resolve_task

        return resolve_task(task, **(task_kwargs or {}))
    raise ValueError(f"`task` must be an RNNTask or a preset name, got {type(task).__name__}")
