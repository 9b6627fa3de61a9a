"""The unit groups of a model (one per stacked recurrent layer) and every parameter their removal touches: rows of
every gate, the layer's own recurrent columns and the input columns of whatever consumes its output (found by
:mod:`~prune_env.pruning.structured.tracing`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from prune_env.pruning.layers import PrunableLayer
from prune_env.pruning.structured.tracing import follow_consumers, recurrent_outputs, rnn_calls, trace

#: Gate blocks stacked along the rows of a recurrent weight, by ``RNNBase.mode``.
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


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

    ``groups`` lists the unit groups (module by module, layer by layer), ``first_group[name]`` is the index of
    recurrent module ``name``'s first layer among them, ``tensors`` every parameter the groups touch, ``linears`` and
    ``rnn_inputs`` the consumers' input columns fed by each group.
    """

    def __init__(self, model: nn.Module):
        self.graph_module = trace(model)
        self.rnn_names = [n for n, m in model.named_modules() if isinstance(m, nn.RNNBase)]
        if not self.rnn_names:
            raise ValueError(f"granularity='hidden_unit' needs an nn.LSTM, nn.GRU or nn.RNN; "
                             f"{type(model).__name__} has none")
        self.modules = {n: model.get_submodule(n) for n in self.rnn_names}
        self.groups: list[UnitGroup] = []
        self.first_group: dict[str, int] = {}
        for mname in self.rnn_names:
            self._add_groups(mname, self.modules[mname])
        self.calls = rnn_calls(self.graph_module, self.rnn_names)
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
        self.first_group[mname] = len(self.groups)
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
        last = self.first_group[mname] + m.num_layers - 1
        sources = [ColumnSource(last, d, d * m.hidden_size) for d in range(self.groups[last].directions)]
        out, reads = recurrent_outputs(node, mname, m)
        paths = [(out, 3, sources)]
        for read, layer, d in reads:  # h_n[i]: one direction of one layer, (batch, hidden)
            g = self.first_group[mname] + layer
            paths.append((read, 2, [ColumnSource(g, d, 0)]))
            self.state_reads.append(StateRead(mname, read.name, layer, d))
        for start, ndim, srcs in paths:
            for consumer in follow_consumers(start, mname, self.graph_module, ndim):
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
            first = self.first_group[mname]
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
