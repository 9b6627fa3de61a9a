"""Tracing a model with ``torch.fx`` to find who consumes each recurrent module's output sequence and final hidden
states, through operations that keep the hidden-feature axis whole."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
import torch.fx as fx
from torch import nn

# Modules/functions that act elementwise (or per position) and so carry the hidden-feature axis through unchanged.
_PASS_MODULES = (nn.Dropout, nn.Identity, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.ELU, nn.LeakyReLU, nn.SiLU,
                 nn.Hardtanh)
_PASS_FUNCTIONS = {torch.relu, torch.tanh, torch.sigmoid, nn.functional.relu, nn.functional.dropout,
                   nn.functional.gelu, nn.functional.silu, nn.functional.elu, nn.functional.leaky_relu}
_PASS_METHODS = {"contiguous", "relu", "tanh", "sigmoid", "float", "clone"}


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` with recurrent modules as leaves and a clear error naming what blocked it.

    Type annotations are dropped from the graph: string annotations (``from __future__ import annotations``) would
    otherwise stop the traced module from pickling.

    :param model: the model to trace.
    :raises ValueError: if tracing fails (data-dependent control flow, unsupported calls, ...).
    """
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, RuntimeError...)
        raise ValueError(f"torch.fx cannot trace {type(model).__name__}, so its hidden units cannot be pruned "
                         f"structurally: {type(exc).__name__}: {exc}") from None
    for node in gm.graph.nodes:
        node.type = None
    gm.recompile()
    return gm


def rnn_calls(gm: fx.GraphModule, names: Sequence[str]) -> dict[str, fx.Node]:
    calls: dict[str, fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target in names:
            if node.target in calls:
                raise ValueError(f"`{node.target}` is called more than once in forward; hidden_unit pruning needs "
                                 "each recurrent module called once")
            if len(node.args) + len(node.kwargs) != 1:
                raise ValueError(f"`{node.target}` is called with an initial hidden state; hidden_unit pruning "
                                 "needs recurrent modules started from a zero state")
            calls[node.target] = node
    missing = [n for n in names if n not in calls]
    if missing:
        raise ValueError(f"recurrent module(s) {missing} are never called in forward")
    return calls


def _is_getitem(node: fx.Node, index=None) -> bool:
    return (node.op == "call_function" and node.target is operator.getitem
            and (index is None or (isinstance(node.args[1], int) and node.args[1] == index)))


def recurrent_outputs(node: fx.Node, mname: str, m: nn.RNNBase
                      ) -> tuple[fx.Node | None, list[tuple[fx.Node, int, int]]]:
    """The ``output`` node of ``output, h_n = rnn(x)`` and the reads ``h_n[i]`` as ``(node, layer, direction)``.

    ``h_n`` may only be indexed by a constant int (``h_n[-1]``: the last layer's last direction); an LSTM's ``c_n``
    may not be used.
    """
    out, reads = None, []
    dirs = 2 if m.bidirectional else 1
    for user in node.users:
        if _is_getitem(user, 0):
            out = user
        elif _is_getitem(user, 1):
            for h_n in _final_states(user, mname, isinstance(m, nn.LSTM)):
                for read in h_n.users:
                    if not (_is_getitem(read) and isinstance(read.args[1], int)):
                        raise ValueError(f"the final hidden state h_n of `{mname}` is used by {_describe(read)}; "
                                         "hidden_unit pruning supports h_n[i] with a constant int i only")
                    i = read.args[1] % (m.num_layers * dirs)
                    reads.append((read, i // dirs, i % dirs))
        else:
            raise ValueError(f"the output tuple of `{mname}` is used by {_describe(user)}; expected "
                             "`output, h_n = rnn(x)`")
    return out, reads


def _final_states(node: fx.Node, mname: str, lstm: bool) -> list[fx.Node]:
    """The ``h_n`` nodes under the second element of a recurrent call (``(h_n, c_n)`` for an LSTM)."""
    if not lstm:
        return [node]
    found = []
    for user in node.users:
        if _is_getitem(user, 0):
            found.append(user)
        elif user.users:
            raise ValueError(f"the model uses the final cell state c_n of `{mname}` (or the (h_n, c_n) tuple); "
                             "hidden_unit pruning supports the output sequence and h_n[i] only")
    return found


def follow_consumers(start: fx.Node | None, mname: str, gm: fx.GraphModule, ndim: int = 3) -> list[fx.Node]:
    """The consumers (``nn.Linear`` or recurrent modules) of a recurrent output, through feature-preserving ops.

    ``ndim`` is the rank of ``start``'s value: 3 for a batched output sequence, 2 for ``h_n[i]``.
    """
    if start is None:
        return []
    consumers: list[fx.Node] = []
    frontier = [(start, ndim)]
    while frontier:
        node, ndim = frontier.pop()
        for user in node.users:
            if user.op == "output":
                raise ValueError(f"the output of `{mname}` reaches the model's output without a Linear or "
                                 "recurrent consumer; its width cannot change")
            if user.op == "call_module":
                sub = gm.get_submodule(user.target)
                if isinstance(sub, (nn.Linear, nn.RNNBase)) and user.args[0] is node:
                    consumers.append(user)
                    continue
                if isinstance(sub, _PASS_MODULES):
                    frontier.append((user, ndim))
                    continue
            elif user.op == "call_function" and user.target in _PASS_FUNCTIONS and user.args[0] is node:
                frontier.append((user, ndim))
                continue
            elif user.op == "call_method" and user.target in _PASS_METHODS:
                frontier.append((user, ndim))
                continue
            elif user.op == "call_function" and user.target is operator.getitem:
                kept = _index_ndim(user.args[1], ndim)
                if kept is not None:
                    frontier.append((user, kept))
                    continue
            pooled = _pooled(user, node, ndim)
            if pooled is not None:
                frontier += pooled
                continue
            raise ValueError(f"hidden_unit pruning cannot follow the output of `{mname}` through "
                             f"{_describe(user, gm)}: supported are Linear/LSTM/GRU/RNN consumers, dropout, "
                             "elementwise activations, indexing that keeps the last (hidden) dimension and "
                             "mean/sum/max pooling over the other dimensions")
    return consumers


_POOL_METHODS = {"mean", "sum", "amax", "max"}
_POOL_FUNCTIONS = {torch.mean, torch.sum, torch.amax, torch.max}


def _pooled(user: fx.Node, node: fx.Node, ndim: int) -> list[tuple[fx.Node, int]] | None:
    """Where to follow ``node`` through ``user`` when ``user`` pools over dimensions other than the last (hidden)
    one (``out.mean(1)``, ``out.sum(dim=1)``, ``torch.max(out, 1)[0]``, ``out.max(1).values``, ``amax``), with the
    rank after pooling; ``None`` for anything else (no ``dim``, the last dimension pooled, ``max`` of two tensors).
    A removed unit is 0 at every step, so its pooled value is 0 too."""
    method = user.op == "call_method" and user.target in _POOL_METHODS
    function = user.op == "call_function" and user.target in _POOL_FUNCTIONS
    if not (method or function) or not user.args or user.args[0] is not node:
        return None
    dim = user.args[1] if len(user.args) > 1 else user.kwargs.get("dim")
    keepdim = user.args[2] if len(user.args) > 2 else user.kwargs.get("keepdim", False)
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    if not dims or not all(isinstance(d, int) and -ndim <= d < ndim for d in dims) or not isinstance(keepdim, bool):
        return None
    if any(d % ndim == ndim - 1 for d in dims):
        return None
    rank = ndim if keepdim else ndim - len(set(d % ndim for d in dims))
    name = user.target if isinstance(user.target, str) else user.target.__name__
    if name != "max":
        return [(user, rank)]
    if isinstance(dim, (tuple, list)):
        return None
    out = []  # max over a dim returns (values, indices): follow the values only
    for read in user.users:
        values = (_is_getitem(read, 0) or (read.op == "call_function" and read.target is getattr
                                          and read.args[1:] == ("values",)))
        if not values:
            return None
        out.append((read, rank))
    return out


def _index_ndim(index, ndim: int) -> int | None:
    """ndim after ``x[index]`` if the index leaves the last axis whole, else ``None``."""
    items = index if isinstance(index, tuple) else (index,)
    if any(i is Ellipsis or isinstance(i, (fx.Node, list)) for i in items):
        return None
    axes = [i for i in items if i is not None]
    if len(axes) >= ndim and axes[ndim - 1] != slice(None):
        return None
    dropped = sum(isinstance(i, int) for i in axes)
    added = sum(i is None for i in items)
    return ndim - dropped + added


def _describe(node: fx.Node, gm: fx.GraphModule | None = None) -> str:
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    if node.op == "call_module" and gm is not None:
        return f"module `{target}` ({type(gm.get_submodule(target)).__name__})"
    return f"{node.op} `{target}`"
