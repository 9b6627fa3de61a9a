"""The declarative form of a rewritten model: the user's own class holding resized submodules, where that computes
exactly what the rewritten ``torch.fx.GraphModule`` computes.

:func:`prune_env.pruning.structured.shrink` returns a ``GraphModule`` traced from the user's model, with smaller
``nn.LSTM``/``nn.GRU``/``nn.RNN`` and ``nn.Linear`` modules, and each stacked recurrent module split into a chain of
single-layer ones (``rnn.l0``, ``rnn.l1``...). :func:`declarative` undoes what it can:

1. a chain whose layers all keep the same width, and whose intermediate outputs and final state nothing else reads,
   becomes one stacked module again (the same weights; ``num_layers`` layers compute exactly the chain);
2. a copy of the user's model receives the resized submodules and is traced again; only if its graph is node for node
   the rewritten graph (same operations, targets and constants) is it returned.

Such a model exports as a module tree (a GRU with a smaller ``hidden_size``) and loads with ``classes=[TheClass]``;
otherwise the rewritten model keeps its checked graph (:mod:`prune_env.compression.export.graph`).
"""

from __future__ import annotations

import copy
import math
import operator
from typing import Any

import torch
import torch.fx as fx
from torch import nn


def declarative(shrunk: nn.Module, original: nn.Module) -> nn.Module | None:
    """``original``'s own class holding ``shrunk``'s resized submodules, if it computes what ``shrunk`` computes;
    ``None`` where it cannot (layers of different widths, a final state read per layer...).

    :param shrunk: the rewritten model; not modified.
    :param original: the model it was traced from; not modified.
    """
    if not isinstance(shrunk, fx.GraphModule) or isinstance(original, fx.GraphModule):
        return None
    try:
        candidate, source = copy.deepcopy(original), copy.deepcopy(shrunk)  # one copy each: ties stay ties
        for path, stack in list(source.named_modules()):
            if isinstance(stack, nn.ModuleDict) and isinstance(_find(original, path), nn.RNNBase):
                if not _restack(source, path, stack, _find(original, path)):
                    return None
        source.graph.lint()
        for node in source.graph.nodes:
            if node.op == "call_module":
                new, old = source.get_submodule(node.target), candidate.get_submodule(node.target)
            elif node.op == "get_attr":
                new, old = _get(source, node.target), _get(candidate, node.target)
            else:
                continue
            if type(old) is not type(new):
                return None
            _place(candidate, node.target, new)
        traced = fx.symbolic_trace(candidate)
    except Exception:  # untraceable, or a path the original lacks: no declarative form
        return None
    if not same_graph(traced.graph, source.graph):
        return None
    candidate.train(shrunk.training)
    return candidate


def _find(m: nn.Module, path: str) -> Any:
    try:
        return m.get_submodule(path)
    except AttributeError:
        return None


def _get(m: nn.Module, target: str) -> Any:
    parent, _, leaf = target.rpartition(".")
    return getattr(m.get_submodule(parent), leaf)


def _place(root: nn.Module, target: str, value: Any) -> None:
    parent, _, leaf = target.rpartition(".")
    owner = root.get_submodule(parent)
    if isinstance(value, nn.Module):
        owner._modules[leaf] = value
    elif isinstance(value, nn.Parameter):
        owner._parameters[leaf] = value
    elif leaf in owner._buffers:
        owner._buffers[leaf] = value
    else:
        owner.__dict__[leaf] = value


def _single_users(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _restack(gm: fx.GraphModule, path: str, stack: nn.ModuleDict, old: nn.RNNBase) -> bool:
    """Replace the chain ``path.l0 -> [0] -> [dropout] -> path.l1 -> ...`` by one stacked module at ``path``."""
    layers = [stack[f"l{i}"] for i in range(len(stack)) if f"l{i}" in stack]
    if len(layers) + ("dropout" in stack) != len(stack) or not all(type(m) is type(old) for m in layers):
        return False
    hidden = layers[0].hidden_size
    if any(m.hidden_size != hidden or m.num_layers != 1 or m.bidirectional != old.bidirectional or m.bias != old.bias
           or m.batch_first != old.batch_first or getattr(m, "proj_size", 0) for m in layers):
        return False
    calls = {n.target: n for n in gm.graph.nodes if n.op == "call_module" and n.target.startswith(f"{path}.")}
    chain = [calls.get(f"{path}.l{i}") for i in range(len(layers))]
    if None in chain:
        return False
    for a, b in zip(chain, chain[1:]):  # a's output feeds b and nothing else
        get = _single_users(a)
        if get is None or not (get.op == "call_function" and get.target is operator.getitem and get.args == (a, 0)):
            return False
        nxt = _single_users(get)
        if nxt is not None and nxt.op == "call_module" and nxt.target == f"{path}.dropout":
            nxt = _single_users(nxt)
        if nxt is not b or len(b.args) != 1 or b.kwargs:
            return False
    for user in chain[-1].users:  # only the output sequence of the last layer: h_n differs in shape
        if not (user.op == "call_function" and user.target is operator.getitem and user.args == (chain[-1], 0)):
            return False
    kwargs = {"nonlinearity": old.nonlinearity} if isinstance(old, nn.RNN) else {}
    first = layers[0]
    merged = type(old)(first.input_size, hidden, len(layers), bias=old.bias, batch_first=old.batch_first,
                       dropout=old.dropout, bidirectional=old.bidirectional, device=first.weight_ih_l0.device,
                       dtype=first.weight_ih_l0.dtype, **kwargs)
    with torch.no_grad():
        for i, layer in enumerate(layers):
            for name, p in layer.named_parameters():
                getattr(merged, name.replace("_l0", f"_l{i}")).copy_(p)
    merged.train(first.training)
    parent, _, leaf = path.rpartition(".")
    gm.get_submodule(parent)._modules[leaf] = merged
    graph = gm.graph
    with graph.inserting_before(chain[0]):
        node = graph.call_module(path, chain[0].args, dict(chain[0].kwargs))
    chain[-1].replace_all_uses_with(node)
    doomed = []
    for a in chain[:-1]:
        doomed.extend([a, *a.users])
        doomed.extend(u for g in a.users for u in g.users if u.op == "call_module" and u.target == f"{path}.dropout")
    for n in reversed([*doomed, chain[-1]]):
        graph.erase_node(n)
    return True


def same_graph(a: fx.Graph, b: fx.Graph) -> bool:
    """Whether two graphs are node for node the same computation (nodes that reach no output ignored)."""
    la, lb = _live(a), _live(b)
    if len(la) != len(lb):
        return False
    ia = {n: i for i, n in enumerate(la)}
    ib = {n: i for i, n in enumerate(lb)}
    return all(x.op == y.op and _same(x.target, y.target, ia, ib) and _same(x.args, y.args, ia, ib)
               and _same(dict(x.kwargs), dict(y.kwargs), ia, ib) for x, y in zip(la, lb))


def _live(g: fx.Graph) -> list[fx.Node]:
    keep: set[fx.Node] = set()
    stack = [n for n in g.nodes if n.op == "output"]
    while stack:
        n = stack.pop()
        if n not in keep:
            keep.add(n)
            stack.extend(n.all_input_nodes)
    return [n for n in g.nodes if n in keep or n.op == "placeholder"]


def _same(x: Any, y: Any, ia: dict, ib: dict) -> bool:
    if isinstance(x, fx.Node) or isinstance(y, fx.Node):
        return isinstance(x, fx.Node) and isinstance(y, fx.Node) and ia.get(x) == ib.get(y)
    if type(x) is not type(y):
        return False
    if isinstance(x, (list, tuple)):
        return len(x) == len(y) and all(_same(p, q, ia, ib) for p, q in zip(x, y))
    if isinstance(x, dict):
        return list(x) == list(y) and all(_same(x[k], y[k], ia, ib) for k in x)
    if isinstance(x, slice):
        return all(_same(p, q, ia, ib) for p, q in ((x.start, y.start), (x.stop, y.stop), (x.step, y.step)))
    if isinstance(x, float) and math.isnan(x):
        return math.isnan(y)
    if callable(x) or isinstance(x, torch.Tensor):
        return x is y
    return x == y
