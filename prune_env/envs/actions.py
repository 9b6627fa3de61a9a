"""The one mapping between actions in ``[-1, 1]`` and per-layer sparsities (and bit-widths), exact in float64.

An action ``a`` asks for sparsity ``s = (a + 1) / 2 * max_sparsity``: -1 keeps a layer dense, +1 prunes
``max_sparsity`` of it. A bit coordinate's ``[-1, 1]`` is split into equal bins over
:data:`~prune_env.compression.quantize.BITS`.
The env, the agents and :meth:`PruneRNNEnv.action_for <prune_env.PruneRNNEnv.action_for>` all use these functions.

>>> float(sparsity_to_action(0.49, 0.98)), float(action_to_sparsity(0.0, 0.98))
(0.0, 0.49)
>>> int(action_to_bits(1.0)[0]), float(bits_to_action([32])[0]) > 0.8
(32, True)
"""

from __future__ import annotations

import numpy as np

from prune_env.compression.quantize import BITS


def action_to_sparsity(action, max_sparsity: float) -> np.ndarray:
    """Requested sparsities for actions (clipped to ``[-1, 1]`` first), float64."""
    a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
    return (a + 1.0) / 2.0 * float(max_sparsity)


def sparsity_to_action(sparsity, max_sparsity: float) -> np.ndarray:
    """The actions that request ``sparsity`` (the inverse of :func:`action_to_sparsity`; clipped to [-1, 1])."""
    s = np.asarray(sparsity, dtype=np.float64)
    return np.clip(2.0 * s / float(max_sparsity) - 1.0, -1.0, 1.0)


def action_to_bits(action) -> np.ndarray:
    """Bit-widths for bit coordinates: ``[-1, 1]`` split into ``len(BITS)`` equal bins."""
    a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
    idx = np.minimum(((a + 1.0) / 2.0 * len(BITS)).astype(np.int64), len(BITS) - 1)
    return np.asarray(BITS, dtype=np.int64)[idx]


def bits_to_action(bits) -> np.ndarray:
    """The centre of each bit-width's bin (the inverse of :func:`action_to_bits`)."""
    idx = np.array([BITS.index(int(b)) for b in np.asarray(bits).reshape(-1)], dtype=np.float64)
    return (idx + 0.5) / len(BITS) * 2.0 - 1.0


def bits_array(bits: dict[str, int] | None, names: list[str]) -> np.ndarray:
    """Per-layer bit-widths from a dict layer name -> bits (missing layers: 32).

    :raises ValueError: for an unknown layer name or a bit-width not in :data:`~prune_env.compression.quantize.BITS`.
    """
    bits = bits or {}
    unknown = set(bits) - set(names)
    if unknown:
        raise ValueError(f"`bits` has unknown layers {sorted(unknown)}; layers: {names}")
    out = np.array([bits.get(n, 32) for n in names], dtype=np.int64)
    bad = [int(b) for b in out if b not in BITS]
    if bad:
        raise ValueError(f"`bits` values must be among {BITS}, got {bad}")
    return out
