"""The tensor table: every tensor of a model, how it is stored, and its decoded value.

Each entry names one tensor of the model: a state dict entry, or (with a ``role``) a non-persistent buffer
(``"buffer"``) or a tensor attribute (``"attribute"``), which the state dict leaves out. An entry is one of:

- ``{"name": n, "alias": m}``: the same tensor as ``m`` (tied weights are stored once);
- ``{"name": n}``: stored raw, as the ``safetensors`` tensor ``n`` (its own dtype and shape);
- ``{"name": n, "shape": ..., "layout": ..., "bits": ..., ...}``: a prunable weight, sparse and quantized
  (:mod:`prune_env.compression.export.encoding`), as the tensors ``n:index``, ``n:values`` and ``n:table`` (an
  empty stream is left out).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from prune_env.compression.export.encoding import STREAMS, decode_weight, encode_weight
from prune_env.compression.export.format import ExportError, short

ROLES = (None, "buffer", "attribute")


def stream_key(name: str, stream: str) -> str:
    """The ``safetensors`` name of one stream of the encoded weight ``name``."""
    return f"{name}:{stream}"


def store(model: nn.Module, per_layer: dict[str, int], method: str,
          extras: list[tuple[str, torch.Tensor, str]]) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """``(entries, tensors)``: the table and the ``safetensors`` tensors of ``model``'s state and ``extras``.

    :param model: the model.
    :param per_layer: prunable weight name -> bits (these are encoded; everything else is stored raw).
    :param method: quantization method for ``bits < 32``.
    :param extras: ``(name, tensor, role)`` of tensors the state dict leaves out.
    """
    entries: list[dict] = []
    stored: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    state = [(name, t, None) for name, t in model.state_dict(keep_vars=True).items()]
    for name, t, role in state + extras:
        tag = {} if role is None else {"role": role}
        if id(t) in seen:
            entries.append({"name": name, "alias": seen[id(t)], **tag})
            continue
        seen[id(t)] = name
        t = t.detach().cpu()
        if name in per_layer and role is None:
            entry, streams = encode_weight(t.float(), per_layer[name], method)
            entries.append({"name": name, **entry})
            for k, data in streams.items():
                if data:
                    dtype = torch.float32 if k == "table" or (k == "values" and entry["bits"] == 32) else torch.uint8
                    _put(stored, stream_key(name, k), torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype))
        else:
            entries.append({"name": name, **tag})
            _put(stored, name, t.contiguous().clone())
    return entries, stored


def _put(stored: dict[str, torch.Tensor], key: str, t: torch.Tensor) -> None:
    if key in stored:  # e.g. a tensor literally named "w:index" beside an encoded weight "w"
        raise ValueError(f"cannot export: two tensors would be stored as {key!r}; rename one of them")
    stored[key] = t


def load_table(entries: Any, stored: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, roles)``: name -> decoded tensor (tied names share one tensor) and name -> role.

    :raises ExportError: for a malformed entry, a missing or unused stored tensor, or streams that do not decode.
    """
    if not isinstance(entries, list):
        raise ExportError("malformed tensor table")
    tensors: dict[str, torch.Tensor] = {}
    roles: dict[str, Any] = {}
    used: set[str] = set()
    for entry in entries:
        name = entry.get("name") if isinstance(entry, dict) else None
        role = entry.get("role") if isinstance(entry, dict) else None
        if not isinstance(name, str) or name in tensors or role not in ROLES:
            raise ExportError(f"malformed tensor table entry {short(entry)}")
        if "alias" in entry:
            if entry["alias"] not in tensors:
                raise ExportError(f"the tensor {short(name)} is an alias of {short(entry['alias'])}, stored nowhere "
                                  "before it")
            tensors[name] = tensors[entry["alias"]]
        elif "layout" in entry:
            keys = {k: stream_key(name, k) for k in STREAMS if stream_key(name, k) in stored}
            used.update(keys.values())
            tensors[name] = decode_weight(entry, {k: _bytes(stored[key]) for k, key in keys.items()}, name)
        else:
            if name not in stored:
                raise ExportError(f"the tensor table names {short(name)}, which the file does not hold")
            used.add(name)
            tensors[name] = stored[name]
        roles[name] = role
    unused = sorted(set(stored) - used)
    if unused:
        raise ExportError(f"the file holds tensors the table does not name: {short(unused[:5])}")
    return tensors, roles


def _bytes(t: torch.Tensor) -> np.ndarray:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy()


class Tensors:
    """The decoded table, handed out to a module tree: each tensor once, in the role the table says."""

    def __init__(self, tensors: dict[str, torch.Tensor], roles: dict[str, Any]):
        self.tensors, self.roles, self.used = tensors, roles, set()
        self.params: dict[int, nn.Parameter] = {}  # tied parameters stay one Parameter

    def take(self, name: str, role: str | None) -> torch.Tensor:
        if name not in self.tensors or self.roles[name] != role:
            raise ExportError(f"the module description names the tensor {short(name)}, which the tensor table lacks")
        self.used.add(name)
        return self.tensors[name]

    def param(self, name: str, requires_grad: Any) -> nn.Parameter:
        t = self.take(name, None)
        if id(t) not in self.params:
            if not (t.is_floating_point() or t.is_complex()):
                raise ExportError(f"the parameter {short(name)} is stored with the non-float dtype {t.dtype}")
            self.params[id(t)] = nn.Parameter(t, requires_grad=bool(requires_grad))
        return self.params[id(t)]

    def unused(self) -> list[str]:
        return sorted(set(self.tensors) - self.used)


def fill(model: nn.Module, tensors: dict[str, torch.Tensor], roles: dict[str, Any]) -> nn.Module:
    """Load the state dict entries of the table into ``model`` (strict), in place.

    :raises ExportError: if they do not fit the model.
    """
    state = {n: t for n, t in tensors.items() if roles[n] is None}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ExportError(f"the stored tensors do not fit the model passed as `model`: {exc}") from None
    return model
