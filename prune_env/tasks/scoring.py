"""Scoring the presets' models: chunked test scoring and the evaluation windows of language models.

Scorers are module-level classes rather than closures so that the tasks pickle and deep-copy.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from prune_env.devices import model_device
from prune_env.task import Metric


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
