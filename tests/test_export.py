"""Compressed export/load: round trips, exact size accounting, bad and corrupt files, prune-compatible masks."""

from __future__ import annotations

import collections
import copy
import json
import os
import struct

import numpy as np
import pytest
import safetensors.torch
import torch
from tiny import VOCAB, TinyLM, tiny_task
from torch import nn

from prune_env import PruneRNNEnv, RNNTask
from prune_env.compression.export import ExportError, apply_masks, can_export, declarative, export, load, masks
from prune_env.compression.quantize import quantize
from prune_env.compression.size import dense_bits, encoding, model_size, size_table
from prune_env.tasks.models import ZooLM, ZooSequenceNet


def _env_model(granularity: str, rnn: str = "gru"):
    task = tiny_task(rnn, hidden=16, bidirectional=True)
    env = PruneRNNEnv(task, granularity=granularity, target_sparsity=0.6)
    env.reset(seed=0)
    env.last_info = env.step(env.action_space.sample() * 0 + 0.3)[-1]
    return task, env


def _quantized(model: nn.Module, bits, method: str) -> nn.Module:
    ref = copy.deepcopy(model)
    if bits is not None:
        names = {n for n in model_size(ref).layers}
        with torch.no_grad():
            for n, p in ref.named_parameters():
                if n in names:
                    p.copy_(quantize(p, bits, method))
    return ref


@pytest.mark.parametrize("granularity", ["unstructured", "hidden_unit"])
@pytest.mark.parametrize("bits, method", [(None, "linear"), (2, "linear"), (3, "kmeans"), (4, "linear"),
                                          (6, "kmeans"), (8, "linear"), (8, "kmeans"), (16, "linear")])
def test_round_trip_every_granularity_and_bit_width(tmp_path, granularity, bits, method):
    task, env = _env_model(granularity)
    model = env.pruned_model()
    path = tmp_path / "m.prnn"
    size = export(model, path, bits=bits, method=method)
    assert size == path.stat().st_size
    # a hidden-unit-pruned model is a GraphModule of torch.nn modules: no class to name
    loaded = load(path, classes=[TinyLM] if granularity == "unstructured" else None)
    assert isinstance(loaded, nn.Module) and not loaded.training
    ref = _quantized(model, bits, method)
    x = task.eval_batch[0]
    torch.testing.assert_close(loaded(x), ref(x), atol=1e-6, rtol=0)
    assert task.evaluate(loaded)["score"] == task.evaluate(ref)["score"]
    if bits is None:
        assert task.evaluate(loaded)["score"] == env.last_info["score"]
        if granularity == "unstructured":
            assert env.last_info["size_bytes"] == -(-model_size(model).total_bits // 8)
    assert list(os.listdir(tmp_path)) == ["m.prnn"]  # no temp file left


def test_env_quantized_model_exports_to_the_same_values(tmp_path):
    task = tiny_task("lstm")
    env = PruneRNNEnv(task, quantize="kmeans", target_sparsity=0.7)
    env.reset(seed=1)
    _, _, _, _, info = env.step(env.action_space.sample())
    model = env.pruned_model()
    export(model, tmp_path / "q.prnn", bits=env.bit_allocation, method="kmeans")
    loaded = load(tmp_path / "q.prnn", classes=[TinyLM])
    for (n, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), n
    assert task.evaluate(loaded)["score"] == info["score"]
    assert info["size_bytes"] == -(-model_size(model, env.bit_allocation, "kmeans").total_bits // 8)


def _header(path):
    """The safetensors header (tensor spans and metadata), its length, and the parsed description."""
    data = path.read_bytes()
    (hlen,) = struct.unpack_from("<Q", data)
    header = json.loads(data[8:8 + hlen])
    return header, hlen, json.loads(header["__metadata__"]["description"])


def _rewrite(path, edit_header):
    """Rewrite ``path``'s safetensors header with ``edit_header(header)``; the tensor bytes stay as they are."""
    data = path.read_bytes()
    (hlen,) = struct.unpack_from("<Q", data)
    header = json.loads(data[8:8 + hlen])
    edit_header(header)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + hlen:])


@pytest.mark.parametrize("bits", [None, 4, 8])
def test_file_streams_match_size_accounting_exactly(tmp_path, bits):
    _, env = _env_model("unstructured", "lstm")
    model = env.pruned_model()
    path = tmp_path / "m.prnn"
    total = export(model, path, bits=bits)
    header, hlen, description = _header(path)
    report = model_size(_quantized(model, bits, "linear"), bits)
    nbytes = {k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}
    streams = raw = 0
    encoded = [e for e in description["tensors"] if "layout" in e]
    assert {e["name"] for e in encoded} == set(report.layers)
    for entry in encoded:
        enc = report.layers[entry["name"]]
        assert enc.layout == entry["layout"] and enc.entries == entry["entries"]
        got = {k: nbytes.get(f"{entry['name']}:{k}", 0) for k in ("index", "values", "table")}
        assert got == enc.stream_bytes
        streams += sum(got.values())
    for entry in description["tensors"]:
        if "layout" not in entry and "alias" not in entry:
            raw += nbytes[entry["name"]]
    assert raw * 8 == report.other_bits
    assert streams + raw == report.total_bytes == sum(nbytes.values())
    assert total == 8 + hlen + streams + raw  # the header holds the module description


def test_layout_choice_and_relative_fillers_round_trip(tmp_path):
    torch.manual_seed(0)
    model = TinyLM("gru", hidden=40, layers=1).eval()
    # 150 gaps of 19 zeros and 2 of 39: 5-bit skips plus 2 fillers beat 6-bit skips without any.
    positions = torch.cumsum(torch.tensor([20] * 150 + [40] * 2), 0)
    with torch.no_grad():
        w = model.rnn.weight_hh_l0.view(-1)
        w.zero_()
        w[positions] = torch.linspace(-1, 1, positions.numel())
    enc = encoding(model.rnn.weight_hh_l0)
    assert (enc.layout, enc.rel_bits, enc.entries) == ("relative", 5, 154)
    assert encoding(model.head.weight).layout == "dense"
    half = model.emb.weight.detach().clone()
    half[torch.rand(half.shape, generator=torch.Generator().manual_seed(0)) < 0.5] = 0
    assert encoding(half).layout == "bitmask"
    for bits in (None, 8):
        export(model, tmp_path / "r.prnn", bits=bits)
        loaded = load(tmp_path / "r.prnn", classes=[TinyLM])
        torch.testing.assert_close(loaded.rnn.weight_hh_l0, _quantized(model, bits, "linear").rnn.weight_hh_l0)


def _reference_encoding_bits(weight: torch.Tensor, bits: int) -> int:
    """The layout search written out plainly (float32-style: no table), to check the vectorised one against."""
    flat = weight.reshape(-1).tolist()
    n = len(flat)
    kept = [i for i, v in enumerate(flat) if v != 0]
    skips = [p - q - 1 for p, q in zip(kept, [-1] + kept[:-1])]
    options = [n * bits, n + len(kept) * bits]
    for b in range(1, 17):
        entries = len(kept) + sum(s >> b for s in skips)
        options.append(entries * (b + bits))
    return min(options)


@pytest.mark.parametrize("density", [0.0, 1e-4, 0.01, 0.1, 0.5, 0.97, 1.0])
def test_layout_search_matches_a_plain_reference(density):
    g = torch.Generator().manual_seed(int(density * 1e4))
    for n in (1, 7, 300, 70_000):  # 70k at 1e-4 density: skips past 2**16, so fillers even at 16 bits
        w = torch.randn(n, generator=g)
        w[torch.rand(n, generator=g) >= density] = 0
        for dtype in (torch.float32, torch.float16):
            enc = encoding(w.to(dtype).reshape(1, -1))
            assert enc.total_bits == _reference_encoding_bits(w, 32), (n, density, dtype)
            assert enc.nnz == int((w != 0).sum())


@pytest.mark.parametrize("case", range(8))
def test_size_table_matches_the_layout_search_at_every_count(case):
    """The env reads sizes from ``size_table``; it must equal the search on the masked weight at every count."""
    g = torch.Generator().manual_seed(case)
    n = [1, 2, 9, 64, 300, 1000, 2500, 4000][case]
    w = torch.randn(n, generator=g)
    w[torch.rand(n, generator=g) < 0.1 * (case % 4)] = 0  # weights already zero stay zero at every count
    w[: n // 5] *= 1e-3  # a block of small weights: long runs of pruned values, so wide indices and fillers
    order = torch.randperm(n, generator=g) if case % 2 else torch.argsort(w.abs(), stable=True)
    table = size_table(w, order, n)
    assert table.shape == (n + 1,)
    for k in range(n + 1):
        masked = w.clone()
        masked[order[:k]] = 0
        assert table[k] == encoding(masked).total_bits, (n, k)  # encoding: checked against the reference above


def test_dense_baseline_and_ninety_percent_is_much_smaller(tmp_path):
    model = TinyLM("lstm", hidden=64, layers=2).eval()
    torch.save(model.state_dict(), tmp_path / "dense.pt")
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in pruned.named_parameters():
            if "weight" in n:
                p.view(-1)[p.abs().view(-1).argsort()[: int(0.9 * p.numel())]] = 0
    export(pruned, tmp_path / "p.prnn")
    assert dense_bits(model) == 32 * sum(p.numel() for p in model.parameters())
    assert (tmp_path / "p.prnn").stat().st_size < 0.25 * (tmp_path / "dense.pt").stat().st_size


def test_tied_weights_are_stored_once(tmp_path):
    model = TinyLM("gru", hidden=6, layers=1).eval()
    model.head = nn.Linear(6, VOCAB)
    model.emb = nn.Embedding(VOCAB, 6)
    model.rnn = nn.GRU(6, 6, batch_first=True)
    model.head.weight = model.emb.weight
    export(model, tmp_path / "t.prnn")
    loaded = load(tmp_path / "t.prnn", classes=[TinyLM])
    assert loaded.head.weight is loaded.emb.weight
    x = torch.randint(0, VOCAB, (2, 5))
    torch.testing.assert_close(loaded(x), model(x))


def _good_file(tmp_path):
    path = tmp_path / "g.prnn"
    export(TinyLM("gru", hidden=4, layers=1), path)
    return path


def test_corrupt_body_is_detected(tmp_path):
    path = _good_file(tmp_path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="checksum"):
        load(path)


def test_truncated_foreign_and_other_version_files(tmp_path):
    path = _good_file(tmp_path)
    data = path.read_bytes()
    for cut, words in ((30, "truncated"), (len(data) - 3, "corrupt")):
        (tmp_path / "short.prnn").write_bytes(data[:cut])
        with pytest.raises(ExportError, match=words):
            load(tmp_path / "short.prnn")
    torch.save({"a": torch.ones(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ExportError, match="not a prune-rnn-gym export"):
        load(tmp_path / "foreign.pt")
    safetensors.torch.save_file({"a": torch.ones(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(ExportError, match="without its metadata"):
        load(tmp_path / "plain.safetensors")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ValueError, match="not a prune-rnn-gym export"):
        load(tmp_path / "empty")
    _rewrite(path, lambda h: h["__metadata__"].update(version="99"))
    with pytest.raises(ExportError, match="version 99 is newer"):
        load(path)
    (tmp_path / "bad.prnn").write_bytes(data[:8] + b"{" * (len(data) - 8))
    with pytest.raises(ExportError, match="unreadable header"):
        load(tmp_path / "bad.prnn")
    with pytest.raises(ValueError, match="not a file"):
        load(tmp_path / "missing.prnn")


def test_any_safetensors_reader_sees_the_raw_tensors_and_the_streams(tmp_path):
    model = TinyLM("gru", hidden=8, layers=1).eval()
    with torch.no_grad():
        model.rnn.weight_hh_l0[:, 2:] = 0
    export(model, tmp_path / "m.prnn", bits=8)
    plain = safetensors.torch.load_file(tmp_path / "m.prnn")
    assert torch.equal(plain["rnn.bias_ih_l0"], model.rnn.bias_ih_l0)  # raw: own name, dtype and shape
    assert plain["rnn.weight_hh_l0:index"].dtype == torch.uint8  # encoded: ordinary streams
    assert plain["rnn.weight_hh_l0:table"].shape == (24,)  # one float32 scale per output row
    assert "rnn.weight_hh_l0" not in plain


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = _good_file(tmp_path)
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        export(TinyLM("lstm", hidden=4, layers=1), path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["g.prnn"]


@pytest.mark.parametrize("kwargs, words", [({"bits": 1}, "bits"), ({"bits": {"nope": 8}}, "unknown"),
                                           ({"method": "zip"}, "method")])
def test_bad_export_arguments(tmp_path, kwargs, words):
    with pytest.raises(ValueError, match=words):
        export(TinyLM(), tmp_path / "x.prnn", **kwargs)
    with pytest.raises(ValueError, match="model"):
        export("not a model", tmp_path / "x.prnn")
    with pytest.raises(ValueError, match="directory"):
        export(TinyLM(), tmp_path)


def test_prune_compatible_masks_hold_zeros_in_a_user_training_loop():
    task, env = _env_model("unstructured", "lstm")
    model = env.pruned_model()
    m = masks(model)
    assert set(m) == set(env.layer_names)
    apply_masks(model, m)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(3):
        loss = task.loss(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    named = dict(model.named_parameters())
    for name, mask in m.items():
        mname, _, pname = name.rpartition(".")
        weight = getattr(model.get_submodule(mname), pname)
        assert torch.all(weight[mask == 0] == 0)
        assert name.replace(pname, pname + "_orig") in named
    assert np.isfinite(loss.item())


class _Everything(nn.Module):
    """Attributes of every storable kind, a module used twice, a tensor attribute and a non-persistent buffer."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 6, padding_idx=0)
        self.norm = nn.LayerNorm((6,))
        self.lstm = nn.LSTM(6, 8, 2, batch_first=True, dropout=0.1, proj_size=4)
        self.rnn = nn.RNN(4, 5, nonlinearity="relu", batch_first=True, bias=False)
        self.shared = nn.Linear(5, 5)
        self.blocks = nn.ModuleList([self.shared, self.shared, nn.Dropout(0.2)])
        self.head = nn.Linear(5, VOCAB)
        self.scale = torch.tensor(0.5)  # a plain tensor attribute: not in the state dict
        self.register_buffer("offset", torch.full((VOCAB,), 0.25), persistent=False)
        self.nan, self.act, self.shape, self.dtype_ = float("nan"), nn.functional.gelu, (1, 2), torch.float32
        self.cfg = {"a": [1, 2], "b": None, 3: {"x"}, "s": slice(1, None)}

    def forward(self, x):
        h, _ = self.lstm(self.norm(self.emb(x)))
        h, _ = self.rnn(h)
        for block in self.blocks:
            h = block(h)
        return self.head(self.act(h)) * self.scale + self.offset


def test_module_description_round_trips_attributes_shared_modules_and_unsaved_tensors(tmp_path):
    torch.manual_seed(0)
    model = _Everything().eval()
    export(model, tmp_path / "e.prnn")
    loaded = load(tmp_path / "e.prnn", classes=[_Everything])
    x = torch.randint(0, VOCAB, (2, 5))
    torch.testing.assert_close(loaded(x), model(x))
    assert type(loaded) is _Everything and loaded.blocks[0] is loaded.blocks[1] is loaded.shared
    assert loaded.act is nn.functional.gelu and loaded.dtype_ is torch.float32 and loaded.shape == (1, 2)
    assert loaded.cfg == model.cfg and loaded.nan != loaded.nan and "offset" not in loaded.state_dict()
    assert list(loaded.state_dict()) == list(model.state_dict())
    handle = model.head.register_forward_hook(lambda *args: None)
    with pytest.warns(UserWarning, match=r"hooks of \['head'\] are not stored"):
        export(model, tmp_path / "h.prnn")
    handle.remove()
    model.tokenizer = object()
    with pytest.raises(ValueError, match="cannot export `tokenizer`"):
        export(model, tmp_path / "t.prnn")


class _Attention(nn.Module):
    """LSTM -> multi-head self-attention -> mean pooling -> head: a user model holding ``nn.MultiheadAttention``
    (whose ``out_proj`` is a ``NonDynamicallyQuantizableLinear``)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h, _ = self.lstm(self.emb(x))
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.head(a.mean(1))


def test_a_user_model_with_attention_loads_naming_only_its_own_class(tmp_path):
    torch.manual_seed(0)
    model = _Attention().eval()
    with torch.no_grad():
        model.attn.in_proj_weight[::2] = 0
    export(model, tmp_path / "a.prnn", bits=8)
    with pytest.raises(ExportError, match=r"classes=\[_Attention\]") as err:
        load(tmp_path / "a.prnn")
    assert "NonDynamicallyQuantizableLinear" not in str(err.value)  # a torch.nn class: rebuilt without asking
    loaded = load(tmp_path / "a.prnn", classes=[_Attention])
    assert type(loaded.attn.out_proj).__name__ == "NonDynamicallyQuantizableLinear"
    x = torch.randint(0, VOCAB, (3, 7))
    torch.testing.assert_close(loaded(x), _quantized(model, 8, "linear")(x))


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return torch.tanh(self.lin(x))


class _Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([_Block(), _Block()])

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def test_the_error_names_every_class_still_needed(tmp_path):
    export(_Outer(), tmp_path / "o.prnn")
    with pytest.raises(ExportError, match=r"_Outer'.*_Block'.*classes=\[_Outer, _Block\]"):
        load(tmp_path / "o.prnn")
    with pytest.raises(ExportError, match=r"class '[^']*_Block',.*classes=\[_Block\]"):
        load(tmp_path / "o.prnn", classes=[_Outer])
    x = torch.randn(2, 4)
    model = _Outer()
    export(model, tmp_path / "o.prnn")
    torch.testing.assert_close(load(tmp_path / "o.prnn", classes=[_Outer, _Block])(x), model(x))


@pytest.mark.parametrize("make", [
    lambda: nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True),
    lambda: nn.Sequential(nn.Conv1d(8, 8, 3, padding=1), nn.BatchNorm1d(8), nn.GELU(), nn.Linear(5, 5)),
    lambda: nn.Sequential(nn.LayerNorm(8), nn.Dropout(0.1), nn.PReLU(), nn.Identity(), nn.Linear(8, 8)),
    lambda: nn.Sequential(nn.GRUCell(8, 8), nn.Linear(8, 8)),
    lambda: nn.LSTM(8, 6, 2, bidirectional=True, proj_size=3, batch_first=True),
], ids=["transformer", "conv", "norms", "cell", "lstm-proj"])
def test_torch_nn_classes_rebuild_without_being_named(tmp_path, make):
    torch.manual_seed(0)
    model = make().eval()
    export(model, tmp_path / "m.prnn")
    loaded = load(tmp_path / "m.prnn")
    assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
    first = next(iter(model.children()), model)
    x = torch.randn(2, 8) if isinstance(first, nn.GRUCell) else torch.randn(2, 8, 5) if isinstance(
        first, nn.Conv1d) else torch.randn(2, 5, 8)
    torch.testing.assert_close(loaded(x), model(x))


class _Hparams:
    """A non-tensor attribute object no description can hold (like Lightning's ``_hparams`` or a flair
    ``Dictionary``)."""

    def __init__(self, vocab):
        self.vocab = list(vocab)


class _LibraryModel(TinyLM):
    def __init__(self):
        super().__init__("lstm", hidden=8, layers=1)
        self.hparams = _Hparams("abc")


def test_weights_only_export_for_a_model_no_description_can_hold(tmp_path):
    torch.manual_seed(0)
    model = _LibraryModel().eval()
    with torch.no_grad():
        model.rnn.weight_hh_l0[:, ::2] = 0
    ok, why = can_export(model)
    assert not ok and "`hparams`" in why and "weights_only=True" in why
    with pytest.raises(ValueError, match="cannot export `hparams`.*weights_only=True"):
        export(model, tmp_path / "m.prnn")
    assert can_export(model, weights_only=True) == (True, "") and can_export(TinyLM()) == (True, "")
    size = export(model, tmp_path / "w.prnn", bits=8, weights_only=True)
    with pytest.raises(ExportError, match=r"weights-only.*load\(path, model=_LibraryModel\(\.\.\.\)\)"):
        load(tmp_path / "w.prnn", classes=[_LibraryModel])
    fresh = _LibraryModel()
    loaded = load(tmp_path / "w.prnn", model=fresh)
    assert loaded is fresh and not loaded.training and loaded.hparams.vocab == ["a", "b", "c"]
    x = torch.randint(0, VOCAB, (2, 5))
    torch.testing.assert_close(loaded(x), _quantized(model, 8, "linear")(x))
    plain = TinyLM("lstm", hidden=8, layers=1)
    plain.load_state_dict(model.state_dict())
    assert size < export(plain, tmp_path / "full.prnn", bits=8)  # the same tensors, compressed the same, no tree



class _AttributeDict(dict):
    """Like Lightning's ``AttributeDict``: a dict whose keys read as attributes."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as e:
            raise AttributeError(key) from e


@pytest.mark.parametrize("value", [_AttributeDict(hidden_size=8), collections.namedtuple("P", "a b")(1, 2)])
def test_container_subclasses_are_refused_not_flattened(tmp_path, value):
    model = TinyLM("lstm", hidden=8, layers=1)
    model.hparams = value
    ok, why = can_export(model)
    assert not ok and "`hparams`" in why and "weights_only=True" in why
    export(model, tmp_path / "w.prnn", weights_only=True)
    fresh = TinyLM("lstm", hidden=8, layers=1)
    fresh.hparams = value
    assert load(tmp_path / "w.prnn", model=fresh).hparams == value
    model.hparams = {"hidden_size": 8}  # a plain dict is described and comes back equal
    export(model, tmp_path / "full.prnn")
    assert load(tmp_path / "full.prnn", classes=[TinyLM]).hparams == {"hidden_size": 8}

def _hidden_unit_model(per_layer: list[float]):
    task = tiny_task("gru", hidden=12, layers=2)
    env = PruneRNNEnv(task, granularity="hidden_unit")
    return task, env.pruned_model(dict(zip(env.layer_names, per_layer)))


def test_a_hidden_unit_pruned_model_exports_declaratively_when_it_can(tmp_path):
    task, shrunk = _hidden_unit_model([0.5, 0.5])
    model = declarative(shrunk, task.model)
    assert type(model) is TinyLM and model.rnn.hidden_size == 6 and model.head.in_features == 6
    x = task.eval_batch[0]
    torch.testing.assert_close(model(x), shrunk(x), atol=0, rtol=0)
    export(model, tmp_path / "d.prnn")
    _, _, description = _header(tmp_path / "d.prnn")
    assert "graph" not in json.dumps(description["module"])
    assert ["hidden_size", 6] in description["module"]["modules"][1][1]["config"]  # the GRU's smaller width
    torch.testing.assert_close(load(tmp_path / "d.prnn", classes=[TinyLM])(x), shrunk(x), atol=0, rtol=0)


def test_layers_of_different_widths_keep_a_checked_graph(tmp_path):
    task, shrunk = _hidden_unit_model([0.25, 0.75])
    assert declarative(shrunk, task.model) is None  # a ModuleDict of single-layer GRUs: not TinyLM's forward
    export(shrunk, tmp_path / "g.prnn")
    loaded = load(tmp_path / "g.prnn")  # torch.nn modules and a closed-set graph: no class to name
    x = task.eval_batch[0]
    torch.testing.assert_close(loaded(x), shrunk(x), atol=0, rtol=0)
    assert [(n.op, n.target) for n in loaded.graph.nodes] == [(n.op, n.target) for n in shrunk.graph.nodes]


def test_an_unexportable_model_fails_at_export_not_at_load(tmp_path):
    model = TinyLM()
    model.tokenizer = object()  # nothing a description can hold: refused when writing, naming the attribute
    with pytest.raises(ValueError, match="cannot export `tokenizer`"):
        export(model, tmp_path / "m.prnn")
    assert not list(tmp_path.iterdir())


def test_a_user_class_loads_by_qualname_and_non_persistent_buffers_survive(tmp_path):
    torch.manual_seed(0)
    onehot = ZooLM(VOCAB, 0, 6, 2, cell="gru", head="lm-mlp").eval()  # `codes`: a non-persistent buffer
    export(onehot, tmp_path / "z.prnn")
    x = torch.randint(0, VOCAB, (2, 5))
    torch.testing.assert_close(load(tmp_path / "z.prnn")(x), onehot(x))
    model = TinyLM("rnn", hidden=5, layers=2).eval()
    export(model, tmp_path / "t.prnn")

    def as_main(header):  # as if exported from a script
        meta = header["__metadata__"]
        description = json.loads(meta["description"])
        description["module"]["class"] = "__main__.TinyLM"
        meta["description"] = json.dumps(description)

    _rewrite(tmp_path / "t.prnn", as_main)
    with pytest.raises(ExportError, match="'__main__.TinyLM'"):
        load(tmp_path / "t.prnn")
    torch.testing.assert_close(load(tmp_path / "t.prnn", classes=[TinyLM])(x), model(x))
    torch.testing.assert_close(load(tmp_path / "t.prnn", classes={"__main__.TinyLM": TinyLM})(x), model(x))
    with pytest.raises(ValueError, match="not both"):
        load(tmp_path / "t.prnn", classes=[TinyLM], model=TinyLM("rnn", hidden=5, layers=2))


@pytest.mark.parametrize("bits", range(1, 17))
def test_bit_packing_round_trips_at_every_width(bits):
    from prune_env.compression.export.encoding import pack_bits, unpack_bits

    values = np.random.default_rng(bits).integers(0, 2 ** bits, 1001)
    packed = pack_bits(values, bits)
    assert len(packed) == -(-1001 * bits // 8)
    assert np.array_equal(unpack_bits(packed, bits, 1001), values)
    assert unpack_bits(b"", bits, 0).shape == (0,)


class _LastState(nn.Module):
    """A head on the last layer's final state ``h_n[-1]``: a stack split by hidden-unit pruning stays a graph."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 6)
        self.rnn = nn.LSTM(6, 10, 2, batch_first=True)
        self.head = nn.Linear(10, VOCAB)

    def forward(self, x):
        _, (h, _) = self.rnn(self.emb(x))
        return self.head(h[-1])


@pytest.mark.parametrize("make, declarative_form", [
    (lambda: TinyLM("lstm", hidden=10, layers=2, bidirectional=True), True),
    (lambda: ZooSequenceNet(6, 10, 2, 3, cell="gru", vocab_size=VOCAB, head="last"), True),
    (_LastState, False),
], ids=["bidirectional-lstm", "zoo-sequence-net", "final-state-head"])
def test_hidden_unit_pruned_models_round_trip_in_either_form(tmp_path, make, declarative_form):
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randint(0, VOCAB, (4, 7))
    with torch.no_grad():
        y = model(x).argmax(-1)  # per step or per sequence, as the model predicts
    env = PruneRNNEnv(RNNTask(model, eval_batch=(x, y), metric="accuracy"), granularity="hidden_unit")
    shrunk = env.pruned_model(dict.fromkeys(env.layer_names, 0.5))
    form = declarative(shrunk, model)
    assert (form is not None) == declarative_form
    export(shrunk if form is None else form, tmp_path / "m.prnn")
    loaded = load(tmp_path / "m.prnn", classes=[type(model)])
    assert type(loaded) is (type(model) if declarative_form else type(loaded)) and (
        declarative_form or isinstance(loaded, torch.fx.GraphModule))
    torch.testing.assert_close(loaded(x), shrunk(x), atol=0, rtol=0)
