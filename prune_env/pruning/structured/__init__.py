"""Structured pruning of recurrent hidden units (in the spirit of Wen et al.'s Intrinsic Sparse Structures).

A *unit group* is one stacked layer of an ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (both directions together, since one
bidirectional layer must keep the same hidden size in each direction; each direction ranks its own units).
Removing unit ``j`` of direction ``d`` removes:

- its rows in every gate of ``weight_ih``, ``weight_hh``, ``bias_ih`` and ``bias_hh``;
- its column in the layer's own ``weight_hh``;
- its input column (``d * hidden + j``) in whatever consumes the layer's output: the next stacked layer's
  ``weight_ih``, the first layer of a following recurrent module, or an ``nn.Linear``.

Consumers of a module's last layer are found by tracing the model with ``torch.fx``. With the rows zeroed a
pruned unit's state stays exactly 0 from a zero initial state (every gate pre-activation is 0, so LSTM ``g = 0``
and GRU ``h = z * h_prev``), so the in-place masked model and the physically smaller model of :func:`shrink`
compute the same function.

Embeddings and ``Linear`` heads are not action units at this granularity: they only lose the input columns of the
units removed upstream.

The package: :mod:`~prune_env.pruning.structured.plan` (the unit groups and what their removal touches),
:mod:`~prune_env.pruning.structured.tracing` (finding who consumes a recurrent output) and
:mod:`~prune_env.pruning.structured.shrink` (the physically smaller model).
"""

from prune_env.pruning.structured.plan import (
                                               GATES,
                                               ColumnSource,
                                               MaskedTensor,
                                               StateRead,
                                               UnitGroup,
                                               UnitPlan,
                                               group_tensors,
)
from prune_env.pruning.structured.shrink import shrink
from prune_env.pruning.structured.tracing import trace

__all__ = ["GATES", "ColumnSource", "MaskedTensor", "StateRead", "UnitGroup", "UnitPlan", "group_tensors", "shrink",
           "trace"]
