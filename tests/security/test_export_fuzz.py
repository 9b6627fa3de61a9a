"""Property tests of :func:`prune_env.load` over malformed files: every malformed file is refused with an
:class:`ExportError` (never another exception), and no file, loaded and called, runs code.

The files are a good export mutated byte by byte, arbitrary JSON headers, descriptions with arbitrary JSON spliced in
anywhere, and graphs drawn from the closed operation set mixed with names outside it (``getattr``, ``eval``,
``apply_``, ``tofile``...) and the marker file's path as a string constant. Any code run from the file is taken to
create the marker; it must never appear.
"""

from __future__ import annotations

import json
import struct
import tempfile
from contextlib import suppress
from pathlib import Path

import torch
import torch.fx as fx
from hypothesis import HealthCheck, given, settings
from hypothesis import event as _event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from torch import nn

from prune_env.compression.export import ATTRIBUTES, METHODS, ExportError, export, functions, load
from prune_env.compression.export.classes import builtin_classes, class_name
from prune_env.tasks.models import ZooLM

VOCAB = 12
X = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(0))
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DIR = Path(tempfile.mkdtemp(prefix="export-fuzz-"))
MARKER = DIR / "pwned"


def _good_files() -> dict[str, bytes]:
    torch.manual_seed(0)
    model = ZooLM(VOCAB, 4, 6, 1, cell="gru").eval()
    with torch.no_grad():
        model.rnn.weight_hh_l0[:, ::3] = 0
    out = {}
    for name, m, bits in (("module", model, None), ("quantized", model, 4), ("graph", fx.symbolic_trace(model), 8)):
        export(m, DIR / f"{name}.prnn", bits=bits)
        out[name] = (DIR / f"{name}.prnn").read_bytes()
    return out


GOOD = _good_files()


def split(data: bytes) -> tuple[dict, dict, bytes]:
    (n,) = struct.unpack_from("<Q", data)
    header = json.loads(data[8:8 + n])
    return header, json.loads(header["__metadata__"]["description"]), data[8 + n:]


def join(header: dict, body: bytes) -> bytes:
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + body


def event(what: str) -> None:
    if currently_in_test_context():
        _event(what)


def outcome(data: bytes) -> str:
    """Load ``data``; ``"refused"`` on an ExportError (anything else fails the test); else call the model."""
    path = DIR / "fuzz.prnn"
    path.write_bytes(data)
    try:
        model = load(path)
    except ExportError as exc:
        assert str(exc).startswith(str(path)), exc  # the message names the file
        event("refused")
        return "refused"
    allowed = set(builtin_classes().values())
    for m in model.modules():  # only allowlisted classes (or the GraphModule of a stored graph) were built
        assert type(m) in allowed or isinstance(m, fx.GraphModule), class_name(type(m))
    if isinstance(model, fx.GraphModule):
        closed = {id(f) for f in functions().values()} | {id(getattr)}
        for node in model.graph.nodes:
            assert node.op != "call_function" or id(node.target) in closed, node.target
            assert node.op != "call_method" or node.target in METHODS, node.target
    with suppress(Exception):
        model(X)
        event("loaded and ran")
    assert not MARKER.exists()
    event("loaded")
    return "loaded"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 40), 2 ** 40) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12) | st.sampled_from([str(MARKER), "__class__", "builtins.eval", "torch.nn.modules.rnn.GRU"]),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.sampled_from(["tuple", "dict", "set", "slice", "function", "node", "dtype", "device", "float", "class",
                         "same_as", "config", "x", ""]), kids, max_size=3),
    max_leaves=20)


@FAST
@given(kind=st.sampled_from(sorted(GOOD)), cut=st.integers(0, 10 ** 6), flips=st.lists(
    st.tuples(st.integers(0, 10 ** 6), st.integers(1, 255)), max_size=4), insert=st.binary(max_size=16))
def test_mutated_bytes_are_refused_or_load_harmlessly(kind, cut, flips, insert):
    data = bytearray(GOOD[kind])
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    if insert:
        at = cut % len(data)
        data[at:at] = insert
    elif cut % 3 == 0:
        data = data[: cut % len(data)]
    outcome(bytes(data))


@FAST
@given(header=json_values, size=st.one_of(st.none(), st.integers(0, 2 ** 64 - 1)), body=st.binary(max_size=64))
def test_arbitrary_headers_are_refused(header, size, body):
    blob = json.dumps(header).encode()
    prefix = struct.pack("<Q", len(blob) if size is None else size)
    assert outcome(prefix + blob + body) == "refused"


def _paths(v, at=()):
    """Every path into a JSON value (list indices and dict keys)."""
    yield at
    if isinstance(v, list):
        for i, x in enumerate(v):
            yield from _paths(x, (*at, i))
    elif isinstance(v, dict):
        for k, x in v.items():
            yield from _paths(x, (*at, k))


def _replace(v, path, new):
    if not path:
        return new
    v[path[0]] = _replace(v[path[0]], path[1:], new)
    return v


@FAST
@given(kind=st.sampled_from(sorted(GOOD)), data=st.data(), new=json_values)
def test_a_description_with_any_part_replaced_is_refused_or_loads_harmlessly(kind, data, new):
    header, description, body = split(GOOD[kind])
    path = data.draw(st.sampled_from(list(_paths(description))))
    description = _replace(description, path, new)
    header["__metadata__"]["description"] = json.dumps(description)
    outcome(join(header, body))


def test_an_rnn_description_without_its_weight_names_is_refused():
    header, description, body = split(GOOD["module"])
    rnn = next(m for _, m in description["module"]["modules"] if m["class"].endswith(".GRU"))
    rnn["config"] = [[k, [] if k == "_flat_weights_names" else v] for k, v in rnn["config"]]
    header["__metadata__"]["description"] = json.dumps(description)
    assert outcome(join(header, body)) == "refused"


OPS = ["placeholder", "get_attr", "call_function", "call_method", "call_module", "output", "call_python"]
OUTSIDE = ["builtins.getattr", "builtins.max", "builtins.min", "builtins.sorted", "builtins.eval", "builtins.exec",
           "builtins.open", "builtins.__import__", "operator.methodcaller", "operator.attrgetter", "torch.load",
           "torch.save", "torch.from_file", "torch.Tensor.apply_", "numpy.save", "os.system", "apply_", "map_",
           "register_hook", "numpy", "tofile", "__class__", "__globals__", "__dict__", "_modules", "training", ""]
TARGETS = sorted(functions()) + sorted(METHODS) + sorted(ATTRIBUTES) + OUTSIDE + [
    "getattr", "embed", "rnn", "head", "head.weight", "rnn.weight_hh_l0", "codes", "x", "output"]


CLOSED_CALLS = ([("call_module", t) for t in ("embed", "rnn", "head")] + [("get_attr", "head.weight")]
                + [("call_function", t) for t in ("operator.getitem", "torch.tanh", "torch.flatten", "torch.cat")]
                + [("call_method", t) for t in ("float", "mean", "size", "transpose", "to")]
                + [("call_function", "getattr")])
OUTSIDE_CALLS = ([("call_function", t) for t in OUTSIDE if "." in t]
                 + [("call_method", t) for t in ("apply_", "map_", "register_hook", "numpy", "tofile", "__class__")]
                 + [("call_module", t) for t in ("", "head.weight", "training", "__class__")]
                 + [("get_attr", t) for t in ("rnn", "training", "__class__", "_modules")])


@st.composite
def node(draw, i: int, names: list[str], mode: str) -> dict:
    """One node: ``closed`` (a well-formed closed-set call on earlier nodes), ``outside`` (a well-formed call of
    something outside the set) or ``random`` (anything from the vocabulary)."""
    refs = st.sampled_from(names).map(lambda n: {"node": n})
    if mode == "random":
        arg = st.one_of(refs, json_values, st.sampled_from(sorted(functions()) + OUTSIDE).map(
            lambda f: {"function": f}))
        op, target = draw(st.sampled_from(OPS)), draw(st.sampled_from(TARGETS))
        args = draw(st.lists(arg, max_size=3))
        kwargs = draw(st.lists(st.tuples(st.sampled_from(["dim", "key", "keepdim", "x", "y=1", "lambda"]), arg),
                               max_size=2))
    else:
        op, target = draw(st.sampled_from(CLOSED_CALLS if mode == "closed" else OUTSIDE_CALLS))
        args, kwargs = ([] if op == "get_attr" else [draw(refs)]), []
        if target in ("operator.getitem", "transpose"):
            args += draw(st.lists(st.integers(-2, 2), min_size=1, max_size=2))
        elif target == "getattr":
            args.append(draw(st.sampled_from(sorted(ATTRIBUTES) + ["tofile", "__class__", "numpy"])))
        elif op != "get_attr" and (target == "to" or mode == "outside"):
            args.append(draw(st.sampled_from([str(MARKER), "cpu", "w", {"dtype": "float64"}])))
    return {"op": op, "name": f"n{i}", "target": target, "args": {"tuple": args},
            "kwargs": {"dict": [list(p) for p in kwargs]}}


MIXED = st.sampled_from(["closed", "closed", "outside", "random"])


@st.composite
def graphs(draw, modes=MIXED):
    names = ["x"]
    nodes = [{"op": "placeholder", "name": "x", "target": "x", "args": {"tuple": []}, "kwargs": {"dict": []}}]
    for i in range(draw(st.integers(1, 5))):
        nodes.append(draw(node(i, list(names), draw(modes))))
        names.append(f"n{i}")
    nodes.append({"op": "output", "name": "output", "target": "output",
                  "args": {"tuple": [{"node": names[-1]}]}, "kwargs": {"dict": []}})
    return nodes


def _with_graph(nodes: list[dict]) -> bytes:
    header, description, body = split(GOOD["graph"])
    description["module"]["graph"] = nodes
    header["__metadata__"]["description"] = json.dumps(description)
    return join(header, body)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=graphs())
def test_random_graphs_never_leave_the_closed_set(nodes):
    outcome(_with_graph(nodes))


@FAST
@given(nodes=graphs(modes=st.just("closed")), data=st.data())
def test_one_call_outside_the_set_is_enough_to_refuse_a_graph(nodes, data):
    names = [n["name"] for n in nodes[:-1]]
    at = data.draw(st.integers(1, len(nodes) - 1))
    bad = data.draw(node(99, names[:at], "outside"))
    nodes = nodes[:at] + [bad] + nodes[at:-1] + [{**nodes[-1], "args": {"tuple": [{"node": "n99"}]}}]
    assert outcome(_with_graph(nodes)) == "refused"


def test_the_good_files_load():
    for data in GOOD.values():
        assert outcome(data) == "loaded"


def test_a_refusal_is_a_value_error_for_the_caller():
    assert issubclass(ExportError, ValueError) and not issubclass(ExportError, nn.Module)
