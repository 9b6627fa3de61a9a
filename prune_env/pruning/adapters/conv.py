"""Adapter of ``nn.Conv1d``, the convolutional front-end of many speech and sequence RNNs (e.g. DeepSpeech 2,
Amodei et al., ICML 2016).

Its ``weight`` ``(out_channels, in_channels / groups, kernel_size)`` is one prunable weight of kind ``linear`` and
role ``input`` (it runs before the recurrence). Row ``o`` of ``weight.reshape(out_channels, -1)`` is one output
channel; it reads the input patches, ``in_channels * kernel_size`` values each (channel-major, as the weight's
flat layout), one patch per output position, padding and dilation included.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from prune_env.pruning.adapters.registry import LayerAdapter, WeightSpec


class Conv1dAdapter(LayerAdapter):
    """``nn.Conv1d``: ``weight`` (role ``input``, kind ``linear``); the bias is never prunable."""

    def weights(self, module: nn.Module) -> list[WeightSpec]:
        return [WeightSpec("weight", "linear", "input", reads="input patches")]

    def capture(self, module: nn.Module, args: tuple, kwargs: Mapping[str, Any],
                output: Any) -> dict[str, torch.Tensor]:
        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"calibration capture expected a tensor input to Conv1d, got {type(x).__name__}")
        return {"weight": patches(module, x)}


@torch.no_grad()
def patches(module: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """The ``(positions, in_channels * kernel_size)`` input patches ``module``'s weight rows multiply.

    :raises ValueError: for grouped convolutions (each output group reads its own channels, so there is no single
        input matrix for the weight).
    """
    if module.groups != 1:
        raise ValueError(f"calibration capture does not support grouped Conv1d (groups={module.groups}): each group "
                         "of output channels reads different input channels")
    x = x.detach()
    if x.dim() == 2:
        x = x.unsqueeze(0)
    (k,), (d,), (s,) = module.kernel_size, module.dilation, module.stride
    # (left, right) as the module pads, also for padding="same"/"valid"
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    x = nn.functional.pad(x, module._reversed_padding_repeated_twice, mode=mode)
    cols = nn.functional.unfold(x.unsqueeze(2), (1, k), dilation=(1, d), stride=(1, s))
    return cols.transpose(1, 2).reshape(-1, module.in_channels * k)
