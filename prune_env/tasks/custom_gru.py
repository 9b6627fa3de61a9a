"""``custom-gru``: a bidirectional GRU reading the 8x8 digits column by column, a model the agents were not designed on.

A linear input projection (8 -> 32, tanh), a bidirectional 1x64 GRU and a linear head on the mean of the outputs
over time. The digits are read by columns (the ``digits`` preset reads rows with a 2x64 LSTM), so the recurrent
matrices, the pooling and the input layer all differ from the preset the agents were tuned on. It trains in
seconds on a CPU. Results filed under the spec ``benchmarks.gru_task:make`` name this preset (see
:data:`prune_env.tasks.SPEC_ALIASES`); its seed-0 model is the one they were measured on.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from prune_env.task import RNNTask
from prune_env.tasks.cache import load_or_train
from prune_env.tasks.config import check_config, finish_metadata
from prune_env.tasks.training import seeded, training_threads

NAME = "custom-gru"
#: The task's name in results (``RNNTask.name``), kept from the factory the filed results were measured with.
TASK_NAME = "gru-digits-columns"

DEFAULTS: dict[str, Any] = {
    "epochs": 40,  # passes over the training split
    "batch": 64,   # minibatch size
    "lr": 1e-2,    # Adam learning rate (constant)
}


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
    """``loss(model)``: cross-entropy on the whole training split (the gradient-based rules' statistics)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __call__(self, model: nn.Module) -> torch.Tensor:
        return F.cross_entropy(model(self.x), self.y)


def load_splits(seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Stratified 60/20/20 train/val/test split of ``load_digits``, images transposed (columns as time steps).

    :returns: ``{"train"|"val"|"test": (x FloatTensor[N, 8, 8], y LongTensor[N])}``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype("float32").transpose(0, 2, 1)  # columns as time steps
    y = d.target.astype("int64")
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    x_tr, x_val, y_tr, y_val = train_test_split(x_rest, y_rest, test_size=0.25, stratify=y_rest, random_state=seed)
    return {k: (torch.from_numpy(a), torch.from_numpy(b)) for k, (a, b) in
            {"train": (x_tr, y_tr), "val": (x_val, y_val), "test": (x_test, y_test)}.items()}


def _train(model: ColumnGRU, x: torch.Tensor, y: torch.Tensor, cfg: dict[str, Any], seed: int) -> float:
    """Minibatch Adam on (x, y) at a constant learning rate; returns wall time in seconds."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(cfg["epochs"]):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), cfg["batch"]):
            idx = perm[i:i + cfg["batch"]]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return time.perf_counter() - t0


def make(*, seed: int = 0, retrain: bool = False, progress: bool = True, **config: Any) -> RNNTask:
    """Build the ``custom-gru`` task; config keys are those of :data:`DEFAULTS`.

    Validation accuracy is the reward's score; test accuracy is reported.

    :param seed: seeds the data split, the initialisation and the minibatch order.
    :param retrain: ignore a cached model and train afresh.
    :param progress: unused (training takes seconds); accepted like every preset's.
    """
    del progress
    cfg = check_config(NAME, DEFAULTS, config)
    s = load_splits(seed)
    test = Accuracy(*s["test"])

    def build() -> ColumnGRU:
        return ColumnGRU()

    def train() -> tuple[ColumnGRU, dict[str, Any]]:
        with seeded(seed):
            model = ColumnGRU()
            with training_threads(model):
                seconds = _train(model, *s["train"], cfg, seed)
                with torch.no_grad():
                    val = Accuracy(*s["val"])(model)
                scores = {"dense_val": {"score": val}, "dense_test": {"score": test(model)}}
        return model, {"train_time_s": round(seconds, 2), "torch": str(torch.__version__), **scores}

    model, info, hit = load_or_train(NAME, cfg, seed, build=build, train=train, retrain=retrain)
    model.eval()
    metadata = {"preset": NAME, "config": dict(cfg), "seed": seed, "model": "Linear(8,32)-biGRU(64)-Linear(128,10)",
                "epochs": cfg["epochs"], "data": "sklearn.datasets.load_digits (8 columns x 8 pixels per sequence)",
                "splits": {k: len(v[1]) for k, v in s.items()}, "num_classes": 10}
    finish_metadata(metadata, info, hit)
    return RNNTask(model, eval_batch=s["val"], metric="accuracy", test=test, loss=Loss(*s["train"]), name=TASK_NAME,
                   metadata=metadata, calibration_batches=tuple(s["train"][0].split(256)))
