"""Adapter of PyTorch's single-step recurrent cells (``nn.LSTMCell``, ``nn.GRUCell``, ``nn.RNNCell``), which a user's
own loop calls once per time step.

A cell has one ``weight_ih`` (reads ``x_t``) and one ``weight_hh`` (reads ``h_{t-1}``, the state the loop passes
in, zeros when it passes none), with gate rows in PyTorch's order: LSTM ``i, f, g, o``, GRU ``r, z, n``. Each call
of the cell is one time step, so the calibration capture sees every step the loop runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from prune_env.pruning.adapters.registry import LayerAdapter, WeightSpec

#: Gate blocks along the rows of a cell's weights, by cell type.
CELL_GATES = {nn.LSTMCell: 4, nn.GRUCell: 3, nn.RNNCell: 1}


def _gates(module: nn.Module) -> int:
    for cls, gates in CELL_GATES.items():
        if isinstance(module, cls):
            return gates
    raise ValueError(f"not a recurrent cell: {type(module).__name__}")


class RecurrentCellAdapter(LayerAdapter):
    """``nn.LSTMCell``/``nn.GRUCell``/``nn.RNNCell``: ``weight_ih`` (role ``input``) and ``weight_hh`` (role
    ``recurrent``); biases are never prunable."""

    def weights(self, module: nn.Module) -> list[WeightSpec]:
        gates = _gates(module)
        return [WeightSpec("weight_ih", "input-hidden", "input", gates, reads="x_t"),
                WeightSpec("weight_hh", "hidden-hidden", "recurrent", gates, reads="h_{t-1}")]

    def input_weights(self, module: nn.Module) -> list[str]:
        """The weights whose columns read the cell's input features (a consumer of hidden units)."""
        return ["weight_ih"]

    def capture(self, module: nn.Module, args: tuple, kwargs: Mapping[str, Any],
                output: Any) -> dict[str, torch.Tensor]:
        x = args[0] if args else kwargs.get("input")
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"calibration capture expected a tensor input to {type(module).__name__}, "
                             f"got {type(x).__name__}")
        h = hx[0] if isinstance(hx, (tuple, list)) else hx
        if h is None:
            h = x.new_zeros(*x.shape[:-1], module.hidden_size)
        return {"weight_ih": x.detach().reshape(-1, module.input_size),
                "weight_hh": h.detach().reshape(-1, module.hidden_size)}
