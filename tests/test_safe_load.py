"""Hostile files (issue 13): nothing the project loads may run code from the file, and no writer may leave a
half-written file.

The stand-in for arbitrary code is a pickle whose unpickling calls ``open(marker, "w")``: it creates the file
``marker``. Each case first shows the payload is live (a naive load does create the marker), then that the project's
loader refuses it (or, for the model cache, warns and retrains) and the marker never appears.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import os
import pickle
import struct
import warnings
import zipfile
import zlib
from contextlib import suppress
from pathlib import Path

import pytest
import torch
from tiny import VOCAB, TinyLM, tiny_task
from torch import nn

from prune_env import PruneRNNEnv
from prune_env.compression.export import ExportError, allowed_functions, export, load, tensor_methods
from prune_env.tasks import make_task
from prune_env.tasks.models import ZooLM


class _Payload:
    """Unpickling this creates ``marker`` (``open(marker, "w")``): arbitrary code, harmlessly."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _evil_files(tmp_path: Path, marker: Path) -> list[Path]:
    """The payload as a raw pickle and as a ``torch.save`` zip (what a ``.pt`` file is)."""
    raw, zipped = tmp_path / "evil.pkl", tmp_path / "evil.pt"
    raw.write_bytes(pickle.dumps(_Payload(marker)))
    torch.save(_Payload(marker), zipped)
    return [raw, zipped]


def _assert_live(marker: Path, naive_load) -> None:
    """The payload does run under a naive load (so the tests below can fail); clean up after it."""
    assert not marker.exists()
    with suppress(Exception):
        naive_load()
    assert marker.exists(), "the payload did not run under a naive load: the test would prove nothing"
    marker.unlink()


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "pwned"


def test_the_payload_is_live(tmp_path, marker):
    raw, zipped = _evil_files(tmp_path, marker)
    _assert_live(marker, lambda: pickle.loads(raw.read_bytes()))
    _assert_live(marker, lambda: torch.load(zipped, weights_only=False))


def test_no_allowlisted_function_can_run_code_or_touch_files():
    names = allowed_functions()
    for bad in ("builtins.eval", "builtins.exec", "builtins.open", "builtins.__import__", "builtins.compile",
                "builtins.setattr", "torch.load", "torch.save", "torch.from_file", "torch.compile",
                "operator.methodcaller", "operator.attrgetter", "operator.call", "os.system"):
        assert bad not in names, bad
    assert {"operator.getitem", "torch.tanh", "torch.flatten", "torch.nn.functional.relu"} <= set(names)
    assert {"register_hook", "apply_", "map_"}.isdisjoint(tensor_methods())
    assert {"mean", "view", "contiguous", "float", "unsqueeze"} <= tensor_methods()


# ------------------------------------------------------------------------------------------ (a) model cache
def test_a_crafted_cache_entry_is_refused_and_retrained(tmp_path, monkeypatch, marker):
    monkeypatch.setenv("PRUNE_RNN_CACHE", str(tmp_path / "cache"))
    tiny = {"hidden": 4, "layers": 1, "epochs": 1}
    first = make_task("digits", progress=False, **tiny)
    assert not first.metadata["from_cache"]
    (entry,) = (tmp_path / "cache").glob("digits-*.pt")
    good = torch.load(entry, weights_only=True)["state_dict"]
    for evil in _evil_files(tmp_path, marker):
        _assert_live(marker, lambda evil=evil: torch.load(evil, weights_only=False))
        entry.write_bytes(evil.read_bytes())  # a crafted file in place of the cached preset
        with pytest.warns(RuntimeWarning, match="(?s)unreadable.*retraining"):
            task = make_task("digits", progress=False, **tiny)
        assert not marker.exists()
        assert not task.metadata["from_cache"]
        retrained = torch.load(entry, weights_only=True)["state_dict"]  # the entry is a good one again
        assert all(torch.equal(good[k], retrained[k]) for k in good)  # same seed, same weights
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_task("digits", progress=False, **tiny).metadata["from_cache"]


# ------------------------------------------------------------------------------------------ (b) policies
def test_crafted_policy_files_are_refused(tmp_path, marker):
    from agents.policies import layerwise
    from agents.searchers import reinforce
    for evil in _evil_files(tmp_path, marker):
        with pytest.raises(ValueError, match="not a readable layer-wise policy"):
            layerwise.load(evil)
        assert not marker.exists()
        with pytest.raises((pickle.UnpicklingError, ValueError), match="Weights only load failed|policy"):
            reinforce.load(str(evil))
        assert not marker.exists()
    # and the policy agent, given a path, goes through layerwise.load
    import agents

    env = PruneRNNEnv(tiny_task("gru"), target_sparsity=0.5)
    with pytest.raises(ValueError, match="layer-wise policy"):
        agents.search("policy", env, 2, policy=str(evil))
    assert not marker.exists()


def test_a_crafted_ppo_zip_is_refused(tmp_path, marker):
    pytest.importorskip("stable_baselines3")
    from agents.searchers import ppo
    blob = base64.b64encode(pickle.dumps(_Payload(marker))).decode()
    path = tmp_path / "policy.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data", json.dumps({"policy_class": {":serialized:": blob},
                                       "policy_kwargs": {":type:": "dict", ":serialized:": blob}}))
        weights = io.BytesIO()
        torch.save({}, weights)
        z.writestr("policy.pth", weights.getvalue())
    env = PruneRNNEnv(tiny_task("gru"), target_sparsity=0.5)
    with pytest.raises(ValueError, match="pickled objects"):
        ppo.load(str(path), "PPO", env)
    # the pickle can sit in any entry of `data`, and a crafted policy.pth too
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data", json.dumps({"policy_kwargs": {}, "observation_space": {":serialized:": blob}}))
        z.writestr("policy.pth", pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match="not a readable"):
        ppo.load(str(path), "PPO", env)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ (c) exports
def _v1_file(path: Path, skeleton: bytes, model: nn.Module) -> None:
    """A file in the version-1 layout: the pickled skeleton as the first body stream, every tensor raw."""
    chunks, tensors, offset = [zlib.compress(skeleton)], [], len(zlib.compress(skeleton))
    for name, t in model.state_dict().items():
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        tensors.append({"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                        "layout": "raw", "raw": [offset, len(raw)]})
        chunks.append(raw)
        offset += len(raw)
    body = b"".join(chunks)
    header = {"format": "prune-rnn-gym", "version": 1, "skeleton": [0, len(chunks[0])], "tensors": tensors,
              "body_sha256": hashlib.sha256(body).hexdigest()}
    blob = zlib.compress(json.dumps(header).encode())
    path.write_bytes(struct.pack("<8sIQ", b"PRNNGYM\0", 1, len(blob)) + blob + body)


def _meta_skeleton(model: nn.Module) -> bytes:
    """What version 1 pickled: the model with data-free meta tensors."""
    buf = io.BytesIO()
    torch.save(copy.deepcopy(model).to("meta"), buf)
    return buf.getvalue()


def test_version_1_files_are_refused_unless_trusted(tmp_path, marker):
    torch.manual_seed(0)
    model = TinyLM("lstm", hidden=6, layers=1).eval()
    x = torch.randint(0, VOCAB, (2, 5))
    benign, evil = tmp_path / "benign.prnn", tmp_path / "evil.prnn"
    _v1_file(benign, _meta_skeleton(model), model)
    payload = io.BytesIO()
    torch.save(_Payload(marker), payload)
    _v1_file(evil, payload.getvalue(), model)
    for path in (benign, evil):
        with pytest.raises(ExportError, match="version-1.*arbitrary code.*trust_pickle=True"):
            load(path)
        assert not marker.exists()
        # its tensors alone read into a model of the same architecture: nothing is unpickled
        filled = load(path, model=TinyLM("lstm", hidden=6, layers=1))
        torch.testing.assert_close(filled(x), model(x))
        assert not marker.exists()
    torch.testing.assert_close(load(benign, trust_pickle=True)(x), model(x))  # the explicit opt-in
    with suppress(Exception):
        load(evil, trust_pickle=True)
    assert marker.exists()  # which really runs the file's code: the refusal above is what protects


def _tamper(path: Path, edit) -> None:
    """Rewrite ``path``'s JSON header with ``edit(header)`` (the checksum covers the body only)."""
    data = path.read_bytes()
    _, version, hlen = struct.unpack_from("<8sIQ", data)
    header = json.loads(zlib.decompress(data[20:20 + hlen]))
    edit(header)
    blob = zlib.compress(json.dumps(header).encode())
    path.write_bytes(struct.pack("<8sIQ", b"PRNNGYM\0", version, len(blob)) + blob + data[20 + hlen:])


class _Trap(nn.Module):
    """A class whose rebuilding runs code (its ``__setstate__`` creates ``marker``), as a malicious one would."""

    def __init__(self, marker: Path):
        super().__init__()
        self.marker = str(marker)
        self.head = nn.Linear(3, 2)

    def __setstate__(self, state):
        super().__setstate__(state)
        open(self.marker, "w").close()

    def forward(self, x):
        return self.head(x)


@pytest.mark.parametrize("cls", ["os.system", "builtins.eval", "subprocess.Popen", "torch.load"])
def test_an_export_naming_a_class_off_the_allowlist_is_refused(tmp_path, marker, cls):
    path = tmp_path / "m.prnn"
    export(ZooLM(VOCAB, 4, 6, 1), path)
    _tamper(path, lambda h: h["module"]["modules"][0][1].update({"class": cls}))
    with pytest.raises(ExportError, match=f"names the class '{cls}'.*classes="):
        load(path)
    assert not marker.exists()


def test_a_class_is_rebuilt_only_when_the_caller_passes_it(tmp_path, marker):
    path = tmp_path / "trap.prnn"
    export(_Trap(marker), path)
    assert not marker.exists()
    with pytest.raises(ExportError, match=r"_Trap'.*load\(path, classes=\[_Trap\]\)"):
        load(path)  # never imported from the name in the file, never rebuilt
    assert not marker.exists()
    x = torch.randn(2, 3)
    trap = _Trap(tmp_path / "unused")
    torch.testing.assert_close(load(path, model=trap)(x), trap(x))  # filled into an instance: nothing rebuilt
    assert not marker.exists()
    load(path, classes=[_Trap])  # trusted explicitly: now its __setstate__ runs, as unpickling would run it
    assert marker.exists()


def _graph_file(tmp_path: Path) -> Path:
    task = tiny_task("gru", hidden=8)
    env = PruneRNNEnv(task, granularity="hidden_unit")
    model = env.pruned_model(dict.fromkeys(env.layer_names, 0.5))
    path = tmp_path / "g.prnn"
    export(model, path)
    loaded = load(path)  # no class to pass: a GraphModule of torch.nn modules
    x = task.eval_batch[0]
    torch.testing.assert_close(loaded(x), model(x))
    assert loaded.code == model.code
    return path


def _node(header: dict, op: str) -> dict:
    return next(n for n in header["module"]["graph"]["nodes"] if n["op"] == op)


def _call(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w')"


GRAPH_ATTACKS = {
    "eval": (lambda h, m: _node(h, "call_function").update(target="builtins.eval", args={"tuple": [_call(m)]}),
             "function 'builtins.eval'"),
    "exec": (lambda h, m: _node(h, "call_function").update(target="builtins.exec", args={"tuple": [_call(m)]}),
             "function 'builtins.exec'"),
    "open": (lambda h, m: _node(h, "call_function").update(target="builtins.open", args={"tuple": [str(m), "w"]}),
             "function 'builtins.open'"),
    "import": (lambda h, m: _node(h, "call_function").update(target="builtins.__import__", args={"tuple": ["os"]}),
               "function 'builtins.__import__'"),
    "torch.load": (lambda h, m: _node(h, "call_function").update(target="torch.load", args={"tuple": [str(m)]}),
                   "function 'torch.load'"),
    "os.system": (lambda h, m: _node(h, "call_function").update(target="os.system", args={"tuple": ["true"]}),
                  "function 'os.system'"),
    "dunder getattr": (lambda h, m: _node(h, "call_function").update(
        target="builtins.getattr", args={"tuple": [{"node": "x"}, "__class__"]}), "non-public"),
    "method injection": (lambda h, m: _node(h, "call_module").update(op="call_method",
                                                                     target=f"mean(); {_call(m)}; x.mean"),
                         "not a public torch.Tensor method"),
    "placeholder injection": (lambda h, m: _node(h, "placeholder").update(target=f"x={_call(m)}"), "not allowed"),
    "kwarg injection": (lambda h, m: _node(h, "call_module").update(kwargs={"dict": [[f"y={_call(m)}", 1]]}),
                        "malformed arguments"),
    "node name injection": (lambda h, m: _node(h, "call_module").update(name=f"a = {_call(m)}"),
                            "malformed graph node name"),
    "get_attr dunder": (lambda h, m: _node(h, "call_module").update(op="get_attr", target="__class__"),
                        "not allowed"),
    "function value": (lambda h, m: _node(h, "call_module").update(args={"tuple": [{"function": "builtins.eval"}]}),
                       "function 'builtins.eval'"),
    "unknown tag": (lambda h, m: _node(h, "call_module").update(args={"tuple": [{"pickle": "gASV"}]}),
                    "unreadable value"),
    "forward reference": (lambda h, m: _node(h, "call_module").update(args={"tuple": [{"node": "output"}]}),
                          "before defining it"),
    "internal attribute": (lambda h, m: h["module"]["attrs"].append(["_forward_hooks", {"dict": []}]),
                           "internal attribute"),
    "dunder attribute": (lambda h, m: h["module"]["attrs"].append(["__class__", "x"]), "malformed"),
    "attribute function": (lambda h, m: h["module"]["modules"][0][1]["attrs"].append(
        ["forward", {"function": "builtins.exec"}]), "function 'builtins.exec'"),
}


@pytest.mark.parametrize("attack", sorted(GRAPH_ATTACKS))
def test_a_crafted_graph_or_description_is_refused(tmp_path, marker, attack):
    path = _graph_file(tmp_path)
    edit, words = GRAPH_ATTACKS[attack]
    _tamper(path, lambda h: edit(h, marker))
    with pytest.raises(ExportError, match=words):
        load(path)
    assert not marker.exists()


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
    _tamper(tmp_path / "t.prnn", lambda h: h["module"].update({"class": "__main__.TinyLM"}))  # as if exported
    with pytest.raises(ExportError, match="'__main__.TinyLM'"):                                # from a script
        load(tmp_path / "t.prnn")
    torch.testing.assert_close(load(tmp_path / "t.prnn", classes=[TinyLM])(x), model(x))
    torch.testing.assert_close(load(tmp_path / "t.prnn", classes={"__main__.TinyLM": TinyLM})(x), model(x))


# ------------------------------------------------------------------------------------------ crash before rename
class _Crash(BaseException):
    """A crash between the write and the rename (a BaseException, like KeyboardInterrupt or SystemExit)."""


def _writers():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from agents.core import results
    from agents.policies import layerwise
    from agents.searchers import reinforce
    from prune_env.tasks.cache import atomic_save

    return {
        "export": lambda p: export(nn.Linear(3, 2), p),
        "cache.atomic_save": lambda p: atomic_save({"state_dict": nn.Linear(3, 2).state_dict(), "info": {}}, p),
        "layerwise.save": lambda p: layerwise.save(layerwise.LayerwisePolicy(hidden=4), p),
        "reinforce.save": lambda p: reinforce.save(reinforce.GaussianPolicy(3, 2, 4, 0.0, 1.0), str(p)),
        "results.write_text": lambda p: results.write_text(p, "new text\n"),
        "results.write_json": lambda p: results.write_json(p, {"new": [1.0, float("nan")]}),
        "results.save_figure": lambda p: results.save_figure(Figure(figsize=(1, 1)), p),
    }


WRITERS = ["export", "cache.atomic_save", "layerwise.save", "reinforce.save", "results.write_text",
           "results.write_json", "results.save_figure"]
#: Writers that leave their temp file behind when the rename fails (agents/reinforce.py,
#: outside this change): their destination is still never half-written.
LEAKS_TEMP: set[str] = set()


def _crash_on_replace(monkeypatch, tmp_path, name: str, existing: bool):
    dest = tmp_path / "out" / "dest.bin"
    dest.parent.mkdir()
    if existing:
        dest.write_bytes(b"old contents")
    before = sorted(os.listdir(dest.parent))

    def crash(src, dst):
        raise _Crash(f"killed between writing {src} and renaming it to {dst}")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(_Crash):
        _writers()[name](dest)
    monkeypatch.undo()
    return dest, before


@pytest.mark.parametrize("existing", [True, False])
@pytest.mark.parametrize("name", WRITERS)
def test_a_crash_before_the_rename_never_leaves_a_half_written_destination(tmp_path, monkeypatch, name, existing):
    dest, _ = _crash_on_replace(monkeypatch, tmp_path, name, existing)
    if existing:
        assert dest.read_bytes() == b"old contents"
    else:
        assert not dest.exists()
    _writers()[name](dest)  # and without the crash the writer does write
    assert dest.exists() and dest.read_bytes() != b"old contents"


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(
    strict=True, reason=f"{n} writes `<path>.tmp` and does not remove it when the rename fails")) if n in LEAKS_TEMP
    else n for n in WRITERS])
def test_a_crash_before_the_rename_leaves_no_temp_file(tmp_path, monkeypatch, name):
    dest, before = _crash_on_replace(monkeypatch, tmp_path, name, existing=True)
    assert sorted(os.listdir(dest.parent)) == before
