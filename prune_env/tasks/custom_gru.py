"""A custom ``RNNTask`` the agents were not designed on: a bidirectional GRU reading digits column by column.

Used by ``bench_agents.py`` (config ``gru``) through the CLI's ``module:function`` task form::

    prune-rnn bench --task benchmarks.gru_task:make --sparsity 0.8 0.9

The dense model is trained once (about 1 minute on an idle 2-core CPU) and cached next to the presets' models.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import functional as F

from prune_env import RNNTask

SEED = 0
EPOCHS = 40


class ColumnGRU(nn.Module):
    """Linear input projection -> bidirectional GRU -> linear head on the mean of the outputs."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 32)
        self.gru = nn.GRU(32, 64, batch_first=True, bidirectional=True)
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(torch.tanh(self.proj(x)))
        return self.head(out.mean(1))


class Accuracy:
    """``test(model)``: accuracy on a fixed set (a class, so the task pickles)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> float:
        device = next(model.parameters()).device
        return (model(self.x.to(device)).argmax(-1).cpu() == self.y).float().mean().item()


class Loss:
    """``loss(model)``: cross-entropy on a fixed training batch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __call__(self, model: nn.Module) -> torch.Tensor:
        return F.cross_entropy(model(self.x), self.y)


def _splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype("float32").transpose(0, 2, 1)  # columns as time steps
    y = d.target.astype("int64")
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=SEED)
    x_tr, x_val, y_tr, y_val = train_test_split(x_rest, y_rest, test_size=0.25, stratify=y_rest, random_state=SEED)
    return {k: (torch.from_numpy(a), torch.from_numpy(b)) for k, (a, b) in
            {"train": (x_tr, y_tr), "val": (x_val, y_val), "test": (x_test, y_test)}.items()}


def _train(x: torch.Tensor, y: torch.Tensor) -> ColumnGRU:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = ColumnGRU()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(SEED)
        for _ in range(EPOCHS):
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), 64):
                idx = perm[i:i + 64]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return model.eval()


def make() -> RNNTask:
    """The task: validation accuracy is the reward's score, test accuracy is reported."""
    from prune_env.tasks.cache import cache_dir

    s = _splits()
    path = cache_dir() / f"bench-gru-digits-s{SEED}-e{EPOCHS}-torch{torch.__version__}.pt"
    model = ColumnGRU()
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        model = _train(*s["train"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    model.eval()
    return RNNTask(model, eval_batch=s["val"], metric="accuracy", test=Accuracy(*s["test"]),
                   loss=Loss(*s["train"]), name="gru-digits-columns",
                   metadata={"model": "Linear(8,32)-biGRU(64)-Linear(128,10)", "epochs": EPOCHS,
                             "splits": {k: len(v[1]) for k, v in s.items()}})
