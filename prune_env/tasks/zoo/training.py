"""The training loop of the zoo's sequence models (the language models train through
:func:`prune_env.tasks.lm.build_lm_task`)."""

from __future__ import annotations

import math
import time

import torch
from torch import nn
from torch.nn import functional as F


def train_sequences(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, regress: bool, steps: int, batch: int,
                     lr: float, seed: int, progress: bool, desc: str) -> float:
    """Adam on random minibatches (cosine decay to lr/10, clipping at norm 1); returns wall seconds."""
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    t0 = time.perf_counter()
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False, mininterval=1.0):
        idx = torch.randint(0, y.shape[0], (batch,), generator=gen)
        out = model(x[idx])
        if regress:
            loss = F.mse_loss(out.reshape(-1), y[idx])
        else:
            loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y[idx].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    return time.perf_counter() - t0
