"""The classes a file may name, and only these are rebuilt: an allowlist, never an import.

:func:`builtin_classes` are rebuilt without being asked; a caller adds its own with ``classes=`` (see
:func:`user_classes`). A file names a class as ``module.qualname`` (:func:`class_name`); :func:`resolve` looks the
name up in these tables and nowhere else.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

GRAPH_CLASS = "torch.fx.GraphModule"


def class_name(cls: type) -> str:
    """``module.qualname``: how a file names a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


@functools.cache
def builtin_classes() -> dict[str, type[nn.Module]]:
    """The classes :func:`prune_env.compression.export.load` rebuilds without being asked, by :func:`class_name`:
    every ``nn.Module`` subclass defined in ``torch.nn.modules`` (``nn.GRU``, ``nn.MultiheadAttention`` and its
    ``NonDynamicallyQuantizableLinear``...) and the built-in tasks' models of :mod:`prune_env.tasks.models`."""
    from prune_env.tasks import models

    out: dict[str, type[nn.Module]] = {}
    stack = [nn.Module]
    while stack:
        for cls in stack.pop().__subclasses__():
            stack.append(cls)
            if cls.__module__.startswith("torch.nn.modules.") and "<" not in cls.__qualname__:
                out[class_name(cls)] = cls
    out.update({class_name(c): c for c in vars(models).values()
                if isinstance(c, type) and issubclass(c, nn.Module) and c.__module__ == models.__name__})
    return dict(sorted(out.items()))


def user_classes(classes: Iterable[type] | Mapping[str, type] | None) -> dict[str, type]:
    """The caller's trusted classes by name (``module.qualname`` and ``qualname``; a mapping's own keys)."""
    if classes is None:
        return {}
    if isinstance(classes, (str, bytes)) or not isinstance(classes, (Iterable, Mapping)):
        raise ValueError(f"`classes` must be a list of torch.nn.Module subclasses or a dict name -> class, got "
                         f"{type(classes).__name__}")
    pairs = list(classes.items()) if isinstance(classes, Mapping) else [(None, c) for c in classes]
    out: dict[str, type] = {}
    for name, cls in pairs:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"`classes` must hold torch.nn.Module subclasses, got {cls!r}")
        out[str(name) if name is not None else class_name(cls)] = cls
        out.setdefault(cls.__qualname__, cls)  # the same class imported from elsewhere (e.g. __main__ at export)
    return out


def resolve(name: Any, user: dict[str, type]) -> type | None:
    """The class a file's ``name`` stands for: the caller's, then the built-in ones; ``None`` if neither."""
    if not isinstance(name, str):
        return None
    if name in user:
        return user[name]
    if name in builtin_classes():
        return builtin_classes()[name]
    parts = name.split(".")
    for i in range(1, len(parts)):  # a class the caller passed, recorded under another module name
        if ".".join(parts[i:]) in user:
            return user[".".join(parts[i:])]
    return None
