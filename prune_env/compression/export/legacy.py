"""Files of format versions 1 and 2 (their own container, starting with ``PRNNGYM\\0``): tensors only, or refused.

Layout (little-endian): magic (8 bytes), uint32 version, uint64 header length ``H``, ``H`` bytes of zlib-compressed
JSON (the tensor table with byte spans into the body, the body's SHA-256), then the body.

- Version 2 stored the module as a call graph that the loader interpreted; that interpreter could be steered into
  running code, so a version-2 module is never read. Its tensors are: ``load(path, model=...)``.
- Version 1 stored the module as a pickle, which runs arbitrary code: read only with ``trust_pickle=True``, for a
  file you trust; its tensors alone read with ``model=``.

Re-export with this version to get a file that loads on its own.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from typing import Any

import numpy as np
import torch
from torch import nn

from prune_env.compression.export.encoding import STREAMS, decode_weight
from prune_env.compression.export.format import LEGACY_MAGIC, ExportError, short

_PREFIX = struct.Struct("<8sIQ")
_MAX_HEADER = 1 << 28
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8,
           "bool": torch.bool}

REFUSED_V2 = ("a version-2 export, whose module is a stored call graph: this version no longer interprets such "
              "graphs (a crafted one could run code), so it is refused. Re-export the model with this version "
              "(export(model, path) on the model you exported), or read only its tensors into a model of the same "
              "architecture: load(path, model=MyModel(...))")
REFUSED_V1 = ("a version-1 export, whose module is a pickle: loading it can run arbitrary code, so it is refused. "
              "Re-export the model with this version, pass model=<a model of the same architecture> to read only its "
              "tensors, or, only for a file you trust, load(path, trust_pickle=True)")


def read(data: bytes) -> tuple[int, dict, bytes]:
    """``(version, header, body)`` of a version-1 or -2 file (its checksum checked).

    :raises ExportError: for a truncated, corrupt or newer file.
    """
    if len(data) < _PREFIX.size or data[:8] != LEGACY_MAGIC:
        raise ExportError("not a prune-rnn-gym export (bad magic bytes)")
    _, version, hlen = _PREFIX.unpack_from(data)
    if version not in (1, 2):
        raise ExportError(f"corrupt prune-rnn-gym export (format version {version} in the version-1/2 container)")
    start = _PREFIX.size + hlen
    if start > len(data):
        raise ExportError("truncated prune-rnn-gym export (header runs past the end of the file)")
    try:
        inflate = zlib.decompressobj()
        text = inflate.decompress(data[_PREFIX.size:start], _MAX_HEADER)
        if inflate.unconsumed_tail:
            raise ValueError(f"header larger than {_MAX_HEADER} bytes")
        header = json.loads(text.decode())
    except (zlib.error, ValueError, RecursionError) as exc:
        raise ExportError(f"corrupt prune-rnn-gym export header ({type(exc).__name__})") from None
    body = data[start:]
    if not isinstance(header, dict) or hashlib.sha256(body).hexdigest() != header.get("body_sha256"):
        raise ExportError("corrupt prune-rnn-gym export (checksum mismatch)")
    return version, header, body


def tensors(header: dict, body: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensor table of a version-1 or -2 file: name -> tensor (tied names share one) and name -> role."""
    def span(s: Any) -> np.ndarray:
        if not (isinstance(s, list) and len(s) == 2 and all(isinstance(i, int) and i >= 0 for i in s)
                and s[0] + s[1] <= len(body)):
            raise ExportError(f"a stream span {short(s)} lies outside the body")
        return np.frombuffer(body, dtype=np.uint8, count=s[1], offset=s[0])

    out: dict[str, torch.Tensor] = {}
    roles: dict[str, Any] = {}
    entries = header.get("tensors")
    for entry in entries if isinstance(entries, list) else ():
        name = entry.get("name") if isinstance(entry, dict) else None
        role = entry.get("role") if isinstance(entry, dict) else None
        if not isinstance(name, str) or name in out or role not in (None, "buffer", "attribute"):
            raise ExportError(f"malformed tensor table entry {short(entry)}")
        if "alias" in entry:
            if entry["alias"] not in out:
                raise ExportError(f"malformed tensor table entry {short(entry)}")
            out[name] = out[entry["alias"]]
        elif entry.get("layout") == "raw":
            dtype, shape = _DTYPES.get(entry.get("dtype")), entry.get("shape")
            if dtype is None or not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
                raise ExportError(f"malformed tensor table entry {short(entry)}")
            raw = span(entry.get("raw"))
            out[name] = torch.frombuffer(bytearray(raw.tobytes()), dtype=dtype).reshape(shape) if raw.size else \
                torch.zeros(shape, dtype=dtype)
        else:
            out[name] = decode_weight(entry, {k: span(entry.get(k)) for k in STREAMS}, name)
        roles[name] = role
    return out, roles


def unpickle_v1(header: dict, body: bytes, state: dict[str, torch.Tensor]) -> nn.Module:
    """A version-1 file's pickled skeleton, filled in: RUNS CODE FROM THE FILE (only with ``trust_pickle=True``)."""
    span = header["skeleton"]
    model = torch.load(io.BytesIO(zlib.decompress(body[span[0]:span[0] + span[1]])), weights_only=False)
    model = model.to_empty(device="cpu")
    model.load_state_dict(state)
    for entry in header["tensors"]:
        if "alias" in entry:  # to_empty() gave each use of a tied tensor its own copy: tie them again
            owner, attr = _resolve(model, entry["name"])
            src_owner, src_attr = _resolve(model, entry["alias"])
            setattr(owner, attr, getattr(src_owner, src_attr))
    return model


def _resolve(model: nn.Module, full: str) -> tuple[nn.Module, str]:
    mname, _, attr = full.rpartition(".")
    return (model.get_submodule(mname) if mname else model), attr
