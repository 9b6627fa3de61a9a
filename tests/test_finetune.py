"""Recovery fine-tuning: masks held fixed, seeded batches, env integration."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from tiny import VOCAB, tiny_task
from torch import nn

from prune_env import PruneRNNEnv, RNNTask
from prune_env.compression.export import masks
from prune_env.compression.finetune import finetune
from prune_env.pruning.criteria import apply_counts, prune_order
from prune_env.pruning.layers import find_prunable_layers, get_param


class TrainLoss:
    """A fresh random batch of the tiny rule ``y = x + 1`` per call."""

    def __call__(self, model: nn.Module, generator: torch.Generator) -> torch.Tensor:
        x = torch.randint(0, VOCAB, (16, 10), generator=generator)
        return nn.functional.cross_entropy(model(x).reshape(-1, VOCAB), ((x + 1) % VOCAB).reshape(-1))


def _task(rnn: str = "gru", metric: str = "accuracy"):
    """The tiny task with fresh training batches; ``metric="nll"`` scores validation by its (continuous) NLL, so
    that a few fine-tuning steps show in the score."""
    task = dataclasses.replace(tiny_task(rnn, hidden=16), train_loss=TrainLoss())
    if metric == "accuracy":
        return task
    return RNNTask(task.model, eval_batch=task.eval_batch, metric=metric, loss=task.loss, train_loss=task.train_loss,
                   name=task.name)


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
    """Without ``train_loss`` every step trains on the fixed ``loss`` batch: the first loss is that batch's loss, the
    batch loss falls, masks hold, and the generator is irrelevant (no batches are drawn)."""
    task = tiny_task("gru")
    assert task.train_loss is None
    a, b = _pruned(task), _pruned(task)
    m = masks(a)
    before = task.loss(a).item()
    losses = finetune(a, task, 10, m, torch.Generator().manual_seed(0), lr=1e-2)
    assert len(losses) == 10
    assert losses[0] == pytest.approx(before, rel=1e-6)
    assert losses[-1] < losses[0] and task.loss(a).item() < before
    named = dict(a.named_parameters())
    for name, mask in m.items():
        assert torch.all(named[name][mask == 0] == 0)
    finetune(b, task, 10, masks(b), torch.Generator().manual_seed(123), lr=1e-2)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("kwargs, words", [({"steps": -1}, "steps"), ({"steps": 1.5}, "steps"),
                                           ({"lr": 0}, "lr"), ({"masks": {"nope": torch.ones(1)}}, "masks")])
def test_bad_arguments(kwargs, words):
    task = _task()
    model = _pruned(task)
    args = {"steps": 2, "masks": masks(model), **kwargs}
    with pytest.raises(ValueError, match=words):
        finetune(model, task, **args)


@pytest.mark.parametrize("granularity", ["unstructured", "hidden_unit"])
def test_env_finetune_steps_fine_tune_the_scored_model(granularity):
    """``finetune_steps`` fine-tunes the model that is scored. Against ``finetune_steps=0`` with the same seed and
    action: the same weights are pruned, the kept weights moved, and the validation score (NLL, on the rule the
    training batches follow) and the reward are better. The episode is reproducible from its seed, another seed
    draws other batches, and ``pruned_model()`` is the model that was scored."""
    task = _task("lstm", metric="nll")

    def episode(env, seed=3):
        env.reset(seed=seed)
        _, reward, done, _, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        assert done
        return reward, info

    env = PruneRNNEnv(task, granularity=granularity, target_sparsity=0.6, finetune_steps=8)
    reward, info = episode(env)
    assert episode(env) == (reward, info)
    tuned = env.pruned_model()
    assert task.evaluate(tuned)["score"] == info["score"]

    plain = PruneRNNEnv(task, granularity=granularity, target_sparsity=0.6)
    plain_reward, plain_info = episode(plain)
    untuned = plain.pruned_model()
    assert plain_info["overall_sparsity"] == info["overall_sparsity"]
    assert plain_info["size_bytes"] == info["size_bytes"]  # fine-tuning never revives a pruned weight
    assert info["score"] > plain_info["score"] and reward > plain_reward
    tuned_params, untuned_params = dict(tuned.named_parameters()), dict(untuned.named_parameters())
    assert {n: p.shape for n, p in tuned_params.items()} == {n: p.shape for n, p in untuned_params.items()}
    for name, p in untuned_params.items():
        assert torch.all(tuned_params[name][p == 0] == 0), name  # pruned stays pruned
    assert not all(torch.equal(p, untuned_params[n]) for n, p in tuned_params.items())  # kept weights moved

    episode(env, seed=4)
    other = env.pruned_model()
    assert not all(torch.equal(a, b) for a, b in zip(tuned.parameters(), other.parameters()))
    # The user's model is untouched by fine-tuning.
    for a, b in zip(task.model.parameters(), tiny_task("lstm", hidden=16).model.parameters()):
        assert torch.equal(a, b)


def test_env_rejects_bad_finetune_steps():
    with pytest.raises(ValueError, match="finetune_steps"):
        PruneRNNEnv(_task(), finetune_steps=-2)
