"""Exact size accounting of compressed models, in bits: the same numbers :func:`prune_env.compression.export` writes.

A prunable weight (see :func:`prune_env.find_prunable_layers`) of ``n`` values is stored as a sparse index plus
its stored values, whichever of three layouts is smallest:

- ``dense``: every value, zeros included (no index);
- ``bitmask``: ``n`` bits, then the nonzero values;
- ``relative``: per stored entry, the number of zeros skipped since the previous one in ``b`` bits (``b`` chosen per
  layer, 1..16). A gap longer than ``2**b - 1`` is bridged by filler entries that store the value 0, as in Deep
  Compression, so fillers cost an index and a value each.

Values take ``bits`` each (32: float32), plus the quantization table (float32 scales per output row for linear
quantization, the ``2**bits``-entry float32 codebook for k-means; see :mod:`prune_env.compression.quantize`). Every
other tensor (biases, buffers, non-prunable weights) is stored raw at its dtype's width. A zero produced by quantization
counts as pruned, exactly as the exporter sees it.

Each of a layer's streams (index, values, table) is padded to whole bytes in a file; :attr:`Encoding.stream_bytes`
gives those lengths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from prune_env.compression.quantize import check_bits, check_method, effective_method, table_bits
from prune_env.pruning.layers import find_prunable_layers

INDEX_LAYOUTS = ("dense", "bitmask", "relative")
MAX_RELATIVE_BITS = 16
#: Weights up to this many values get a :func:`size_table` in the env (8 bytes per value, built in about 0.6 s
#: per million values); larger ones are encoded per step, where the forward pass dwarfs it anyway.
SIZE_TABLE_MAX_NUMEL = 1 << 22


@dataclass(frozen=True)
class Encoding:
    """How one prunable weight is stored.

    :param numel: values in the weight.
    :param rows: output rows (first axis), for per-row scales.
    :param nnz: nonzero values.
    :param layout: one of :data:`INDEX_LAYOUTS`.
    :param rel_bits: bits per relative index (``relative`` only, else 0).
    :param entries: stored values (``numel`` for dense, ``nnz`` for bitmask, ``nnz`` + fillers for relative).
    :param bits: bits per value (32 = float32).
    :param method: ``"float"``, ``"linear"`` or ``"kmeans"``.
    """

    numel: int
    rows: int
    nnz: int
    layout: str
    rel_bits: int
    entries: int
    bits: int
    method: str

    @property
    def index_bits(self) -> int:
        return {"dense": 0, "bitmask": self.numel, "relative": self.entries * self.rel_bits}[self.layout]

    @property
    def value_bits(self) -> int:
        return self.entries * self.bits

    @property
    def table_bits(self) -> int:
        return table_bits(self.rows, self.bits, self.method)

    @property
    def total_bits(self) -> int:
        return self.index_bits + self.value_bits + self.table_bits

    @property
    def stream_bytes(self) -> dict[str, int]:
        """Bytes of each stream in a file: index, values, table (each padded to whole bytes)."""
        return {"index": _bytes(self.index_bits), "values": _bytes(self.value_bits), "table": _bytes(self.table_bits)}


def _bytes(bits: int) -> int:
    return (bits + 7) // 8


def _kept_positions(flat: torch.Tensor) -> np.ndarray:
    """Flat positions of the nonzero entries of a 1-d tensor, as int64 numpy (no copy of a CPU float tensor)."""
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64, torch.bool):
        # A boolean mask first: numpy finds the nonzeros of a bool array about twice as fast as of a float one.
        return np.flatnonzero(flat.numpy() != 0)
    return torch.nonzero(flat).reshape(-1).cpu().numpy()


def _skips(pos: np.ndarray) -> np.ndarray:
    """Zeros skipped before each kept position (``pos`` sorted, non-empty)."""
    skips = np.empty_like(pos)
    skips[0] = pos[0]
    np.subtract(pos[1:], pos[:-1], out=skips[1:])
    skips[1:] -= 1
    return skips


def _fillers(skips: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Filler entries of a relative index for each bit-width in ``widths``: ``sum(skips >> b)``.

    For more than a few widths it is computed from the histogram of the skips: a weight of ``n`` values has fewer
    than ``sqrt(2 n)`` distinct skips, so that is one pass over the kept values plus a small matrix product.
    """
    if widths.size <= 2:
        return np.array([int((skips >> int(b)).sum()) for b in widths], dtype=np.int64)
    hist = np.bincount(skips)
    values = np.flatnonzero(hist)
    return (values[None, :] >> widths[:, None]) @ hist[values]


def encoding(weight: torch.Tensor, bits: int = 32, method: str = "linear") -> Encoding:
    """The cheapest layout of ``weight`` (its zeros are the pruned weights) at ``bits`` per value.

    Ties prefer dense, then bitmask, then the narrowest relative index, so the choice is deterministic.

    :param weight: the (already quantized, if ``bits < 32``) weight tensor.
    :param bits: bits per stored value.
    :param method: quantization method for ``bits < 32``.
    """
    check_bits(bits)
    method = effective_method(bits, check_method(method))
    pos = _kept_positions(weight.detach().reshape(-1))
    n, nnz = weight.numel(), int(pos.size)
    rows = weight.shape[0] if weight.dim() > 0 else 1
    # Candidates in tie-break order: dense, bitmask, relative 1..widest bits. A relative index stores at least
    # nnz entries, so widths of n / nnz bits or more never beat the bitmask; past the bit length of the longest
    # skip there are no fillers and wider indices only cost more.
    entries = [n, nnz]
    index = [0, n]
    useful = MAX_RELATIVE_BITS if nnz == 0 else min(MAX_RELATIVE_BITS, -(-n // nnz) - 1)
    widths = np.arange(1, 2)
    if nnz and useful >= 1:
        skips = _skips(pos)
        widths = np.arange(1, min(useful, max(1, int(skips.max()).bit_length())) + 1)
        rel = nnz + _fillers(skips, widths)
        entries += rel.tolist()
        index += (rel * widths).tolist()
    elif not nnz:
        entries.append(0)
        index.append(0)
    totals = [i + e * bits for i, e in zip(index, entries)]
    best = int(np.argmin(totals))  # the first minimum: the tie-break order above
    layout = ("dense", "bitmask", "relative")[min(best, 2)]
    rel_bits = int(widths[best - 2]) if best >= 2 else 0
    return Encoding(n, rows, nnz, layout, rel_bits, entries[best], bits, method)


def _nearest_greater(rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each ``i``, the nearest ``j < i`` and the nearest ``j > i`` with ``rank[j] > rank[i]``.

    ``-1`` (left) or ``n`` (right) where there is none. A max segment tree over the ranks, climbed and descended
    for all positions at once: ``O(log n)`` vectorised steps over a shrinking set of still-searching positions.
    """
    n = rank.size
    levels = max(1, (n - 1).bit_length())
    size = 1 << levels
    tree = np.full(2 * size + 1, np.iinfo(np.int64).min, dtype=np.int64)  # +1: the last leaf's right sibling
    tree[size:size + n] = rank
    h = size
    while h > 1:
        h //= 2
        tree[h:2 * h] = np.maximum(tree[2 * h:4 * h:2], tree[2 * h + 1:4 * h:2])
    out = []
    for side in (-1, 1):
        found = np.full(n, -1 if side < 0 else n, dtype=np.int64)
        idx = np.arange(n)
        v = idx + size
        for _ in range(levels):  # climb: the first sibling on this side whose subtree holds a greater rank
            sib = v + side
            hit = ((v & 1) == (1 if side < 0 else 0)) & (tree[sib] > rank[idx])
            u, who = sib[hit], idx[hit]
            for _ in range(levels):  # descend to the nearest leaf above the rank, from the near side
                inner = u < size
                if not inner.any():
                    break
                near = 2 * u[inner] + (1 if side < 0 else 0)
                u[inner] = np.where(tree[near] > rank[who[inner]], near, near + side)
            found[who] = u - size
            idx, v = idx[~hit], v[~hit] >> 1
            if not idx.size:
                break
        out.append(found)
    return out[0], out[1]


def size_table(dense: torch.Tensor, order: torch.Tensor, max_count: int) -> np.ndarray:
    """``encoding(w_k).total_bits`` of float32 weights for every count ``k`` in ``0..max_count`` at once.

    ``w_k`` is ``dense`` with its ``k`` first entries of ``order`` (flat indices, least important first) set to
    zero: what :class:`~prune_env.pruning.kinds.Unstructured` holds at count ``k``. Exactly the numbers of
    :func:`encoding`, so an env can read its stored size instead of scanning every weight per step.

    As ``k`` grows, removing a kept value merges the two gaps beside it into one: the gap between its nearest kept
    neighbours, which are its nearest neighbours of later removal rank. Each such gap lives over an interval of
    counts, so the fillers of a ``b``-bit relative index at every count are a prefix sum over these intervals.

    :param dense: the weight at count 0 (its zeros stay zero at every count).
    :param order: a permutation of the flat indices.
    :param max_count: the largest count needed.
    """
    flat = dense.detach().reshape(-1).cpu()
    n = flat.numel()
    rank = np.empty(n, dtype=np.int64)
    rank[order.cpu().numpy()] = np.arange(n)
    rank[(flat == 0).numpy()] -= n  # already zero: gone before count 0
    counts = np.arange(max_count + 1)
    nnz = n - np.searchsorted(np.sort(rank), counts, side="left")
    left, right = _nearest_greater(rank)
    never = np.iinfo(np.int64).max  # the sentinels on either side are never removed
    lo = np.maximum(rank + 1, 0)  # the merged gap exists from the count that removes the value ...
    hi = np.minimum(np.where(left >= 0, rank[np.maximum(left, 0)], never),
                    np.where(right < n, rank[np.minimum(right, n - 1)], never))  # ... until a neighbour goes
    keep = (right < n) & (lo <= np.minimum(hi, max_count))  # trailing zeros need no index entry
    lo, hi, gap = lo[keep], np.minimum(hi[keep], max_count) + 1, (right - left - 1)[keep]
    best = np.minimum(32 * n, n + 32 * nnz)  # dense, bitmask
    with np.errstate(divide="ignore"):
        useful = np.where(nnz > 0, np.minimum(MAX_RELATIVE_BITS, -(-n // np.maximum(nnz, 1)) - 1), 0)
    for b in range(1, MAX_RELATIVE_BITS + 1):
        use = useful >= b
        if not use.any():
            break
        first = int(np.argmax(use))  # useful widths only grow with the count: gaps that end earlier do not matter
        live = hi > first
        lo, hi, gap = np.maximum(lo[live], first), hi[live], gap[live]
        shifted = gap >> b
        delta = (np.bincount(lo, shifted, max_count + 2) - np.bincount(hi, shifted, max_count + 2))
        fillers = np.rint(np.cumsum(delta[:-1])).astype(np.int64)
        best = np.where(use, np.minimum(best, (nnz + fillers) * (b + 32)), best)
    return np.where(nnz > 0, best, 0)


@dataclass(frozen=True)
class SizeReport:
    """The stored size of a model.

    :param layers: prunable weight name -> :class:`Encoding`.
    :param other_bits: bits of every other tensor of the state dict, stored raw.
    """

    layers: dict[str, Encoding]
    other_bits: int

    @property
    def total_bits(self) -> int:
        return self.other_bits + sum(e.total_bits for e in self.layers.values())

    @property
    def total_bytes(self) -> int:
        """Bytes of the payload as written (every stream padded to whole bytes)."""
        return _bytes(self.other_bits) + sum(sum(e.stream_bytes.values()) for e in self.layers.values())


def model_size(model: nn.Module, bits: int | dict[str, int] | None = None, method: str = "linear") -> SizeReport:
    """The exact stored size of ``model`` (zeros in its prunable weights are pruned).

    :param model: the (pruned, quantized) model.
    :param bits: bits per value of every prunable weight, or a dict weight name -> bits (missing: 32); ``None``:
        float32.
    :param method: quantization method where bits < 32.
    """
    params = dict(model.named_parameters())
    names = [layer.name for layer in find_prunable_layers(model)]
    per_layer = resolve_bits(bits, names)
    layers = {n: encoding(params[n], per_layer[n], method) for n in names}
    seen = {id(params[n]) for n in names}
    other = 0
    for t in _unique_tensors(model):
        if id(t) not in seen:
            other += t.numel() * t.element_size() * 8
    return SizeReport(layers, other)


def dense_bits(model: nn.Module) -> int:
    """Bits of the model's state dict stored raw (no index, no quantization), each tensor counted once."""
    return sum(t.numel() * t.element_size() * 8 for t in _unique_tensors(model))


def _unique_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Parameters and persistent buffers, each shared tensor once."""
    out, seen = [], set()
    for t in model.state_dict(keep_vars=True).values():
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def resolve_bits(bits: int | dict[str, int] | None, names: list[str]) -> dict[str, int]:
    """Per-weight bit-widths from ``None`` (32), an int, or a dict (missing names: 32).

    :param bits: the user's request.
    :param names: prunable weight names.
    :raises ValueError: on an unknown name or a bad bit-width.
    """
    if bits is None:
        return dict.fromkeys(names, 32)
    if isinstance(bits, dict):
        unknown = sorted(set(bits) - set(names))
        if unknown:
            raise ValueError(f"`bits` names unknown weights {unknown}; prunable weights: {names}")
        return {n: check_bits(bits.get(n, 32), f"bits[{n!r}]") for n in names}
    b = check_bits(bits)
    return dict.fromkeys(names, b)


def size_bytes(model: nn.Module, bits: int | dict[str, int] | None = None, method: str = "linear") -> int:
    """``ceil(total_bits / 8)`` of :func:`model_size`: the ``size_bytes`` the env reports.

    A 10 x 100 float32 weight takes 4000 bytes dense. With 90 of its 100 columns pruned, the ``relative`` layout is
    the smallest: 100 gaps of 7 bits (88 bytes) plus 100 float32 values; 8-bit values need 100 bytes plus ten
    float32 row scales:

    >>> from torch import nn
    >>> lin = nn.Linear(100, 10, bias=False)
    >>> size_bytes(lin)
    4000
    >>> with torch.no_grad():
    ...     _ = lin.weight[:, 10:].zero_()
    >>> size_bytes(lin), size_bytes(lin, bits=8)
    (488, 228)
    """
    return math.ceil(model_size(model, bits, method).total_bits / 8)
