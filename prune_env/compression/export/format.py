"""The file container: a ``safetensors`` file whose metadata holds the JSON description of its content.

Layout (the ``safetensors`` format, written by the ``safetensors`` library): an unsigned 64-bit little-endian header
length ``N``, ``N`` bytes of JSON (each tensor's dtype, shape and byte span, and the string-to-string
``__metadata__``), then the tensors' bytes back to back. The metadata holds:

- ``"format"``: ``"prune-rnn-gym"``;
- ``"version"``: :data:`VERSION`, as a string;
- ``"description"``: JSON text: the tensor table (how each model tensor is stored), the module tree (or none, for a
  weights-only file), the torch version that wrote it and a SHA-256 digest of the tensors (it catches corruption,
  not tampering).

Reading parses JSON (:func:`json.loads`) and lets ``safetensors`` parse the tensors; nothing is unpickled, imported
or evaluated. Any ``safetensors`` reader can open the file: the state dict's raw tensors carry their own names,
dtypes and shapes; the compressed weights are ordinary ``uint8`` and ``float32`` streams (see
:mod:`prune_env.compression.export.encoding`).
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import safetensors.torch
import torch

FORMAT = "prune-rnn-gym"
#: 3: ``safetensors`` with a JSON description. 2 (a stored call graph) and 1 (a pickle) are no longer interpreted
#: (see :mod:`prune_env.compression.export.legacy`).
VERSION = 3
#: The first bytes of a version-1 or version-2 file (their own container).
LEGACY_MAGIC = b"PRNNGYM\0"
#: Largest JSON header accepted (a crafted header must not exhaust memory).
MAX_HEADER = 1 << 26


class ExportError(ValueError):
    """A file :func:`prune_env.compression.export.load` refuses: foreign, truncated, corrupt, from another format
    version, or naming something it does not rebuild (a class off the allowlist, an operation outside the closed
    set). The message names the reason."""


def short(v: Any) -> str:
    """``repr(v)``, cut to 80 characters (file content quoted in an error message)."""
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every stored tensor (name, dtype, shape and bytes, in name order): independent of the byte layout
    the ``safetensors`` writer picks."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def pack(tensors: dict[str, torch.Tensor], description: dict) -> bytes:
    """The file's bytes: ``tensors`` (contiguous CPU tensors) and ``description`` (JSON-able) in one
    ``safetensors`` buffer."""
    description = {**description, "data_sha256": digest(tensors)}
    metadata = {"format": FORMAT, "version": str(VERSION),
                "description": json.dumps(description, separators=(",", ":"), allow_nan=False)}
    return safetensors.torch.save(tensors, metadata=metadata)


def unpack(data: bytes) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(description, tensors)`` of a file written by :func:`pack`.

    :raises ExportError: for anything else: a foreign, truncated, corrupt or other-version file (a version-1 or
        version-2 file is recognised by the caller first, from :data:`LEGACY_MAGIC`).
    """
    if len(data) < 8:
        raise ExportError("not a prune-rnn-gym export (too short to hold a header)")
    (size,) = struct.unpack_from("<Q", data)
    if size > MAX_HEADER:
        raise ExportError(f"not a prune-rnn-gym export (a header of {size} bytes; at most {MAX_HEADER} are read)")
    if 8 + size > len(data):
        raise ExportError("truncated or not a prune-rnn-gym export (the header runs past the end of the file)")
    try:
        header = json.loads(data[8:8 + size].decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSON and Unicode errors are ValueErrors
        raise ExportError(f"not a prune-rnn-gym export (unreadable header: {type(exc).__name__})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ExportError("not a prune-rnn-gym export (a safetensors file without its metadata, or another file)")
    version = meta.get("version")
    if not (isinstance(version, str) and version.isdigit() and len(version) < 6):
        raise ExportError(f"corrupt prune-rnn-gym export (format version {short(version)})")
    if int(version) > VERSION:
        raise ExportError(f"export format version {version} is newer than this library's ({VERSION}); upgrade "
                          "prune-rnn-gym")
    if int(version) != VERSION:
        raise ExportError(f"corrupt prune-rnn-gym export (format version {version} in a version-{VERSION} "
                          "container)")
    try:
        description = json.loads(meta.get("description"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ExportError(f"corrupt prune-rnn-gym export (unreadable description: {type(exc).__name__})") from None
    if not isinstance(description, dict):
        raise ExportError("corrupt prune-rnn-gym export (the description is not a JSON object)")
    try:
        tensors = safetensors.torch.load(data)
    except BaseException as exc:  # the parser's own errors, and a panic of its native code (a BaseException)
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise ExportError(f"corrupt prune-rnn-gym export (tensors: {type(exc).__name__}: {short(str(exc))})") from None
    if digest(tensors) != description.get("data_sha256"):
        raise ExportError("corrupt prune-rnn-gym export (checksum mismatch)")
    return description, tensors
