"""Compressed model files: :func:`export` and :func:`load`, plus ``torch.nn.utils.prune``-compatible masks.

File layout (little-endian)::

    b"PRNNGYM\\0"  magic (8 bytes)
    uint32         format version (:data:`VERSION`)
    uint64         header length H
    H bytes        zlib-compressed UTF-8 JSON header: the tensor table (name, shape, dtype, layout, bits,
                   stream offsets) and the SHA-256 of the body
    body           zlib-compressed module skeleton, then each tensor's streams, byte-aligned

The module skeleton is the model pickled with every parameter and buffer on the ``meta`` device (no data), so
:func:`load` rebuilds an ordinary ``nn.Module`` of the same classes (a ``torch.fx.GraphModule`` of plain ``torch.nn``
modules for a structurally pruned model, which needs no user code) and fills in the decoded tensors. Unpickling can
run arbitrary code, exactly like ``torch.load(weights_only=False)``: only load files you trust. The checksum catches
corruption, not tampering.

Prunable weights are stored in the cheapest sparse layout of :mod:`prune_env.size` (so the file's streams are exactly
the sizes :func:`prune_env.size.model_size` reports), with values quantized as asked (:mod:`prune_env.quantize`);
everything else is stored raw.

>>> import os, tempfile
>>> model = nn.Sequential(nn.Embedding(12, 8), nn.Linear(8, 12))
>>> with torch.no_grad():
...     _ = model[1].weight[:, 4:].zero_()  # half of the head pruned
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = os.path.join(tmp, "model.prnn")
...     nbytes, restored = export(model, path), load(path)
...     nbytes == os.path.getsize(path)
True
>>> all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values()))
True
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .layers import find_prunable_layers, rnn_modules
from .quantize import Codes, encode
from .size import Encoding, encoding, resolve_bits

MAGIC = b"PRNNGYM\0"
VERSION = 1
_PREFIX = struct.Struct("<8sIQ")


class ExportError(ValueError):
    """A file that is not a readable prune-rnn-gym export (foreign, truncated, corrupt or from a newer version)."""


# ----------------------------------------------------------------------------------------------- writing
def export(model: nn.Module, path: str | os.PathLike, bits: int | dict[str, int] | None = None,
           method: str = "linear") -> int:
    """Write ``model`` compressed to ``path`` atomically (temp file in the same directory, then rename).

    Zeros in the prunable weights are the pruned weights. With ``bits`` the values are quantized first; a model the
    env already quantized with the same settings is stored unchanged (quantization is idempotent).

    :param model: the (pruned) model; it is not modified.
    :param path: the output file.
    :param bits: bits per value of every prunable weight (2..16, or 32 for float32), or a dict weight name -> bits
        (missing: 32); ``None``: float32.
    :param method: ``"linear"`` (per-output-channel symmetric) or ``"kmeans"`` (shared codebook per layer).
    :returns: the file size in bytes.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"`path` must be a file path, got the directory {str(path)!r}")
    names = [layer.name for layer in find_prunable_layers(model)]
    per_layer = resolve_bits(bits, names)
    body, header = _encode_model(model, per_layer, method)
    blob = zlib.compress(json.dumps(header, sort_keys=True).encode(), 9)
    data = _PREFIX.pack(MAGIC, VERSION, len(blob)) + blob + body
    _atomic_write(path, data)
    return len(data)


def _encode_model(model: nn.Module, per_layer: dict[str, int], method: str) -> tuple[bytes, dict]:
    chunks: list[bytes] = []
    offset = 0

    def put(data: bytes) -> list[int]:
        nonlocal offset
        chunks.append(data)
        span = [offset, len(data)]
        offset += len(data)
        return span

    skeleton = put(zlib.compress(_skeleton(model), 9))
    tensors, seen = [], {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in seen:  # tied weights: store once
            tensors.append({"name": name, "alias": seen[id(t)]})
            continue
        seen[id(t)] = name
        t = t.detach().cpu()
        if name in per_layer:
            tensors.append(_encode_weight(name, t, per_layer[name], method, put))
        else:
            tensors.append({"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                            "layout": "raw", "raw": put(_raw_bytes(t))})
    body = b"".join(chunks)
    header = {"format": "prune-rnn-gym", "version": VERSION, "torch": torch.__version__, "skeleton": skeleton,
              "tensors": tensors, "body_sha256": hashlib.sha256(body).hexdigest()}
    return body, header


def _skeleton(model: nn.Module) -> bytes:
    # deepcopy with every tensor pre-mapped to a data-free meta twin: shared (tied) tensors stay shared, which
    # ``model.to("meta")`` would not preserve.
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    skel = copy.deepcopy(model, memo)
    buf = io.BytesIO()
    torch.save(skel, buf)
    return buf.getvalue()


def _raw_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _encode_weight(name: str, w: torch.Tensor, bits: int, method: str, put) -> dict:
    codes: Codes | None = None
    if bits < 32:
        codes = encode(w, bits, method)
        w = codes.dequantize()
    enc = encoding(w, bits, method)
    entry = {"name": name, "shape": list(w.shape), "dtype": "float32", "layout": enc.layout, "bits": bits,
             "method": enc.method, "rel_bits": enc.rel_bits, "entries": enc.entries, "nnz": enc.nnz}
    flat_mask = (w.reshape(-1) != 0)
    positions = _stored_positions(flat_mask, enc)
    entry["index"] = put(_index_stream(flat_mask, enc))
    if codes is None:
        flat = w.reshape(-1).float()
        vals = torch.where(positions >= 0, flat[positions.clamp(min=0)], torch.zeros(()))
        values = vals.numpy().astype("<f4").tobytes()
        entry["table"] = put(b"")
    else:
        flat_codes = codes.codes.reshape(-1)
        zero = torch.full((1,), codes.zero_code(), dtype=torch.long)
        vals = torch.where(positions >= 0, flat_codes[positions.clamp(min=0)], zero)
        values = pack_bits(vals.numpy(), bits)
        entry["table"] = put(codes.table.float().numpy().astype("<f4").tobytes())
    entry["values"] = put(values)
    _check_streams(name, entry, enc)
    return entry


def _stored_positions(mask: torch.Tensor, enc: Encoding) -> torch.Tensor:
    """Flat positions of the stored entries; ``-1`` marks a relative-index filler (value 0)."""
    if enc.layout == "dense":
        return torch.arange(enc.numel)
    pos = torch.nonzero(mask).reshape(-1)
    if enc.layout == "bitmask":
        return pos
    skips = pos - torch.cat([pos.new_tensor([-1]), pos[:-1]]) - 1
    fillers = skips >> enc.rel_bits
    # Each kept value is preceded by its fillers: repeat -1 fillers[i] times before pos[i].
    reps = fillers + 1
    out = torch.full((int(reps.sum()),), -1, dtype=torch.long)
    out[torch.cumsum(reps, 0) - 1] = pos
    return out


def _index_stream(mask: torch.Tensor, enc: Encoding) -> bytes:
    if enc.layout == "dense":
        return b""
    if enc.layout == "bitmask":
        return np.packbits(mask.numpy().astype(np.uint8), bitorder="little").tobytes()
    pos = torch.nonzero(mask).reshape(-1)
    skips = pos - torch.cat([pos.new_tensor([-1]), pos[:-1]]) - 1
    step = 2 ** enc.rel_bits
    fillers = skips >> enc.rel_bits
    reps = fillers + 1
    stream = torch.full((int(reps.sum()),), step - 1, dtype=torch.long)
    stream[torch.cumsum(reps, 0) - 1] = skips - fillers * step
    return pack_bits(stream.numpy(), enc.rel_bits)


def _check_streams(name: str, entry: dict, enc: Encoding) -> None:
    # The accounting in size.py and the bytes written must never drift apart.
    got = {k: entry[k][1] for k in ("index", "values", "table")}
    if got != enc.stream_bytes:
        raise AssertionError(f"export of {name}: streams {got} differ from the size accounting {enc.stream_bytes}")


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack unsigned integers of ``bits`` bits each, LSB first, into bytes (the last byte zero-padded)."""
    v = np.asarray(values, dtype=np.uint64).reshape(-1, 1)
    planes = ((v >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` unsigned integers as int64."""
    planes = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[: count * bits]
    planes = planes.reshape(count, bits).astype(np.int64)
    return (planes << np.arange(bits, dtype=np.int64)).sum(axis=1)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------------------- reading
def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model :func:`export` wrote, in eval mode.

    Unpickles the module skeleton (arbitrary code can run, as with ``torch.load(weights_only=False)``): only load
    files you trust.

    :param path: the file.
    :param device: where to put the model.
    :raises ExportError: (a ``ValueError``) for a foreign, truncated, corrupt or newer-version file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"`path` {str(path)!r} is not a file")
    data = path.read_bytes()
    header, body = _read_header(data, path)
    try:
        model = _decode_model(header, body, torch.device(device))
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"{path}: corrupt prune-rnn-gym export ({type(exc).__name__}: {exc})") from None
    return model


def _read_header(data: bytes, path: Path) -> tuple[dict, bytes]:
    if len(data) < _PREFIX.size or data[:8] != MAGIC:
        raise ExportError(f"{path}: not a prune-rnn-gym export (bad magic bytes)")
    _, version, hlen = _PREFIX.unpack_from(data)
    if version > VERSION:
        raise ExportError(f"{path}: export format version {version} is newer than this library's ({VERSION}); "
                          "upgrade prune-rnn-gym")
    start = _PREFIX.size + hlen
    if start > len(data):
        raise ExportError(f"{path}: truncated prune-rnn-gym export (header runs past the end of the file)")
    try:
        header = json.loads(zlib.decompress(data[_PREFIX.size:start]).decode())
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: corrupt prune-rnn-gym export header ({exc})") from None
    body = data[start:]
    if not isinstance(header, dict) or hashlib.sha256(body).hexdigest() != header.get("body_sha256"):
        raise ExportError(f"{path}: corrupt prune-rnn-gym export (checksum mismatch)")
    return header, body


def _decode_model(header: dict, body: bytes, device: torch.device) -> nn.Module:
    def get(span: list[int]) -> bytes:
        return body[span[0]:span[0] + span[1]]

    model = torch.load(io.BytesIO(zlib.decompress(get(header["skeleton"]))), weights_only=False)
    model = model.to_empty(device="cpu")
    state: dict[str, torch.Tensor] = {}
    for entry in header["tensors"]:
        if "alias" in entry:
            state[entry["name"]] = state[entry["alias"]]
        elif entry["layout"] == "raw":
            dtype = getattr(torch, entry["dtype"])
            raw = bytearray(get(entry["raw"]))
            state[entry["name"]] = torch.frombuffer(raw, dtype=dtype).reshape(entry["shape"]).clone() if raw else \
                torch.empty(entry["shape"], dtype=dtype)
        else:
            state[entry["name"]] = _decode_weight(entry, get)
    model.load_state_dict(state)
    for entry in header["tensors"]:
        if "alias" in entry:  # to_empty() gave each use of a tied tensor its own copy: tie them again
            _retie(model, entry["name"], entry["alias"])
    model = model.to(device).eval()
    for m in rnn_modules(model):
        m.flatten_parameters()
    return model


def _retie(model: nn.Module, name: str, source: str) -> None:
    def resolve(full: str):
        mname, _, attr = full.rpartition(".")
        return (model.get_submodule(mname) if mname else model), attr

    owner, attr = resolve(name)
    src_owner, src_attr = resolve(source)
    setattr(owner, attr, getattr(src_owner, src_attr))


def _decode_weight(entry: dict, get) -> torch.Tensor:
    shape, bits = entry["shape"], entry["bits"]
    numel = int(np.prod(shape)) if shape else 1
    count = entry["entries"]
    if bits == 32:
        values = torch.from_numpy(np.frombuffer(get(entry["values"]), dtype="<f4").copy())
    else:
        codes = torch.from_numpy(unpack_bits(get(entry["values"]), bits, count))
        table = torch.from_numpy(np.frombuffer(get(entry["table"]), dtype="<f4").copy())
        values = None
    positions = _decode_positions(entry, get, numel)
    if bits < 32:
        if entry["method"] == "kmeans":
            values = table[codes]
        else:
            rows = shape[0] if shape else 1
            row_of = positions // max(1, numel // rows)
            values = (codes - (2 ** (bits - 1) - 1)).float() * table[row_of]
    flat = torch.zeros(numel)
    flat[positions] = values.float()
    return flat.reshape(shape)


def _decode_positions(entry: dict, get, numel: int) -> torch.Tensor:
    layout = entry["layout"]
    if layout == "dense":
        return torch.arange(numel)
    if layout == "bitmask":
        bitsarr = np.unpackbits(np.frombuffer(get(entry["index"]), dtype=np.uint8), bitorder="little")[:numel]
        return torch.from_numpy(np.flatnonzero(bitsarr).astype(np.int64))
    rel = entry["rel_bits"]
    skips = torch.from_numpy(unpack_bits(get(entry["index"]), rel, entry["entries"]))
    # Fillers decode to the position of a zero and carry the value 0, so they need no special case.
    return torch.cumsum(skips + 1, 0) - 1


# ----------------------------------------------------------------------------------------------- masks
def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``torch.nn.utils.prune``-compatible masks: prunable weight name -> float 0/1 tensor (0 where pruned).

    Apply them with :func:`apply_masks` (or ``torch.nn.utils.prune.custom_from_mask``) to fine-tune in your own
    training loop with the pruned weights held at zero.

    :param model: the pruned model.
    """
    params = dict(model.named_parameters())
    return {layer.name: (params[layer.name].detach() != 0).float() for layer in find_prunable_layers(model)}


def apply_masks(model: nn.Module, mask_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Attach ``mask_dict`` to ``model`` in place with ``torch.nn.utils.prune.custom_from_mask``; returns ``model``.

    :param model: the model to reparametrize (``weight`` becomes ``weight_orig * weight_mask``).
    :param mask_dict: parameter name -> 0/1 mask of the same shape, e.g. from :func:`masks`.
    """
    from torch.nn.utils import prune

    params = dict(model.named_parameters())
    for name, mask in mask_dict.items():
        if name not in params or params[name].shape != mask.shape:
            raise ValueError(f"`mask_dict`[{name!r}] matches no parameter of that shape in `model`")
        mname, _, pname = name.rpartition(".")
        prune.custom_from_mask(model.get_submodule(mname), pname, mask.to(params[name].device))
    return model
