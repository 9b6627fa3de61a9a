"""The layer adapter registry: built-in coverage, roles and gate layouts, and a user's own module type."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prune_env.pruning.adapters import (
    LayerAdapter,
    WeightSpec,
    adapter_for,
    register_adapter,
    unregister_adapter,
)
from prune_env.pruning.layers import find_prunable_layers


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.rnn = nn.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3)
        self.gru = nn.GRU(6, 5)
        self.head = nn.Linear(5, 10)


def test_builtin_layers_roles_and_gates():
    layers = {layer.name: layer for layer in find_prunable_layers(Net())}
    assert list(layers)[:4] == ["emb.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.weight_hr_l0"]
    assert len(layers) == 1 + 12 + 2 + 1
    assert (layers["emb.weight"].role, layers["emb.weight"].kind) == ("embedding", "embedding")
    assert (layers["rnn.weight_ih_l1_reverse"].role, layers["rnn.weight_ih_l1_reverse"].gates) == ("input", 4)
    assert layers["rnn.weight_ih_l1_reverse"].shape == (24, 6) and layers["rnn.weight_ih_l1_reverse"].reverse
    assert (layers["rnn.weight_hh_l0"].role, layers["rnn.weight_hh_l0"].shape) == ("recurrent", (24, 3))
    assert (layers["rnn.weight_hr_l1"].role, layers["rnn.weight_hr_l1"].gates) == ("projection", 1)
    assert layers["rnn.weight_hr_l1"].kind == "hidden-hidden"
    assert layers["gru.weight_hh_l0"].gates == 3 and layers["gru.weight_hh_l0"].row_blocks[1] == (5, 10)
    assert (layers["head.weight"].role, layers["head.weight"].kind) == ("head", "linear")


def test_lookup_follows_the_class_hierarchy():
    class MyLinear(nn.Linear):
        pass

    assert adapter_for(MyLinear(2, 2)) is adapter_for(nn.Linear(2, 2))
    assert adapter_for(nn.ReLU()) is None
    assert adapter_for(nn.MultiheadAttention(4, 2).out_proj) is adapter_for(nn.Linear(2, 2))


class Scale(nn.Module):
    """A user's own layer: y = x * W^T with one prunable matrix."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 2))
        self.b = nn.Parameter(torch.zeros(3))

    def forward(self, x):
        return x @ self.w.T + self.b


class ScaleAdapter(LayerAdapter):
    def weights(self, module):
        return [WeightSpec("w", "linear", "projection")]

    def capture(self, module, args, kwargs, output):
        return {"w": args[0].reshape(-1, 2)}


def test_register_a_users_module_type():
    model = nn.Sequential(Scale(), nn.Linear(3, 1))
    assert [layer.name for layer in find_prunable_layers(model)] == ["1.weight"]
    register_adapter(Scale, ScaleAdapter())
    try:
        layers = find_prunable_layers(model)
        assert [(layer.name, layer.role) for layer in layers] == [("0.w", "projection"), ("1.weight", "head")]
        with pytest.raises(ValueError, match="already has an adapter"):
            register_adapter(Scale, ScaleAdapter())
    finally:
        unregister_adapter(Scale)
    assert [layer.name for layer in find_prunable_layers(model)] == ["1.weight"]


def test_bad_registrations_name_the_argument():
    with pytest.raises(TypeError, match="module_type"):
        register_adapter(int, ScaleAdapter())
    with pytest.raises(TypeError, match="adapter"):
        register_adapter(Scale, object())
    with pytest.raises(ValueError, match="role"):
        WeightSpec("w", "linear", "bogus")


def test_no_prunable_weights_points_to_the_registry():
    with pytest.raises(ValueError, match="register_adapter"):
        find_prunable_layers(nn.Sequential(nn.ReLU()))
