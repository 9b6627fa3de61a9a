"""Atomic file writes: a file is either its old content or its complete new content, never half-written.

Every write goes to a fresh temporary file in the target's directory (the same filesystem, so the final rename is
atomic), is flushed and ``fsync``-ed, then ``os.replace``-d onto the target. On any failure, an interruption
between the write and the rename included, the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically (``str`` as UTF-8); the parent directory is created if missing.

    :param path: the file to write.
    :param data: its complete new content.
    :raises TypeError: if ``data`` is neither ``bytes`` nor ``str``.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    elif isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise TypeError(f"`data` must be bytes or str, got {type(data).__name__}")
    atomic_write_with(path, lambda f: f.write(data))


def atomic_write_with(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a binary file object and put what it wrote at ``path`` atomically.

    For writers that stream into a file object (``torch.save``, ``matplotlib``'s ``savefig``).

    :param path: the file to write; its parent directory is created if missing.
    :param write: writes the complete content into the file object it is given.
    """
    path = Path(os.fspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")  # unique: writers never share one
    try:
        with open(tmp, "xb") as f:  # honours the umask, unlike mkstemp's 0600
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write`).

    :param obj: tensors, state dicts and plain values.
    :param path: the file to write.
    """
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())


__all__ = ["atomic_save_torch", "atomic_write", "atomic_write_with"]
