"""Small validation helpers: every bad argument gets a ``ValueError`` that names it and says what was expected."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    """True for Python and NumPy integers, never for ``bool``."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    """True for Python and NumPy reals, never for ``bool``."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` as an int; :raises ValueError: unless it is an int ``>= minimum``."""
    if not is_int(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"`{name}` must be an int{bound}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, low: float = -math.inf, high: float = math.inf, *,
                 low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float in the interval; :raises ValueError: otherwise (the message shows the interval)."""
    ok = is_number(value) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"`{name}` must be a finite number in {interval}, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices: Collection[Any]) -> Any:
    """``value``; :raises ValueError: unless it is one of ``choices``."""
    try:
        ok = value in choices
    except TypeError:  # unhashable
        ok = False
    if not ok:
        raise ValueError(f"unknown `{name}` {value!r}; expected one of {tuple(choices)}")
    return value


def check_finite_weights(model: Any, what: str = "the model") -> None:
    """:raises ValueError: naming the first parameter or buffer of ``model`` (a ``torch.nn.Module``) that holds a NaN
    or an infinity (a model that scores at chance whatever is pruned, and whose bad weight no criterion ranks)."""
    import torch

    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in named:
            if t.is_floating_point() or t.is_complex():
                bad = int((~torch.isfinite(t.detach())).sum())
                if bad:
                    raise ValueError(f"{what}'s {kind} {name!r} holds {bad} NaN or infinite value(s) of {t.numel()}; "
                                     "a pruning env needs finite weights")
