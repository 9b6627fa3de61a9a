"""Size accounting for pruned models, in bits.

A pruned layer of ``n`` weights with ``nnz`` survivors is stored as its ``nnz`` values plus a sparse index, in
whichever of two formats is smaller:

- a bitmask: ``n`` bits;
- a coordinate list: ``nnz`` indices of ``ceil(log2(n))`` bits each.

Everything that is not pruned (biases, unpruned layers) counts at full precision. ``value_bits`` is 32 for
float32 weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def index_bits(numel: int, nnz: int) -> int:
    """Bits of the cheaper sparse index for ``nnz`` survivors among ``numel`` weights (0 when dense)."""
    if nnz == numel:
        return 0
    return min(numel, nnz * max(1, math.ceil(math.log2(numel))))


def layer_bits(numel: int, nnz: int, value_bits: int = 32) -> int:
    """Bits to store one pruned layer: its values plus its sparse index."""
    return nnz * value_bits + index_bits(numel, nnz)


def model_size_bytes(total_params: int, numels: Sequence[int], pruned: Sequence[int],
                     value_bits: int = 32) -> int:
    """Bytes of a model with ``total_params`` parameters whose prunable layers lost ``pruned[i]`` weights."""
    other = total_params - int(sum(numels))
    bits = other * 32 + sum(layer_bits(int(n), int(n) - int(k), value_bits) for n, k in zip(numels, pruned))
    return math.ceil(bits / 8)
