"""Finding the prunable weights of a model, with stable names and their role in the network.

What a module holds to prune is its layer adapter's answer (:mod:`prune_env.pruning.adapters`); this module walks
the model and names the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from prune_env.pruning.adapters import KINDS, adapter_for, registered_types

#: The module types with a built-in adapter.
SUPPORTED = (nn.LSTM, nn.GRU, nn.RNN, nn.Linear, nn.Embedding)
SUPPORTED_NAMES = ", ".join(f"nn.{t.__name__}" for t in SUPPORTED)

__all__ = ["KINDS", "SUPPORTED", "PrunableLayer", "find_prunable_layers", "get_param", "rnn_modules"]


@dataclass(frozen=True)
class PrunableLayer:
    """One prunable weight tensor.

    :param name: stable dotted name, e.g. ``"lstm.weight_hh_l0"`` or ``"head.weight"``.
    :param module_name: the owning module's name in ``model.named_modules()``.
    :param param_name: the parameter's name inside that module, e.g. ``"weight_hh_l0"`` (or a dotted path to a
        child's parameter the module uses without calling the child, e.g. ``"out_proj.weight"``).
    :param kind: one of :data:`KINDS`.
    :param shape: the weight's shape.
    :param rnn_layer: for recurrent weights, the stacked layer index (``l<k>``); ``None`` otherwise.
    :param reverse: for recurrent weights, whether it belongs to the reverse direction.
    :param role: the adapter's role of the weight (:data:`~prune_env.pruning.adapters.ROLES`).
    :param gates: the weight's rows form this many equal gate blocks (4 LSTM, 3 GRU, else 1).
    """

    name: str
    module_name: str
    param_name: str
    kind: str
    shape: tuple[int, ...]
    rnn_layer: int | None = None
    reverse: bool = False
    role: str = ""
    gates: int = 1

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def row_blocks(self) -> list[tuple[int, int]]:
        """The ``[start, stop)`` row range of each gate block."""
        rows = self.shape[0] // self.gates
        return [(g * rows, (g + 1) * rows) for g in range(self.gates)]


def find_prunable_layers(model: nn.Module) -> list[PrunableLayer]:
    """List the prunable weights of ``model`` in module-definition order.

    Every module with a layer adapter contributes the weights its adapter names, in its own parameter order:
    recurrent weights of every stacked layer and both directions (``weight_ih``, ``weight_hh`` and an LSTM's
    projection ``weight_hr``), every linear and embedding weight; biases are never pruned. A weight shared by two
    modules (tied embedding and head) is listed once, under its first name.

    :raises ValueError: if the model holds no module with prunable weights.
    """
    layers: list[PrunableLayer] = []
    seen: set[int] = set()
    for mname, module in model.named_modules():
        adapter = adapter_for(module)
        if adapter is None:
            continue
        own = dict(module.named_parameters(recurse=False))
        for spec in adapter.weights(module):
            param = own.get(spec.param_name) if "." not in spec.param_name else _nested(module, spec.param_name)
            if param is None:
                raise ValueError(f"the adapter of {type(module).__name__} names weight {spec.param_name!r}, which "
                                 f"is not a parameter of module {mname or '<root>'!r}")
            if id(param) in seen:
                continue
            seen.add(id(param))
            name = f"{mname}.{spec.param_name}" if mname else spec.param_name
            layers.append(PrunableLayer(name, mname, spec.param_name, spec.kind, tuple(param.shape),
                                        rnn_layer=spec.rnn_layer, reverse=spec.reverse, role=spec.role,
                                        gates=spec.gates))
    if not layers:
        names = ", ".join(f"nn.{t.__name__}" if t.__module__.startswith("torch.nn") else t.__qualname__
                          for t in registered_types())
        raise ValueError(f"model has no prunable weights: expected at least one of {names} "
                         f"(got a {type(model).__name__} with modules "
                         f"{sorted({type(m).__name__ for m in model.modules()})}); "
                         "register an adapter for your own module type with "
                         "prune_env.pruning.adapters.register_adapter")
    return layers


def get_param(model: nn.Module, layer: PrunableLayer) -> nn.Parameter:
    """The parameter behind ``layer`` in ``model`` (which may be a copy of the model it was found in)."""
    sub, _, leaf = layer.param_name.rpartition(".")
    owner = model.get_submodule(layer.module_name)
    return getattr(owner.get_submodule(sub) if sub else owner, leaf)


def _nested(module: nn.Module, dotted: str) -> nn.Parameter | None:
    """A submodule's parameter named by a dotted path from ``module`` (``"out_proj.weight"``), or ``None``: an
    adapter may claim the weight of a child its module uses without calling it (``nn.MultiheadAttention``)."""
    sub, _, leaf = dotted.rpartition(".")
    try:
        param = getattr(module.get_submodule(sub), leaf)
    except AttributeError:
        return None
    return param if isinstance(param, nn.Parameter) else None


def rnn_modules(model: nn.Module) -> list[nn.RNNBase]:
    """The recurrent modules, whose cuDNN flat weights must be refreshed after in-place edits."""
    return [m for m in model.modules() if isinstance(m, nn.RNNBase)]
