"""Keyword options of the learning agents: a dataclass of fields, filled from ``agents.search(**kwargs)``."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def parse_options(cls: type[T], kwargs: dict[str, Any], agent: str) -> T:
    """``cls(**kwargs)``, with a clear error naming any option ``cls`` does not have.

    :param cls: the agent's dataclass of options.
    :param kwargs: the user's options.
    :param agent: the agent's name, for the message.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise ValueError(f"agent {agent!r} got unknown options {unknown}; valid: {sorted(names)}")
    return cls(**kwargs)
