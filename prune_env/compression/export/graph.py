"""A ``torch.fx`` graph restricted to a closed operation set, for models no module tree alone describes.

A hidden-unit-pruned model whose stacked layers keep different widths is a rewritten ``torch.fx.GraphModule``
(:func:`prune_env.pruning.structured.shrink`); where the user's own class with resized submodules computes the same
thing, :func:`prune_env.compression.export.declarative.declarative` returns that instead, and no graph is stored. A
stored graph is a list of nodes::

    {"op": "call_module", "name": "rnn", "target": "rnn", "args": {"tuple": [{"node": "embed"}]},
     "kwargs": {"dict": []}}

and each node must be one of:

- ``placeholder`` (a forward argument, named by an identifier) and one ``output``, last;
- ``get_attr`` of a parameter, buffer or tensor attribute of the stored module tree;
- ``call_module`` of a stored submodule whose class is a ``torch.nn.modules`` class;
- ``call_function`` of a function in :func:`prune_env.compression.export.ops.functions`, or ``getattr(node, name)``
  with ``name`` one of :data:`~prune_env.compression.export.ops.ATTRIBUTES` (``x.shape``...);
- ``call_method`` of a method in :data:`~prune_env.compression.export.ops.METHODS` on a node's value.

Arguments are plain values (:mod:`prune_env.compression.export.values`) and references to earlier nodes; never a
function. The ``forward`` that ``torch.fx`` generates from the checked nodes can only call those operations.
"""

from __future__ import annotations

import keyword
from typing import Any

import torch
import torch.fx as fx
from torch import nn

import prune_env.compression.export.ops as ops
import prune_env.compression.export.values as values
from prune_env.compression.export.classes import builtin_classes, class_name
from prune_env.compression.export.format import ExportError, short

GRAPH_OPS = ("placeholder", "get_attr", "call_function", "call_method", "call_module", "output")
#: Nodes accepted in one graph.
MAX_NODES = 100_000


def _path_ok(target: Any) -> bool:
    return isinstance(target, str) and len(target) <= 1024 and all(values.is_name(p) for p in target.split("."))


def _owner(root: nn.Module, target: str) -> tuple[nn.Module | None, str]:
    """The module holding the last part of ``target``, walking submodule tables only (no ``getattr``)."""
    *parents, leaf = target.split(".")
    m: Any = root
    for part in parents:
        m = vars(m).get("_modules", {}).get(part) if isinstance(m, nn.Module) else None
    return (m if isinstance(m, nn.Module) else None), leaf


def _tensor_at(root: nn.Module, target: str) -> bool:
    m, leaf = _owner(root, target)
    if m is None:
        return False
    d = vars(m)
    return any(isinstance(x, torch.Tensor) for x in (d["_parameters"].get(leaf), d["_buffers"].get(leaf), d.get(leaf)))


def _module_at(root: nn.Module, target: str) -> nn.Module | None:
    m, leaf = _owner(root, target)
    return None if m is None else vars(m)["_modules"].get(leaf)


def check_node(op: Any, target: Any, args: Any, kwargs: Any, root: nn.Module) -> Any:
    """The callable (``call_function``) or name a node may use, or ``ValueError`` saying why it is refused."""
    if op not in GRAPH_OPS:
        raise ValueError(f"graph node operation {short(op)} is not one of {GRAPH_OPS}")
    if not isinstance(args, tuple) or not isinstance(kwargs, dict) or not all(
            isinstance(k, str) and values.IDENT.match(k) and not keyword.iskeyword(k) for k in kwargs):
        raise ValueError(f"graph node {op} {short(target)}: malformed arguments")
    if op == "placeholder":
        if not (isinstance(target, str) and values.IDENT.match(target) and not keyword.iskeyword(target)
                and not target.startswith("__") and not kwargs and len(args) <= 1 and not _has_node(args)):
            raise ValueError(f"graph placeholder {short(target)} is not allowed")
    elif op == "output":
        if target != "output" or len(args) != 1 or kwargs:
            raise ValueError("malformed graph output")
    elif op == "get_attr":
        if not (_path_ok(target) and _tensor_at(root, target)) or args or kwargs:
            raise ValueError(f"graph get_attr {short(target)} names no parameter, buffer or tensor of the model")
    elif op == "call_module":
        sub = _module_at(root, target) if _path_ok(target) else None
        if sub is None or builtin_classes().get(class_name(type(sub))) is not type(sub) or not type(
                sub).__module__.startswith("torch.nn."):
            raise ValueError(f"graph call_module {short(target)} names no torch.nn submodule of the model")
    elif op == "call_method":
        if target not in ops.METHODS or not args or not isinstance(args[0], fx.Node):
            raise ValueError(f"graph call_method {short(target)} is not allowed (not in the closed set of "
                             "tensor methods, or not called on a node)")
    elif target == "getattr":
        if not (len(args) == 2 and isinstance(args[0], fx.Node) and args[1] in ops.ATTRIBUTES and not kwargs):
            raise ValueError(f"the graph reads the attribute {short(args[1:])}, which is not in the closed set "
                             f"{sorted(ops.ATTRIBUTES)}")
        return getattr
    elif isinstance(target, str) and target in ops.functions():
        return ops.functions()[target]
    else:
        raise ValueError(f"the graph calls the function {short(target)}, which is not in the closed set "
                         "(see prune_env.compression.export.ops.functions())")
    return target


def _has_node(v: Any) -> bool:
    if isinstance(v, fx.Node):
        return True
    if isinstance(v, (list, tuple)):
        return any(_has_node(x) for x in v)
    if isinstance(v, dict):
        return any(_has_node(k) or _has_node(x) for k, x in v.items())
    return isinstance(v, slice) and any(_has_node(x) for x in (v.start, v.stop, v.step))


def describe_graph(gm: fx.GraphModule, where: str) -> list[dict]:
    """The nodes of ``gm``'s graph as JSON.

    :raises ValueError: naming the node, for an operation outside the closed set.
    """
    nodes = []
    for n in gm.graph.nodes:
        target = n.target
        here = f"{where} graph node {n.name}"
        if n.op == "call_function":
            target = "getattr" if n.target is getattr else ops.function_names().get(
                id(n.target), getattr(n.target, "__qualname__", repr(n.target)))
        try:
            check_node(n.op, target, n.args, dict(n.kwargs), gm)
            args = values.encode(n.args, here, functions=False, node=_node_name)
            kwargs = values.encode(dict(n.kwargs), here, functions=False, node=_node_name)
        except ValueError as exc:
            raise ValueError(f"cannot export `{here}`: {exc}") from None
        nodes.append({"op": n.op, "name": n.name, "target": target, "args": args, "kwargs": kwargs})
    return nodes


def _node_name(v: Any) -> str | None:
    return v.name if isinstance(v, fx.Node) else None


def build_graph(root: nn.Module, desc: dict, path: str) -> fx.GraphModule:
    """A ``GraphModule`` over ``root``'s stored submodules and tensors, running the stored graph once checked.

    :raises ExportError: naming the node, for anything outside the closed operation set or malformed.
    """
    spec, cname = desc.get("graph"), desc.get("class_name", "GraphModule")
    if not isinstance(spec, list) or len(spec) > MAX_NODES:
        raise ExportError(f"malformed graph at {short(path)}")
    if not (isinstance(cname, str) and values.IDENT.match(cname) and not keyword.iskeyword(cname)):
        raise ExportError(f"malformed graph class name {short(cname)}")
    graph, nodes = fx.Graph(), {}
    for nd in spec:
        if not isinstance(nd, dict) or set(nd) != {"op", "name", "target", "args", "kwargs"}:
            raise ExportError(f"malformed graph node {short(nd)}")
        name = nd["name"]
        if not isinstance(name, str) or name in nodes or len(name) > 256:
            raise ExportError(f"malformed graph node name {short(name)}")
        args = values.decode(nd["args"], functions=False, nodes=nodes)
        kwargs = values.decode(nd["kwargs"], functions=False, nodes=nodes)
        try:
            target = check_node(nd["op"], nd["target"], args, kwargs, root)
        except ValueError as exc:
            raise ExportError(f"refused graph node {short(name)}: {exc}") from None
        nodes[name] = graph.create_node(nd["op"], target, args, kwargs)  # fx picks the node's variable name
    listed = list(graph.nodes)
    if not listed or sum(n.op == "output" for n in listed) != 1 or listed[-1].op != "output":
        raise ExportError(f"malformed graph at {short(path)} (it must end in its one output)")
    graph.lint()
    gm = fx.GraphModule(root, graph, cname)  # fx generates forward's source from the checked nodes
    for key in ("_modules", "_parameters", "_buffers", "_non_persistent_buffers_set", "training"):
        gm.__dict__[key] = root.__dict__[key]  # the stored tree as it was, unreferenced parts included
    for k in desc.get("tensors", ()):
        gm.__dict__[k] = root.__dict__[k]
    return gm
