"""Training the presets' models: seeding, thread policy, loss batches and the language-model trainer.

Losses are module-level classes rather than closures so that the tasks pickle and deep-copy.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from prune_env.devices import model_device
from prune_env.task import forward_in_mode


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
    with single_thread():
        yield


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the block on one intra-op thread and restore the caller's setting after."""
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
