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


# ------------------------------------------------------------------------------ cells, attention, Conv1d
def _only(layers, module_name):
    return {layer.param_name: layer for layer in layers if layer.module_name == module_name}


@pytest.mark.parametrize("cell", [nn.LSTMCell, nn.GRUCell, nn.RNNCell])
def test_cells_in_a_user_loop_capture_every_step(cell):
    from prune_env.pruning.calibration import capture_inputs

    class Loop(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = cell(3, 5)
            self.head = nn.Linear(5, 2)

        def forward(self, x):
            state = None
            for t in range(x.shape[1]):
                state = self.cell(x[:, t], state)
            return self.head(state[0] if isinstance(state, tuple) else state)

    torch.manual_seed(0)
    model = Loop().eval()
    layers = find_prunable_layers(model)
    got = _only(layers, "cell")
    gates = {nn.LSTMCell: 4, nn.GRUCell: 3, nn.RNNCell: 1}[cell]
    assert [(n, la.role, la.kind, la.gates) for n, la in got.items()] == [
        ("weight_ih", "input", "input-hidden", gates), ("weight_hh", "recurrent", "hidden-hidden", gates)]
    x = torch.randn(2, 4, 3)
    caps = capture_inputs(model, layers, [x])
    prevs, state = [torch.zeros(2, 5)], None
    with torch.no_grad():
        for t in range(4):
            state = model.cell(x[:, t], state)
            prevs.append(state[0] if isinstance(state, tuple) else state)
    torch.testing.assert_close(caps["cell.weight_ih"], x.transpose(0, 1).reshape(-1, 3))
    torch.testing.assert_close(caps["cell.weight_hh"], torch.cat(prevs[:-1]))


class AttnNet(nn.Module):
    def __init__(self, kdim=None, batch_first=True):
        super().__init__()
        self.lstm = nn.LSTM(4, 8, batch_first=batch_first)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first, kdim=kdim, vdim=kdim)
        self.head = nn.Linear(8, 3)


def test_attention_weights_are_claimed_once_with_the_attention_role():
    model = AttnNet()
    layers = find_prunable_layers(model)
    names = [la.name for la in layers]
    assert names == ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "attn.in_proj_weight", "attn.out_proj.weight",
                     "head.weight"]
    got = _only(layers, "attn")
    assert [(n, la.role, la.kind, la.gates, la.shape) for n, la in got.items()] == [
        ("in_proj_weight", "attention", "linear", 3, (24, 8)), ("out_proj.weight", "attention", "linear", 1, (8, 8))]
    from prune_env.pruning.layers import get_param

    assert get_param(model, got["out_proj.weight"]) is model.attn.out_proj.weight
    separate = [la.name for la in find_prunable_layers(AttnNet(kdim=5))]
    assert separate[2:6] == ["attn.q_proj_weight", "attn.k_proj_weight", "attn.v_proj_weight",
                             "attn.out_proj.weight"]


@pytest.mark.parametrize("batch_first", [True, False])
def test_attention_capture_is_what_each_projection_multiplies(batch_first):
    from prune_env.pruning.adapters.attention import context

    torch.manual_seed(0)
    attn = AttnNet(batch_first=batch_first).attn.eval()
    q = torch.randn(2, 6, 8) if batch_first else torch.randn(6, 2, 8)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[1, -3:] = True
    out = attn(q, q, q, key_padding_mask=mask, need_weights=False)[0]
    caps = adapter_for(attn).capture(attn, (q, q, q), {"key_padding_mask": mask, "need_weights": False}, None)
    torch.testing.assert_close(caps["in_proj_weight"], q.reshape(-1, 8))
    torch.testing.assert_close(attn.out_proj(caps["out_proj.weight"]).reshape(out.shape), out)
    torch.testing.assert_close(caps["out_proj.weight"], context(attn, q, q, q, {"key_padding_mask": mask}))
    with pytest.raises(ValueError, match="self-attention"):
        adapter_for(attn).capture(attn, (q, q.flip(0), q), {}, None)


@pytest.mark.parametrize("conv", [
    lambda: nn.Conv1d(3, 4, 3),
    lambda: nn.Conv1d(3, 4, 3, padding=2, dilation=2, stride=2),
    lambda: nn.Conv1d(3, 4, 4, padding="same"),
    lambda: nn.Conv1d(3, 4, 3, padding=1, padding_mode="reflect"),
], ids=["plain", "dilated-strided", "same", "reflect"])
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_conv1d_patches_reproduce_the_convolution(conv):
    torch.manual_seed(0)
    module = conv().eval()
    (spec,) = adapter_for(module).weights(module)
    assert (spec.param_name, spec.kind, spec.role) == ("weight", "linear", "input")
    x = torch.randn(2, 3, 9)
    cols = adapter_for(module).capture(module, (x,), {}, None)["weight"]
    y = module(x)
    rebuilt = cols @ module.weight.reshape(4, -1).T + module.bias
    torch.testing.assert_close(rebuilt.reshape(2, -1, 4).transpose(1, 2), y)
    grouped = nn.Conv1d(4, 4, 3, groups=2)
    with pytest.raises(ValueError, match="grouped"):
        adapter_for(grouped).capture(grouped, (torch.randn(1, 4, 5),), {}, None)


def test_a_deferred_adapter_registers_once_its_module_is_imported(monkeypatch):
    import sys
    import types

    from prune_env.pruning.adapters import register_deferred, registered_types

    fake = types.ModuleType("fake_cells_for_test")

    class FakeCell(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 2))

    register_deferred("fake_cells_for_test", "FakeCell", ScaleAdapter)
    try:
        assert adapter_for(FakeCell()) is None  # the module is not imported: nothing registered, nothing imported
        fake.FakeCell = FakeCell
        monkeypatch.setitem(sys.modules, "fake_cells_for_test", fake)
        assert isinstance(adapter_for(FakeCell()), ScaleAdapter) and FakeCell in registered_types()
    finally:
        unregister_adapter(FakeCell)


def test_importing_prune_env_does_not_import_sru():
    import subprocess
    import sys

    code = "import sys, prune_env, agents; assert 'sru' not in sys.modules, 'sru imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_new_module_types_keep_the_observation_format():
    """The new adapters map onto the observation's existing layer kinds, so the env's observation layout is the
    one policies were trained on."""
    from prune_env.pruning.adapters import KINDS

    assert KINDS == ("embedding", "input-hidden", "hidden-hidden", "linear")
    for module in (nn.LSTMCell(2, 3), nn.GRUCell(2, 3), nn.MultiheadAttention(4, 2), nn.Conv1d(2, 3, 3)):
        assert all(spec.kind in KINDS for spec in adapter_for(module).weights(module))


def test_the_custom_layers_guide_example_runs():
    """docs/guide/custom_layers.md: the custom cell registers, is fully covered and prunes to the target."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "guide" / "custom_layers.md").read_text()
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "register_adapter(GatedCell" in b]
    namespace: dict = {}
    try:
        exec(compile(code, "custom_layers.md", "exec"), namespace)  # the guide's own assertions must hold
    finally:
        if "GatedCell" in namespace:
            unregister_adapter(namespace["GatedCell"])
    assert namespace["info"]["model_sparsity"] == pytest.approx(0.8, abs=1e-3)
