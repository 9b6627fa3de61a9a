"""The zoo's regression metric, scorer and losses, and the chance levels recorded for every model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from prune_env.task import forward_in_mode


class NegMSE:
    """``metric(outputs, targets)``: ``{"score": -MSE, "mse": MSE}`` (a class, so the task pickles)."""

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        mse = F.mse_loss(outputs.reshape(-1).float(), targets.reshape(-1).to(outputs.device).float()).item()
        return {"score": -mse, "mse": mse}


class RegressionScorer:
    """``test(model)``: ``{"score": -MSE, "mse", "r2"}`` on a fixed set, in chunks.

    :param variance: the targets' variance around the training mean (``r2 = 1 - mse / variance``).
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, variance: float, chunk: int = 1024):
        self.inputs, self.targets, self.variance, self.chunk = inputs, targets, variance, chunk

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        total = 0.0
        for i in range(0, self.inputs.shape[0], self.chunk):
            out = forward_in_mode(model, self.inputs[i:i + self.chunk], training=False)
            total += F.mse_loss(out.reshape(-1).float(), self.targets[i:i + self.chunk].to(out.device),
                                reduction="sum").item()
        mse = total / max(self.targets.numel(), 1)
        return {"score": -mse, "mse": mse, "r2": 1 - mse / self.variance}


class MSEBatchLoss:
    """``loss(model)``: MSE on a fixed batch (train mode, as :class:`~prune_env.tasks.training.BatchLoss`)."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor):
        self.inputs, self.targets = inputs, targets

    def __call__(self, model: nn.Module) -> torch.Tensor:
        out = forward_in_mode(model, self.inputs, training=True)
        return F.mse_loss(out.reshape(-1), self.targets.to(out.device))


class SampledMSELoss:
    """``train_loss(model, generator)``: MSE on ``batch`` random training rows drawn with ``generator``."""

    def __init__(self, data: tuple[torch.Tensor, torch.Tensor], batch: int):
        self.data, self.batch = data, batch

    def __call__(self, model: nn.Module, generator: torch.Generator | None = None) -> torch.Tensor:
        inputs, targets = self.data
        idx = torch.randint(0, targets.shape[0], (self.batch,), generator=generator)
        device = next(model.parameters()).device
        out = model(inputs[idx].to(device))
        return F.mse_loss(out.reshape(-1), targets[idx].to(device))


def class_chance(train: torch.Tensor, val: torch.Tensor, test: torch.Tensor, classes: int) -> dict[str, Any]:
    """Chance levels of a classifier or LM from its integer targets: the accuracy of always predicting the most
    frequent training class (``chance_val``, ``chance_test``) and the test NLL of always predicting the training
    class frequencies, add-one smoothed (``chance_test_loss``: the unigram model for an LM)."""
    counts = torch.bincount(train.reshape(-1), minlength=classes).double() + 1
    top = int(counts.argmax())
    logp = (counts / counts.sum()).log()
    return {"chance_val": float((val == top).double().mean()), "chance_test": float((test == top).double().mean()),
            "chance_test_loss": float(-logp[test.reshape(-1)].mean()), "chance_loss_name": "nll",
            "chance_rule": "accuracy of always the most frequent training class/token; loss: NLL of the training "
                           "frequencies (add-one smoothed)"}


def mean_chance(train: torch.Tensor, val: torch.Tensor, test: torch.Tensor) -> dict[str, Any]:
    """Chance levels of a regressor: minus the MSE of always predicting the training mean (val, test)."""
    mean = float(train.mean())
    mse_val, mse_test = float(((val - mean) ** 2).mean()), float(((test - mean) ** 2).mean())
    return {"chance_val": -mse_val, "chance_test": -mse_test, "chance_test_loss": mse_test,
            "chance_loss_name": "mse", "chance_rule": "minus the MSE of always the training mean"}
