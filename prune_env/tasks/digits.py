"""``digits``: scikit-learn's bundled 8x8 handwritten digits, read by an LSTM one pixel row at a time.

Each image is a sequence of 8 time steps of 8 features (pixel intensities scaled to [0, 1]); a 2-layer LSTM reads
it and a linear head on the last step predicts the digit. It ships with scikit-learn (no download), trains in a few
seconds on a CPU and is the CI-sized default task.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.nn import functional as F

from prune_env.task import BatchEvaluator, RNNTask
from prune_env.tasks.cache import load_or_train
from prune_env.tasks.config import check_config, finish_metadata
from prune_env.tasks.models import SequenceClassifier
from prune_env.tasks.scoring import ChunkedScorer
from prune_env.tasks.training import BatchLoss, SampledLoss, seeded, training_threads

NAME = "digits"

DEFAULTS: dict[str, Any] = {
    "hidden": 64,         # LSTM units per layer
    "layers": 2,          # stacked LSTM layers
    "epochs": 40,         # passes over the training split
    "batch": 64,          # minibatch size
    "lr": 1e-2,           # peak Adam learning rate (cosine decay to lr/10)
    "val_frac": 0.2,      # stratified validation share
    "test_frac": 0.2,     # stratified test share
    "loss_samples": 256,  # training samples behind `loss`
}


def load_splits(seed: int, val_frac: float, test_frac: float) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Stratified train/val/test split of ``load_digits``, fixed by ``seed``.

    :returns: ``{"train"|"val"|"test": (x FloatTensor[N, 8, 8], y LongTensor[N])}``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype("float32")
    y = data.target.astype("int64")
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=test_frac, stratify=y, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_frac / (1 - test_frac), stratify=y_rest, random_state=seed)
    return {k: (torch.from_numpy(a), torch.from_numpy(b))
            for k, (a, b) in {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}.items()}


def _train(model: SequenceClassifier, x: torch.Tensor, y: torch.Tensor, cfg: dict[str, Any], seed: int,
           progress: bool) -> float:
    """Minibatch Adam on (x, y); returns wall time in seconds."""
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    per_epoch = -(-n // cfg["batch"])
    total = cfg["epochs"] * per_epoch
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    # Cosine decay to lr/10: a fixed epoch budget then ends on a settled model instead of a noisy last step.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=cfg["lr"] / 10)
    model.train()
    t0 = time.perf_counter()
    for _ in tqdm(range(cfg["epochs"]), desc=f"training {NAME}", disable=not progress, leave=False):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, cfg["batch"]):
            idx = perm[i:i + cfg["batch"]]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return time.perf_counter() - t0


def make(*, seed: int = 0, retrain: bool = False, progress: bool = True, **config: Any) -> RNNTask:
    """Build the ``digits`` task; config keys are those of :data:`DEFAULTS`.

    :param seed: seeds both the data split and the model.
    :param retrain: ignore a cached model and train afresh.
    :param progress: show a progress bar while training.
    """
    cfg = check_config(NAME, DEFAULTS, config)
    splits = load_splits(seed, cfg["val_frac"], cfg["test_frac"])
    x_train, y_train = splits["train"]
    evaluate = BatchEvaluator(splits["val"], "accuracy")
    test = ChunkedScorer(*splits["test"], metric="accuracy", chunk=1024)
    # A fixed slice of the (already shuffled) training split: deterministic gradient statistics.
    loss = BatchLoss(x_train[:cfg["loss_samples"]], y_train[:cfg["loss_samples"]])

    def build() -> SequenceClassifier:
        with seeded(seed):
            return SequenceClassifier(8, cfg["hidden"], cfg["layers"], 10)

    def train() -> tuple[SequenceClassifier, dict[str, Any]]:
        with seeded(seed):
            model = SequenceClassifier(8, cfg["hidden"], cfg["layers"], 10)
            with training_threads(model):
                seconds = _train(model, x_train, y_train, cfg, seed, progress)
                scores = {"dense_val": evaluate(model), "dense_test": test(model)}
        return model, {"train_time_s": round(seconds, 2), "torch": str(torch.__version__), **scores}

    model, info, hit = load_or_train(NAME, cfg, seed, build=build, train=train, retrain=retrain)
    model.eval()
    metadata = {"preset": NAME, "config": dict(cfg), "seed": seed, "model": type(model).__name__,
                "data": "sklearn.datasets.load_digits (8 rows x 8 pixels per sequence)",
                "splits": {k: int(v[1].numel()) for k, v in splits.items()}, "num_classes": 10}
    finish_metadata(metadata, info, hit)
    # Calibration (the data-aware operators' inputs): the same fixed training rows as `loss`, in batches.
    calibration = tuple(x_train[:cfg["loss_samples"]].split(cfg["batch"]))
    return RNNTask(model=model, test=test, loss=loss, name=NAME, eval_batch=splits["val"], metric="accuracy",
                   metadata=metadata, train_loss=SampledLoss(splits["train"], cfg["batch"]),
                   calibration_batches=calibration)
