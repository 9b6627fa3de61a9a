"""The shared one-off analysis and the pruning kinds behind one protocol."""

from __future__ import annotations

import dataclasses
import gc
import pickle

import numpy as np
import pytest
import torch
from tiny import tiny_task

from prune_env import PruneRNNEnv
from prune_env.pruning.analysis import _CACHE, analyse
from prune_env.pruning.kinds import HiddenUnit, PruningKind, Quantized, Unstructured


def test_analysis_is_computed_once_per_task_criterion_and_granularity():
    task = tiny_task("lstm")
    a = analyse(task)
    assert analyse(task) is a
    assert analyse(task, "gradient") is not a and analyse(task, granularity="hidden_unit") is not a
    envs = [PruneRNNEnv(task, target_sparsity=t) for t in (0.5, 0.8)]
    assert all(e.analysis is a for e in envs)
    assert analyse(tiny_task("lstm")) is not a  # another task object (same weights) is another entry


def test_analysis_is_frozen_and_pickles():
    a = analyse(tiny_task("gru"), granularity="hidden_unit")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.criterion = "gradient"
    with pytest.raises(ValueError):
        a.features[0, 0] = 1.0
    with pytest.raises(ValueError):
        a.numels[0] = 1
    b = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(a.features, b.features)
    assert a.layer_names == b.layer_names and a.total_params == b.total_params
    assert all(torch.equal(x, y) for x, y in zip(a.dense, b.dense))


def test_a_model_edited_in_place_is_analysed_afresh():
    task = tiny_task("gru")
    a = analyse(task)
    with torch.no_grad():
        task.model.head.weight.mul_(2.0)
    b = analyse(task)
    assert b is not a and not np.array_equal(a.features, b.features)


def test_the_cache_does_not_keep_a_task_alive():
    task = tiny_task("rnn")
    analyse(task)
    key = next(k for k, (ref, _) in _CACHE.items() if ref() is task)
    del task
    gc.collect()
    analyse(tiny_task("rnn"))  # the next analysis drops entries of collected tasks
    assert key not in _CACHE


@pytest.mark.parametrize("kw, cls", [({}, Unstructured), ({"quantize": True}, Quantized),
                                     ({"granularity": "hidden_unit"}, HiddenUnit)])
def test_every_kind_implements_the_protocol_and_sizes_from_counts(kw, cls):
    env = PruneRNNEnv(tiny_task("gru", hidden=8), target_sparsity=0.5, **kw)
    assert isinstance(env.kind, cls) and isinstance(env.kind, PruningKind)
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    counts = env.counts_for(env.allocation)
    bits = list(env.bit_allocation.values()) if env.quantize else None
    # the kind answers sizes from the counts: the same numbers whatever its model currently holds
    env.kind.reset()
    assert -(-env.kind.size_bits(counts, bits) // 8) == info["size_bytes"]
    assert env.total_params - env.kind.removed_params(counts) == info["nonzero_params"]
    model = env.pruned_model()
    assert sum(int((p != 0).sum()) for p in model.parameters()) <= info["nonzero_params"]
