"""Layer adapters: one per module type, saying which weights of a module are prunable, their role and gate layout,
and what each reads (see :mod:`prune_env.pruning.adapters.registry`).

Built-ins: ``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` (:mod:`~prune_env.pruning.adapters.recurrent`), ``nn.Linear`` and
its subclasses, ``nn.Embedding`` (:mod:`~prune_env.pruning.adapters.basic`), ``nn.LSTMCell``, ``nn.GRUCell``,
``nn.RNNCell`` (:mod:`~prune_env.pruning.adapters.cells`), ``nn.MultiheadAttention``
(:mod:`~prune_env.pruning.adapters.attention`), ``nn.Conv1d`` (:mod:`~prune_env.pruning.adapters.conv`) and, when
the optional ``sru`` package is installed, ``sru.SRUCell`` (:mod:`~prune_env.pruning.adapters.sru_cell`, registered
once the user's code imports ``sru``). Register a module type of your own with :func:`register_adapter`.
"""

from importlib.util import find_spec

from torch import nn

from prune_env.pruning.adapters.attention import MultiheadAttentionAdapter
from prune_env.pruning.adapters.basic import EmbeddingAdapter, LinearAdapter
from prune_env.pruning.adapters.cells import RecurrentCellAdapter
from prune_env.pruning.adapters.conv import Conv1dAdapter
from prune_env.pruning.adapters.recurrent import GATES, RecurrentAdapter, unroll
from prune_env.pruning.adapters.registry import (
    KINDS,
    ROLES,
    LayerAdapter,
    WeightSpec,
    adapter_for,
    register_adapter,
    register_deferred,
    registered_types,
    unregister_adapter,
)
from prune_env.pruning.adapters.sru_cell import MODULE as _SRU_MODULE
from prune_env.pruning.adapters.sru_cell import QUALNAME as _SRU_CLASS
from prune_env.pruning.adapters.sru_cell import SRUCellAdapter

_recurrent = RecurrentAdapter()
for _t in (nn.LSTM, nn.GRU, nn.RNN):
    register_adapter(_t, _recurrent)
register_adapter(nn.Linear, LinearAdapter())
register_adapter(nn.Embedding, EmbeddingAdapter())
_cells = RecurrentCellAdapter()
for _t in (nn.LSTMCell, nn.GRUCell, nn.RNNCell):
    register_adapter(_t, _cells)
register_adapter(nn.MultiheadAttention, MultiheadAttentionAdapter())
register_adapter(nn.Conv1d, Conv1dAdapter())
if find_spec("sru") is not None:
    register_deferred(_SRU_MODULE, _SRU_CLASS, SRUCellAdapter)

__all__ = ["GATES", "KINDS", "ROLES", "Conv1dAdapter", "EmbeddingAdapter", "LayerAdapter", "LinearAdapter",
           "MultiheadAttentionAdapter", "RecurrentAdapter", "RecurrentCellAdapter", "SRUCellAdapter", "WeightSpec",
           "adapter_for", "register_adapter", "register_deferred", "registered_types", "unregister_adapter", "unroll"]
