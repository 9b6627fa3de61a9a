"""Structured pruning of recurrent hidden units (in the spirit of Wen et al.'s Intrinsic Sparse Structures).

A *unit group* is one stacked layer of an ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (both directions together, since one
bidirectional layer must keep the same hidden size in each direction; each direction ranks its own units).
Removing unit ``j`` of direction ``d`` removes:

- its rows in every gate of ``weight_ih``, ``weight_hh``, ``bias_ih`` and ``bias_hh``;
- its column in the layer's own ``weight_hh``;
- its input column (``d * hidden + j``) in whatever consumes the layer's output: the next stacked layer's
  ``weight_ih``, the first layer of a following recurrent module, or an ``nn.Linear``.

Consumers of a module's last layer are found by tracing the model with ``torch.fx``. With the rows zeroed a
pruned unit's state stays exactly 0 from a zero initial state (every gate pre-activation is 0, so LSTM ``g = 0``
and GRU ``h = z * h_prev``), so the in-place masked model and the physically smaller model of :func:`shrink`
compute the same function.

Embeddings and ``Linear`` heads are not action units at this granularity: they only lose the input columns of the
units removed upstream.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn

from prune_env.pruning.layers import PrunableLayer

#: Gate blocks stacked along the rows of a recurrent weight, by ``RNNBase.mode``.
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}

# Modules/functions that act elementwise (or per position) and so carry the hidden-feature axis through unchanged.
_PASS_MODULES = (nn.Dropout, nn.Identity, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.ELU, nn.LeakyReLU, nn.SiLU,
                 nn.Hardtanh)
_PASS_FUNCTIONS = {torch.relu, torch.tanh, torch.sigmoid, nn.functional.relu, nn.functional.dropout,
                   nn.functional.gelu, nn.functional.silu, nn.functional.elu, nn.functional.leaky_relu}
_PASS_METHODS = {"contiguous", "relu", "tanh", "sigmoid", "float", "clone"}


@dataclass(frozen=True)
class UnitGroup(PrunableLayer):
    """The hidden units of one stacked layer of a recurrent module: one action unit at ``hidden_unit`` granularity.

    ``numel`` is the number of units per direction (what a sparsity is a fraction of); ``shape`` is
    ``(hidden_size, weights_per_unit)`` for the observation's size features.

    :param hidden_size: units per direction.
    :param directions: 1, or 2 for a bidirectional module.
    :param gates: gate blocks in the row dimension (4 LSTM, 3 GRU, 1 RNN).
    """

    hidden_size: int = 0
    directions: int = 1
    gates: int = 1

    @property
    def numel(self) -> int:
        return self.hidden_size


@dataclass(frozen=True)
class ColumnSource:
    """Columns ``[start, start + hidden)`` of a weight are fed by direction ``direction`` of group ``group``."""

    group: int
    direction: int
    start: int


@dataclass(frozen=True)
class StateRead:
    """A read ``h_n[i]`` of one layer's and direction's final hidden state, at graph node ``node``."""

    module: str
    node: str
    layer: int
    direction: int


@dataclass
class MaskedTensor:
    """How one parameter is masked: rows by a group's units (repeated per gate), columns by producing groups.

    :param name: parameter name in ``model.named_parameters()``.
    :param rows: ``(group, direction)`` owning the rows, or ``None``.
    :param cols: column segments fed by groups (other columns are never masked).
    """

    name: str
    rows: tuple[int, int] | None = None
    cols: list[ColumnSource] = field(default_factory=list)

    def groups(self) -> set[int]:
        return ({self.rows[0]} if self.rows else set()) | {c.group for c in self.cols}


class UnitPlan:
    """The unit groups of a model and every parameter their removal touches, found by ``torch.fx`` tracing.

    :param model: the model to analyse (not modified).
    :raises ValueError: if the model cannot be traced, has no recurrent module, or routes a recurrent output through
        an operation that mixes or reshapes the hidden-feature axis (the message names the operation).
    """

    def __init__(self, model: nn.Module):
        self.graph_module = trace(model)
        self.rnn_names = [n for n, m in model.named_modules() if isinstance(m, nn.RNNBase)]
        if not self.rnn_names:
            raise ValueError(f"granularity='hidden_unit' needs an nn.LSTM, nn.GRU or nn.RNN; "
                             f"{type(model).__name__} has none")
        self.modules = {n: model.get_submodule(n) for n in self.rnn_names}
        self.groups: list[UnitGroup] = []
        self._first_group: dict[str, int] = {}
        for mname in self.rnn_names:
            self._add_groups(mname, self.modules[mname])
        self.calls = _rnn_calls(self.graph_module, self.rnn_names)
        self.linears: dict[str, list[ColumnSource]] = {}
        self.state_reads: list[StateRead] = []
        self.rnn_inputs: dict[str, list[ColumnSource]] = {}
        for mname in self.rnn_names:
            self._find_consumers(mname)
        self.tensors = self._masked_tensors()

    # ------------------------------------------------------------------------------------------- analysis
    def _add_groups(self, mname: str, m: nn.RNNBase) -> None:
        if getattr(m, "proj_size", 0):
            raise ValueError(f"granularity='hidden_unit' does not support nn.LSTM with proj_size (`{mname}`)")
        dirs = 2 if m.bidirectional else 1
        gates = GATES[m.mode]
        self._first_group[mname] = len(self.groups)
        for layer in range(m.num_layers):
            fan_in = m.input_size if layer == 0 else m.hidden_size * dirs
            per_unit = gates * (fan_in + m.hidden_size) + m.hidden_size
            prefix = f"{mname}." if mname else ""
            self.groups.append(UnitGroup(name=f"{prefix}l{layer}", module_name=mname, param_name=f"l{layer}",
                                         kind="hidden-hidden", shape=(m.hidden_size, per_unit), rnn_layer=layer,
                                         hidden_size=m.hidden_size, directions=dirs, gates=gates))

    def _find_consumers(self, mname: str) -> None:
        node = self.calls[mname]
        m = self.modules[mname]
        last = self._first_group[mname] + m.num_layers - 1
        sources = [ColumnSource(last, d, d * m.hidden_size) for d in range(self.groups[last].directions)]
        out, reads = _outputs(node, mname, m)
        paths = [(out, 3, sources)]
        for read, layer, d in reads:  # h_n[i]: one direction of one layer, (batch, hidden)
            g = self._first_group[mname] + layer
            paths.append((read, 2, [ColumnSource(g, d, 0)]))
            self.state_reads.append(StateRead(mname, read.name, layer, d))
        for start, ndim, srcs in paths:
            for consumer in _follow(start, mname, self.graph_module, ndim):
                target = self.graph_module.get_submodule(consumer.target)
                table = self.rnn_inputs if isinstance(target, nn.RNNBase) else self.linears
                if consumer.target in table:
                    raise ValueError(f"`{consumer.target}` consumes more than one recurrent output; hidden_unit "
                                     "pruning needs each consumer fed by a single recurrent output")
                table[consumer.target] = srcs

    def _masked_tensors(self) -> list[MaskedTensor]:
        out: list[MaskedTensor] = []
        for mname in self.rnn_names:
            m = self.modules[mname]
            first = self._first_group[mname]
            prefix = f"{mname}." if mname else ""
            for layer in range(m.num_layers):
                g = first + layer
                for d in range(self.groups[g].directions):
                    sfx = f"_l{layer}" + ("_reverse" if d else "")
                    ih_cols = (self.rnn_inputs.get(mname, []) if layer == 0 else
                               [ColumnSource(g - 1, e, e * m.hidden_size) for e in range(self.groups[g].directions)])
                    out.append(MaskedTensor(f"{prefix}weight_ih{sfx}", (g, d), list(ih_cols)))
                    out.append(MaskedTensor(f"{prefix}weight_hh{sfx}", (g, d), [ColumnSource(g, d, 0)]))
                    if m.bias:
                        out += [MaskedTensor(f"{prefix}bias_ih{sfx}", (g, d)),
                                MaskedTensor(f"{prefix}bias_hh{sfx}", (g, d))]
        for lname, sources in self.linears.items():
            out.append(MaskedTensor(f"{lname}.weight", None, list(sources)))
        return out

    # ------------------------------------------------------------------------------------------- scores
    def unit_weights(self, params: dict[str, torch.Tensor], g: int, d: int) -> torch.Tensor:
        """Every weight of direction ``d`` of group ``g``, one row per unit: ``(hidden, weights_per_unit)``.

        Rows of all gates in ``weight_ih``/``weight_hh``, the unit's own ``weight_hh`` column and its input columns in
        every consumer (biases are not part of the score).

        :param params: name -> weight (or gradient) tensor, for every weight of the plan.
        :param g: group index.
        :param d: direction.
        """
        grp = self.groups[g]
        h = grp.hidden_size
        parts = []
        for t in self.tensors:
            if t.name not in params or params[t.name].dim() != 2:
                continue
            w = params[t.name].detach().float().cpu()
            if t.rows == (g, d):
                parts.append(w.reshape(grp.gates, h, -1).permute(1, 0, 2).reshape(h, -1))
            for c in t.cols:
                if (c.group, c.direction) == (g, d):
                    parts.append(w[:, c.start:c.start + h].t())
        return torch.cat(parts, dim=1)

    def unit_orders(self, criterion: str, weights: dict[str, torch.Tensor],
                    grads: dict[str, torch.Tensor] | None) -> list[list[torch.Tensor]]:
        """Per group and direction, unit indices from least to most important (stable: ties fall by index).

        ``magnitude`` ranks by the L2 norm of the unit's weights, ``gradient`` by the L2 norm of their gradient and
        ``saliency`` by the first-order Taylor estimate of the loss change, ``(sum w * g) ** 2`` (Molchanov et al.).

        :param criterion: ``"magnitude"``, ``"gradient"`` or ``"saliency"``.
        :param weights: name -> weight for every weight of the plan.
        :param grads: name -> gradient, needed unless ``criterion`` is ``"magnitude"``.
        """
        if criterion != "magnitude" and grads is None:
            raise ValueError(f"`criterion`={criterion!r} needs gradients: give the task a `loss(model) -> Tensor`")
        orders = []
        for g, grp in enumerate(self.groups):
            per_dir = []
            for d in range(grp.directions):
                w = self.unit_weights(weights, g, d)
                if criterion == "magnitude":
                    score = w.norm(dim=1)
                else:
                    gr = self.unit_weights(grads, g, d)
                    score = gr.norm(dim=1) if criterion == "gradient" else (w * gr).sum(dim=1) ** 2
                per_dir.append(torch.argsort(score, stable=True))
            orders.append(per_dir)
        return orders

    def keep_masks(self, orders: Sequence[Sequence[torch.Tensor]], counts: Sequence[int]) -> list[list[torch.Tensor]]:
        """Boolean keep masks per group and direction when group ``i`` loses its ``counts[i]`` lowest-ranked units.

        :param orders: from :meth:`unit_orders`.
        :param counts: units removed per direction of each group.
        """
        keep = []
        for grp, per_dir, k in zip(self.groups, orders, counts):
            masks = []
            for order in per_dir:
                m = torch.ones(grp.hidden_size, dtype=torch.bool)
                m[order[: int(k)]] = False
                masks.append(m)
            keep.append(masks)
        return keep

    def tensor_mask(self, t: MaskedTensor, keep: Sequence[Sequence[torch.Tensor]],
                    shape: torch.Size) -> torch.Tensor:
        """The float 0/1 mask of parameter ``t`` (of ``shape``) under the keep masks ``keep``."""
        mask = torch.ones(shape)
        if t.rows is not None:
            g, d = t.rows
            rows = keep[g][d].repeat(self.groups[g].gates).float()
            mask = mask * (rows[:, None] if len(shape) == 2 else rows)
        for c in t.cols:
            h = self.groups[c.group].hidden_size
            mask[:, c.start:c.start + h] *= keep[c.group][c.direction].float()
        return mask

    def param_masks(self, keep: Sequence[Sequence[torch.Tensor]], model: nn.Module) -> dict[str, torch.Tensor]:
        """Parameter name -> float 0/1 mask of every parameter the keep masks touch (``torch.nn.utils.prune`` style)."""
        params = dict(model.named_parameters())
        return {t.name: self.tensor_mask(t, keep, params[t.name].shape) for t in self.tensors}


# ----------------------------------------------------------------------------------------------- tracing
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


def _rnn_calls(gm: fx.GraphModule, names: Sequence[str]) -> dict[str, fx.Node]:
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


def _outputs(node: fx.Node, mname: str, m: nn.RNNBase) -> tuple[fx.Node | None, list[tuple[fx.Node, int, int]]]:
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


def _follow(start: fx.Node | None, mname: str, gm: fx.GraphModule, ndim: int = 3) -> list[fx.Node]:
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
            raise ValueError(f"hidden_unit pruning cannot follow the output of `{mname}` through "
                             f"{_describe(user, gm)}: supported are Linear/LSTM/GRU/RNN consumers, dropout, "
                             "elementwise activations and indexing that keeps the last (hidden) dimension")
    return consumers


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


# ----------------------------------------------------------------------------------------------- shrinking
@torch.no_grad()
def shrink(model: nn.Module, plan: UnitPlan, keep: Sequence[Sequence[torch.Tensor]]) -> fx.GraphModule:
    """A physically smaller copy of ``model`` without the removed units: new ``nn.LSTM``/``nn.GRU``/``nn.RNN`` and
    ``nn.Linear`` modules of reduced size, as a ``torch.fx.GraphModule`` of ordinary ``torch.nn`` modules.

    A stacked module whose layers keep different numbers of units becomes an ``nn.ModuleDict`` of single-layer
    modules (``l0``, ``l1``, ... and ``dropout`` when the original had inter-layer dropout) chained in the graph.

    :param model: the model ``plan`` was built from, dense or masked (its weights are copied).
    :param plan: the model's :class:`UnitPlan`.
    :param keep: boolean keep masks per group and direction (see :meth:`UnitPlan.keep_masks`); every layer must keep
        at least one unit.
    """
    gm = copy.deepcopy(plan.graph_module)
    gm.load_state_dict(model.state_dict())
    kept = [[torch.nonzero(k).reshape(-1) for k in per_dir] for per_dir in keep]
    for g, grp in enumerate(plan.groups):
        if any(k.numel() == 0 for k in kept[g]):
            raise ValueError(f"group `{grp.name}` would keep no unit; keep at least one per layer")
    for mname in plan.rnn_names:
        _shrink_rnn(gm, plan, mname, kept)
    for lname, sources in plan.linears.items():
        old = gm.get_submodule(lname)
        cols = _input_columns(sources, kept, plan, old.in_features)
        new = nn.Linear(cols.numel(), old.out_features, bias=old.bias is not None,
                        device=old.weight.device, dtype=old.weight.dtype)
        new.weight.copy_(old.weight[:, cols])
        if old.bias is not None:
            new.bias.copy_(old.bias)
        _set_submodule(gm, lname, new)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    gm.train(model.training)
    return gm


def _input_columns(sources: Sequence[ColumnSource], kept, plan: UnitPlan, width: int) -> torch.Tensor:
    """Indices of the input columns that survive, given which producer columns are kept."""
    alive = torch.ones(width, dtype=torch.bool)
    for c in sources:
        h = plan.groups[c.group].hidden_size
        seg = torch.zeros(h, dtype=torch.bool)
        seg[kept[c.group][c.direction]] = True
        alive[c.start:c.start + h] = seg
    return torch.nonzero(alive).reshape(-1)


def _shrink_rnn(gm: fx.GraphModule, plan: UnitPlan, mname: str, kept) -> None:
    old: nn.RNNBase = gm.get_submodule(mname)
    first = plan._first_group[mname]
    dirs = 2 if old.bidirectional else 1
    gates = GATES[old.mode]
    layers = []
    in_cols = _input_columns(plan.rnn_inputs.get(mname, []), kept, plan, old.input_size)
    for layer in range(old.num_layers):
        g = first + layer
        hidden = kept[g][0].numel()
        if any(k.numel() != hidden for k in kept[g]):
            raise ValueError(f"group `{plan.groups[g].name}` must keep as many units in each direction")
        kwargs = dict(num_layers=1, bias=old.bias, batch_first=old.batch_first, bidirectional=old.bidirectional,
                      device=old.weight_ih_l0.device, dtype=old.weight_ih_l0.dtype)
        if isinstance(old, nn.RNN):
            kwargs["nonlinearity"] = old.nonlinearity
        new = type(old)(in_cols.numel(), hidden, **kwargs)
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            new_sfx = "_l0" + ("_reverse" if d else "")
            rows = torch.cat([kept[g][d] + q * old.hidden_size for q in range(gates)])
            getattr(new, "weight_ih" + new_sfx).copy_(getattr(old, "weight_ih" + sfx)[rows][:, in_cols])
            getattr(new, "weight_hh" + new_sfx).copy_(getattr(old, "weight_hh" + sfx)[rows][:, kept[g][d]])
            if old.bias:
                for b in ("bias_ih", "bias_hh"):
                    getattr(new, b + new_sfx).copy_(getattr(old, b + sfx)[rows])
        new.flatten_parameters()
        layers.append(new)
        in_cols = torch.cat([kept[g][d] + d * old.hidden_size for d in range(dirs)])
    if len(layers) == 1:
        _set_submodule(gm, mname, layers[0])
        return
    stack = nn.ModuleDict({f"l{i}": m for i, m in enumerate(layers)})
    if old.dropout > 0:
        stack["dropout"] = nn.Dropout(old.dropout)
    _set_submodule(gm, mname, stack)
    calls = _chain_layers(gm, _call_node(gm, mname), mname, len(layers), old.dropout > 0)
    _reroute_state_reads(gm, [r for r in plan.state_reads if r.module == mname], calls, isinstance(old, nn.LSTM))


def _chain_layers(gm: fx.GraphModule, node: fx.Node, mname: str, n: int, dropout: bool) -> list[fx.Node]:
    """Replace the call of a stacked module by calls of its single-layer parts, output to input; returns them."""
    graph = gm.graph
    x = node.args[0] if node.args else next(iter(node.kwargs.values()))
    calls: list[fx.Node] = []
    with graph.inserting_before(node):
        for i in range(n):
            if i:
                x = graph.call_function(operator.getitem, (calls[-1], 0))
                if dropout:
                    x = graph.call_module(f"{mname}.dropout", (x,))
            calls.append(graph.call_module(f"{mname}.l{i}", (x,)))
    node.replace_all_uses_with(calls[-1])
    graph.erase_node(node)
    return calls


def _reroute_state_reads(gm: fx.GraphModule, reads: Sequence[StateRead], calls: Sequence[fx.Node],
                         lstm: bool) -> None:
    """Point each ``h_n[i]`` of a split stacked module at the single-layer module that now holds that layer."""
    nodes = {n.name: n for n in gm.graph.nodes}
    for read in reads:
        old = nodes[read.node]
        with gm.graph.inserting_before(old):
            h = gm.graph.call_function(operator.getitem, (calls[read.layer], 1))
            if lstm:
                h = gm.graph.call_function(operator.getitem, (h, 0))
            new = gm.graph.call_function(operator.getitem, (h, read.direction))
        old.replace_all_uses_with(new)


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _call_node(gm: fx.GraphModule, mname: str) -> fx.Node:
    """The node calling ``mname`` in ``gm`` (a deep copy of the plan's graph module, so the plan's nodes differ)."""
    return next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == mname)


def group_tensors(plan: UnitPlan, weights: dict[str, torch.Tensor],
                  grads: dict[str, torch.Tensor] | None) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Per group, all its unit weights (and gradients) stacked: the input of the observation's statistics.

    :param plan: the model's plan.
    :param weights: name -> weight.
    :param grads: name -> gradient, or ``None``.
    """
    out = []
    for g, grp in enumerate(plan.groups):
        # Flat: the directions of a layer can have different widths (a head may read only one direction's h_n).
        w = torch.cat([plan.unit_weights(weights, g, d).reshape(-1) for d in range(grp.directions)])
        gr = (torch.cat([plan.unit_weights(grads, g, d).reshape(-1) for d in range(grp.directions)]) if grads
              else None)
        out.append((w, gr))
    return out
