"""Pieces shared by the built-in tasks: config checking, seeding, scorers, and the language-model trainer.

Scorers and losses are module-level classes rather than closures so that the tasks pickle (vector envs send them
to worker processes) and deep-copy.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..task import BatchEvaluator, Metric, RNNTask, forward_in_mode, model_device
from .cache import load_or_train

#: Config values that must be positive integers / positive floats when a preset declares them.
_POSITIVE_INTS = {"hidden", "layers", "emb", "steps", "seq_len", "batch", "epochs", "eval_tokens",
                  "loss_tokens", "loss_samples", "max_train_tokens", "max_vocab", "test_tokens"}
_POSITIVE_FLOATS = {"lr"}


def check_split_fractions(preset: str, cfg: Mapping[str, Any]) -> None:
    """``val_frac`` and ``test_frac`` must each be a fraction in (0, 0.5)."""
    for k in ("val_frac", "test_frac"):
        if isinstance(cfg[k], bool) or not isinstance(cfg[k], (int, float)) or not 0 < cfg[k] < 0.5:
            raise ValueError(f"make_task({preset!r}): config `{k}` must be a fraction in (0, 0.5), got {cfg[k]!r}")


def check_config(preset: str, defaults: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``config`` over ``defaults`` after checking the keys and the obvious value ranges.

    :param preset: preset name, for error messages.
    :param defaults: every valid key with its default.
    :param config: the user's overrides.
    :raises ValueError: on an unknown key (listing the valid ones) or an out-of-range value.
    """
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(f"make_task({preset!r}): unknown config key(s) {unknown}; valid keys are "
                         f"{sorted(defaults)}")
    cfg = {**defaults, **config}
    for k, v in cfg.items():
        if k in _POSITIVE_INTS and not (v is None and defaults[k] is None):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
                raise ValueError(f"make_task({preset!r}): config `{k}` must be a positive int"
                                 f"{' or None' if defaults.get(k) is None else ''}, got {v!r}")
            cfg[k] = int(v)  # numpy ints hash and serialise like Python ints
        if k in _POSITIVE_FLOATS:
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not v > 0:
                raise ValueError(f"make_task({preset!r}): config `{k}` must be a positive number, got {v!r}")
            cfg[k] = float(v)
    return cfg


def check_seed(seed: Any) -> int:
    """:raises ValueError: unless ``seed`` is a non-negative int."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"make_task: `seed` must be a non-negative int, got {seed!r}")
    return int(seed)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global RNG for the block and restore the caller's RNG state afterwards.

    Training only runs on CPU, so only the CPU generator is forked (``devices=[]`` also avoids initialising CUDA).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


#: Models below this many parameters train on a single intra-op thread (see :func:`training_threads`).
SMALL_MODEL_PARAMS = 200_000


@contextlib.contextmanager
def training_threads(model: nn.Module) -> Iterator[None]:
    """Train (and score) a small model on one intra-op thread; leave larger ones on the caller's setting.

    A small LSTM's ops are too short to gain from a second thread, and when the CPU is shared OpenMP's spinning
    workers make each step 20-50x slower (measured: 0.02 s vs 0.5 s per digits step on a busy 2-core box). The
    previous setting is restored on exit, so nothing changes for the caller.
    """
    if sum(p.numel() for p in model.parameters()) >= SMALL_MODEL_PARAMS:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class BatchLoss:
    """``loss(model) -> scalar``: mean cross-entropy of ``model(inputs)`` against ``targets`` on a fixed batch.

    The forward runs in training mode because cuDNN refuses to backpropagate through an RNN run in eval mode; the
    built-in models have no dropout, so the loss is the same in either mode. The caller's mode is restored.

    :param inputs: model inputs.
    :param targets: integer class ids matching the model's output without its last (class) dimension.
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor):
        self.inputs = inputs
        self.targets = targets

    def __call__(self, model: nn.Module) -> torch.Tensor:
        logits = forward_in_mode(model, self.inputs, training=True)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.targets.to(logits.device).reshape(-1))


class SampledLoss:
    """``train_loss(model, generator) -> scalar``: cross-entropy on a fresh random training batch.

    Used by recovery fine-tuning; the batch is drawn on the CPU with ``generator`` (so the same seed gives the same
    batches on any device) and moved to the model's device. Leaves the model's train/eval mode alone.

    For classification, ``data=(inputs, targets)`` and a batch is ``batch`` random rows. For language modelling,
    ``data`` is a 1-D token tensor and a batch is ``batch`` random windows of ``seq_len`` (+1 for the targets).

    :param data: ``(inputs, targets)`` or a 1-D LongTensor of tokens.
    :param batch: rows or windows per batch.
    :param seq_len: window length; required for token data.
    """

    def __init__(self, data: torch.Tensor | tuple[torch.Tensor, torch.Tensor], batch: int,
                 seq_len: int | None = None):
        if isinstance(data, torch.Tensor) and seq_len is None:
            raise ValueError("SampledLoss: token data needs `seq_len`")
        self.data = data
        self.batch = batch
        self.seq_len = seq_len

    def __call__(self, model: nn.Module, generator: torch.Generator | None = None) -> torch.Tensor:
        device = model_device(model)
        if isinstance(self.data, torch.Tensor):
            high = self.data.numel() - self.seq_len - 1
            starts = torch.randint(0, high + 1, (self.batch,), generator=generator)
            w = self.data[starts[:, None] + torch.arange(self.seq_len + 1)].to(device)
            x, y = w[:, :-1], w[:, 1:]
        else:
            inputs, targets = self.data
            idx = torch.randint(0, targets.shape[0], (self.batch,), generator=generator)
            x, y = inputs[idx].to(device), targets[idx].to(device)
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


class ChunkedScorer:
    """Score a model on a large fixed set in chunks of ``chunk`` rows; returns ``{"score", "nll", "perplexity"}``.

    Equivalent to :func:`prune_env.task.metric_from_logits` on the whole set, but with bounded memory.

    :param inputs: model inputs, batch first.
    :param targets: integer targets, batch first.
    :param metric: ``"accuracy"`` (score = accuracy) or ``"nll"`` (score = minus mean NLL).
    :param chunk: rows per forward pass.
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, metric: Metric = "accuracy",
                 chunk: int = 64):
        if metric not in ("accuracy", "nll"):
            raise ValueError(f"ChunkedScorer: `metric` must be 'accuracy' or 'nll', got {metric!r}")
        self.inputs = inputs
        self.targets = targets
        self.metric = metric
        self.chunk = chunk

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        device = model_device(model)
        was_training = model.training
        model.eval()
        nll_sum, correct, count = 0.0, 0, 0
        try:
            for i in range(0, self.inputs.shape[0], self.chunk):
                logits = model(self.inputs[i:i + self.chunk].to(device))
                flat = logits.reshape(-1, logits.shape[-1]).float()
                tgt = self.targets[i:i + self.chunk].to(device).reshape(-1)
                nll_sum += F.cross_entropy(flat, tgt, reduction="sum").item()
                correct += int((flat.argmax(-1) == tgt).sum().item())
                count += tgt.numel()
        finally:
            model.train(was_training)
        nll = nll_sum / max(count, 1)
        acc = correct / max(count, 1)
        return {"score": acc if self.metric == "accuracy" else -nll, "nll": nll,
                "perplexity": math.exp(min(nll, 80.0)), "accuracy": acc}


# --- language models -------------------------------------------------------------------------------------------

def spaced_windows(tokens: torch.Tensor, n: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` windows of ``seq_len`` inputs (+ next-token targets), evenly spaced over ``tokens``.

    Spreading them over the whole split (rather than taking the first ``n * seq_len`` tokens) makes a small fixed
    batch representative of the split. Windows may overlap when the split is short.

    :raises ValueError: if ``tokens`` is shorter than one window.
    """
    span = seq_len + 1
    if tokens.numel() < span:
        raise ValueError(f"split has {tokens.numel()} tokens, fewer than one window of seq_len + 1 = {span}")
    last = tokens.numel() - span
    starts = torch.linspace(0, last, n).round().long() if n > 1 else torch.zeros(1, dtype=torch.long)
    idx = starts[:, None] + torch.arange(span)
    w = tokens[idx]
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


def contiguous_windows(tokens: torch.Tensor, seq_len: int, max_tokens: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut the first ``max_tokens`` (+1) tokens into consecutive non-overlapping windows of ``seq_len``.

    :raises ValueError: if ``tokens`` is shorter than one window.
    """
    usable = tokens.numel() - 1
    if max_tokens is not None:
        usable = min(usable, max_tokens)
    n = usable // seq_len
    if n < 1:
        raise ValueError(f"split has {tokens.numel()} tokens, fewer than one window of seq_len + 1 = "
                         f"{seq_len + 1}")
    x = tokens[:n * seq_len].view(n, seq_len)
    y = tokens[1:n * seq_len + 1].view(n, seq_len)
    return x, y


def train_lm(model: nn.Module, train_tokens: torch.Tensor, *, steps: int, seq_len: int, batch: int, lr: float,
             seed: int, progress: bool, desc: str) -> float:
    """Train a language model with Adam on random windows of ``train_tokens``; returns the wall time in seconds.

    Random windows (rather than sequential truncated-BPTT with carried state) keep the model's forward stateless,
    which is what the pruning env evaluates. The learning rate follows a cosine decay to a tenth of ``lr`` so a
    fixed step budget ends on a settled model; gradients are clipped at norm 1 as usual for LSTMs.

    :param model: the model, trained in place on CPU.
    :param train_tokens: 1-D LongTensor of token ids.
    :param steps: optimiser steps.
    :param seq_len: window (truncated-BPTT) length.
    :param batch: windows per step.
    :param lr: peak Adam learning rate.
    :param seed: seeds the window sampler.
    :param progress: show a tqdm bar.
    :param desc: the bar's label.
    """
    from tqdm.auto import tqdm

    if train_tokens.numel() < seq_len + 2:
        raise ValueError(f"training split has {train_tokens.numel()} tokens, fewer than seq_len + 2 = "
                         f"{seq_len + 2}")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    offsets = torch.arange(seq_len + 1)
    high = train_tokens.numel() - seq_len - 1
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, mininterval=1.0)
    ema = None
    for step in bar:
        starts = torch.randint(0, high + 1, (batch,), generator=gen)
        w = train_tokens[starts[:, None] + offsets]
        logits = model(w[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{ema:.3f}")
    bar.close()
    model.eval()
    return time.perf_counter() - t0


def finish_metadata(metadata: dict[str, Any], info: Mapping[str, Any], from_cache: bool) -> dict[str, Any]:
    """Fold the training-time facts stored with the weights into a task's ``metadata``."""
    val, test = info.get("dense_val", {}), info.get("dense_test", {})
    metadata.update({
        "dense_val": val.get("score"), "dense_test": test.get("score"),
        "dense_val_metrics": dict(val), "dense_test_metrics": dict(test),
        "train_time_s": info.get("train_time_s"), "trained_with_torch": info.get("torch"),
        "from_cache": from_cache, "cache_path": info.get("cache_path"),
    })
    return metadata


def build_lm_task(*, preset: str, cfg: dict[str, Any], seed: int, retrain: bool, progress: bool,
                  model_cls: type[nn.Module], vocab_size: int, splits: Mapping[str, torch.Tensor],
                  extra: dict[str, Any], metadata: dict[str, Any]) -> RNNTask:
    """Train (or load) a language model on token splits and wrap it as a structured :class:`RNNTask`.

    ``cfg`` must hold ``emb, hidden, layers, steps, seq_len, batch, lr, eval_tokens, test_tokens, loss_tokens,
    metric``. The evaluation batch is ``eval_tokens // seq_len`` windows spread over the validation split; ``test``
    scores consecutive windows over the first ``test_tokens`` of the test split (all of it when ``None``);
    ``loss`` is the cross-entropy on ``loss_tokens // seq_len`` windows spread over the training split.

    :param preset: preset name (cache file prefix and task name).
    :param cfg: resolved config.
    :param seed: model seed.
    :param retrain: ignore the cache.
    :param progress: show the training bar.
    :param model_cls: a :class:`~prune_env.tasks.models.LanguageModel` subclass.
    :param vocab_size: number of token ids.
    :param splits: ``{"train", "val", "test"}`` 1-D LongTensors.
    :param extra: data fingerprint for the cache key.
    :param metadata: preset-specific facts; training facts are added to it.
    """
    seq_len, metric = cfg["seq_len"], cfg["metric"]
    if metric not in ("accuracy", "nll"):
        raise ValueError(f"make_task({preset!r}): config `metric` must be 'accuracy' or 'nll', got {metric!r}")
    try:
        eval_x, eval_y = spaced_windows(splits["val"], max(1, cfg["eval_tokens"] // seq_len), seq_len)
        test_x, test_y = contiguous_windows(splits["test"], seq_len, cfg["test_tokens"])
        loss_x, loss_y = spaced_windows(splits["train"], max(1, cfg["loss_tokens"] // seq_len), seq_len)
    except ValueError as e:
        raise ValueError(f"make_task({preset!r}): {e}; lower config `seq_len` or use more data") from None
    evaluate = BatchEvaluator((eval_x, eval_y), metric)
    test = ChunkedScorer(test_x, test_y, metric)

    def build() -> nn.Module:
        with seeded(seed):
            return model_cls(vocab_size, cfg["emb"], cfg["hidden"], cfg["layers"])

    def train() -> tuple[nn.Module, dict[str, Any]]:
        with seeded(seed):
            model = model_cls(vocab_size, cfg["emb"], cfg["hidden"], cfg["layers"])
            with training_threads(model):
                seconds = train_lm(model, splits["train"], steps=cfg["steps"], seq_len=seq_len,
                                   batch=cfg["batch"], lr=cfg["lr"], seed=seed, progress=progress,
                                   desc=f"training {preset}")
                scores = {"dense_val": evaluate(model), "dense_test": test(model)}
        return model, {"train_time_s": round(seconds, 2), "torch": str(torch.__version__), **scores}

    model, info, hit = load_or_train(preset, cfg, seed, build=build, train=train, retrain=retrain, extra=extra)
    model.eval()
    metadata.update({"preset": preset, "config": dict(cfg), "seed": seed, "model": type(model).__name__,
                     "vocab_size": vocab_size,
                     "splits": {k: int(v.numel()) for k, v in splits.items()},
                     "eval_tokens": int(eval_y.numel()), "test_tokens": int(test_y.numel()),
                     "loss_tokens": int(loss_y.numel())})
    finish_metadata(metadata, info, hit)
    return RNNTask(model=model, test=test, loss=BatchLoss(loss_x, loss_y), name=preset,
                   eval_batch=(eval_x, eval_y), metric=metric, metadata=metadata,
                   train_loss=SampledLoss(splits["train"], cfg["batch"], seq_len))
