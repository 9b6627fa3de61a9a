"""Hidden-unit pruning where ``torch.fx`` cannot trace the model: a declared path.

Tracing (:mod:`~prune_env.pruning.structured.tracing`) finds who reads a recurrent module's output by following
the graph of ``forward``. It fails on data-dependent control flow (loops over lengths, ``if`` on a tensor), on
third-party code and on consumers it cannot shrink (``nn.MultiheadAttention``). The task can then *declare* the
path instead: ``RNNTask(..., unit_consumers={"lstm": ["attn"]})`` says that module ``attn`` reads the hidden
features of ``lstm``'s last layer (both directions concatenated, in the module's output order: its output
sequence, a pooling of it over time, or ``h_n[-1]`` of a unidirectional module).

What a declared consumer loses with a removed unit is the input column(s) reading it:

- ``nn.Linear``: ``weight`` columns; ``nn.LSTM``/``nn.GRU``/``nn.RNN``: the first layer's ``weight_ih`` columns;
- any module whose adapter has ``input_weights(module)`` (``nn.MultiheadAttention``'s ``in_proj_weight`` or
  ``q/k/v_proj_weight``, a cell's ``weight_ih``, a user's own adapter): those matrices' columns;
- a matrix named in full (``"attn.k_proj_weight"``): its columns.

Each declared weight must read exactly the producer's width (``hidden_size * directions``), and each is fed by
one producer. A removed unit's rows are zero in every gate, so from a zero initial state its output stays exactly
0 and the masked model computes what the model without the unit computes; the declaration decides which consumer
columns are counted and zeroed with it, so it must be true: a consumer that reads the features through a residual
sum or another non-zero-preserving operation must not be declared.

The forward cannot be rewritten without a graph, so :func:`~prune_env.pruning.structured.shrink` returns the
masked model (removed units and their columns held at zero, same shapes) for a declared plan; the sizes the env
reports are those of the model without the units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from prune_env.pruning.adapters import adapter_for
from prune_env.pruning.structured.plan import ColumnSource, MaskedTensor, UnitPlan

__all__ = ["DECLARE_HINT", "DeclaredPlan", "check_unit_consumers", "unit_plan"]

#: Appended to a tracing refusal: the way forward.
DECLARE_HINT = ("to prune hidden units anyway, declare who reads each recurrent module's hidden units: "
                "RNNTask(..., unit_consumers={'<rnn module>': ['<consumer module>', ...]}) "
                "(see prune_env.pruning.structured.declared)")


def check_unit_consumers(consumers: object) -> dict[str, tuple[str, ...]] | None:
    """``consumers`` as ``{str: tuple of str}``, or ``None``.

    :raises TypeError: naming ``unit_consumers`` for anything but a mapping of module names to sequences of names.
    """
    if consumers is None:
        return None
    bad = TypeError("`unit_consumers` must map recurrent module names to sequences of consumer module (or "
                    f"parameter) names, got {consumers!r}")
    if not isinstance(consumers, Mapping):
        raise bad
    out = {}
    for producer, readers in consumers.items():
        if isinstance(readers, str):
            readers = (readers,)
        if not isinstance(producer, str) or not isinstance(readers, Sequence) or not all(
                isinstance(r, str) for r in readers):
            raise bad
        out[producer] = tuple(readers)
    return out


def unit_plan(model: nn.Module, consumers: Mapping[str, Sequence[str]] | None = None) -> UnitPlan:
    """The model's unit plan: declared when ``consumers`` is given (:class:`DeclaredPlan`), else traced
    (:class:`~prune_env.pruning.structured.UnitPlan`), whose refusals then point to the declared path."""
    if consumers:
        return DeclaredPlan(model, consumers)
    try:
        return UnitPlan(model)
    except ValueError as e:
        if "proj_size" in str(e) or not any(isinstance(m, nn.RNNBase) for m in model.modules()):
            raise
        raise ValueError(f"{e}; {DECLARE_HINT}") from None


class DeclaredPlan(UnitPlan):
    """A :class:`~prune_env.pruning.structured.UnitPlan` whose consumers are declared rather than traced.

    :param model: the model (not modified).
    :param consumers: recurrent module name -> the modules (or full parameter names) reading its last layer's
        hidden features (see the module docstring).
    :raises ValueError: for an unknown or non-recurrent producer, an unknown consumer, one without weights that
        read its input, a width that differs from the producer's, or a weight declared for two producers.
    """

    def __init__(self, model: nn.Module, consumers: Mapping[str, Sequence[str]]):
        consumers = check_unit_consumers(consumers) or {}
        self.graph_module = None
        self.rnn_names = [n for n, m in model.named_modules() if isinstance(m, nn.RNNBase)]
        if not self.rnn_names:
            raise ValueError(f"granularity='hidden_unit' needs an nn.LSTM, nn.GRU or nn.RNN; "
                             f"{type(model).__name__} has none")
        self.modules = {n: model.get_submodule(n) for n in self.rnn_names}
        self.groups = []
        self.first_group = {}
        for mname in self.rnn_names:
            self._add_groups(mname, self.modules[mname])
        self.calls, self.state_reads = {}, []
        self.linears, self.rnn_inputs = {}, {}
        #: full parameter name -> the column segments of other declared consumers
        self.declared: dict[str, list[ColumnSource]] = {}
        seen: dict[str, str] = {}
        for producer, readers in consumers.items():
            if producer not in self.modules:
                raise ValueError(f"`unit_consumers` names {producer!r}, which is not an nn.LSTM/nn.GRU/nn.RNN of "
                                 f"the model (those are {self.rnn_names})")
            m = self.modules[producer]
            last = self.first_group[producer] + m.num_layers - 1
            sources = [ColumnSource(last, d, d * m.hidden_size) for d in range(self.groups[last].directions)]
            width = m.hidden_size * self.groups[last].directions
            for reader in readers:
                for pname, kind in _reading_weights(model, reader):
                    if pname in seen:
                        raise ValueError(f"`unit_consumers`: {pname} is declared for both `{seen[pname]}` and "
                                         f"`{producer}`; each weight may read one recurrent module")
                    seen[pname] = producer
                    shape = model.get_parameter(pname).shape
                    if len(shape) != 2:
                        raise ValueError(f"`unit_consumers`: {pname} has shape {tuple(shape)}; declared consumers "
                                         "must read the hidden features through matrices (in_features on dim 1)")
                    cols = shape[1]
                    if cols != width:
                        raise ValueError(f"`unit_consumers`: {pname} reads {cols} features, but `{producer}` "
                                         f"gives {width} (hidden_size {m.hidden_size} x {len(sources)} directions)")
                    table = {"linear": self.linears, "rnn": self.rnn_inputs}.get(kind)
                    if table is None:
                        self.declared[pname] = list(sources)
                    else:
                        table[pname.rsplit(".", 1)[0] if kind == "linear" else reader] = list(sources)
        self.tensors = self._masked_tensors()

    def _masked_tensors(self) -> list[MaskedTensor]:
        return super()._masked_tensors() + [MaskedTensor(name, None, list(src)) for name, src in self.declared.items()]


def _reading_weights(model: nn.Module, reader: str) -> list[tuple[str, str]]:
    """``(full parameter name, how it is masked)`` of every weight of ``reader`` that reads its input features:
    ``"linear"`` (an ``nn.Linear``'s ``weight``), ``"rnn"`` (a recurrent module's first-layer ``weight_ih``,
    masked by the plan itself) or ``"columns"`` (any other weight, masked along dimension 1)."""
    try:
        module = model.get_submodule(reader)
    except AttributeError:
        module = None
    if module is None:
        try:
            model.get_parameter(reader)
        except AttributeError:
            raise ValueError(f"`unit_consumers` names {reader!r}, which is neither a module nor a parameter of "
                             f"{type(model).__name__}") from None
        return [(reader, "columns")]
    prefix = f"{reader}." if reader else ""
    if isinstance(module, nn.RNNBase):
        return [(f"{prefix}weight_ih_l0", "rnn")]
    if isinstance(module, nn.Linear):
        return [(f"{prefix}weight", "linear")]
    adapter = adapter_for(module)
    names = getattr(adapter, "input_weights", None)
    if not callable(names):
        raise ValueError(f"`unit_consumers` names {reader!r} ({type(module).__name__}), whose layer adapter does not "
                         "say which weights read its input (`input_weights(module)`); name the parameter instead, "
                         f"e.g. '{prefix}weight'")
    return [(f"{prefix}{n}", "columns") for n in names(module)]
