"""The layer adapter registry: one adapter per module type says what a module holds to prune.

An adapter answers two questions about a module of its type:

- :meth:`LayerAdapter.weights`: which of the module's own parameters are prunable weights, each with its
  observation ``kind``, its ``role`` in the network (one of :data:`ROLES`), its gate layout (``gates`` equal blocks
  of rows, e.g. LSTM ``i, f, g, o``) and, for stacked recurrent modules, its layer index and direction;
- :meth:`LayerAdapter.capture`: for one forward call of the module, what each of those weights reads as its input:
  a ``(rows, in_features)`` float matrix of input vectors (the calibration data of Wanda and of the OBS/SparseGPT
  reconstruction), or a 1-D integer tensor of token ids for a lookup table (an embedding reads one-hot tokens).

Lookups follow the module's class hierarchy (``type(module).__mro__``): a subclass of ``nn.Linear`` uses the
``nn.Linear`` adapter unless it has its own. :func:`register_adapter` adds an adapter for a user's own module type;
:func:`~prune_env.pruning.layers.find_prunable_layers` and the calibration capture read nothing else.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

#: Roles a prunable weight plays in the network.
ROLES = ("input", "recurrent", "projection", "attention", "head", "embedding")
#: Layer kinds of the observation's one-hot feature, in its order (a new kind needs a new observation format).
KINDS = ("embedding", "input-hidden", "hidden-hidden", "linear")


@dataclass(frozen=True)
class WeightSpec:
    """One prunable weight of a module, as its adapter describes it.

    :param param_name: the parameter's name inside the module (``module.named_parameters(recurse=False)``).
    :param kind: one of :data:`KINDS` (the observation's layer-kind feature).
    :param role: one of :data:`ROLES`.
    :param gates: the rows form this many equal gate blocks (4 for LSTM ``i, f, g, o``, 3 for GRU ``r, z, n``).
    :param rnn_layer: for stacked recurrent modules, the layer index; ``None`` otherwise.
    :param reverse: for bidirectional recurrent modules, whether it belongs to the reverse direction.
    :param reads: what the weight multiplies, in words (e.g. ``"x_t"``, ``"h_{t-1}"``), for reports.
    """

    param_name: str
    kind: str
    role: str
    gates: int = 1
    rnn_layer: int | None = None
    reverse: bool = False
    reads: str = "input"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"WeightSpec: `kind` must be one of {KINDS}, got {self.kind!r}")
        if self.role not in ROLES:
            raise ValueError(f"WeightSpec: `role` must be one of {ROLES}, got {self.role!r}")
        if not isinstance(self.gates, int) or self.gates < 1:
            raise ValueError(f"WeightSpec: `gates` must be a positive int, got {self.gates!r}")


class LayerAdapter:
    """Base class of the adapters; subclass it and override both methods (see the module docstring)."""

    def weights(self, module: nn.Module) -> list[WeightSpec]:
        """The prunable weights of ``module`` in ``module.named_parameters(recurse=False)`` order."""
        raise NotImplementedError

    def capture(self, module: nn.Module, args: tuple, kwargs: Mapping[str, Any],
                output: Any) -> dict[str, torch.Tensor]:
        """What each prunable weight read during one forward call ``module(*args, **kwargs) -> output``.

        :returns: ``param_name`` -> a ``(rows, in_features)`` float tensor of the input vectors the weight
            multiplied (each row one vector), or a 1-D integer tensor of the token ids an embedding looked up.
        :raises ValueError: for inputs the adapter cannot capture (it names what it expected).
        """
        raise NotImplementedError


_REGISTRY: dict[type, LayerAdapter] = {}
_LOCK = threading.Lock()
_DEFERRED: dict[tuple[str, str], Callable[[], LayerAdapter]] = {}


def register_adapter(module_type: type, adapter: LayerAdapter, *, replace: bool = False) -> None:
    """Make ``adapter`` describe every module of ``module_type`` (and of its subclasses without their own adapter).

    :param module_type: an ``nn.Module`` subclass.
    :param adapter: an object with ``weights(module)`` and ``capture(module, args, kwargs, output)``
        (see :class:`LayerAdapter`).
    :param replace: allow replacing an adapter already registered for exactly ``module_type``.
    :raises TypeError: if ``module_type`` is not an ``nn.Module`` subclass or ``adapter`` lacks the methods.
    :raises ValueError: if ``module_type`` already has an adapter and ``replace`` is false.
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"register_adapter: `module_type` must be an nn.Module subclass, got {module_type!r}")
    for method in ("weights", "capture"):
        if not callable(getattr(adapter, method, None)):
            raise TypeError(f"register_adapter: `adapter` must have a `{method}` method "
                            f"(see prune_env.pruning.adapters.LayerAdapter), got {type(adapter).__name__}")
    with _LOCK:
        if module_type in _REGISTRY and not replace:
            raise ValueError(f"register_adapter: {module_type.__name__} already has an adapter "
                             f"({type(_REGISTRY[module_type]).__name__}); pass replace=True to change it")
        _REGISTRY[module_type] = adapter


def unregister_adapter(module_type: type) -> LayerAdapter | None:
    """Remove the adapter registered for exactly ``module_type``; returns it (``None`` if there was none)."""
    with _LOCK:
        return _REGISTRY.pop(module_type, None)


def register_deferred(module: str, qualname: str, factory: Callable[[], LayerAdapter]) -> None:
    """Register ``factory()`` as the adapter of class ``qualname`` of module ``module`` once that module has been
    imported (by the code that builds the user's model), without importing it here: for optional third-party
    packages that are slow to import. A model holding such a class has imported its module, so the first lookup
    after that registers it."""
    with _LOCK:
        _DEFERRED[(module, qualname)] = factory


def _resolve_deferred() -> None:
    for key in [k for k in _DEFERRED if k[0] in sys.modules]:
        cls = getattr(sys.modules[key[0]], key[1], None)
        if not isinstance(cls, type):  # the module is still being imported
            continue
        with _LOCK:
            factory = _DEFERRED.pop(key, None)
        if factory is not None and cls not in _REGISTRY:
            register_adapter(cls, factory())


def adapter_for(module: nn.Module) -> LayerAdapter | None:
    """The adapter of ``module``'s class or of its nearest registered base class; ``None`` when there is none."""
    if _DEFERRED:
        _resolve_deferred()
    for cls in type(module).__mro__:
        adapter = _REGISTRY.get(cls)
        if adapter is not None:
            return adapter
    return None


def registered_types() -> tuple[type, ...]:
    """The module types with an adapter, in registration order."""
    if _DEFERRED:
        _resolve_deferred()
    with _LOCK:
        return tuple(_REGISTRY)
