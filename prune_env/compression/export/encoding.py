"""One prunable weight, sparse and quantized, as ordinary tensors: an ``index``, a ``values`` and a ``table`` stream.

The layout is the cheapest one :func:`prune_env.compression.size.encoding` finds (dense, bitmask or relative index),
so each stream holds exactly the bytes :attr:`prune_env.compression.size.Encoding.stream_bytes` accounts for:

- ``index``: ``uint8``; nothing (dense), one bit per value (bitmask, LSB first), or one ``rel_bits``-bit skip per
  stored entry (relative; a skip of ``2**rel_bits - 1`` with the value 0 is a filler, as in Deep Compression);
- ``values``: ``float32`` values (32 bits), or ``bits``-bit unsigned codes packed LSB first (``uint8``);
- ``table``: ``float32``; the per-row scales (linear quantization) or the ``2**bits``-entry codebook (k-means);
  nothing at 32 bits.

An empty stream is not stored. The entry describing the weight (shape, layout, bits, ...) is plain JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from prune_env.checks import is_int
from prune_env.compression.export.format import ExportError, short
from prune_env.compression.quantize import Codes, encode, qmax
from prune_env.compression.size import INDEX_LAYOUTS, MAX_RELATIVE_BITS, Encoding, encoding

STREAMS = ("index", "values", "table")
#: Largest weight a file may declare (a crafted shape must not ask for more memory than this many float32 values).
MAX_NUMEL = 1 << 32
#: The fields of a weight's entry, besides its name.
FIELDS = ("shape", "layout", "bits", "method", "rel_bits", "entries", "nnz")


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack unsigned integers of ``bits`` bits each, LSB first, into bytes (the last byte zero-padded)."""
    v = np.asarray(values, dtype=np.uint64).reshape(-1, 1)
    planes = ((v >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: Any, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` unsigned integers as int64 (``data``: bytes or a uint8 array)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    width = 8 if bits <= 8 else 16
    if bits == width:
        return raw[: count * bits // 8].view(f"<u{width // 8}").astype(np.int64)
    # Each value's bits, padded to a whole byte (or two) and packed again: uint8 work only.
    padded = np.zeros((count, width), dtype=np.uint8)
    padded[:, :bits] = np.unpackbits(raw, bitorder="little")[: count * bits].reshape(count, bits)
    return np.packbits(padded, axis=1, bitorder="little").view(f"<u{width // 8}").reshape(-1).astype(np.int64)


# ----------------------------------------------------------------------------------------------- writing
def encode_weight(w: torch.Tensor, bits: int, method: str) -> tuple[dict, dict[str, bytes]]:
    """``(entry, streams)`` of a weight: its JSON entry and the bytes of each stream (empty ones included).

    :param w: the weight (zeros are pruned), float, CPU.
    :param bits: bits per value (2..16 or 32).
    :param method: ``"linear"`` or ``"kmeans"`` for ``bits < 32``.
    """
    codes: Codes | None = None
    if bits < 32:
        codes = encode(w, bits, method)
        w = codes.dequantize()
    enc = encoding(w, bits, method)
    entry = {"shape": list(w.shape), "layout": enc.layout, "bits": bits, "method": enc.method,
             "rel_bits": enc.rel_bits, "entries": enc.entries, "nnz": enc.nnz}
    flat_mask = w.reshape(-1) != 0
    positions = _stored_positions(flat_mask, enc)
    streams = {"index": _index_stream(flat_mask, enc)}
    if codes is None:
        flat = w.reshape(-1).float()
        vals = torch.where(positions >= 0, flat[positions.clamp(min=0)], torch.zeros(()))
        streams["values"] = vals.numpy().astype("<f4").tobytes()
        streams["table"] = b""
    else:
        flat_codes = codes.codes.reshape(-1)
        zero = torch.full((1,), codes.zero_code(), dtype=torch.long)
        vals = torch.where(positions >= 0, flat_codes[positions.clamp(min=0)], zero)
        streams["values"] = pack_bits(vals.numpy(), bits)
        streams["table"] = codes.table.float().numpy().astype("<f4").tobytes()
    got = {k: len(v) for k, v in streams.items()}
    if got != enc.stream_bytes:  # the accounting in size.py and the bytes written must never drift apart
        raise AssertionError(f"streams {got} differ from the size accounting {enc.stream_bytes}")
    return entry, streams


def _stored_positions(mask: torch.Tensor, enc: Encoding) -> torch.Tensor:
    """Flat positions of the stored entries; ``-1`` marks a relative-index filler (value 0)."""
    if enc.layout == "dense":
        return torch.arange(enc.numel)
    pos = torch.nonzero(mask).reshape(-1)
    if enc.layout == "bitmask":
        return pos
    skips = pos - torch.cat([pos.new_tensor([-1]), pos[:-1]]) - 1
    reps = (skips >> enc.rel_bits) + 1  # each kept value is preceded by its fillers
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
    stream = torch.full((int((fillers + 1).sum()),), step - 1, dtype=torch.long)
    stream[torch.cumsum(fillers + 1, 0) - 1] = skips - fillers * step
    return pack_bits(stream.numpy(), enc.rel_bits)


# ----------------------------------------------------------------------------------------------- reading
def check_entry(entry: Any, name: str) -> Encoding:
    """The :class:`~prune_env.compression.size.Encoding` a file's weight entry declares, every field checked.

    :raises ExportError: naming the weight, for a malformed or inconsistent entry.
    """
    if not isinstance(entry, Mapping) or not all(k in entry for k in FIELDS):
        raise ExportError(f"malformed entry for the weight {short(name)}")
    shape, layout, bits, method = entry["shape"], entry["layout"], entry["bits"], entry["method"]
    rel_bits, entries, nnz = entry["rel_bits"], entry["entries"], entry["nnz"]
    ok = (isinstance(shape, list) and len(shape) <= 8 and all(is_int(s) and 0 <= s <= MAX_NUMEL for s in shape)
          and layout in INDEX_LAYOUTS and is_int(bits) and (2 <= bits <= 16 or bits == 32)
          and method in (("float",) if bits == 32 else ("linear", "kmeans") if bits <= 8 else ("linear",))
          and is_int(rel_bits) and (1 <= rel_bits <= MAX_RELATIVE_BITS if layout == "relative" else rel_bits == 0)
          and is_int(entries) and is_int(nnz) and 0 <= nnz <= entries)
    numel = math.prod(shape) if ok else 0
    ok = ok and numel <= MAX_NUMEL and entries <= (numel if layout != "relative" else MAX_NUMEL)
    ok = ok and (layout != "dense" or entries == numel) and (layout != "bitmask" or entries == nnz)
    if not ok:
        raise ExportError(f"malformed entry for the weight {short(name)}: {short(dict(entry))}")
    rows = shape[0] if shape else 1
    return Encoding(numel, rows, nnz, layout, rel_bits, entries, bits, method)


def decode_weight(entry: Mapping, streams: Mapping[str, Any], name: str) -> torch.Tensor:
    """The float32 weight an entry and its streams hold.

    :param entry: the weight's JSON entry.
    :param streams: stream name -> bytes or a uint8 array (a missing stream is empty).
    :param name: the weight's name, for error messages.
    :raises ExportError: if the streams do not have the lengths the entry implies, or decode to positions outside
        the weight.
    """
    enc = check_entry(entry, name)
    data = {k: np.frombuffer(streams[k], dtype=np.uint8) if k in streams else np.zeros(0, np.uint8) for k in STREAMS}
    got = {k: int(v.size) for k, v in data.items()}
    if got != enc.stream_bytes:
        raise ExportError(f"the streams of the weight {short(name)} hold {got} bytes; its entry implies "
                          f"{enc.stream_bytes}")
    shape, bits, numel = entry["shape"], enc.bits, enc.numel
    positions = _decode_positions(enc, data["index"])
    if positions.numel() != enc.entries or (positions.numel() and not 0 <= int(positions.min()) <= int(
            positions.max()) < numel):
        raise ExportError(f"the index of the weight {short(name)} points outside it")
    if bits == 32:
        values = torch.from_numpy(data["values"].view("<f4").astype(np.float32))
    else:
        codes = torch.from_numpy(unpack_bits(data["values"], bits, enc.entries))
        table = torch.from_numpy(data["table"].view("<f4").astype(np.float32))
        if enc.method == "kmeans":
            values = table[codes]
        else:
            row_of = positions // max(1, numel // enc.rows)
            values = (codes - qmax(bits)).float() * table[row_of]
    flat = torch.zeros(numel)
    flat[positions] = values.float()
    return flat.reshape(shape)


def _decode_positions(enc: Encoding, index: np.ndarray) -> torch.Tensor:
    if enc.layout == "dense":
        return torch.arange(enc.numel)
    if enc.layout == "bitmask":
        bitsarr = np.unpackbits(index, bitorder="little")[: enc.numel]
        return torch.from_numpy(np.flatnonzero(bitsarr).astype(np.int64))
    skips = torch.from_numpy(unpack_bits(index, enc.rel_bits, enc.entries))
    # Fillers decode to the position of a zero and carry the value 0, so they need no special case.
    return torch.cumsum(skips + 1, 0) - 1
