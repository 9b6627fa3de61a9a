"""Movement pruning (Sanh, Wolf & Rush, 2020, "Movement Pruning: Adaptive Sparsity by Fine-Tuning"), a criterion of
gradual pruning only.

Each weight's score accumulates ``-w * dL/dw`` over the fine-tuning steps (the first-order change of the loss as the
weight moves: positive while training pushes it away from zero, negative while it shrinks towards zero). Each pruning
step of the cubic schedule removes the live weights of lowest score, so weights that fine-tuning moves towards zero go
first whatever their size. Before the first training step (no score yet) the weights are ranked by magnitude.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MovementScores:
    """Accumulated movement scores of the prunable weight of each layer.

    :param params: the prunable weight of each layer (of the working model).
    """

    def __init__(self, params: Sequence[nn.Parameter]):
        self.params = list(params)
        self.scores = [torch.zeros(p.numel(), dtype=torch.float32, device=p.device) for p in self.params]
        self.steps = 0

    @torch.no_grad()
    def accumulate(self) -> None:
        """Add ``-w * grad`` of the current weights and gradients (call after ``backward``, before the step)."""
        for s, p in zip(self.scores, self.params):
            if p.grad is not None:
                s.sub_((p.detach() * p.grad).reshape(-1).float())
        self.steps += 1

    def score(self, i: int) -> torch.Tensor:
        """Layer ``i``'s ranking (higher keeps): the movement score, or ``|w|`` before any step."""
        return self.scores[i] if self.steps else self.params[i].detach().abs().reshape(-1)
