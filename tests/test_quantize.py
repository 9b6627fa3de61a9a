"""Quantization: error bounds, zeros kept, idempotence, k-means codebooks, the env's quantize mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import kind_for, tiny_task

from prune_env import PruneRNNEnv
from prune_env.compression.quantize import BITS, encode, qmax, quantize


def _sparse_weight(seed: int = 0, shape=(24, 40)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    w[w.abs() < 0.6] = 0
    return w


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8, 16])
def test_linear_error_bound_and_levels(bits):
    w = _sparse_weight(bits)
    codes = encode(w, bits, "linear")
    q = codes.dequantize()
    scale = codes.table[:, None]
    # s/2 from rounding to the grid, plus float32 rounding of w / s and q * s (matters at 16 bits).
    assert torch.all((w - q).abs() <= scale / 2 + 4 * torch.finfo(torch.float32).eps * w.abs())
    assert torch.all(q[w == 0] == 0)  # pruned weights stay zero
    assert int(codes.codes.max()) <= 2 * qmax(bits) and int(codes.codes.min()) >= 0
    for row in q:
        assert torch.unique(row).numel() <= 2 ** bits - 1


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_kmeans_codebook_nearest_and_better_than_linear_init(bits):
    w = _sparse_weight(10 + bits)
    codes = encode(w, bits, "kmeans")
    q = codes.dequantize()
    nz = w != 0
    assert torch.all(q[~nz] == 0) and codes.table[0] == 0
    assert torch.unique(q[nz]).numel() <= 2 ** bits - 1
    centroids = codes.table[1:]
    nearest = (w[nz][:, None] - centroids[None, :]).abs().min(dim=1).values
    torch.testing.assert_close((w[nz] - q[nz]).abs(), nearest)
    init = torch.linspace(float(w[nz].min()), float(w[nz].max()), 2 ** bits - 1)
    init_err = (w[nz][:, None] - init[None, :]).abs().min(dim=1).values
    assert ((w[nz] - q[nz]) ** 2).mean() <= (init_err ** 2).mean() + 1e-12


@pytest.mark.parametrize("method", ["linear", "kmeans"])
@pytest.mark.parametrize("bits", [2, 4, 8, 16, 32])
def test_quantize_is_idempotent(method, bits):
    for seed in range(5):
        q = quantize(_sparse_weight(seed), bits, method)
        assert torch.equal(quantize(q, bits, method), q)


@pytest.mark.parametrize("bad", [1, 17, 33, 0, 3.0, True, "8"])
def test_bad_bits(bad):
    with pytest.raises(ValueError, match="bits"):
        quantize(torch.ones(2, 2), bad)


def test_bad_method():
    with pytest.raises(ValueError, match="method"):
        quantize(torch.ones(2, 2), 4, "log")


def test_quantized_kind_never_compounds():
    task = tiny_task("gru")
    ka, a = kind_for(task.model, quantize="linear")
    kb, b = kind_for(task.model, quantize="linear")
    n = len(ka.params)
    counts = [la.numel // 3 for la in ka.layers]
    for bits in (2, 8, 4):
        ka.apply([c + bits for c in counts], [bits] * n)
    kb.apply([c + 4 for c in counts], [4] * n)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, p) for pa, p in zip(a.parameters(), task.model.parameters()))
    ka.reset()
    for pa, p in zip(a.parameters(), task.model.parameters()):
        assert torch.equal(pa, p)


@pytest.mark.parametrize("mode", ["joint", "sequential"])
def test_env_quantize_mode(mode):
    task = tiny_task("lstm")
    env = PruneRNNEnv(task, quantize=True, mode=mode, target_sparsity=0.5)
    n = env.num_layers
    assert env.action_space.shape == ((2 * n,) if mode == "joint" else (2,))
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    bits = {name: BITS[i % len(BITS)] for i, name in enumerate(env.layer_names)}
    alloc = dict.fromkeys(env.layer_names, 0.5)
    action = env.action_for(alloc, bits)
    if mode == "joint":
        _, reward, _, _, info = env.step(action)
    else:
        for i in range(n):
            _, reward, _, _, info = env.step(np.array([action[i], action[n + i]], dtype=np.float32))
    assert info["layer_bits"] == bits and env.bit_allocation == bits
    assert 0 < info["size_fraction"] < 1
    # Budget + quantize: the size term still applies, so bit-widths matter to the reward.
    assert info["reward_terms"]["size_term"] == pytest.approx(-0.5 * info["size_fraction"])
    pm = env.pruned_model()
    assert task.evaluate(pm)["score"] == info["score"]
    for name, p in pm.named_parameters():
        if name in bits and bits[name] < 32:
            assert torch.equal(quantize(p, bits[name]), p)
