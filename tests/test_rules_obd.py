"""The loss-aware statistics (Fisher, OBD) and the one-shot rules' columns of the zoo observation."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from tiny import tiny_task

import agents
from agents.policies.layerwise import FORMAT, LayerwisePolicy, load, save
from prune_env import PruneRNNEnv
from prune_env.envs.zoo import ROW, ROW_V2, RULE_COLUMNS, observation, rule_columns
from prune_env.pruning import allocation as B
from prune_env.pruning import rules as R
from prune_env.pruning.fisher import fisher_diagonal, obd_costs
from prune_env.pruning.layers import get_param


class _SampledNLL:
    """``train_loss``: next-token NLL on a batch drawn with the generator (picklable)."""

    def __call__(self, model, generator):
        x = torch.randint(0, 12, (4, 6), generator=generator)
        logits = model(x)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ((x + 1) % 12).reshape(-1))


def _with_train_loss(rnn="gru"):
    return dataclasses.replace(tiny_task(rnn, hidden=16), train_loss=_SampledNLL())


def test_fisher_is_the_mean_squared_gradient_of_the_training_batches_and_leaves_the_model_alone():
    task = _with_train_loss()
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    env = PruneRNNEnv(task, target_sparsity=0.5)
    layers = env.analysis.layers
    fisher = fisher_diagonal(task, layers, batches=3, seed=5)
    gen = torch.Generator().manual_seed(5)
    expected = {layer.name: torch.zeros(layer.shape) for layer in layers}
    work = copy.deepcopy(task.model)
    for _ in range(3):
        work.zero_grad()
        _SampledNLL()(work, gen).backward()
        for layer in layers:
            expected[layer.name] += get_param(work, layer).grad ** 2 / 3
    for layer in layers:
        torch.testing.assert_close(fisher[layer.name], expected[layer.name])
        assert fisher[layer.name].sum() > 0
    assert all(torch.equal(v, task.model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in task.model.parameters())
    # the same seed, the same estimate; another seed, other batches
    again = fisher_diagonal(task, layers, batches=3, seed=5)
    other = fisher_diagonal(task, layers, batches=3, seed=6)
    assert all(torch.equal(again[k], fisher[k]) for k in fisher)
    assert any(not torch.equal(other[k], fisher[k]) for k in fisher)


def test_without_train_loss_the_fixed_loss_batch_is_used_and_without_any_loss_it_is_refused():
    task = tiny_task("lstm", hidden=8)  # loss only
    env = PruneRNNEnv(task, target_sparsity=0.5)
    one = fisher_diagonal(task, env.analysis.layers, batches=8)
    work = copy.deepcopy(task.model)
    task.loss(work).backward()
    for layer in env.analysis.layers:
        torch.testing.assert_close(one[layer.name], get_param(work, layer).grad ** 2)
    with pytest.raises(ValueError, match="train_loss"):
        fisher_diagonal(dataclasses.replace(task, loss=None), env.analysis.layers)


def test_obd_costs_follow_the_prune_order_and_obd_counts_meet_the_budget_and_caps():
    task = _with_train_loss("lstm")
    env = PruneRNNEnv(task, target_sparsity=0.8, max_sparsity=0.9)
    a = env.analysis
    costs = obd_costs(a, task)
    assert obd_costs(a, task) is costs  # kept with the analysis
    fisher = fisher_diagonal(task, a.layers)
    for layer, c, w, order in zip(a.layers, costs, a.dense, a.orders):
        np.testing.assert_allclose(c, (0.5 * fisher[layer.name].reshape(-1) * w ** 2)[order].numpy(), rtol=1e-6)
        with pytest.raises(ValueError):
            c[0] = 1.0  # read-only
    total = B.target_count(0.8, env.numels)
    counts = R.obd_counts(a, task, total, env.cap)
    assert counts.sum() == total and np.all(counts <= env.cap) and np.all(counts >= 0)


def test_obd_moves_sparsity_to_the_layer_the_loss_does_not_feel():
    """Two layers LAMP cannot tell apart (the same weights); the loss reads only one of them, so OBD prunes the other
    to its cap first."""
    from prune_env import RNNTask

    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(8, 8, bias=False), torch.nn.Linear(8, 8, bias=False)
            with torch.no_grad():
                self.b.weight.copy_(self.a.weight)

        def forward(self, x):
            return self.a(x) + 0.0 * self.b(x)

    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 8, (16,), generator=torch.Generator().manual_seed(1))

    def loss(m):
        return torch.nn.functional.cross_entropy(m(x), y)

    task = RNNTask(Two().eval(), eval_batch=(x, y), metric="accuracy", loss=loss)
    env = PruneRNNEnv(task, target_sparsity=0.45, max_sparsity=0.9)
    total = B.target_count(0.45, env.numels)
    lamp = R.lamp_counts(env.analysis, total, env.cap)
    assert lamp[0] == lamp[1]
    obd = R.obd_counts(env.analysis, task, total, env.cap)
    assert obd[1] == env.cap[1] and obd[0] == total - env.cap[1]
    env.reset(options={"target_sparsity": 0.45})
    share = rule_columns(env)[:, -1]
    assert share[1] == 0.0 and share[0] == 1.0


@pytest.mark.parametrize("rule", RULE_COLUMNS)
def test_rule_columns_are_the_rule_agents_allocations(rule):
    task = _with_train_loss()
    env = PruneRNNEnv(task, target_sparsity=0.7)
    result = agents.search(rule, env, 1)
    env.reset(options={"target_sparsity": 0.7})
    columns = rule_columns(env)
    got = columns[:, RULE_COLUMNS.index(rule)] * env.max_sparsity
    np.testing.assert_allclose(got, [result.allocation[n] for n in env.layer_names], atol=1e-12)
    assert columns.shape == (env.num_layers, len(RULE_COLUMNS) + 1)
    assert columns[:, -1].sum() == pytest.approx(1.0)


def test_rule_columns_without_a_loss_or_at_hidden_unit_granularity():
    task = tiny_task("gru", hidden=16)
    no_loss = PruneRNNEnv(dataclasses.replace(task, loss=None), target_sparsity=0.6)
    with pytest.raises(ValueError, match="agent 'obd' needs a task with `train_loss"):
        agents.search("obd", no_loss, 1)
    no_loss.reset()
    c = rule_columns(no_loss)
    np.testing.assert_array_equal(c[:, RULE_COLUMNS.index("obd")], c[:, RULE_COLUMNS.index("lamp")])
    assert np.all(c[:, -1] == 0)
    units = PruneRNNEnv(task, target_sparsity=0.6, granularity="hidden_unit")
    units.reset()
    c = rule_columns(units)
    assert np.allclose(c[:, :-1], 0.6 / units.max_sparsity) and np.all(c[:, -1] == 0)
    obs = observation(units)
    assert obs.shape == (units.num_layers * len(ROW) + 8,) and np.all((obs >= 0) & (obs <= 1))


def test_older_policies_read_their_own_columns_and_new_ones_record_theirs(tmp_path):
    env = PruneRNNEnv(_with_train_loss("lstm"), target_sparsity=0.8)
    env.reset()
    torch.manual_seed(0)
    old = LayerwisePolicy(hidden=8, columns=ROW_V2)
    torch.nn.init.normal_(old.net[-1].weight)  # not LAMP any more
    # a format-2 file, as policies v1-v3 were saved: no column list
    blob = {"format": "prune-rnn-gym/layerwise-policy/2", "hidden": 8, "state_dict": old.state_dict(), "meta": "{}"}
    torch.save(blob, tmp_path / "v2.pt")
    loaded = load(tmp_path / "v2.pt")
    assert loaded.columns == ROW_V2
    np.testing.assert_array_equal(loaded.allocation_action(env), old.allocation_action(env))
    # the v2 network sees exactly the old row: the new columns do not reach it
    obs = observation(env)
    rows = obs[:-8].reshape(-1, len(ROW)).copy()
    rows[:, [ROW.index(c) for c in ("erk", "global", "obd", "obd_share")]] = 0.123
    changed = np.concatenate([rows.reshape(-1), obs[-8:]])
    np.testing.assert_array_equal(loaded.act(changed), loaded.act(obs))
    new = LayerwisePolicy(hidden=8)
    save(new, tmp_path / "v3.pt")
    assert torch.load(tmp_path / "v3.pt", weights_only=True)["format"] == FORMAT
    assert load(tmp_path / "v3.pt").columns == ROW
    with pytest.raises(ValueError, match="columns"):
        LayerwisePolicy(hidden=8, columns=("lamp", "no_such_column"))
    bad = {**blob, "format": FORMAT, "columns": ["lamp", 3]}
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="columns"):
        load(tmp_path / "bad.pt")
