"""Compressed model files: :func:`export` and :func:`load`, plus ``torch.nn.utils.prune``-compatible masks.

File layout (little-endian)::

    b"PRNNGYM\\0"  magic (8 bytes)
    uint32         format version (:data:`VERSION`)
    uint64         header length H
    H bytes        zlib-compressed UTF-8 JSON header: the module description, the tensor table (name, shape, dtype,
                   layout, bits, stream offsets) and the SHA-256 of the body
    body           each tensor's streams, byte-aligned

**Loading runs no code from the file.** The header is plain JSON, read with :func:`json.loads`; nothing in the file is
unpickled. The module description names each submodule's class as ``module.qualname`` with its plain attributes
(numbers, strings, tuples, dtypes...), its parameter and buffer names and its children; :func:`load` rebuilds only
classes on an allowlist (every ``torch.nn`` module, the built-in tasks' models of :mod:`prune_env.tasks.models`, and
the classes the caller passes with ``classes=``), without calling their ``__init__`` (``cls.__new__`` and then
``__setstate__``, the same path unpickling takes, but with JSON values), and never imports a module the file names.
A structurally pruned model (a ``torch.fx.GraphModule``) is stored as its graph: JSON nodes whose functions are looked
up by name in an allowlist (``operator``, a few builtins, ``math``, and the tensor functions of ``torch``,
``torch.nn.functional`` and friends that ``torch.overrides`` lists, plus tensor factories), methods checked against
the public ``torch.Tensor`` methods and module and attribute paths checked as identifiers, so the ``forward`` that fx
generates from it can only call those. Anything else is refused with an :class:`ExportError` naming it. A model of
your own class loads with ``load(path, classes=[MyModel])``, or ``load(path, model=MyModel(...))`` to fill the tensors
into an instance you built (this ignores the description and works for any architecture whose state dict matches).

Version-1 files held the module as a pickle, which can run arbitrary code: :func:`load` refuses them unless asked
with ``trust_pickle=True`` (only for files you trust), or reads just their tensors into ``model=``. The checksum
catches corruption, not tampering: a tampered file can still hold wrong weights, but not code.

Prunable weights are stored in the cheapest sparse layout of :mod:`prune_env.compression.size` (so the file's streams are exactly
the sizes :func:`prune_env.compression.size.model_size` reports), with values quantized as asked (:mod:`prune_env.compression.quantize`);
everything else is stored raw (also non-persistent buffers and tensor attributes, which the state dict, and so
``model_size``, leaves out).

>>> import os, tempfile
>>> model = nn.Sequential(nn.Embedding(12, 8), nn.Linear(8, 12))
>>> with torch.no_grad():
...     _ = model[1].weight[:, 4:].zero_()  # half of the head pruned
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = os.path.join(tmp, "model.prnn")
...     nbytes, restored = export(model, path), load(path)
...     nbytes == os.path.getsize(path)
True
>>> all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values()))
True
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import io
import json
import keyword
import math
import operator
import os
import re
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from prune_env.compression.quantize import Codes, encode
from prune_env.compression.size import Encoding, encoding, resolve_bits
from prune_env.pruning.layers import find_prunable_layers, rnn_modules

MAGIC = b"PRNNGYM\0"
#: 2: the module is described in JSON (no pickle). 1: the module was a pickle (refused unless ``trust_pickle``).
VERSION = 2
_PREFIX = struct.Struct("<8sIQ")
#: Largest decompressed header accepted (a zlib bomb must not exhaust memory).
_MAX_HEADER = 1 << 28


class ExportError(ValueError):
    """A file :func:`load` refuses: foreign, truncated, corrupt, from a newer version, or naming code it does not run
    (a pickle, a class or function off the allowlist)."""


# ----------------------------------------------------------------------------------------------- writing
def export(model: nn.Module, path: str | os.PathLike, bits: int | dict[str, int] | None = None,
           method: str = "linear") -> int:
    """Write ``model`` compressed to ``path`` atomically (temp file in the same directory, then rename).

    Zeros in the prunable weights are the pruned weights. With ``bits`` the values are quantized first; a model the
    env already quantized with the same settings is stored unchanged (quantization is idempotent).

    The module is stored as a description, not a pickle (see the module docstring), so only what a description can
    hold is exported: submodules, parameters, buffers, tensor attributes and plain attributes (``None``, numbers,
    strings, tuples, lists, dicts, sets, slices, dtypes, devices and allowlisted functions); a ``torch.fx.GraphModule``
    may call only allowlisted functions and ``torch.Tensor`` methods. Hooks are not stored.

    :param model: the (pruned) model; it is not modified.
    :param path: the output file.
    :param bits: bits per value of every prunable weight (2..16, or 32 for float32), or a dict weight name -> bits
        (missing: 32); ``None``: float32.
    :param method: ``"linear"`` (per-output-channel symmetric) or ``"kmeans"`` (shared codebook per layer).
    :returns: the file size in bytes.
    :raises ValueError: for bad arguments, or a model holding something a description cannot (the message names it).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"`path` must be a file path, got the directory {str(path)!r}")
    names = [layer.name for layer in find_prunable_layers(model)]
    per_layer = resolve_bits(bits, names)
    module, extras = describe(model)
    body, header = _encode_model(model, per_layer, method, extras)
    header["module"] = module
    blob = zlib.compress(json.dumps(header, sort_keys=True).encode(), 9)
    data = _PREFIX.pack(MAGIC, VERSION, len(blob)) + blob + body
    _atomic_write(path, data)
    return len(data)


def _encode_model(model: nn.Module, per_layer: dict[str, int], method: str,
                  extras: list[tuple[str, torch.Tensor, str]]) -> tuple[bytes, dict]:
    chunks: list[bytes] = []
    offset = 0

    def put(data: bytes) -> list[int]:
        nonlocal offset
        chunks.append(data)
        span = [offset, len(data)]
        offset += len(data)
        return span

    tensors, seen = [], {}
    state = [(name, t, None) for name, t in model.state_dict(keep_vars=True).items()]
    for name, t, role in state + extras:  # extras: non-persistent buffers and tensor attributes, not in the state
        tag = {} if role is None else {"role": role}
        if id(t) in seen:  # tied weights: store once
            tensors.append({"name": name, "alias": seen[id(t)], **tag})
            continue
        seen[id(t)] = name
        t = t.detach().cpu()
        if name in per_layer and role is None:
            tensors.append(_encode_weight(name, t, per_layer[name], method, put))
        else:
            tensors.append({"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                            "layout": "raw", "raw": put(_raw_bytes(t)), **tag})
    body = b"".join(chunks)
    header = {"format": "prune-rnn-gym", "version": VERSION, "torch": torch.__version__, "tensors": tensors,
              "body_sha256": hashlib.sha256(body).hexdigest()}
    return body, header


def _raw_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _encode_weight(name: str, w: torch.Tensor, bits: int, method: str, put) -> dict:
    codes: Codes | None = None
    if bits < 32:
        codes = encode(w, bits, method)
        w = codes.dequantize()
    enc = encoding(w, bits, method)
    entry = {"name": name, "shape": list(w.shape), "dtype": "float32", "layout": enc.layout, "bits": bits,
             "method": enc.method, "rel_bits": enc.rel_bits, "entries": enc.entries, "nnz": enc.nnz}
    flat_mask = (w.reshape(-1) != 0)
    positions = _stored_positions(flat_mask, enc)
    entry["index"] = put(_index_stream(flat_mask, enc))
    if codes is None:
        flat = w.reshape(-1).float()
        vals = torch.where(positions >= 0, flat[positions.clamp(min=0)], torch.zeros(()))
        values = vals.numpy().astype("<f4").tobytes()
        entry["table"] = put(b"")
    else:
        flat_codes = codes.codes.reshape(-1)
        zero = torch.full((1,), codes.zero_code(), dtype=torch.long)
        vals = torch.where(positions >= 0, flat_codes[positions.clamp(min=0)], zero)
        values = pack_bits(vals.numpy(), bits)
        entry["table"] = put(codes.table.float().numpy().astype("<f4").tobytes())
    entry["values"] = put(values)
    _check_streams(name, entry, enc)
    return entry


def _stored_positions(mask: torch.Tensor, enc: Encoding) -> torch.Tensor:
    """Flat positions of the stored entries; ``-1`` marks a relative-index filler (value 0)."""
    if enc.layout == "dense":
        return torch.arange(enc.numel)
    pos = torch.nonzero(mask).reshape(-1)
    if enc.layout == "bitmask":
        return pos
    skips = pos - torch.cat([pos.new_tensor([-1]), pos[:-1]]) - 1
    fillers = skips >> enc.rel_bits
    # Each kept value is preceded by its fillers: repeat -1 fillers[i] times before pos[i].
    reps = fillers + 1
    out = torch.full((int(reps.sum()),), -1, dtype=torch.long)
    out[torch.cumsum(reps, 0) - 1] = pos
    return out


def _index_stream(mask: torch.Tensor, enc: Encoding) -> bytes:
    if enc.layout == "dense":
        return b""
    if enc.layout == "bitmask":
        return np.packbits(mask.numpy().astype(np.uint8), bitorder="little").tobytes()
    pos = torch.nonzero(mask).reshape(-1)
    skips = pos - torch.cat([pos.new_tensor([-1]), pos[:-1]]) - 1
    step = 2 ** enc.rel_bits
    fillers = skips >> enc.rel_bits
    reps = fillers + 1
    stream = torch.full((int(reps.sum()),), step - 1, dtype=torch.long)
    stream[torch.cumsum(reps, 0) - 1] = skips - fillers * step
    return pack_bits(stream.numpy(), enc.rel_bits)


def _check_streams(name: str, entry: dict, enc: Encoding) -> None:
    # The accounting in size.py and the bytes written must never drift apart.
    got = {k: entry[k][1] for k in ("index", "values", "table")}
    if got != enc.stream_bytes:
        raise AssertionError(f"export of {name}: streams {got} differ from the size accounting {enc.stream_bytes}")


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack unsigned integers of ``bits`` bits each, LSB first, into bytes (the last byte zero-padded)."""
    v = np.asarray(values, dtype=np.uint64).reshape(-1, 1)
    planes = ((v >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` unsigned integers as int64."""
    planes = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[: count * bits]
    planes = planes.reshape(count, bits).astype(np.int64)
    return (planes << np.arange(bits, dtype=np.int64)).sum(axis=1)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------------------- module description
#: What ``nn.Module.__init__`` sets: rebuilt by it, never read from a file (``training`` excepted).
_INTERNAL = frozenset(vars(nn.Module()))
#: ``nn.RNNBase`` attributes derived from the parameters and ``_flat_weights_names``: rebuilt, not stored.
_RNN_DERIVED = frozenset({"_flat_weights", "_flat_weight_refs"})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: Operator functions that call or fetch something by name: never allowed in a graph.
_OPERATOR_DENY = frozenset({"attrgetter", "itemgetter", "methodcaller", "call"})
_BUILTINS = ("getattr", "len", "int", "float", "bool", "abs", "min", "max", "round", "sum", "all", "any", "slice",
             "tuple", "list", "range")
#: Tensor factories (not in ``torch.overrides``, which lists functions taking tensors).
_FACTORIES = ("zeros", "ones", "full", "empty", "arange", "linspace", "logspace", "eye", "tensor", "as_tensor",
              "scalar_tensor", "rand", "randn", "randint", "randperm")
#: Tensor methods that take callables or touch storage sharing: not callable from a stored graph.
_METHOD_DENY = frozenset({"apply_", "map_", "map2_", "register_hook", "register_post_accumulate_grad_hook",
                          "backward", "module_load", "share_memory_", "storage", "untyped_storage"})
_GRAPH_OPS = frozenset({"placeholder", "get_attr", "call_function", "call_method", "call_module", "output"})


def class_name(cls: type) -> str:
    """``module.qualname``: how a file names a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


@functools.cache
def builtin_classes() -> dict[str, type[nn.Module]]:
    """The classes :func:`load` rebuilds without being asked: every ``torch.nn`` module class and the built-in
    tasks' models (:mod:`prune_env.tasks.models`), by :func:`class_name`."""
    from prune_env.tasks import models

    out = {}
    for ns in (nn, models):
        for obj in vars(ns).values():
            if isinstance(obj, type) and issubclass(obj, nn.Module) and (ns is nn or obj.__module__ == ns.__name__):
                out[class_name(obj)] = obj
    return out


@functools.cache
def allowed_functions() -> dict[str, Callable]:
    """The functions a stored graph may call, by name: ``operator`` (but ``attrgetter``, ``itemgetter``,
    ``methodcaller``, ``call``), a few builtins (``getattr`` only for public attribute names), ``math``, the
    tensor functions ``torch.overrides`` lists for ``torch``, ``torch.nn.functional``, ``torch.Tensor``,
    ``torch.linalg``, ``torch.fft`` and ``torch.special``, and tensor factories such as ``torch.zeros``. Nothing that
    reads or writes files, imports, or evaluates code."""
    out: dict[str, Callable] = {}
    out.update({f"operator.{n}": getattr(operator, n) for n in operator.__all__ if n not in _OPERATOR_DENY})
    out.update({f"builtins.{n}": getattr(builtins, n) for n in _BUILTINS})
    out.update({f"math.{n}": f for n, f in vars(math).items() if not n.startswith("_") and callable(f)})
    overridable = torch.overrides.get_overridable_functions()
    for label, ns in (("torch", torch), ("torch.functional", torch.functional), ("torch.nn.functional",
                      nn.functional), ("torch.Tensor", torch.Tensor), ("torch.linalg", torch.linalg),
                      ("torch.fft", torch.fft), ("torch.special", torch.special)):
        for fn in overridable.get(ns, ()):
            name = getattr(fn, "__name__", "")
            if _IDENT.match(name) and not name.startswith("_") and getattr(ns, name, None) is fn:
                out.setdefault(f"{label}.{name}", fn)
    out.update({f"torch.{n}": getattr(torch, n) for n in _FACTORIES})
    return out


@functools.cache
def _function_names() -> dict[int, str]:
    names: dict[int, str] = {}
    for name, fn in allowed_functions().items():
        names.setdefault(id(fn), name)
    return names


@functools.cache
def tensor_methods() -> frozenset[str]:
    """The method names a stored graph may call (``call_method``): public ``torch.Tensor`` methods, less a few that
    take callables (hooks, ``apply_``...)."""
    return frozenset(n for n in dir(torch.Tensor) if not n.startswith("_") and callable(getattr(torch.Tensor, n, None))
                     and n not in _METHOD_DENY)


def _is_name(name: Any) -> bool:
    """A submodule, parameter or buffer name: what ``nn.Module`` accepts (``"0"`` in a ``Sequential``), not dunder."""
    return isinstance(name, str) and name != "" and "." not in name and name.isprintable() and not name.startswith("__")


def _is_path(target: Any) -> bool:
    return isinstance(target, str) and all(_is_name(p) for p in target.split("."))


def _check_node(op: Any, target: Any, args: Any, kwargs: Any) -> Any:
    """The real target of a graph node (a function for ``call_function``), or ``ValueError`` saying why not."""
    if op not in _GRAPH_OPS:
        raise ValueError(f"graph node operation {op!r} is not one of {sorted(_GRAPH_OPS)}")
    if not isinstance(args, tuple) or not isinstance(kwargs, dict) or not all(
            isinstance(k, str) and _IDENT.match(k) for k in kwargs):
        raise ValueError(f"graph node {op} {target!r}: malformed arguments")
    if op == "placeholder":
        ok = isinstance(target, str) and _IDENT.match(target) and not keyword.iskeyword(target)
    elif op == "output":
        ok = target == "output"
    elif op in ("get_attr", "call_module"):
        ok = _is_path(target)
    elif op == "call_method":
        ok = target in tensor_methods()
    else:
        fn = allowed_functions().get(target) if isinstance(target, str) else None
        if fn is None:
            raise ValueError(f"the graph calls the function {target!r}, which is not on the allowlist "
                             "(operator, math, a few builtins, torch tensor functions: see allowed_functions())")
        if fn is getattr and not (len(args) == 2 and isinstance(args[1], str) and _IDENT.match(args[1])
                                  and not args[1].startswith("_")):
            raise ValueError(f"the graph reads an attribute by a non-public or computed name ({args[1:]!r})")
        return fn
    if not ok:
        raise ValueError(f"graph node {op} with target {target!r} is not allowed"
                         + (" (not a public torch.Tensor method)" if op == "call_method" else ""))
    return target


def _encode(v: Any, where: str) -> Any:
    """A value as JSON: ``None``/bool/int/float/str and lists as themselves, everything else tagged."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, fx.Node):
        return {"node": v.name}
    if isinstance(v, list):
        return [_encode(x, where) for x in v]
    if isinstance(v, tuple) and not hasattr(v, "_fields"):  # torch.Size too; namedtuples would lose their type
        return {"tuple": [_encode(x, where) for x in v]}
    if isinstance(v, dict):
        return {"dict": [[_encode(k, where), _encode(x, where)] for k, x in v.items()]}
    if isinstance(v, (set, frozenset)):
        return {"set": sorted((_encode(x, where) for x in v), key=repr)}
    if isinstance(v, slice):
        return {"slice": [_encode(x, where) for x in (v.start, v.stop, v.step)]}
    if v is Ellipsis:
        return {"ellipsis": None}
    if isinstance(v, torch.dtype):
        return {"dtype": str(v).removeprefix("torch.")}
    if isinstance(v, torch.device):
        return {"device": str(v)}
    if isinstance(v, (torch.memory_format, torch.layout)):
        return {"torch": str(v).removeprefix("torch.")}
    if callable(v) and id(v) in _function_names():
        return {"function": _function_names()[id(v)]}
    raise ValueError(f"cannot export `{where}`: a {type(v).__module__}.{type(v).__qualname__}; an export stores "
                     "submodules, tensors and plain values (None, numbers, strings, tuples, lists, dicts, sets, "
                     "slices, dtypes, devices, allowlisted functions) only, never pickled objects")


def _decode(v: Any, nodes: dict[str, fx.Node] | None = None) -> Any:
    """Inverse of :func:`_encode`; anything else raises :class:`ExportError`. ``nodes``: graph nodes so far."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, list):
        return [_decode(x, nodes) for x in v]
    if not (isinstance(v, dict) and len(v) == 1):
        raise ExportError(f"unreadable value {_short(v)}")
    (tag, x), = v.items()
    if tag in ("tuple", "set", "slice") and isinstance(x, list):
        items = [_decode(i, nodes) for i in x]
        if tag == "slice" and len(items) == 3:
            return slice(*items)
        if tag != "slice":
            return tuple(items) if tag == "tuple" else set(items)
    elif tag == "dict" and isinstance(x, list) and all(isinstance(i, list) and len(i) == 2 for i in x):
        return {_decode(k, nodes): _decode(i, nodes) for k, i in x}
    elif tag == "ellipsis":
        return Ellipsis
    elif tag in ("dtype", "torch") and isinstance(x, str) and _IDENT.match(x):
        got = getattr(torch, x, None)
        if isinstance(got, torch.dtype if tag == "dtype" else (torch.memory_format, torch.layout)):
            return got
    elif tag == "device" and isinstance(x, str):
        return torch.device(x)
    elif tag == "function" and isinstance(x, str):
        if x in allowed_functions():
            return allowed_functions()[x]
        raise ExportError(f"the file names the function {x!r}, which is not on the allowlist: refused")
    elif tag == "node" and nodes is not None and isinstance(x, str):
        if x in nodes:
            return nodes[x]
        raise ExportError(f"graph refers to the node {x!r} before defining it")
    raise ExportError(f"unreadable value {_short(v)}")


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def describe(model: nn.Module) -> tuple[dict, list[tuple[str, torch.Tensor, str]]]:
    """The JSON description of ``model``'s module tree that :func:`load` rebuilds, and the tensors that the state
    dict leaves out (``(name, tensor, role)``, role ``"buffer"`` for non-persistent buffers or ``"attribute"``).

    :raises ValueError: for an attribute, or a graph call, that the description cannot hold (named).
    """
    extras: list[tuple[str, torch.Tensor, str]] = []
    seen: dict[int, str] = {}
    hooked: list[str] = []

    def walk(m: nn.Module, path: str) -> dict:
        if id(m) in seen:  # a module used twice stays one module
            return {"same_as": seen[id(m)]}
        seen[id(m)] = path
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            hooked.append(path or type(m).__name__)
        prefix = f"{path}." if path else ""
        desc: dict[str, Any] = {}
        if isinstance(m, fx.GraphModule):
            desc["class"] = "torch.fx.GraphModule"
            desc["class_name"] = type(m).__name__
            desc["graph"] = _describe_graph(m.graph, path)
            attrs: dict[str, Any] = {}
        else:
            desc["class"] = class_name(type(m))
            attrs = {k: v for k, v in vars(m).items()
                     if k not in _INTERNAL and not (isinstance(m, nn.RNNBase) and k in _RNN_DERIVED)}
        attrs["training"] = m.training
        desc["tensors"] = [k for k, v in attrs.items() if isinstance(v, torch.Tensor)]
        extras.extend((prefix + k, attrs[k], "attribute") for k in desc["tensors"])
        desc["attrs"] = [[k, _encode(v, prefix + k)] for k, v in attrs.items() if not isinstance(v, torch.Tensor)]
        desc["params"] = [[k, None if p is None else {"requires_grad": p.requires_grad}]
                          for k, p in m._parameters.items()]
        desc["buffers"] = [[k, None if b is None else {"persistent": k not in m._non_persistent_buffers_set}]
                           for k, b in m._buffers.items()]
        extras.extend((prefix + k, b, "buffer") for k, b in m._buffers.items()
                      if b is not None and k in m._non_persistent_buffers_set)
        desc["modules"] = [[k, None if c is None else walk(c, prefix + k)] for k, c in m._modules.items()]
        return desc

    desc = walk(model, "")
    if hooked:
        warnings.warn(f"export: the hooks of {hooked[:5]} are not stored (code is never exported); for "
                      "torch.nn.utils.prune masks call torch.nn.utils.prune.remove(module, name) first, so the "
                      "pruned weight itself is saved", UserWarning, stacklevel=3)
    return desc, extras


def _describe_graph(graph: fx.Graph, path: str) -> dict:
    nodes = []
    for n in graph.nodes:
        target = n.target
        if n.op == "call_function":
            target = _function_names().get(id(n.target), getattr(n.target, "__qualname__", repr(n.target)))
        where = f"{path or type(graph.owning_module).__name__} graph node {n.name}"
        try:
            _check_node(n.op, target, n.args, dict(n.kwargs))
        except ValueError as exc:
            raise ValueError(f"cannot export `{where}`: {exc}") from None
        nodes.append({"op": n.op, "name": n.name, "target": target, "args": _encode(n.args, where),
                      "kwargs": _encode(dict(n.kwargs), where)})
    return {"nodes": nodes}


def _user_classes(classes: Iterable[type] | Mapping[str, type] | None) -> dict[str, type]:
    if classes is None:
        return {}
    pairs = list(classes.items()) if isinstance(classes, Mapping) else [(None, c) for c in classes]
    out = {}
    for name, cls in pairs:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"`classes` must hold torch.nn.Module subclasses, got {cls!r}")
        out[str(name) if name is not None else class_name(cls)] = cls
        out.setdefault(cls.__qualname__, cls)  # the same class imported from elsewhere (e.g. __main__ at export)
    return out


def _resolve_class(name: Any, user: dict[str, type]) -> type[nn.Module]:
    if not isinstance(name, str):
        raise ExportError(f"unreadable class name {_short(name)}")
    if name in user:
        return user[name]
    if name in builtin_classes():
        return builtin_classes()[name]
    parts = name.split(".")
    for i in range(1, len(parts)):  # a class the caller passed, recorded under another module name
        if ".".join(parts[i:]) in user:
            return user[".".join(parts[i:])]
    short = parts[-1] if _IDENT.match(parts[-1]) else "MyModel"
    raise ExportError(f"the file names the class {name!r}, which load() does not rebuild unless asked (it rebuilds "
                      "torch.nn modules and prune_env.tasks.models only, and never imports what a file names); "
                      f"if you trust that class, import it yourself and pass it: load(path, classes=[{short}]), or "
                      f"pass model={short}(...) to fill the tensors into a model you built")


def _pairs(v: Any, what: str, attrs: bool = False) -> list[tuple[str, Any]]:
    """``[[name, value], ...]`` checked: attribute names are public-or-private identifiers, never dunder."""
    if not isinstance(v, list) or not all(
            isinstance(p, list) and len(p) == 2 and _is_name(p[0]) and (not attrs or _IDENT.match(p[0]))
            for p in v):
        raise ExportError(f"malformed module description ({what})")
    return [(k, x) for k, x in v]


class _Tensors:
    """The decoded tensor table: hands each tensor out once, to the module and in the role the table says."""

    def __init__(self, tensors: dict[str, torch.Tensor], roles: dict[str, str | None]):
        self.tensors, self.roles, self.used = tensors, roles, set()
        self.params: dict[int, nn.Parameter] = {}  # tied parameters stay one Parameter

    def take(self, name: str, role: str | None) -> torch.Tensor:
        if name not in self.tensors or self.roles[name] != role:
            raise ExportError(f"the module description names the tensor {name!r}, which the tensor table lacks")
        self.used.add(name)
        return self.tensors[name]

    def param(self, name: str, requires_grad: Any) -> nn.Parameter:
        t = self.take(name, None)
        if id(t) not in self.params:
            self.params[id(t)] = nn.Parameter(t, requires_grad=bool(requires_grad))
        return self.params[id(t)]


def rebuild(desc: dict, tensors: _Tensors, user: dict[str, type]) -> nn.Module:
    """The module tree :func:`describe` wrote, holding the decoded tensors; only allowlisted classes are built."""
    built: dict[str, nn.Module] = {}

    def build(d: Any, path: str) -> nn.Module:
        if isinstance(d, dict) and set(d) == {"same_as"}:
            if d["same_as"] not in built:
                raise ExportError(f"malformed module description at {path!r}")
            tensors.used.update(n for n in tensors.tensors if n.startswith(f"{path}."))  # the state's second names
            return built[d["same_as"]]
        if not isinstance(d, dict):
            raise ExportError(f"malformed module description at {path!r}")
        prefix = f"{path}." if path else ""
        graph = d.get("class") == "torch.fx.GraphModule"
        cls = nn.Module if graph else _resolve_class(d.get("class"), user)
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        state = dict(vars(m))
        for k, v in _pairs(d.get("attrs"), "attributes", attrs=True):
            if k in _INTERNAL and k != "training":
                raise ExportError(f"the module description sets the internal attribute {prefix + k!r}: refused")
            state[k] = _decode(v)
        if not isinstance(state["training"], bool):
            raise ExportError(f"malformed module description at {path!r}")
        names = d.get("tensors", [])
        for k, _ in _pairs([[k, None] for k in names] if isinstance(names, list) else None, "tensor attributes",
                           attrs=True):
            state[k] = tensors.take(prefix + k, "attribute")
        params = {k: None if spec is None else tensors.param(prefix + k, _spec(spec, "requires_grad"))
                  for k, spec in _pairs(d.get("params"), "parameters")}
        buffers, transient = {}, set()
        for k, spec in _pairs(d.get("buffers"), "buffers"):
            persistent = spec is None or bool(_spec(spec, "persistent"))
            buffers[k] = None if spec is None else tensors.take(prefix + k, None if persistent else "buffer")
            if not persistent:
                transient.add(k)
        built[path] = m
        children = {k: None if c is None else build(c, prefix + k) for k, c in _pairs(d.get("modules"), "modules")}
        state.update(_parameters=params, _buffers=buffers, _non_persistent_buffers_set=transient, _modules=children)
        if isinstance(m, nn.RNNBase):
            names = state.get("_flat_weights_names")
            if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                raise ExportError(f"malformed recurrent module at {path!r}")
            state["_flat_weights"] = [params.get(n) for n in names]
        m.__setstate__(state)  # what unpickling calls, here with JSON values only
        if graph:
            m = built[path] = _graph_module(m, d, path)
        return m

    return build(desc, "")


def _spec(spec: Any, key: str) -> Any:
    if not isinstance(spec, dict) or key not in spec:
        raise ExportError("malformed module description (tensor spec)")
    return spec[key]


def _graph_module(root: nn.Module, desc: dict, path: str) -> fx.GraphModule:
    """A ``GraphModule`` running the stored graph over ``root``'s submodules and tensors, exactly as stored."""
    spec = desc.get("graph")
    if not isinstance(spec, dict) or not isinstance(spec.get("nodes"), list):
        raise ExportError(f"malformed graph at {path!r}")
    graph, nodes = fx.Graph(), {}
    for nd in spec["nodes"]:
        if not isinstance(nd, dict) or not {"op", "name", "target", "args", "kwargs"} <= set(nd):
            raise ExportError(f"malformed graph node at {path!r}")
        name = nd["name"]
        if not (isinstance(name, str) and _IDENT.match(name)) or name in nodes:
            raise ExportError(f"malformed graph node name {_short(name)}")
        args, kwargs = _decode(nd["args"], nodes), _decode(nd["kwargs"], nodes)
        try:
            target = _check_node(nd["op"], nd["target"], args, kwargs)
        except ValueError as exc:
            raise ExportError(f"refused graph node {name!r}: {exc}") from None
        if nd["op"] in ("get_attr", "call_module"):
            try:
                obj = root.get_submodule(target) if nd["op"] == "call_module" else _get_attr(root, target)
            except AttributeError:
                obj = None
            if not isinstance(obj, (nn.Module, torch.Tensor)):
                raise ExportError(f"graph node {name!r} refers to {target!r}, which the module does not hold")
        nodes[name] = graph.create_node(nd["op"], target, args, kwargs, name=name)
    outputs = [n for n in graph.nodes if n.op == "output"]
    if len(outputs) != 1 or outputs[0] is not list(graph.nodes)[-1]:
        raise ExportError(f"malformed graph at {path!r} (it must end in one output)")
    graph.lint()
    cname = desc.get("class_name", "GraphModule")
    if not (isinstance(cname, str) and _IDENT.match(cname)):
        raise ExportError(f"malformed graph class name {_short(cname)}")
    gm = fx.GraphModule(root, graph, cname)  # fx generates forward's source from the checked graph
    for key in ("_modules", "_parameters", "_buffers", "_non_persistent_buffers_set", "training"):
        gm.__dict__[key] = root.__dict__[key]  # keep the stored tree as it was, unreferenced parts included
    for k in desc.get("tensors", ()):
        gm.__dict__[k] = root.__dict__[k]
    return gm


def _get_attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


# ----------------------------------------------------------------------------------------------- reading
def load(path: str | os.PathLike, device: str | torch.device = "cpu", *,
         classes: Iterable[type] | Mapping[str, type] | None = None, model: nn.Module | None = None,
         trust_pickle: bool = False) -> nn.Module:
    """Rebuild the model :func:`export` wrote, in eval mode, without running code from the file.

    Only classes on the allowlist are rebuilt: ``torch.nn`` modules, :mod:`prune_env.tasks.models`, a structurally
    pruned model's ``torch.fx.GraphModule`` (its graph checked node by node), and the classes in ``classes``. A model
    of your own class: ``load(path, classes=[MyModel])`` (``MyModel`` is then trusted: its ``__setstate__``, if it
    defines one, runs as in unpickling, never its ``__init__``), or ``load(path, model=MyModel(...))``.

    :param path: the file.
    :param device: where to put the model.
    :param classes: further ``nn.Module`` classes to rebuild, matched by ``module.qualname`` (or by ``qualname``
        alone, e.g. for a class that was in ``__main__`` at export); a dict maps the name the file records to a class.
    :param model: fill the stored tensors into this model instead (its state dict must match; non-persistent
        buffers and tensor attributes keep the model's own values); it is changed in place, moved to ``device`` and
        returned. The file's module description is not used, so this also reads a version-1 file without
        unpickling anything.
    :param trust_pickle: read a version-1 file's pickled module (**runs arbitrary code from the file**, like
        ``torch.load(weights_only=False)``): only for a file you trust; re-export it to get a version-2 file.
    :raises ExportError: (a ``ValueError``) for a foreign, truncated, corrupt or newer-version file, a version-1
        file without ``trust_pickle`` or ``model``, a class or function off the allowlist (named), or tensors that do
        not fit ``model``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"`path` {str(path)!r} is not a file")
    user = _user_classes(classes)
    if model is not None and not isinstance(model, nn.Module):
        raise ValueError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    data = path.read_bytes()
    version, header, body = _read_header(data, path)
    try:
        if version == 1 and model is None and not trust_pickle:
            raise ExportError("a version-1 export, whose module is a pickle: loading it can run arbitrary code, so "
                              "it is refused. Re-export the model with this version, pass model=<a model of the same "
                              "architecture> to read only its tensors, or, only for a file you trust, "
                              "load(path, trust_pickle=True)")
        tensors, roles = _decode_tensors(header, body)
        if model is not None:
            out = _fill(model, tensors, roles)
        elif version == 1:
            out = _unpickle_v1(header, body, tensors)
        else:
            table = _Tensors(tensors, roles)
            out = rebuild(header.get("module"), table, user)
            unused = sorted(set(tensors) - table.used)
            if unused:
                raise ExportError(f"tensors {unused[:5]} belong to no module of the description")
    except ExportError as exc:
        raise ExportError(f"{path}: {exc}") from None
    except Exception as exc:
        raise ExportError(f"{path}: corrupt prune-rnn-gym export ({type(exc).__name__}: {exc})") from None
    out = out.to(device).eval()
    for m in rnn_modules(out):
        m.flatten_parameters()
    return out


def _read_header(data: bytes, path: Path) -> tuple[int, dict, bytes]:
    if len(data) < _PREFIX.size or data[:8] != MAGIC:
        raise ExportError(f"{path}: not a prune-rnn-gym export (bad magic bytes)")
    _, version, hlen = _PREFIX.unpack_from(data)
    if version > VERSION:
        raise ExportError(f"{path}: export format version {version} is newer than this library's ({VERSION}); "
                          "upgrade prune-rnn-gym")
    if version < 1:
        raise ExportError(f"{path}: corrupt prune-rnn-gym export (format version {version})")
    start = _PREFIX.size + hlen
    if start > len(data):
        raise ExportError(f"{path}: truncated prune-rnn-gym export (header runs past the end of the file)")
    try:
        inflate = zlib.decompressobj()
        text = inflate.decompress(data[_PREFIX.size:start], _MAX_HEADER)
        if inflate.unconsumed_tail:
            raise ValueError(f"header larger than {_MAX_HEADER} bytes")
        header = json.loads(text.decode())
    except (zlib.error, ValueError, RecursionError) as exc:  # JSON and Unicode errors are ValueErrors
        raise ExportError(f"{path}: corrupt prune-rnn-gym export header ({type(exc).__name__}: {exc})") from None
    body = data[start:]
    if not isinstance(header, dict) or hashlib.sha256(body).hexdigest() != header.get("body_sha256"):
        raise ExportError(f"{path}: corrupt prune-rnn-gym export (checksum mismatch)")
    return version, header, body


def _decode_tensors(header: dict, body: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str | None]]:
    """The tensor table: name -> tensor (tied names share one tensor) and name -> role (``None``: state dict)."""
    def get(span: Any) -> bytes:
        if not (isinstance(span, list) and len(span) == 2 and all(isinstance(i, int) and i >= 0 for i in span)
                and span[0] + span[1] <= len(body)):
            raise ExportError(f"a stream span {_short(span)} lies outside the body")
        return body[span[0]:span[0] + span[1]]

    tensors: dict[str, torch.Tensor] = {}
    roles: dict[str, str | None] = {}
    for entry in header["tensors"]:
        name, role = entry["name"], entry.get("role")
        if not isinstance(name, str) or name in tensors or role not in (None, "buffer", "attribute"):
            raise ExportError(f"malformed tensor table entry {_short(name)}")
        if "alias" in entry:
            tensors[name] = tensors[entry["alias"]]
        elif entry["layout"] == "raw":
            dtype = getattr(torch, entry["dtype"], None) if isinstance(entry["dtype"], str) else None
            if not isinstance(dtype, torch.dtype):
                raise ExportError(f"tensor {name!r} has an unknown dtype {_short(entry['dtype'])}")
            raw = bytearray(get(entry["raw"]))
            tensors[name] = torch.frombuffer(raw, dtype=dtype).reshape(entry["shape"]).clone() if raw else \
                torch.empty(entry["shape"], dtype=dtype)
        else:
            tensors[name] = _decode_weight(entry, get)
        roles[name] = role
    return tensors, roles


def _fill(model: nn.Module, tensors: dict[str, torch.Tensor], roles: dict[str, str | None]) -> nn.Module:
    state = {n: t for n, t in tensors.items() if roles[n] is None}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ExportError(f"the stored tensors do not fit the model passed as `model`: {exc}") from None
    return model


def _unpickle_v1(header: dict, body: bytes, state: dict[str, torch.Tensor]) -> nn.Module:
    """A version-1 file's pickled skeleton, filled in: RUNS CODE FROM THE FILE (only with ``trust_pickle=True``)."""
    span = header["skeleton"]
    model = torch.load(io.BytesIO(zlib.decompress(body[span[0]:span[0] + span[1]])), weights_only=False)
    model = model.to_empty(device="cpu")
    model.load_state_dict(state)
    for entry in header["tensors"]:
        if "alias" in entry:  # to_empty() gave each use of a tied tensor its own copy: tie them again
            _retie(model, entry["name"], entry["alias"])
    return model


def _retie(model: nn.Module, name: str, source: str) -> None:
    def resolve(full: str):
        mname, _, attr = full.rpartition(".")
        return (model.get_submodule(mname) if mname else model), attr

    owner, attr = resolve(name)
    src_owner, src_attr = resolve(source)
    setattr(owner, attr, getattr(src_owner, src_attr))


def _decode_weight(entry: dict, get) -> torch.Tensor:
    shape, bits = entry["shape"], entry["bits"]
    numel = int(np.prod(shape)) if shape else 1
    count = entry["entries"]
    if bits == 32:
        values = torch.from_numpy(np.frombuffer(get(entry["values"]), dtype="<f4").copy())
    else:
        codes = torch.from_numpy(unpack_bits(get(entry["values"]), bits, count))
        table = torch.from_numpy(np.frombuffer(get(entry["table"]), dtype="<f4").copy())
        values = None
    positions = _decode_positions(entry, get, numel)
    if bits < 32:
        if entry["method"] == "kmeans":
            values = table[codes]
        else:
            rows = shape[0] if shape else 1
            row_of = positions // max(1, numel // rows)
            values = (codes - (2 ** (bits - 1) - 1)).float() * table[row_of]
    flat = torch.zeros(numel)
    flat[positions] = values.float()
    return flat.reshape(shape)


def _decode_positions(entry: dict, get, numel: int) -> torch.Tensor:
    layout = entry["layout"]
    if layout == "dense":
        return torch.arange(numel)
    if layout == "bitmask":
        bitsarr = np.unpackbits(np.frombuffer(get(entry["index"]), dtype=np.uint8), bitorder="little")[:numel]
        return torch.from_numpy(np.flatnonzero(bitsarr).astype(np.int64))
    rel = entry["rel_bits"]
    skips = torch.from_numpy(unpack_bits(get(entry["index"]), rel, entry["entries"]))
    # Fillers decode to the position of a zero and carry the value 0, so they need no special case.
    return torch.cumsum(skips + 1, 0) - 1


# ----------------------------------------------------------------------------------------------- masks
def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``torch.nn.utils.prune``-compatible masks: prunable weight name -> float 0/1 tensor (0 where pruned).

    Apply them with :func:`apply_masks` (or ``torch.nn.utils.prune.custom_from_mask``) to fine-tune in your own
    training loop with the pruned weights held at zero.

    :param model: the pruned model.
    """
    params = dict(model.named_parameters())
    return {layer.name: (params[layer.name].detach() != 0).float() for layer in find_prunable_layers(model)}


def apply_masks(model: nn.Module, mask_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Attach ``mask_dict`` to ``model`` in place with ``torch.nn.utils.prune.custom_from_mask``; returns ``model``.

    :param model: the model to reparametrize (``weight`` becomes ``weight_orig * weight_mask``).
    :param mask_dict: parameter name -> 0/1 mask of the same shape, e.g. from :func:`masks`.
    """
    from torch.nn.utils import prune

    params = dict(model.named_parameters())
    for name, mask in mask_dict.items():
        if name not in params or params[name].shape != mask.shape:
            raise ValueError(f"`mask_dict`[{name!r}] matches no parameter of that shape in `model`")
        mname, _, pname = name.rpartition(".")
        prune.custom_from_mask(model.get_submodule(mname), pname, mask.to(params[name].device))
    return model
