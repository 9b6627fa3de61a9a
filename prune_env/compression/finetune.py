"""Recovery fine-tuning of a pruned model with its masks held fixed.

Training batches come from the task's optional ``train_loss(model, generator)`` hook, which draws a fresh batch
from the training split with the given ``torch.Generator`` (so the same seed gives the same batches). Without it
the fixed ``loss(model)`` batch is reused every step, which overfits that batch; use few steps then.

Pruned weights stay exactly zero: their gradients are masked before each optimizer step (so Adam's moments never
move them) and the weights are re-masked after it.
"""

from __future__ import annotations

import torch
from torch import nn

from prune_env.checks import check_int, check_number
from prune_env.pruning.layers import rnn_modules
from prune_env.task import RNNTask

DEFAULT_LR = 1e-3


def finetune(model: nn.Module, task: RNNTask, steps: int, masks: dict[str, torch.Tensor],
             generator: torch.Generator | None = None, lr: float = DEFAULT_LR) -> list[float]:
    """Fine-tune ``model`` in place for ``steps`` Adam steps; returns the training losses.

    :param model: the pruned model (on any device); left in eval mode with gradients off, as it came or not.
    :param task: supplies ``train_loss(model, generator)`` (preferred) or ``loss(model)``.
    :param steps: optimizer steps, >= 0.
    :param masks: parameter name -> 0/1 mask of the weights to hold at zero (e.g.
        :func:`prune_env.compression.export.masks`).
    :param generator: seeds the training batches (``train_loss`` only); default: a generator seeded with 0.
    :param lr: Adam learning rate.
    :raises ValueError: on a bad argument or a task with neither hook.
    """
    steps = check_int("steps", steps, 0)
    lr = check_number("lr", lr, 0.0, low_open=True)
    if steps and getattr(task, "train_loss", None) is None and task.loss is None:
        raise ValueError("fine-tuning needs the task's `train_loss(model, generator)` or `loss(model)`")
    params = dict(model.named_parameters())
    unknown = sorted(set(masks) - set(params))
    if unknown:
        raise ValueError(f"`masks` names unknown parameters {unknown}")
    if not steps:
        return []
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    dev = {n: m.to(params[n].device, params[n].dtype) for n, m in masks.items()}
    return _train(model, task, steps, dev, params, generator, lr)


def _train(model, task, steps, masks, params, generator, lr) -> list[float]:
    requires = {n: p.requires_grad for n, p in params.items()}
    was_training = model.training
    for p in params.values():
        p.requires_grad_(True)
    opt = torch.optim.Adam(params.values(), lr=lr)
    losses = []
    model.train()  # cuDNN can only backpropagate through RNNs in training mode
    try:
        with torch.enable_grad():
            for _ in range(steps):
                loss = training_loss(model, task, generator)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                with torch.no_grad():
                    for n, m in masks.items():
                        if params[n].grad is not None:
                            params[n].grad.mul_(m)
                opt.step()
                with torch.no_grad():
                    for n, m in masks.items():
                        params[n].mul_(m)
                losses.append(float(loss.detach()))
    finally:
        model.train(was_training)
        for n, p in params.items():
            p.requires_grad_(requires[n])
            p.grad = None
        for m in rnn_modules(model):
            m.flatten_parameters()
    return losses


def training_loss(model: nn.Module, task: RNNTask, generator: torch.Generator) -> torch.Tensor:
    """One training batch's scalar loss: ``task.train_loss(model, generator)``, else the fixed ``task.loss(model)``.

    :raises ValueError: if the hook does not return a scalar tensor.
    """
    hook = getattr(task, "train_loss", None)
    loss = hook(model, generator) if hook is not None else task.loss(model)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ValueError(f"the task's training loss must be a scalar tensor, got {type(loss).__name__}")
    return loss.reshape(())
