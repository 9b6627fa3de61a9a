"""Crafted export files: every known way to make :func:`prune_env.load` run code fails with a clear error.

The stand-in for arbitrary code is a marker file: an attack succeeds if the marker appears. Where it can be shown,
each payload is first proven live (the same steps, run without the loader's checks, do create the marker), so that
these tests can fail; then the crafted file is loaded (and, where it loads, called) and the marker never appears.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import io
import json
import operator
import pickle
import struct
import zlib
from contextlib import suppress
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.fx as fx
from torch import nn

from prune_env.compression.export import METHODS, ExportError, export, functions, load

VOCAB = 12


class Net(nn.Module):
    """Embedding -> GRU -> Linear: the shape of the models the project exports."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 6)
        self.rnn = nn.GRU(6, 8, batch_first=True)
        self.head = nn.Linear(8, VOCAB)

    def forward(self, x):
        out, _ = self.rnn(self.emb(x))
        return self.head(out)


X = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(0))


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "pwned"


def _header(path: Path) -> tuple[dict, dict, bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack_from("<Q", data)
    header = json.loads(data[8:8 + n])
    return header, json.loads(header["__metadata__"]["description"]), data[8 + n:]


def edit(path: Path, fn) -> None:
    """Rewrite the description of ``path`` with ``fn(description)``; the tensors (and so the checksum) stay valid."""
    header, description, body = _header(path)
    fn(description)
    header["__metadata__"]["description"] = json.dumps(description)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + body)


def graph_file(tmp_path: Path) -> Path:
    """A stored graph (a traced ``Net``: a GraphModule of torch.nn modules), loadable as it is."""
    path = tmp_path / "g.prnn"
    model = fx.symbolic_trace(Net().eval())
    export(model, path)
    torch.testing.assert_close(load(path)(X), model(X))
    return path


def nodes(d: dict) -> list[dict]:
    return d["module"]["graph"]


def node(d: dict, op: str) -> dict:
    return next(n for n in nodes(d) if n["op"] == op)


def tup(*items) -> dict:
    return {"tuple": list(items)}


def ref(name: str) -> dict:
    return {"node": name}


def splice(d: dict, new: list[dict]) -> None:
    """Insert ``new`` nodes before the output, and make the output depend on the last one (so it must run)."""
    graph = nodes(d)
    out = graph.pop()
    graph.extend(new)
    out["args"] = tup(tup(out["args"]["tuple"][0], ref(new[-1]["name"])))
    graph.append(out)


def n(name: str, op: str, target: str, *args, **kwargs) -> dict:
    return {"op": op, "name": name, "target": target, "args": tup(*args), "kwargs": {"dict": [[k, v] for k, v in
                                                                                            kwargs.items()]}}


# The old allowlist's escape: a tensor's numpy array, its `tofile` reached with getattr, called through max(key=).
def tofile_via_max(m: Path, fn: str = "builtins.max") -> list[dict]:
    return [n("w", "get_attr", "head.bias"), n("d", "call_method", "detach", ref("w")),
            n("a", "call_method", "numpy", ref("d")),
            n("f", "call_function", "builtins.getattr", ref("a"), "tofile"),
            n("r", "call_function", fn, [str(m)], key=ref("f"))]


ATTACKS = {
    "getattr + max(key=)": (tofile_via_max, "not in the closed set"),
    "getattr + min(key=)": (lambda m: tofile_via_max(m, "builtins.min"), "not in the closed set"),
    "getattr + sorted(key=)": (lambda m: tofile_via_max(m, "builtins.sorted"), "not in the closed set"),
    "numpy() method": (lambda m: tofile_via_max(m)[:3], "call_method 'numpy' is not allowed"),
    "builtins.getattr": (lambda m: [n("f", "call_function", "builtins.getattr", ref("x"), "tofile")],
                         "function 'builtins.getattr'"),
    "max(key=)": (lambda m: [n("r", "call_function", "builtins.max", [str(m)], key=ref("x"))],
                  "function 'builtins.max'"),
    "min(key=)": (lambda m: [n("r", "call_function", "builtins.min", [str(m)], key=ref("x"))],
                  "function 'builtins.min'"),
    "getattr of a public name": (lambda m: [n("f", "call_function", "getattr", ref("x"), "tofile")],
                                 "attribute .*'tofile'.* not in the closed set"),
    "getattr of a dunder": (lambda m: [n("f", "call_function", "getattr", ref("x"), "__class__")],
                            "not in the closed set"),
    "Tensor.apply_": (lambda m: [n("w", "get_attr", "head.bias"),
                                 n("r", "call_method", "apply_", ref("w"), ref("w"))],
                      "call_method 'apply_' is not allowed"),
    "Tensor.map_": (lambda m: [n("w", "get_attr", "head.bias"),
                               n("r", "call_method", "map_", ref("w"), ref("w"), ref("w"))],
                    "call_method 'map_' is not allowed"),
    "Tensor.register_hook": (lambda m: [n("w", "get_attr", "head.weight"),
                                        n("r", "call_method", "register_hook", ref("w"), ref("w"))],
                             "call_method 'register_hook' is not allowed"),
    "Tensor.apply_ as a function": (lambda m: [n("r", "call_function", "torch.Tensor.apply_", ref("x"), ref("x"))],
                                    "function 'torch.Tensor.apply_'"),
    "tofile as a method": (lambda m: [n("r", "call_method", "tofile", ref("x"), str(m))],
                           "call_method 'tofile' is not allowed"),
    "a function as an argument": (lambda m: [n("r", "call_function", "torch.cat", tup(ref("x")),
                                               dim={"function": "torch.tanh"})], "unreadable value"),
    "operator.methodcaller": (lambda m: [n("r", "call_function", "operator.methodcaller", "tofile", str(m))],
                              "function 'operator.methodcaller'"),
    "operator.attrgetter": (lambda m: [n("r", "call_function", "operator.attrgetter", "tofile")],
                            "function 'operator.attrgetter'"),
    "eval": (lambda m: [n("r", "call_function", "builtins.eval", f"open({str(m)!r}, 'w')")],
             "function 'builtins.eval'"),
    "exec": (lambda m: [n("r", "call_function", "builtins.exec", f"open({str(m)!r}, 'w')")],
             "function 'builtins.exec'"),
    "open": (lambda m: [n("r", "call_function", "builtins.open", str(m), "w")], "function 'builtins.open'"),
    "import": (lambda m: [n("r", "call_function", "builtins.__import__", "os")], "function 'builtins.__import__'"),
    "torch.load": (lambda m: [n("r", "call_function", "torch.load", str(m))], "function 'torch.load'"),
    "torch.save": (lambda m: [n("r", "call_function", "torch.save", ref("x"), str(m))], "function 'torch.save'"),
    "torch.from_file": (lambda m: [n("r", "call_function", "torch.from_file", str(m), True, 8)],
                        "function 'torch.from_file'"),
    "numpy.save": (lambda m: [n("r", "call_function", "numpy.save", str(m), ref("x"))], "function 'numpy.save'"),
    "get_attr of a submodule": (lambda m: [n("r", "get_attr", "rnn")], "names no parameter, buffer or tensor"),
    "get_attr of a plain attribute": (lambda m: [n("r", "get_attr", "training")], "names no parameter"),
    "get_attr of a dunder": (lambda m: [n("r", "get_attr", "__class__")], "names no parameter"),
    "call_module of the root": (lambda m: [n("r", "call_module", "", ref("x"))], "names no torch.nn submodule"),
    "call_module of a path through a tensor": (lambda m: [n("r", "call_module", "head.weight", ref("x"))],
                                               "names no torch.nn submodule"),
    "method name injection": (lambda m: [n("r", "call_method", f"mean(); open({str(m)!r}, 'w'); x.mean", ref("x"))],
                              "is not allowed"),
    "placeholder injection": (lambda m: [n("r", "placeholder", f"y=open({str(m)!r}, 'w')")], "is not allowed"),
    "kwarg injection": (lambda m: [n("r", "call_function", "torch.flatten", ref("x"),
                                     **{f"y=open({str(m)!r}, 'w')": 1})], "malformed arguments"),
    "keyword kwarg": (lambda m: [n("r", "call_function", "torch.flatten", ref("x"), **{"lambda": 1})],
                      "malformed arguments"),
    "forward reference": (lambda m: [n("r", "call_function", "torch.flatten", ref("later"))], "before defining it"),
    "unknown value tag": (lambda m: [n("r", "call_function", "torch.flatten", {"pickle": "gASV"})],
                          "unreadable value"),
    "unknown op": (lambda m: [n("r", "call_python", "print", str(m))], "is not one of"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_crafted_graph_is_refused(tmp_path, marker, attack):
    path = graph_file(tmp_path)
    build, words = ATTACKS[attack]
    edit(path, lambda d: splice(d, build(marker)))
    with pytest.raises(ExportError, match=words):
        load(path)
    assert not marker.exists()


def _naive(graph_json: list[dict], root: nn.Module) -> fx.GraphModule:
    """The stored graph built without any check, the way an open-ended interpreter would run it."""
    import builtins

    spaces = {"builtins": builtins, "operator": operator, "torch": torch}

    def target(op, t):
        if op != "call_function":
            return t
        mod, _, name = t.rpartition(".")
        return getattr(spaces[mod], name)

    def value(v, made):
        if isinstance(v, dict) and "node" in v:
            return made[v["node"]]
        if isinstance(v, dict) and "tuple" in v:
            return tuple(value(x, made) for x in v["tuple"])
        if isinstance(v, dict) and "dict" in v:
            return {k: value(x, made) for k, x in v["dict"]}
        if isinstance(v, list):
            return [value(x, made) for x in v]
        return v

    graph, made = fx.Graph(), {}
    for nd in graph_json:
        made[nd["name"]] = graph.create_node(nd["op"], target(nd["op"], nd["target"]), value(nd["args"], made),
                                             value(nd["kwargs"], made))
    return fx.GraphModule(root, graph)


@pytest.mark.parametrize("fn", ["builtins.max", "builtins.min", "builtins.sorted"])
def test_the_getattr_key_escape_is_live_without_the_checks_and_refused_with_them(tmp_path, marker, fn):
    path = graph_file(tmp_path)
    edit(path, lambda d: splice(d, tofile_via_max(marker, fn)))
    _, description, _ = _header(path)
    gm = _naive(nodes(description), Net())
    with suppress(Exception):
        gm(X)
    assert marker.exists(), "the payload did not run unchecked: the test would prove nothing"
    marker.unlink()
    with pytest.raises(ExportError, match="not in the closed set"):
        load(path)
    assert not marker.exists()


def test_inert_strings_stay_strings(tmp_path, marker):
    """Code in a string constant is data: the graph loads, and calling it runs no part of the string."""
    path = graph_file(tmp_path)
    code = f"__import__('os').system('touch {marker}')"
    edit(path, lambda d: splice(d, [n("r", "call_method", "to", ref("x"), code)]))
    model = load(path)
    with suppress(Exception):
        model(X)
    assert not marker.exists()


def test_the_closed_set_holds_no_function_that_runs_code_or_touches_files():
    names = functions()
    for bad in ("builtins.getattr", "builtins.min", "builtins.max", "builtins.sorted", "builtins.eval",
                "builtins.exec", "builtins.open", "builtins.__import__", "builtins.setattr", "torch.load",
                "torch.save", "torch.from_file", "torch.compile", "operator.methodcaller", "operator.attrgetter",
                "operator.itemgetter", "operator.call", "torch.Tensor.apply_", "torch.Tensor.map_"):
        assert bad not in names, bad
    assert {"register_hook", "apply_", "map_", "map2_", "numpy", "tofile", "tolist", "storage", "untyped_storage",
            "backward", "share_memory_", "__reduce_ex__"}.isdisjoint(METHODS)
    for fn in names.values():  # nothing in the set takes a callable argument
        with suppress(ValueError, TypeError):  # builtins without a Python signature
            assert not {"key", "fn", "func", "callback", "hook"} & set(inspect.signature(fn).parameters), fn


# ------------------------------------------------------------------------------------------ module descriptions
class Trap(nn.Module):
    """A class whose construction or ``__setstate__`` would create the marker: loading must run neither."""

    marker = ""

    def __init__(self):
        super().__init__()
        open(Trap.marker, "w").close()

    def __setstate__(self, state):
        open(Trap.marker, "w").close()

    def forward(self, x):
        return x


def test_a_trusted_class_is_rebuilt_without_running_its_code(tmp_path, marker):
    Trap.marker = str(tmp_path / "built")
    model = Trap()
    (tmp_path / "built").unlink()
    Trap.marker = str(marker)
    model.head = nn.Linear(3, 2)
    path = tmp_path / "t.prnn"
    export(model, path)
    with pytest.raises(ExportError, match=r"Trap'.*classes=\[Trap\]"):
        load(path)  # never imported from the name in the file
    loaded = load(path, classes=[Trap])  # trusted: but neither __init__ nor __setstate__ runs
    assert type(loaded) is Trap and not marker.exists()


@pytest.mark.parametrize("cls", ["os.system", "builtins.eval", "subprocess.Popen", "torch.load",
                                 "torch.nn.parallel.DistributedDataParallel", "torch.nn.utils.parametrize."
                                 "ParametrizationList", "numpy.lib.npyio.NpzFile", 7, None])
def test_a_class_off_the_allowlist_is_refused(tmp_path, marker, cls):
    path = tmp_path / "m.prnn"
    export(Net(), path)
    edit(path, lambda d: d["module"]["modules"][0][1].update({"class": cls}))
    with pytest.raises(ExportError, match="names the class.*classes="):
        load(path, classes=[Net])
    assert not marker.exists()


DESCRIPTION_ATTACKS = {
    "forward replaced by a closed-set function": (
        lambda d: d["module"]["modules"][2][1]["config"].append(["forward", {"function": "torch.tanh"}]),
        "replace a method"),
    "call implementation replaced": (
        lambda d: d["module"]["config"].append(["_compiled_call_impl", {"function": "torch.tanh"}]),
        "replace a method"),
    "property replaced": (lambda d: d["module"]["modules"][1][1]["config"].append(["all_weights", 1]),
                          "replace a method or property"),
    "a function off the set": (lambda d: d["module"]["config"].append(["act", {"function": "builtins.exec"}]),
                               "function 'builtins.exec'"),
    "hook table": (lambda d: d["module"]["config"].append(["_forward_hooks", {"dict": []}]), "internal attribute"),
    "dunder attribute": (lambda d: d["module"]["config"].append(["__class__", "x"]), "malformed"),
    "recurrent weight names": (lambda d: next(c for c in d["module"]["modules"][1][1]["config"]
                                              if c[0] == "_flat_weights_names").__setitem__(1, ["forward"]),
                               "weight names"),
    "attribute beside a parameter": (lambda d: d["module"]["modules"][2][1]["config"].append(["weight", 1.0]),
                                     "both as an attribute and as a parameter"),
    "an unstored tensor": (lambda d: d["module"]["modules"][2][1]["tensors"].append("extra"), "lacks"),
    "training not a bool": (lambda d: d["module"]["config"].__setitem__(0, ["training", "yes"]), "training"),
    "a torch function named as a dtype": (lambda d: d["module"]["config"].append(["dt", {"dtype": "load"}]),
                                          "unreadable value"),
    "a torch submodule named as a layout": (lambda d: d["module"]["config"].append(["lay", {"torch": "_inductor"}]),
                                            "unreadable value"),
}


@pytest.mark.parametrize("attack", sorted(DESCRIPTION_ATTACKS))
def test_a_crafted_module_description_is_refused(tmp_path, marker, attack):
    path = tmp_path / "m.prnn"
    export(Net(), path)
    fn, words = DESCRIPTION_ATTACKS[attack]
    edit(path, fn)
    with pytest.raises(ExportError, match=words):
        load(path, classes=[Net])
    assert not marker.exists()


def test_a_replaced_model_file_in_a_compress_run_is_refused(tmp_path, marker):
    """What compress's report stage calls (every class of the task's model trusted) still refuses a crafted file."""
    path = graph_file(tmp_path)
    edit(path, lambda d: splice(d, tofile_via_max(marker)))
    with pytest.raises(ExportError, match="not in the closed set"):
        load(path, classes=sorted({type(m) for m in Net().modules()}, key=lambda c: c.__qualname__))
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ old formats
def legacy_file(path: Path, version: int, model: nn.Module, extra: dict, skeleton: bytes | None = None) -> None:
    """A file in the version-1/2 container: every tensor raw, ``extra`` in the header (a pickle's span for v1)."""
    chunks, tensors, offset = [], [], 0
    if skeleton is not None:
        chunks.append(zlib.compress(skeleton))
        extra = {**extra, "skeleton": [0, len(chunks[0])]}
        offset = len(chunks[0])
    for name, t in model.state_dict().items():
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        tensors.append({"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                        "layout": "raw", "raw": [offset, len(raw)]})
        chunks.append(raw)
        offset += len(raw)
    body = b"".join(chunks)
    header = {"format": "prune-rnn-gym", "version": version, "tensors": tensors,
              "body_sha256": hashlib.sha256(body).hexdigest(), **extra}
    blob = zlib.compress(json.dumps(header).encode())
    path.write_bytes(struct.pack("<8sIQ", b"PRNNGYM\0", version, len(blob)) + blob + body)


def test_a_version_2_graph_is_never_interpreted(tmp_path, marker):
    model = Net().eval()
    v3 = graph_file(tmp_path)
    edit(v3, lambda d: splice(d, tofile_via_max(marker)))
    _, description, _ = _header(v3)
    path = tmp_path / "v2.prnn"
    legacy_file(path, 2, model, {"module": {"class": "torch.fx.GraphModule", "graph": {"nodes": nodes(description)}}})
    with pytest.raises(ExportError, match="version-2 export.*refused.*Re-export.*model=MyModel"):
        load(path)
    filled = load(path, model=Net())  # its tensors alone: the graph is not read
    torch.testing.assert_close(filled(X), model(X))
    assert not marker.exists()


class Payload:
    """Unpickling this creates the marker (``open(marker, "w")``): arbitrary code, harmlessly."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_version_1_pickle_is_refused_unless_trusted(tmp_path, marker):
    torch.manual_seed(0)
    model = Net().eval()
    buf = io.BytesIO()
    torch.save(copy.deepcopy(model).to("meta"), buf)
    benign, evil = tmp_path / "benign.prnn", tmp_path / "evil.prnn"
    legacy_file(benign, 1, model, {}, buf.getvalue())
    legacy_file(evil, 1, model, {}, pickle.dumps(Payload(marker)))
    for path in (benign, evil):
        with pytest.raises(ExportError, match="version-1.*arbitrary code.*trust_pickle=True"):
            load(path)
        torch.testing.assert_close(load(path, model=Net())(X), model(X))  # tensors only: nothing unpickled
        assert not marker.exists()
    torch.testing.assert_close(load(benign, trust_pickle=True)(X), model(X))  # the explicit opt-in
    with suppress(Exception):
        load(evil, trust_pickle=True)
    assert marker.exists()  # which really runs the file's code: the refusal above is what protects


def test_a_weights_only_file_builds_nothing(tmp_path, marker):
    path = tmp_path / "w.prnn"
    export(Net(), path, weights_only=True)
    with pytest.raises(ExportError, match=r"weights-only.*model=Net\(\.\.\.\)"):
        load(path, classes=[Net])
    model = Net().eval()
    export(model, path, weights_only=True)
    torch.testing.assert_close(load(path, model=Net())(X), model(X))
    assert np.isfinite(load(path, model=Net())(X).detach().numpy()).all() and not marker.exists()
