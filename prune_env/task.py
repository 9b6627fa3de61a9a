"""The task contract: a trained recurrent model plus how to score it.

An :class:`RNNTask` is everything the environment needs to know about a user's problem. The reward only ever
sees ``evaluate`` (the validation split); ``test`` exists for reporting and is never called by the env.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

#: What ``evaluate``/``test`` may return: a float (higher is better), or a mapping with a ``"score"`` key whose
#: other entries (e.g. ``"perplexity"``) are copied into the env's ``info``.
Score = float | Mapping[str, float]
Metric = str | Callable[[torch.Tensor, torch.Tensor], Score]

METRICS = ("accuracy", "nll")


class EvaluationError(RuntimeError):
    """``task.evaluate`` raised or returned a non-finite score; the message names the allocation that caused it.

    A search stops here rather than treating the score as the best (or the worst) seen; the cause is chained.
    """


class TaskError(ValueError):
    """Something that should name a task does not: an unknown preset, a missing corpus directory, a factory that
    cannot be imported or returns something else (see :func:`prune_env.tasks.resolve_task`)."""


@dataclass
class RNNTask:
    """A trained recurrent network and the functions that score it.

    :param model: a trained ``nn.Module`` holding any of ``nn.LSTM``, ``nn.GRU``, ``nn.RNN``, ``nn.Linear`` and
        ``nn.Embedding``. The environment never mutates it; it works on its own copy.
    :param evaluate: ``evaluate(model) -> float`` on the validation split, higher is better. This is what the
        reward uses. It may also return a mapping with a ``"score"`` key plus extra metrics for ``info``.
        It must read the device from the model (``next(model.parameters()).device``), since the env may move its
        copy to a GPU. Optional when ``eval_batch`` and ``metric`` are given.
    :param test: ``test(model) -> float`` on the held-out test split. Never used by the reward; reporting only.
    :param loss: ``loss(model) -> Tensor``, a scalar loss on a fixed batch, used once for gradient statistics and
        the ``gradient``/``saliency`` criteria.
    :param name: a short name used in reports.
    :param eval_batch: ``(inputs, targets)`` on which ``metric`` scores the model's output, the structured form
        of ``evaluate`` that lets the env score many candidates in one batched pass.
    :param metric: ``"accuracy"``, ``"nll"`` (score is minus the mean negative log-likelihood) or a callable
        ``metric(logits, targets) -> float``.
    :param metadata: free-form facts about the task (dataset sizes, training config) for reports.
    :param train_loss: ``train_loss(model, generator) -> Tensor``, a scalar loss on a fresh training batch drawn
        with the ``torch.Generator``; used by recovery fine-tuning (``finetune_steps``). Optional: without it
        fine-tuning reuses the fixed ``loss`` batch.
    :param calibration_batches: a sequence of model inputs drawn from the *training* split, each something
        ``model(batch)`` accepts (a tuple is passed as positional arguments). The data-aware operators (criterion
        ``"wanda"``/``"obs"``, ``reconstruct="obs"``, GPTQ) read what every prunable weight multiplies on these
        inputs (:mod:`prune_env.pruning.calibration`); nothing else does. Optional: without it those operators take
        the inputs ``train_loss`` feeds the model (its contract is a training batch), and a task with neither
        cannot use them. Never give validation or test inputs here: the reward would be fitted to its own data.
    :param unit_consumers: for ``granularity="hidden_unit"`` on a model ``torch.fx`` cannot trace (or whose path
        tracing cannot follow, e.g. into ``nn.MultiheadAttention``): recurrent module name -> the modules (or full
        parameter names) that read its last layer's hidden features, e.g. ``{"lstm": ["attn"]}``
        (:mod:`prune_env.pruning.structured.declared`). Optional: without it the path is traced.

    Your own model (here untrained, for brevity) and a validation batch are enough for an environment:

    >>> from prune_env import PruneRNNEnv
    >>> class CharLM(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.emb, self.rnn, self.head = nn.Embedding(20, 8), nn.GRU(8, 16, batch_first=True), nn.Linear(16, 20)
    ...
    ...     def forward(self, x):
    ...         return self.head(self.rnn(self.emb(x))[0])
    >>> x = torch.randint(0, 20, (4, 12), generator=torch.Generator().manual_seed(0))
    >>> task = RNNTask(CharLM().eval(), eval_batch=(x, (x + 1) % 20), metric="accuracy", name="char-lm")
    >>> env = PruneRNNEnv(task, target_sparsity=0.5, device="cpu")
    >>> env.layer_names
    ['emb.weight', 'rnn.weight_ih_l0', 'rnn.weight_hh_l0', 'head.weight']
    """

    model: nn.Module
    evaluate: Callable[[nn.Module], Score] | None = None
    test: Callable[[nn.Module], Score] | None = None
    loss: Callable[[nn.Module], torch.Tensor] | None = None
    name: str = "custom"
    eval_batch: tuple[torch.Tensor, torch.Tensor] | None = None
    metric: Metric | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    train_loss: Callable[[nn.Module, torch.Generator], torch.Tensor] | None = None
    calibration_batches: Sequence[Any] | None = None
    unit_consumers: Mapping[str, Sequence[str]] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"RNNTask: `model` must be a torch.nn.Module, got {type(self.model).__name__}")
        if self.eval_batch is not None:
            _check_eval_batch(self.eval_batch)
            if self.metric is None:
                raise ValueError("RNNTask: `eval_batch` was given without `metric`; pass metric='accuracy', "
                                 "'nll' or a callable metric(logits, targets) -> float")
        if self.metric is not None:
            _check_metric(self.metric)
            if self.eval_batch is None:
                raise ValueError("RNNTask: `metric` was given without `eval_batch=(inputs, targets)`")
        if self.evaluate is None:
            if self.eval_batch is None:
                raise ValueError("RNNTask: give `evaluate(model) -> float`, or `eval_batch=(inputs, targets)` "
                                 "together with `metric`")
            self.evaluate = BatchEvaluator(self.eval_batch, self.metric)
        if self.calibration_batches is not None:
            self.calibration_batches = _check_calibration(self.calibration_batches)
        if self.unit_consumers is not None:
            from prune_env.pruning.structured.declared import check_unit_consumers

            self.unit_consumers = check_unit_consumers(self.unit_consumers)
        for fname in ("evaluate", "test", "loss", "train_loss"):
            fn = getattr(self, fname)
            if fn is not None and not callable(fn):
                raise TypeError(f"RNNTask: `{fname}` must be callable, got {type(fn).__name__}")

    @property
    def structured(self) -> bool:
        """True when the task declares ``eval_batch`` and ``metric``, so candidates can be scored in batches."""
        return self.eval_batch is not None


def split_score(result: Score, where: str = "evaluate") -> tuple[float, dict[str, float]]:
    """Normalise what ``evaluate``/``test`` returned into ``(score, extras)``; fail clearly on anything else."""
    if isinstance(result, Mapping):
        if "score" not in result:
            raise ValueError(f"task.{where} returned a mapping without a 'score' key: {sorted(result)}")
        extras = {str(k): float(v) for k, v in result.items() if k != "score"}
        result = result["score"]
    else:
        extras = {}
    if isinstance(result, torch.Tensor):
        result = result.item()
    try:
        score = float(result)
    except (TypeError, ValueError):
        raise TypeError(f"task.{where} must return a float or a mapping with 'score', "
                        f"got {type(result).__name__}") from None
    if not math.isfinite(score):
        raise ValueError(f"task.{where} returned {score} (scores must be finite)")
    return score, extras


def metric_from_logits(logits: torch.Tensor, targets: torch.Tensor, metric: Metric) -> dict[str, float]:
    """Score model outputs against targets; returns ``{"score": ..., extras...}``.

    ``logits`` is ``(..., classes)`` and ``targets`` the matching integer labels. Both named metrics also report
    the mean negative log-likelihood and its perplexity, so language models get perplexity in ``info``.
    """
    if callable(metric):
        score, extras = split_score(metric(logits, targets), "metric")
        return {"score": score, **extras}
    flat = logits.reshape(-1, logits.shape[-1]).float()
    tgt = targets.reshape(-1).to(flat.device)
    nll = torch.nn.functional.cross_entropy(flat, tgt).item()
    ppl = float(torch.exp(torch.tensor(min(nll, 80.0))))
    if metric == "accuracy":
        acc = (flat.argmax(-1) == tgt).float().mean().item()
        return {"score": acc, "nll": nll, "perplexity": ppl}
    return {"score": -nll, "nll": nll, "perplexity": ppl}


class BatchEvaluator:
    """``evaluate`` built from ``eval_batch`` and ``metric``: one forward pass over a fixed batch.

    A module-level class (not a closure) so that tasks pickle and deep-copy.
    """

    def __init__(self, batch: tuple[torch.Tensor, torch.Tensor], metric: Metric):
        self.inputs, self.targets = batch
        self.metric = metric

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        logits = forward_in_mode(model, self.inputs, training=False)
        return metric_from_logits(logits, self.targets.to(logits.device), self.metric)


def forward_in_mode(model: nn.Module, inputs: torch.Tensor, training: bool) -> torch.Tensor:
    """``model(inputs)`` on the model's device in train or eval mode; the model's own mode is restored after."""
    was_training = model.training
    model.train(training)
    try:
        return model(inputs.to(model_device(model)))
    finally:
        model.train(was_training)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless model)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _check_eval_batch(batch: Any) -> None:
    ok = (isinstance(batch, (tuple, list)) and len(batch) == 2
          and all(isinstance(t, torch.Tensor) for t in batch))
    if not ok:
        raise ValueError("RNNTask: `eval_batch` must be a pair of tensors (inputs, targets), "
                         f"got {type(batch).__name__}")
    if batch[0].shape[0] != batch[1].shape[0]:
        raise ValueError("RNNTask: `eval_batch` inputs and targets must share the batch dimension, got "
                         f"{tuple(batch[0].shape)} and {tuple(batch[1].shape)}")


def _check_metric(metric: Any) -> None:
    if callable(metric):
        return
    if metric not in METRICS:
        raise ValueError(f"RNNTask: unknown `metric` {metric!r}; expected one of {METRICS} or a callable "
                         "metric(logits, targets) -> float")


def _check_calibration(batches: Any) -> tuple:
    if isinstance(batches, torch.Tensor) or not isinstance(batches, Sequence) or isinstance(batches, str):
        raise TypeError("RNNTask: `calibration_batches` must be a list or tuple of input batches (tensors, or tuples "
                        f"of tensors passed as positional arguments), got {type(batches).__name__}")
    if not batches:
        raise ValueError("RNNTask: `calibration_batches` is empty; give at least one batch of training inputs")
    for i, b in enumerate(batches):
        parts = b if isinstance(b, tuple) else (b,)
        if not parts or not all(isinstance(t, torch.Tensor) for t in parts):
            raise TypeError(f"RNNTask: `calibration_batches[{i}]` must be a tensor or a tuple of tensors, "
                            f"got {type(b).__name__}")
    return tuple(batches)
