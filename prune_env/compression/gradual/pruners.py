"""Who is pruned at each pruning step of gradual pruning: weights of a layer (by current magnitude or a fixed order)
or whole hidden units (every parameter a removed unit touches), by a fixed order or by current scores."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from prune_env.pruning.layers import get_param


class WeightPruner:
    """Unstructured: each layer's mask is its pruned weights; by current magnitude, by a fixed order, or by a
    ``score(i)`` of layer ``i``'s weights (higher keeps: movement scores, or magnitudes before a proximal step).

    ``prune(counts, zeros_only=True)`` prunes only weights that are exactly zero now (at most ``counts``), lowest
    score first: a regularised run locks in what its penalty zeroed before the last pruning step.
    """

    def __init__(self, model: nn.Module, layers, orders: Sequence[torch.Tensor] | None,
                 score: Callable[[int], torch.Tensor] | None = None):
        self.layers = list(layers)
        self.params = [get_param(model, layer) for layer in self.layers]
        self.orders = None if orders is None else [o.to(p.device) for o, p in zip(orders, self.params)]
        self.score = score
        self.pruned = [torch.zeros(p.numel(), dtype=torch.bool, device=p.device) for p in self.params]

    @torch.no_grad()
    def prune(self, counts: Sequence[int], zeros_only: bool = False) -> list[tuple[nn.Parameter, torch.Tensor]]:
        for i, (p, k) in enumerate(zip(self.params, counts)):
            k = int(k)
            if self.orders is not None:
                idx = self.orders[i][:k]
            else:
                # The k lowest scores (default |w| of the current weights); already-pruned weights rank first, so
                # they stay pruned.
                base = p.detach().reshape(-1).abs() if self.score is None else self.score(i).reshape(-1)
                score = base.float().masked_fill(self.pruned[i], -math.inf)
                if zeros_only:
                    k = min(k, int((self.pruned[i] | (p.detach().reshape(-1) == 0)).sum()))
                idx = torch.argsort(score, stable=True)[:k]
            self.pruned[i][idx] = True
        return self.masks()

    def masks(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        return [(p, (~m).to(p.dtype).view_as(p)) for p, m in zip(self.params, self.pruned)]


class UnitPruner:
    """Hidden units: a group's mask covers every parameter its removed units touch (biases included)."""

    def __init__(self, model: nn.Module, kind):
        self.kind = kind
        self.model = model
        self.named = dict(model.named_parameters())

    @torch.no_grad()
    def prune(self, counts: Sequence[int]) -> list[tuple[nn.Parameter, torch.Tensor]]:
        keep = self.kind.keep([int(k) for k in counts])
        masks = self.kind.plan.param_masks(keep, self.model)
        return [(self.named[n], m.to(self.named[n].device, self.named[n].dtype)) for n, m in masks.items()]


class ScoredUnitPruner:
    """Hidden units ranked by the current ``scores()`` (per group and direction, higher keeps), e.g. group norms
    under a group-Lasso penalty; removed units stay removed, and every direction of a layer removes as many.

    ``prune(counts, zeros_only=True)`` removes only units whose whole group is exactly zero now (``zero_units()``), at
    most ``counts`` and as many in each direction of a layer.

    :param model: the working model.
    :param plan: its :class:`~prune_env.pruning.structured.UnitPlan`.
    :param scores: per group and direction, a score per unit.
    :param zero_units: per group and direction, which units are exactly zero.
    """

    def __init__(self, model: nn.Module, plan, scores: Callable[[], list[list[torch.Tensor]]],
                 zero_units: Callable[[], list[list[torch.Tensor]]]):
        self.model, self.plan, self.scores, self.zero_units = model, plan, scores, zero_units
        self.named = dict(model.named_parameters())
        self.pruned = [[torch.zeros(g.hidden_size, dtype=torch.bool) for _ in range(g.directions)]
                       for g in plan.groups]

    @torch.no_grad()
    def prune(self, counts: Sequence[int], zeros_only: bool = False) -> list[tuple[nn.Parameter, torch.Tensor]]:
        scores = self.scores()
        zeros = self.zero_units() if zeros_only else None
        for g, k in enumerate(counts):
            k = int(k)
            pruned = self.pruned[g]
            if zeros is not None:
                k = min([k] + [int((m | z.cpu()).sum()) for m, z in zip(pruned, zeros[g])])
            for d, m in enumerate(pruned):
                score = scores[g][d].detach().float().cpu().masked_fill(m, -math.inf)
                m[torch.argsort(score, stable=True)[:k]] = True
        masks = self.plan.param_masks(self.keep(), self.model)
        return [(self.named[n], m.to(self.named[n].device, self.named[n].dtype)) for n, m in masks.items()]

    def keep(self) -> list[list[torch.Tensor]]:
        """Boolean keep masks per group and direction (for :func:`~prune_env.pruning.structured.shrink`)."""
        return [[~m for m in per_dir] for per_dir in self.pruned]
