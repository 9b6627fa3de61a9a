"""Tiny models and tasks for fast tests (seconds, no training needed)."""

from __future__ import annotations

import dataclasses
from functools import partial

import torch
from torch import nn

from prune_env import RNNTask

VOCAB = 12


class TinyLM(nn.Module):
    """Embedding -> recurrent layers -> Linear, the shape of most user models."""

    def __init__(self, rnn: str = "gru", hidden: int = 8, layers: int = 2, bidirectional: bool = False):
        super().__init__()
        cls = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}[rnn]
        self.emb = nn.Embedding(VOCAB, 6)
        self.rnn = cls(6, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.emb(x))
        return self.head(out)


def tiny_task(rnn: str = "gru", seed: int = 0, structured: bool = True, **model_kwargs) -> RNNTask:
    """A random (untrained) tiny LM task; the data follow a simple rule so scores are not all equal."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TinyLM(rnn, **model_kwargs).eval()
    x = torch.randint(0, VOCAB, (16, 10), generator=g)
    y = (x + 1) % VOCAB
    xt = torch.randint(0, VOCAB, (16, 10), generator=g)

    # partials of module-level functions, not closures, so that tasks (and envs) pickle
    loss = partial(_nll, x=x, y=y)
    test = partial(_accuracy, x=xt, y=(xt + 1) % VOCAB)
    if structured:
        return RNNTask(model, eval_batch=(x, y), metric="accuracy", test=test, loss=loss, name=f"tiny-{rnn}")
    return RNNTask(model, evaluate=partial(_neg_nll, x=x, y=y), test=test, loss=loss, name=f"tiny-{rnn}-blackbox")


def _nll(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(m(x).reshape(-1, VOCAB), y.reshape(-1))


@torch.no_grad()
def _neg_nll(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return -_nll(m, x, y).item()


@torch.no_grad()
def _accuracy(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (m(x).argmax(-1) == y).float().mean().item()


def kind_for(model: nn.Module, granularity: str = "unstructured", quantize: str | None = None, orders=None,
             edit: nn.Module | None = None):
    """A pruning kind editing ``edit`` (default: a copy of ``model``), from ``model``'s analysis (optionally with
    other prune ``orders``). Returns ``(kind, edited_model)``."""
    import copy
    import dataclasses

    from prune_env.pruning.analysis import analyse
    from prune_env.pruning.kinds import make_kind

    x = torch.zeros(2, 3, dtype=torch.long)
    analysis = analyse(RNNTask(model, eval_batch=(x, x), metric="accuracy"), "magnitude", granularity)
    if orders is not None:
        analysis = dataclasses.replace(analysis, orders=tuple(orders), _memo={})
    work = copy.deepcopy(model) if edit is None else edit
    return make_kind(work, analysis, quantize), work


def bf16_available(kind: str = "LSTM", device: str = "cpu") -> bool:
    """Whether this machine has a bf16 kernel for a recurrent module of ``kind`` (probed once, as the env does)."""
    from prune_env.devices import precision_problem

    return precision_problem(torch.device(device), "bf16", kind) is None


def tiny_lstm(**kwargs) -> RNNTask:
    """``tiny:tiny_lstm`` for command-line tests: a tiny 2-layer LSTM task."""
    return tiny_task("lstm", **kwargs)


def tiny_rnn(**kwargs) -> RNNTask:
    """``tiny:tiny_rnn``: a tiny 3-layer tanh RNN task."""
    return tiny_task("rnn", layers=3, **kwargs)


def tiny_calibrated(rnn: str = "lstm", seed: int = 0) -> RNNTask:
    """:func:`tiny_task` with calibration inputs drawn apart from its evaluation batch (data-aware operators)."""
    task = tiny_task(rnn, seed)
    g = torch.Generator().manual_seed(seed + 1000)
    calib = [torch.randint(0, VOCAB, (6, 10), generator=g) for _ in range(2)]
    return dataclasses.replace(task, calibration_batches=calib, name=f"tiny-{rnn}-calibrated")
