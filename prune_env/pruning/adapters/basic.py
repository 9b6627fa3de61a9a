"""Adapters of ``nn.Linear`` (and its subclasses) and ``nn.Embedding``.

A linear layer's ``weight`` reads the layer's input (every leading dimension is a row). An embedding's ``weight``
reads one-hot tokens: its capture is the looked-up token ids, whose frequencies weight its rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from prune_env.pruning.adapters.registry import LayerAdapter, WeightSpec


class LinearAdapter(LayerAdapter):
    """``nn.Linear`` and subclasses without their own adapter: ``weight`` (role ``head``), reading the input."""

    def weights(self, module: nn.Module) -> list[WeightSpec]:
        return [WeightSpec("weight", "linear", "head")] if isinstance(getattr(module, "weight", None),
                                                                     nn.Parameter) else []

    def capture(self, module: nn.Module, args: tuple, kwargs: Mapping[str, Any],
                output: Any) -> dict[str, torch.Tensor]:
        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"calibration capture expected a tensor input to {type(module).__name__}, "
                             f"got {type(x).__name__}")
        return {"weight": x.detach().reshape(-1, x.shape[-1])}


class EmbeddingAdapter(LayerAdapter):
    """``nn.Embedding``: ``weight`` (role ``embedding``), reading token ids."""

    def weights(self, module: nn.Module) -> list[WeightSpec]:
        return [WeightSpec("weight", "embedding", "embedding", reads="token ids")]

    def capture(self, module: nn.Module, args: tuple, kwargs: Mapping[str, Any],
                output: Any) -> dict[str, torch.Tensor]:
        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, torch.Tensor) or x.is_floating_point():
            raise ValueError(f"calibration capture expected integer token ids for {type(module).__name__}")
        return {"weight": x.detach().reshape(-1)}
