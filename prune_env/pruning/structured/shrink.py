"""The physically smaller model without removed hidden units: new recurrent and ``nn.Linear`` modules of reduced size,
in a ``torch.fx.GraphModule``."""

from __future__ import annotations

import copy
import operator
from collections.abc import Sequence

import torch
import torch.fx as fx
from torch import nn

from prune_env.pruning.structured.plan import GATES, ColumnSource, StateRead, UnitPlan


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

    A declared plan (:mod:`~prune_env.pruning.structured.declared`) has no graph to rewrite: ``model`` itself, with
    the removed units already masked, is returned.
    """
    if plan.graph_module is None:
        return model
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
    first = plan.first_group[mname]
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
