"""Adapter of the Simple Recurrent Unit of the ``sru`` package (Lei et al., "Simple Recurrent Units for Highly
Parallelizable Recurrence", EMNLP 2018), an optional extra: ``pip install prune-rnn-gym[sru]``.

An ``sru.SRU`` holds one ``sru.SRUCell`` per stacked layer (``rnn_lst.{k}``); this adapter describes the cell.
Almost all of its parameters are in ``weight``, the one matrix of the layer: every gate and the highway term are
computed from ``x_t`` alone, and the recurrence is elementwise (``weight_c``, a vector, and ``bias`` are not
prunable). Unlike ``nn.Linear``, ``weight`` is stored transposed, ``(input_size, output_size * k)`` (``k`` = 3, or 4
with a projected skip term), and its columns interleave the gates unit by unit (``(direction, unit, gate)``), so it
has no gate blocks of rows. With ``n_proj`` the input first goes through ``weight_proj`` ``(input_size, n_proj)``,
also transposed. Both are pruned weight by weight.

The data-aware operators (``wanda``, ``obs``, ``reconstruct``, GPTQ) compare and re-fit a weight's *rows* as its
outputs; a transposed weight has its outputs in columns, so :meth:`SRUCellAdapter.capture` refuses them with a
``ValueError``. Use the magnitude, gradient or saliency criteria.

The adapter is registered without importing ``sru`` (:func:`~prune_env.pruning.adapters.registry.register_deferred`):
the first lookup after the user's code imported it registers it. Importing ``sru`` compiles or loads its CPU
extension, which would otherwise slow down ``import prune_env`` for everyone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from prune_env.pruning.adapters.registry import LayerAdapter, WeightSpec

#: Where the cell class lives: registered once ``sru.modules`` is imported.
MODULE, QUALNAME = "sru.modules", "SRUCell"


class SRUCellAdapter(LayerAdapter):
    """``sru.SRUCell``: ``weight`` (role ``input``, kind ``input-hidden``) and, with ``n_proj``, ``weight_proj``
    (role ``projection``); see the module docstring."""

    def weights(self, module: nn.Module) -> list[WeightSpec]:
        specs = []
        if isinstance(getattr(module, "weight_proj", None), nn.Parameter):
            specs.append(WeightSpec("weight_proj", "linear", "projection", reads="x_t (transposed weight)"))
        if isinstance(getattr(module, "weight", None), nn.Parameter):  # absent with a custom_m module
            specs.append(WeightSpec("weight", "input-hidden", "input", reads="x_t (transposed weight)"))
        return specs

    def capture(self, module: nn.Module, args: tuple, kwargs: Mapping[str, Any],
                output: Any) -> dict[str, torch.Tensor]:
        raise ValueError("SRU stores its weights transposed (input_size, output_size * k), with the outputs in "
                         "columns; the data-aware operators (criterion 'wanda'/'obs', reconstruct='obs', "
                         "quantize='gptq') compare and re-fit rows as outputs and do not support it: use "
                         "criterion 'magnitude', 'gradient' or 'saliency'")
