"""Finding the prunable weights of a model, with stable names and their role in the network."""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

SUPPORTED = (nn.LSTM, nn.GRU, nn.RNN, nn.Linear, nn.Embedding)
SUPPORTED_NAMES = ", ".join(f"nn.{t.__name__}" for t in SUPPORTED)

#: Layer kinds, in the order used by the one-hot observation feature.
KINDS = ("embedding", "input-hidden", "hidden-hidden", "linear")

_RNN_WEIGHT = re.compile(r"weight_(ih|hh|hr)_l(\d+)(_reverse)?$")


@dataclass(frozen=True)
class PrunableLayer:
    """One prunable weight tensor.

    :param name: stable dotted name, e.g. ``"lstm.weight_hh_l0"`` or ``"head.weight"``.
    :param module_name: the owning module's name in ``model.named_modules()``.
    :param param_name: the parameter's name inside that module, e.g. ``"weight_hh_l0"``.
    :param kind: one of :data:`KINDS`.
    :param shape: the weight's shape.
    :param rnn_layer: for recurrent weights, the stacked layer index (``l<k>``); ``None`` otherwise.
    :param reverse: for recurrent weights, whether it belongs to the reverse direction.
    """

    name: str
    module_name: str
    param_name: str
    kind: str
    shape: tuple[int, ...]
    rnn_layer: int | None = None
    reverse: bool = False

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def find_prunable_layers(model: nn.Module) -> list[PrunableLayer]:
    """List the prunable weights of ``model`` in module-definition order.

    Recurrent weights of every stacked layer and both directions are included (``weight_ih``, ``weight_hh`` and an
    LSTM's projection ``weight_hr``); biases are never pruned. A weight shared by two modules (tied embedding and
    head) is listed once, under its first name.

    :raises ValueError: if the model holds no supported layer.
    """
    layers: list[PrunableLayer] = []
    seen: set[int] = set()
    for mname, module in model.named_modules():
        if not isinstance(module, SUPPORTED):
            continue
        for pname, param in module.named_parameters(recurse=False):
            if id(param) in seen or not _is_weight(module, pname):
                continue
            seen.add(id(param))
            layers.append(_describe(mname, module, pname, tuple(param.shape)))
    if not layers:
        raise ValueError(f"model has no prunable weights: expected at least one of {SUPPORTED_NAMES} "
                         f"(got a {type(model).__name__} with modules "
                         f"{sorted({type(m).__name__ for m in model.modules()})})")
    return layers


def get_param(model: nn.Module, layer: PrunableLayer) -> nn.Parameter:
    """The parameter behind ``layer`` in ``model`` (which may be a copy of the model it was found in)."""
    return getattr(model.get_submodule(layer.module_name), layer.param_name)


def rnn_modules(model: nn.Module) -> list[nn.RNNBase]:
    """The recurrent modules, whose cuDNN flat weights must be refreshed after in-place edits."""
    return [m for m in model.modules() if isinstance(m, nn.RNNBase)]


def _is_weight(module: nn.Module, pname: str) -> bool:
    if isinstance(module, nn.RNNBase):
        return _RNN_WEIGHT.match(pname) is not None
    return pname == "weight"


def _describe(mname: str, module: nn.Module, pname: str, shape: tuple[int, ...]) -> PrunableLayer:
    name = f"{mname}.{pname}" if mname else pname
    if isinstance(module, nn.Embedding):
        return PrunableLayer(name, mname, pname, "embedding", shape)
    if isinstance(module, nn.Linear):
        return PrunableLayer(name, mname, pname, "linear", shape)
    m = _RNN_WEIGHT.match(pname)
    assert m is not None
    kind = "input-hidden" if m.group(1) == "ih" else "hidden-hidden"
    return PrunableLayer(name, mname, pname, kind, shape, rnn_layer=int(m.group(2)), reverse=bool(m.group(3)))
