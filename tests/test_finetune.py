"""Recovery fine-tuning: masks held fixed, seeded batches, env integration."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from tiny import VOCAB, tiny_task
from torch import nn

from prune_env import PruneRNNEnv
from prune_env.criteria import apply_counts, prune_order
from prune_env.export import masks
from prune_env.finetune import finetune
from prune_env.layers import find_prunable_layers, get_param


class TrainLoss:
    """A fresh random batch of the tiny rule ``y = x + 1`` per call."""

    def __call__(self, model: nn.Module, generator: torch.Generator) -> torch.Tensor:
        x = torch.randint(0, VOCAB, (16, 10), generator=generator)
        return nn.functional.cross_entropy(model(x).reshape(-1, VOCAB), ((x + 1) % VOCAB).reshape(-1))


def _task(rnn: str = "gru"):
    return dataclasses.replace(tiny_task(rnn, hidden=16), train_loss=TrainLoss())


def _pruned(task, sparsity=0.6):
    model = copy.deepcopy(task.model)
    layers = find_prunable_layers(model)
    orders = [prune_order(get_param(model, la).detach().abs()) for la in layers]
    return apply_counts(model, layers, orders, [int(sparsity * la.numel) for la in layers])


def test_masks_held_and_loss_falls():
    task = _task()
    model = _pruned(task)
    m = masks(model)
    before = task.loss(model).item()
    losses = finetune(model, task, 40, m, torch.Generator().manual_seed(0), lr=1e-2)
    assert len(losses) == 40
    assert task.loss(model).item() < before
    named = dict(model.named_parameters())
    for name, mask in m.items():
        assert torch.all(named[name][mask == 0] == 0)
    assert not model.training


def test_same_seed_same_weights_other_seed_differs():
    task = _task()
    a, b, c = _pruned(task), _pruned(task), _pruned(task)
    for model, seed in ((a, 1), (b, 1), (c, 2)):
        finetune(model, task, 5, masks(model), torch.Generator().manual_seed(seed))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))


def test_falls_back_to_fixed_loss_batch():
    task = tiny_task("gru")
    model = _pruned(task)
    finetune(model, task, 3, masks(model))


@pytest.mark.parametrize("kwargs, words", [({"steps": -1}, "steps"), ({"steps": 1.5}, "steps"),
                                           ({"lr": 0}, "lr"), ({"masks": {"nope": torch.ones(1)}}, "masks")])
def test_bad_arguments(kwargs, words):
    task = _task()
    model = _pruned(task)
    args = {"steps": 2, "masks": masks(model), **kwargs}
    with pytest.raises(ValueError, match=words):
        finetune(model, task, **args)


@pytest.mark.parametrize("granularity", ["unstructured", "hidden_unit"])
def test_env_finetune_steps_deterministic_and_reproduced_by_pruned_model(granularity):
    task = _task("lstm")
    env = PruneRNNEnv(task, granularity=granularity, target_sparsity=0.6, finetune_steps=8)
    rewards = []
    for _ in range(2):
        env.reset(seed=3)
        _, reward, _, _, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        rewards.append(reward)
    assert rewards[0] == rewards[1]
    model = env.pruned_model()
    assert task.evaluate(model)["score"] == info["score"]
    plain = PruneRNNEnv(task, granularity=granularity, target_sparsity=0.6)
    plain.reset(seed=3)
    _, _, _, _, plain_info = plain.step(np.zeros(plain.action_space.shape, dtype=np.float32))
    assert plain_info["overall_sparsity"] == info["overall_sparsity"]
    assert plain_info["size_bytes"] == info["size_bytes"]  # fine-tuning never revives a pruned weight
    # The user's model is untouched by fine-tuning.
    for a, b in zip(task.model.parameters(), tiny_task("lstm", hidden=16).model.parameters()):
        assert torch.equal(a, b)


def test_env_rejects_bad_finetune_steps():
    with pytest.raises(ValueError, match="finetune_steps"):
        PruneRNNEnv(_task(), finetune_steps=-2)
