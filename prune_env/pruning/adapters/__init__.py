"""Layer adapters: one per module type, saying which weights of a module are prunable, their role and gate layout,
and what each reads (see :mod:`prune_env.pruning.adapters.registry`).

Built-ins: ``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` (:mod:`~prune_env.pruning.adapters.recurrent`), ``nn.Linear`` and
its subclasses, ``nn.Embedding`` (:mod:`~prune_env.pruning.adapters.basic`). Register a module type of your own
with :func:`register_adapter`.
"""

from torch import nn

from prune_env.pruning.adapters.basic import EmbeddingAdapter, LinearAdapter
from prune_env.pruning.adapters.recurrent import GATES, RecurrentAdapter, unroll
from prune_env.pruning.adapters.registry import (
    KINDS,
    ROLES,
    LayerAdapter,
    WeightSpec,
    adapter_for,
    register_adapter,
    registered_types,
    unregister_adapter,
)

_recurrent = RecurrentAdapter()
for _t in (nn.LSTM, nn.GRU, nn.RNN):
    register_adapter(_t, _recurrent)
register_adapter(nn.Linear, LinearAdapter())
register_adapter(nn.Embedding, EmbeddingAdapter())

__all__ = ["GATES", "KINDS", "ROLES", "EmbeddingAdapter", "LayerAdapter", "LinearAdapter", "RecurrentAdapter",
           "WeightSpec", "adapter_for", "register_adapter", "registered_types", "unregister_adapter", "unroll"]
