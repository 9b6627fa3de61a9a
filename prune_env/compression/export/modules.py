"""The module tree as a declarative JSON description, and its rebuilding from an allowlist of classes.

Each submodule is described by::

    {"class": "torch.nn.modules.rnn.GRU",             # module.qualname
     "config": [["input_size", 6], ["hidden_size", 5], ...],   # its plain attributes, as its constructor set them
     "tensors": ["scale"],                            # attributes holding tensors (stored in the tensor table)
     "params": [["weight_ih_l0", {"requires_grad": true}], ...],
     "buffers": [["codes", {"persistent": false}], ...],
     "modules": [["head", {...}], ["mlp", null], ...]}

or ``{"same_as": "path"}`` for a module used twice. A hidden-unit-pruned GRU is simply a GRU whose config says the
smaller ``hidden_size``. A ``torch.fx.GraphModule`` adds its graph (:mod:`prune_env.compression.export.graph`).

Rebuilding creates each object with ``object.__new__`` and ``nn.Module.__init__`` (torch's, which only sets empty
hook and parameter tables), then assigns the JSON values and the table's tensors to its ``__dict__``. No method of
the class runs, neither ``__init__`` nor ``__setstate__``; the class's code runs only when the model is called. Only
classes on the allowlist are rebuilt: every class of ``torch.nn.modules`` (``NonDynamicallyQuantizableLinear``
included), the built-in tasks' models (:mod:`prune_env.tasks.models`) and the classes the caller passes. An attribute
may not replace a method or property of its class, nor ``nn.Module``'s internal tables.
"""

from __future__ import annotations

import inspect
import warnings
import weakref
from typing import Any

import torch
import torch.fx as fx
from torch import nn

import prune_env.compression.export.graph as graphs
import prune_env.compression.export.values as values
from prune_env.compression.export.classes import GRAPH_CLASS, class_name, resolve
from prune_env.compression.export.format import ExportError, short
from prune_env.compression.export.table import Tensors

#: What ``nn.Module.__init__`` sets: rebuilt by it, never read from a file (``training`` excepted).
INTERNAL = frozenset(vars(nn.Module())) - {"training"}
#: ``nn.RNNBase`` attributes derived from the parameters and ``_flat_weights_names``: rebuilt, not stored.
_RNN_DERIVED = frozenset({"_flat_weights", "_flat_weight_refs"})


# ----------------------------------------------------------------------------------------------- describing
def _shadows(cls: type, name: str, value: Any) -> bool:
    """Whether instance attribute ``name`` = ``value`` would replace a method, property or other descriptor of
    ``cls`` (or, for a function value, any class attribute)."""
    try:
        attr = inspect.getattr_static(cls, name)
    except AttributeError:
        return False
    return callable(value) or callable(attr) or hasattr(type(attr), "__get__")


def describe(model: nn.Module) -> tuple[dict, list[tuple[str, torch.Tensor, str]]]:
    """The JSON description of ``model``'s module tree, and the tensors the state dict leaves out (``(name, tensor,
    role)``, role ``"buffer"`` for non-persistent buffers or ``"attribute"``).

    :raises ValueError: for an attribute, or a graph operation, the description cannot hold (named).
    """
    extras: list[tuple[str, torch.Tensor, str]] = []
    seen: dict[int, str] = {}
    hooked: list[str] = []

    def walk(m: nn.Module, path: str) -> dict:
        if id(m) in seen:  # a module used twice stays one module
            return {"same_as": seen[id(m)]}
        seen[id(m)] = path
        if any((m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks)):
            hooked.append(path or type(m).__name__)
        prefix = f"{path}." if path else ""
        where = path or type(m).__name__
        desc: dict[str, Any] = {}
        if isinstance(m, fx.GraphModule):
            desc.update({"class": GRAPH_CLASS, "class_name": type(m).__name__})
            desc["graph"] = graphs.describe_graph(m, where)
            attrs = {k: v for k, v in vars(m).items() if isinstance(v, torch.Tensor)}
        else:
            desc["class"] = class_name(type(m))
            attrs = {k: v for k, v in vars(m).items()
                     if k not in INTERNAL and k != "training" and not (isinstance(m, nn.RNNBase) and k in _RNN_DERIVED)}
        config = [["training", m.training]]
        for k, v in attrs.items():
            if isinstance(v, torch.Tensor):
                continue
            if not values.IDENT.match(k) or k.startswith("__") or _shadows(type(m), k, v):
                raise ValueError(f"cannot export `{prefix + k}`: an instance attribute that replaces a method or "
                                 f"property of {type(m).__name__}, or has no plain name")
            config.append([k, values.encode(v, prefix + k)])
        desc["config"] = config
        desc["tensors"] = [k for k, v in attrs.items() if isinstance(v, torch.Tensor)]
        extras.extend((prefix + k, attrs[k], "attribute") for k in desc["tensors"])
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


# ----------------------------------------------------------------------------------------------- rebuilding
def _pairs(v: Any, what: str) -> list[tuple[str, Any]]:
    """``[[name, value], ...]`` with module-style names, each once."""
    if not isinstance(v, list) or not all(isinstance(p, list) and len(p) == 2 and values.is_name(p[0]) for p in v):
        raise ExportError(f"malformed module description ({what})")
    if len({p[0] for p in v}) != len(v):
        raise ExportError(f"malformed module description ({what}: a name twice)")
    return [(k, x) for k, x in v]


def _missing_classes(desc: Any, user: dict[str, type]) -> list[str]:
    """Every class name in the description that neither the allowlist nor the caller provides."""
    missing: list[str] = []
    stack, count = [desc], 0
    while stack:
        d = stack.pop()
        count += 1
        if not isinstance(d, dict) or count > 100_000:
            continue
        name = d.get("class")
        if name != GRAPH_CLASS and "same_as" not in d and resolve(name, user) is None and name not in missing:
            missing.append(name if isinstance(name, str) else short(name))
        kids = d.get("modules")
        if isinstance(kids, list):
            stack.extend(p[1] for p in reversed(kids) if isinstance(p, list) and len(p) == 2)
    return missing


def _advice(missing: list[str]) -> str:
    shorts = [n.rsplit(".", 1)[-1] if values.IDENT.match(n.rsplit(".", 1)[-1]) else "MyModel" for n in missing]
    listing = ", ".join(repr(n) for n in missing)
    return (f"the file names the class{'es' if len(missing) > 1 else ''} {listing}, which load() does not rebuild "
            "unless asked (it rebuilds torch.nn modules and prune_env.tasks.models only, and never imports what a "
            f"file names); if you trust {'them' if len(missing) > 1 else 'it'}, import "
            f"{'them' if len(missing) > 1 else 'it'} yourself and pass load(path, classes=[{', '.join(shorts)}]), "
            f"or pass model={shorts[0]}(...) to fill the tensors into a model you built")


def rebuild(desc: Any, tensors: Tensors, user: dict[str, type]) -> nn.Module:
    """The module tree :func:`describe` wrote, holding the decoded tensors; only allowlisted classes are built.

    :raises ExportError: naming every class off the allowlist at once, or what else is malformed or refused.
    """
    if not isinstance(desc, dict):
        raise ExportError("malformed module description")
    missing = _missing_classes(desc, user)
    if missing:
        raise ExportError(_advice(missing))
    built: dict[str, nn.Module] = {}

    def build(d: Any, path: str, depth: int) -> nn.Module:
        if depth > 64:
            raise ExportError("the module tree is nested deeper than 64 levels")
        if isinstance(d, dict) and set(d) == {"same_as"}:
            if d["same_as"] not in built:
                raise ExportError(f"malformed module description at {path!r}")
            tensors.used.update(n for n in tensors.tensors if n.startswith(f"{path}."))  # the state's second names
            return built[d["same_as"]]
        if not isinstance(d, dict):
            raise ExportError(f"malformed module description at {short(path)}")
        prefix = f"{path}." if path else ""
        graph = d.get("class") == GRAPH_CLASS
        cls = nn.Module if graph else resolve(d.get("class"), user)
        m = object.__new__(cls)
        nn.Module.__init__(m)
        state = vars(m)
        names: set[str] = set()
        for k, v in _pairs(d.get("config"), "config"):
            if not values.IDENT.match(k) or k in INTERNAL:
                raise ExportError(f"the module description sets the internal attribute {short(prefix + k)}: refused")
            value = values.decode(v)
            if _shadows(cls, k, value):
                raise ExportError(f"the module description sets {short(prefix + k)}, which would replace a method "
                                  f"or property of {cls.__name__}: refused")
            state[k] = value
            names.add(k)
        if not isinstance(state["training"], bool):
            raise ExportError(f"malformed module description at {short(path)} (training)")
        attr_names = d.get("tensors", [])
        for k, _ in _pairs([[k, None] for k in attr_names] if isinstance(attr_names, list) else None, "tensors"):
            if not values.IDENT.match(k) or k in INTERNAL or k in names or _shadows(cls, k, None):
                raise ExportError(f"the module description sets the tensor attribute {short(prefix + k)}: refused")
            state[k] = tensors.take(prefix + k, "attribute")
            names.add(k)
        for k, spec in _pairs(d.get("params"), "parameters"):
            m._parameters[k] = None if spec is None else tensors.param(prefix + k, _spec(spec, "requires_grad"))
        for k, spec in _pairs(d.get("buffers"), "buffers"):
            persistent = spec is None or _spec(spec, "persistent")
            m._buffers[k] = None if spec is None else tensors.take(prefix + k, None if persistent else "buffer")
            if not persistent:
                m._non_persistent_buffers_set.add(k)
        built[path] = m
        for k, c in _pairs(d.get("modules"), "modules"):
            m._modules[k] = None if c is None else build(c, prefix + k, depth + 1)
        clash = names & (set(m._parameters) | set(m._buffers) | set(m._modules))
        if clash:
            raise ExportError(f"the module description at {short(path)} names {short(sorted(clash))} both as an "
                              "attribute and as a parameter, buffer or submodule")
        if isinstance(m, nn.RNNBase):
            _rnn_weights(m, path)
        if graph:
            m = built[path] = graphs.build_graph(m, d, path)
        return m

    return build(desc, "", 0)


def _spec(spec: Any, key: str) -> bool:
    if not isinstance(spec, dict) or not isinstance(spec.get(key), bool):
        raise ExportError("malformed module description (tensor spec)")
    return spec[key]


def _rnn_weights(m: nn.RNNBase, path: str) -> None:
    """Rebuild ``_flat_weights`` from ``_flat_weights_names``, which may name the module's parameters only."""
    names, groups = vars(m).get("_flat_weights_names"), vars(m).get("_all_weights")
    flat = [n for g in groups for n in g] if isinstance(groups, list) and all(
        isinstance(g, list) for g in groups) else None
    if not (isinstance(names, list) and flat is not None
            and all(isinstance(n, str) and m._parameters.get(n) is not None for n in names + flat)):
        raise ExportError(f"malformed recurrent module at {short(path)} (its weight names)")
    m._flat_weights = [m._parameters[n] for n in names]
    m._flat_weight_refs = [weakref.ref(w) for w in m._flat_weights]
