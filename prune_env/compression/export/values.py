"""Plain values as JSON: what a module attribute or a graph argument may hold.

``None``, booleans, ints, strings and lists are themselves; a float is itself unless it is ``nan`` or infinite;
everything else is a one-key object naming its type: ``{"tuple": [...]}``, ``{"set": [...]}``, ``{"dict": [[k, v],
...]}``, ``{"slice": [start, stop, step]}``, ``{"ellipsis": null}``, ``{"float": "nan"}``, ``{"dtype": "float32"}``,
``{"device": "cpu"}``, ``{"torch": "contiguous_format"}`` (a memory format or layout), ``{"function": name}`` (one of
:func:`prune_env.compression.export.ops.functions`, where allowed) and, in a graph, ``{"node": name}``. Decoding
builds only these types; anything else is refused with an :class:`ExportError`.
"""

from __future__ import annotations

import functools
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch

import prune_env.compression.export.ops as ops
from prune_env.compression.export.format import ExportError, short

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
#: Nesting accepted in one value (deeper is refused, not recursed into).
MAX_DEPTH = 32


def encode(v: Any, where: str, functions: bool = True, node: Callable[[Any], str | None] | None = None) -> Any:
    """``v`` as JSON; ``functions``: whether a function of the closed set may appear; ``node``: graph node -> name.

    :raises ValueError: naming ``where``, for a value of another type.
    """
    if node is not None and (name := node(v)) is not None:
        return {"node": name}
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {"float": repr(v)}
    # Containers by exact type: a subclass (Lightning's AttributeDict, a namedtuple) would come back as its base
    # class and lose its behaviour, so it is refused here and the model goes to ``weights_only=True``.
    if type(v) is list:
        return [encode(x, where, functions, node) for x in v]
    if isinstance(v, tuple) and not hasattr(v, "_fields"):  # torch.Size too; a namedtuple would lose its type
        return {"tuple": [encode(x, where, functions, node) for x in v]}
    if type(v) in (dict, OrderedDict):
        return {"dict": [[encode(k, where, functions, node), encode(x, where, functions, node)] for k, x in v.items()]}
    if type(v) in (set, frozenset):
        return {"set": sorted((encode(x, where, functions, node) for x in v), key=repr)}
    if isinstance(v, slice):
        return {"slice": [encode(x, where, functions, node) for x in (v.start, v.stop, v.step)]}
    if v is Ellipsis:
        return {"ellipsis": None}
    if isinstance(v, torch.dtype):
        return {"dtype": str(v).removeprefix("torch.")}
    if isinstance(v, torch.device):
        return {"device": str(v)}
    if isinstance(v, (torch.memory_format, torch.layout)):
        return {"torch": str(v).removeprefix("torch.")}
    if functions and callable(v) and id(v) in ops.function_names():
        return {"function": ops.function_names()[id(v)]}
    raise ValueError(f"cannot export `{where}`: a {type(v).__module__}.{type(v).__qualname__}; a description holds "
                     "submodules, tensors and plain values (None, numbers, strings, tuples, lists, dicts, sets, "
                     "slices, dtypes, devices" + (", the pure tensor functions of the closed set" if functions else "")
                     + ") only, never pickled objects")


def decode(v: Any, functions: bool = True, nodes: Mapping[str, Any] | None = None, depth: int = 0) -> Any:
    """Inverse of :func:`encode`; ``nodes``: the graph's nodes so far (``None``: no node may appear).

    :raises ExportError: for anything :func:`encode` does not write (named).
    """
    if depth > MAX_DEPTH:
        raise ExportError(f"a value nested deeper than {MAX_DEPTH} levels")
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, list):
        return [decode(x, functions, nodes, depth + 1) for x in v]
    if not (isinstance(v, dict) and len(v) == 1):
        raise ExportError(f"unreadable value {short(v)}")
    ((tag, x),) = v.items()
    if tag in ("tuple", "set", "slice") and isinstance(x, list):
        items = [decode(i, functions, nodes, depth + 1) for i in x]
        if tag == "slice" and len(items) == 3:
            return slice(*items)
        if tag == "tuple":
            return tuple(items)
        if tag == "set":
            return _hashable(set, items, v)
    elif tag == "dict" and isinstance(x, list) and all(isinstance(i, list) and len(i) == 2 for i in x):
        pairs = [(decode(k, functions, nodes, depth + 1), decode(i, functions, nodes, depth + 1)) for k, i in x]
        return _hashable(dict, pairs, v)
    elif tag == "ellipsis" and x is None:
        return Ellipsis
    elif tag == "float" and x in _FLOATS:
        return _FLOATS[x]
    elif tag in ("dtype", "torch") and isinstance(x, str) and x in _constants(tag):
        return _constants(tag)[x]
    elif tag == "device" and isinstance(x, str) and len(x) <= 32:
        try:
            return torch.device(x)
        except RuntimeError:
            pass
    elif tag == "function" and functions and isinstance(x, str):
        if x in ops.functions():
            return ops.functions()[x]
        raise ExportError(f"the file names the function {short(x)}, which is not in the closed set: refused")
    elif tag == "node" and nodes is not None and isinstance(x, str):
        if x in nodes:
            return nodes[x]
        raise ExportError(f"the graph refers to the node {short(x)} before defining it")
    raise ExportError(f"unreadable value {short(v)}")


@functools.cache
def _constants(tag: str) -> dict[str, Any]:
    """The dtypes (``"dtype"``) or memory formats and layouts (``"torch"``) of ``torch``, by name: a fixed table read
    from the module's namespace, so no name from a file reaches ``getattr`` (or a lazy import) on ``torch``."""
    kinds = (torch.dtype,) if tag == "dtype" else (torch.memory_format, torch.layout)
    return {k: v for k, v in sorted(vars(torch).items()) if isinstance(v, kinds) and not k.startswith("_")}


def _hashable(kind: type, items: list, raw: Any) -> Any:
    try:
        return kind(items)
    except TypeError:  # an unhashable member
        raise ExportError(f"unreadable value {short(raw)}") from None


def is_name(name: Any) -> bool:
    """A submodule, parameter or buffer name: what ``nn.Module`` accepts (``"0"`` in a ``Sequential``), not dunder."""
    return isinstance(name, str) and name != "" and "." not in name and name.isprintable() and not name.startswith(
        "__") and len(name) <= 256
