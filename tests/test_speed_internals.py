"""What keeps a step at one forward pass, checked without timing: no model copy, no sort, no statistics, masks
applied in place, bounded memory. (Timings live in benchmarks/env_speed.py and benchmarks/vector_speed.py.)"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from tiny import tiny_task

import prune_env.envs.env as env_module
from prune_env import PruneRNNEnv, PruneRNNVectorEnv


def _run_episodes(env, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        env.reset()
        done = False
        while not done:
            _, _, done, _, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))


def _forbid(*targets: str):
    """Patch each dotted target to raise if called."""
    patches = [mock.patch(t, side_effect=AssertionError(f"{t} called during a step")) for t in targets]
    return patches


@pytest.mark.parametrize("mode", ["joint", "sequential"])
def test_steps_copy_no_model_sort_nothing_and_recompute_no_statistics(mode):
    env = PruneRNNEnv(tiny_task("lstm"), mode=mode, target_sparsity=0.5, device="cpu")
    env.reset(seed=0)
    _run_episodes(env, 1)  # warm
    forbidden = ["torch.sort", "torch.argsort", "torch.Tensor.sort", "torch.Tensor.argsort",
                 "prune_env.pruning.analysis.raw_layer_stats", "prune_env.pruning.analysis.compute_gradients",
                 "prune_env.pruning.analysis.prune_order", "prune_env.pruning.analysis.layer_features",
                 "prune_env.pruning.analysis.size_table",
                 "prune_env.pruning.analysis._compute"]
    patches = _forbid(*forbidden)
    with mock.patch.object(env_module.copy, "deepcopy", side_effect=AssertionError("deepcopy in a step")):
        for p in patches:
            p.start()
        try:
            _run_episodes(env, 3)
        finally:
            for p in patches:
                p.stop()


def test_masks_are_applied_in_place_and_only_the_changed_weights_move():
    env = PruneRNNEnv(tiny_task("gru"), target_sparsity=0.5, device="cpu")
    params = env.kind.params
    ptrs = [p.data_ptr() for p in params]
    env.reset(seed=0)
    first = [p.detach().clone() for p in params]
    env.step(np.full(env.action_space.shape, -0.5, np.float32))
    after = [p.detach().clone() for p in params]
    assert [p.data_ptr() for p in params] == ptrs  # the same storage: edited in place, never replaced
    for i, (a, b) in enumerate(zip(first, after)):
        changed = int((a != b).sum())
        k = int(env.counts[i])
        assert changed <= k  # only pruned weights changed (exact zeros in the dense weights stay unchanged)
        assert int((b.reshape(-1)[env.analysis.orders[i][:k]] != 0).sum()) == 0


def test_vector_env_steps_make_no_model_copies():
    venv = PruneRNNVectorEnv(tiny_task("gru"), 3, device="cpu", batched=True, autoreset_mode="SameStep")
    venv.reset(seed=0)
    venv.step(venv.action_space.sample())
    with mock.patch("copy.deepcopy", side_effect=AssertionError("deepcopy in a step")), \
            mock.patch.object(env_module.copy, "deepcopy", side_effect=AssertionError("deepcopy in a step")):
        for _ in range(3):
            venv.step(venv.action_space.sample())


def test_batched_vector_env_never_masks_the_sub_env_models():
    """Masks are applied lazily, when a model is read; the batched pass reads none of the sub-envs' models."""
    task = tiny_task("gru")
    venv = PruneRNNVectorEnv(task, 3, target_sparsity=0.5, device="cpu", batched=True, autoreset_mode="SameStep")
    venv.reset(seed=0)
    _, _, _, _, infos = venv.step(venv.action_space.sample())
    assert all(env.kind.counts == [0] * env.num_layers for env in venv.envs)
    single = PruneRNNEnv(task, target_sparsity=0.5, device="cpu")
    single.reset()
    _, _, _, _, ref = single.step(venv.envs[0].action_for(venv.envs[0].allocation))
    assert single.kind.counts == single.counts.tolist()  # scored one by one: masked just before scoring
    assert ref["size_bytes"] == infos["final_info"]["size_bytes"][0]


def test_sub_envs_share_the_analysis_but_not_the_model():
    venv = PruneRNNVectorEnv(tiny_task("lstm"), 3, device="cpu", batched=False)
    a, b = venv.envs[0], venv.envs[1]
    assert a.analysis is b.analysis is venv.template.analysis and a.task is b.task
    assert a.kind.orders[0] is b.kind.orders[0]  # read-only prune orders on the CPU: one copy for all
    assert a.kind.dense[0] is b.kind.dense[0]
    assert a.kind.params[0] is not b.kind.params[0]
    assert a.kind.params[0].data_ptr() != b.kind.params[0].data_ptr()


@pytest.mark.parametrize("steps", [300, pytest.param(10_000, marks=pytest.mark.slow)])
def test_rss_does_not_grow_over_many_steps(steps):
    psutil = pytest.importorskip("psutil")
    env = PruneRNNEnv(tiny_task("gru"), target_sparsity=0.5, device="cpu")
    env.reset(seed=0)
    _run_episodes(env, 50)  # warm-up: allocator pools, lazy imports
    proc = psutil.Process()
    before = proc.memory_info().rss
    _run_episodes(env, steps)
    growth = proc.memory_info().rss / before - 1.0
    assert growth < 0.05, f"RSS grew {100 * growth:.1f}% over {steps} steps"


def test_unpruning_restores_the_exact_dense_weights():
    env = PruneRNNEnv(tiny_task("gru"), target_sparsity=0.7, device="cpu")
    dense = [p.detach().clone() for p in env.kind.params]
    env.reset(seed=0)
    env.step(env.action_space.sample())
    assert any(not torch.equal(p, d) for p, d in zip(env.kind.params, dense))
    env.kind.apply([0] * env.num_layers)  # what the next episode does to a layer it prunes less
    for p, d in zip(env.kind.params, dense):
        assert torch.equal(p, d)
