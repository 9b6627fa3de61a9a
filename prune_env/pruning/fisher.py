"""Loss-aware layer statistics without an evaluation: a diagonal Fisher estimate and Optimal Brain Damage costs.

The second-order estimate of the loss increase from zeroing weight ``i`` of a trained model (LeCun et al., "Optimal
Brain Damage", NeurIPS 1989) is ``0.5 * F_i * w_i**2``, with ``F_i`` the diagonal of the Fisher information,
estimated here as the mean squared gradient over a few training batches (the empirical Fisher, as in the Fisher
pruning of Theis et al., 2018). Only the training loss is read: the validation split, which the reward scores, is
never touched, so a policy that reads these costs still prunes an unseen model in one evaluation.

The gradients come from ``task.train_loss`` (``batches`` fresh batches from a fixed seed, so the same model always
gets the same costs) or, for a task without one, the single fixed batch of ``task.loss``. Both run on a throwaway
CPU copy in eval mode (no dropout noise; the user's model is never touched).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from prune_env.pruning.layers import PrunableLayer, get_param

__all__ = ["fisher_diagonal", "has_loss", "obd_costs"]


def has_loss(task) -> bool:
    """Whether ``task`` gives the gradients a Fisher estimate needs (``train_loss`` or ``loss``)."""
    return task.train_loss is not None or task.loss is not None


def fisher_diagonal(task, layers: Sequence[PrunableLayer], batches: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Mean squared gradient of each prunable weight over ``batches`` training batches (one without ``train_loss``).

    :param task: an :class:`~prune_env.RNNTask` with ``train_loss`` or ``loss``.
    :param layers: the weights to estimate.
    :param batches: training batches to average over.
    :param seed: seeds the batches' ``torch.Generator``.
    :raises ValueError: for a task with neither loss.
    """
    if not has_loss(task):
        raise ValueError("loss-aware statistics need a task with `train_loss(model, generator)` or `loss(model)`")
    work = copy.deepcopy(task.model).cpu().eval()
    for p in work.parameters():
        p.requires_grad_(True)
    total = {layer.name: torch.zeros(layer.shape) for layer in layers}
    gen = torch.Generator().manual_seed(seed)
    n = batches if task.train_loss is not None else 1
    for _ in range(n):
        work.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = task.train_loss(work, gen) if task.train_loss is not None else task.loss(work)
            loss.backward()
        for layer in layers:
            g = get_param(work, layer).grad
            if g is not None:
                total[layer.name] += g.detach().float() ** 2
    return {name: t / n for name, t in total.items()}


def obd_costs(analysis, task, batches: int = 8) -> list[np.ndarray]:
    """Per action layer, the OBD cost ``0.5 * F * w**2`` of each weight, in the layer's prune order (the env's
    ``criterion`` order: the ``k``-th entry is the cost of the ``k``-th weight the env removes). Computed once per
    :class:`~prune_env.pruning.analysis.Analysis` (unstructured granularity) and kept with it; read-only arrays.

    :param analysis: the model's analysis (``task``'s, unstructured).
    :param task: the task whose training loss gives the Fisher estimate.
    """
    if analysis.plan is not None:
        raise ValueError("OBD costs are per weight; hidden-unit granularity has none")

    def compute() -> list[np.ndarray]:
        fisher = fisher_diagonal(task, analysis.layers, batches)
        costs = []
        for layer, w, order in zip(analysis.layers, analysis.dense, analysis.orders):
            c = (0.5 * fisher[layer.name].reshape(-1) * w.float() ** 2)[order].double().numpy()
            c.setflags(write=False)
            costs.append(c)
        return costs

    return analysis.cached(("obd_costs", batches), compute)
