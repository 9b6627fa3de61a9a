"""The closed operation set: every function, tensor method and tensor attribute a file may name.

A stored graph (:mod:`prune_env.compression.export.graph`) may call only these, and a module attribute may hold only
one of :data:`FUNCTIONS` (e.g. ``self.act = torch.tanh``). Each is a pure tensor operation: it takes no callable,
reads and writes no file, imports nothing and reaches no object by a name it is given. The lists are explicit, not
derived from a namespace, so a new torch release adds nothing to them. Notably absent: ``getattr``, ``min``/``max``
(they take ``key=``), ``operator.attrgetter``/``methodcaller``, ``torch.Tensor.apply_``/``map_``/``register_hook``,
``tofile``, ``torch.load``/``save``/``from_file``.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable

import torch
from torch import nn

F = nn.functional

_OPERATOR = ("getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "matmul",
             "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "invert")
_TORCH = ("cat", "concat", "stack", "flatten", "reshape", "transpose", "permute", "squeeze", "unsqueeze", "tanh",
          "sigmoid", "relu", "exp", "log", "abs", "neg", "sqrt", "rsqrt", "matmul", "bmm", "mm", "add", "sub", "mul",
          "div", "pow", "softmax", "log_softmax", "mean", "sum", "amax", "amin", "argmax", "argmin", "cumsum",
          "logsumexp", "maximum", "minimum", "where", "clamp", "chunk", "split", "narrow", "select", "index_select",
          "gather", "masked_fill", "flip", "roll", "einsum", "zeros_like", "ones_like", "full_like", "zeros", "ones",
          "full", "arange", "tril", "triu", "cos", "sin", "erf")
_FUNCTIONAL = ("relu", "gelu", "silu", "elu", "selu", "leaky_relu", "hardtanh", "softplus", "glu", "tanh", "sigmoid",
               "softmax", "log_softmax", "dropout", "linear", "embedding", "layer_norm", "normalize", "pad",
               "one_hot")


@functools.cache
def functions() -> dict[str, Callable]:
    """Name -> function: what a graph's ``call_function`` node or a module attribute may name."""
    out: dict[str, Callable] = {f"operator.{n}": getattr(operator, n) for n in _OPERATOR}
    out.update({f"torch.{n}": getattr(torch, n) for n in _TORCH})
    out.update({f"torch.nn.functional.{n}": getattr(F, n) for n in _FUNCTIONAL})
    return out


@functools.cache
def function_names() -> dict[int, str]:
    """``id(function)`` -> its name in :func:`functions` (the first, where two names are one function)."""
    names: dict[int, str] = {}
    for name, fn in functions().items():
        names.setdefault(id(fn), name)
    return names


#: The ``torch.Tensor`` methods a graph's ``call_method`` node may name.
METHODS = frozenset((
    "contiguous", "view", "view_as", "reshape", "reshape_as", "size", "dim", "numel", "mean", "sum", "amax", "amin",
    "transpose", "permute", "squeeze", "unsqueeze", "flatten", "float", "double", "half", "bfloat16", "long", "int",
    "bool", "to", "type_as", "clone", "detach", "relu", "tanh", "sigmoid", "softmax", "log_softmax", "exp", "log",
    "abs", "neg", "sqrt", "pow", "expand", "expand_as", "repeat", "masked_fill", "chunk", "split", "narrow", "select",
    "index_select", "gather", "matmul", "bmm", "mul", "add", "sub", "div", "t", "norm", "argmax", "argmin", "cumsum",
    "flip", "roll", "clamp", "new_zeros", "new_ones", "new_full", "unbind", "tril", "triu"))

#: The tensor attributes a graph may read (``x.shape``: fx records ``getattr(x, "shape")``); none is callable.
ATTRIBUTES = frozenset(("shape", "dtype", "device", "ndim", "T", "mT", "layout", "is_cuda", "requires_grad"))
