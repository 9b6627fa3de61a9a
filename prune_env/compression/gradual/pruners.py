"""Who is pruned at each pruning step of gradual pruning: weights of a layer (by current magnitude or a fixed order)
or whole hidden units (every parameter a removed unit touches)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prune_env.pruning.layers import get_param


class WeightPruner:
    """Unstructured: each layer's mask is its pruned weights; by current magnitude or by a fixed order."""

    def __init__(self, model: nn.Module, layers, orders: Sequence[torch.Tensor] | None):
        self.layers = list(layers)
        self.params = [get_param(model, layer) for layer in self.layers]
        self.orders = None if orders is None else [o.to(p.device) for o, p in zip(orders, self.params)]
        self.pruned = [torch.zeros(p.numel(), dtype=torch.bool, device=p.device) for p in self.params]

    @torch.no_grad()
    def prune(self, counts: Sequence[int]) -> list[tuple[nn.Parameter, torch.Tensor]]:
        for i, (p, k) in enumerate(zip(self.params, counts)):
            k = int(k)
            if self.orders is not None:
                idx = self.orders[i][:k]
            else:
                # The k lowest |w| of the current weights; already-pruned weights rank first, so they stay pruned.
                score = p.detach().reshape(-1).abs().float().masked_fill(self.pruned[i], -1.0)
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
