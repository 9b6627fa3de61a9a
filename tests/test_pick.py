"""The ``pick`` agent: candidates ranked by training loss without an evaluation, the lowest scored once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import tiny_calibrated, tiny_task

import agents
from agents.core.cap import submit
from agents.policies.layerwise import LayerwisePolicy, default_policy, ensemble, members
from agents.policies.pick import REFINE_PRUNINGS, candidates, committee, rank, refine, rule_allocation, training_loss
from prune_env import PruneRNNEnv

OBS = {"criterion": "obs", "reconstruct": "obs"}


class _Counting:
    """Counts validation evaluations and refuses the test split."""

    def __init__(self, task):
        self.calls = 0
        self.evaluate = task.evaluate
        task.evaluate = self
        task.test = self.refuse

    def __call__(self, model):
        self.calls += 1
        return self.evaluate(model)

    @staticmethod
    def refuse(model):
        raise AssertionError("pick read the test split")


@pytest.mark.parametrize("target", [0.7, 0.9])
def test_pick_scores_once_the_candidate_with_the_lowest_training_loss(target):
    task = tiny_calibrated()
    counter = _Counting(task)
    env = PruneRNNEnv(task, target_sparsity=target, **OBS)
    counter.calls = 0  # the env scored the dense model when it was built
    result = agents.search("pick", env, 1, refine_prunings=0)
    assert result.evals == 1 and counter.calls == 1  # ranking the candidates evaluates nothing
    losses = result.extras["train_losses"]
    assert len(losses) == 5 + 5  # the shipped committee's five policies and five rules
    assert result.extras["chosen"] == min(losses, key=losses.get)
    # the same choice from the building blocks, scored on a fresh env, gives the same validation score
    fresh = PruneRNNEnv(tiny_calibrated(), target_sparsity=target, **OBS)
    allocations = candidates(fresh)
    budget = round(target * fresh.numels.sum())
    assert all(abs(int(fresh.counts_for(a).sum()) - budget) <= 1 for a in allocations.values())  # as applied
    chosen, again = rank(fresh, allocations)
    assert chosen == result.extras["chosen"] and again == losses
    assert submit(fresh, allocations[chosen])[1]["score"] == pytest.approx(result.val_score)
    # a loss is the task's training loss of the pruned model on the same batches for every candidate
    model = fresh.pruned_model(allocations[chosen]).eval()
    assert training_loss(fresh.task, model) == pytest.approx(losses[chosen])
    again = agents.search("pick", PruneRNNEnv(tiny_calibrated(), target_sparsity=target, **OBS), 1, refine_prunings=0)
    assert again.val_score == result.val_score  # deterministic


def test_a_rule_s_candidate_is_the_allocation_the_rule_scores():
    env = PruneRNNEnv(tiny_calibrated(), target_sparsity=0.8, **OBS)
    for rule in ("lamp", "erk", "global", "obd", "uniform"):
        ran = agents.search(rule, env, 1).allocation
        recorded = rule_allocation(env, rule)
        np.testing.assert_array_equal(env.counts_for(recorded), env.counts_for(ran))


def test_the_committee_follows_the_operator_and_the_features():
    assert len(committee(PruneRNNEnv(tiny_calibrated(), target_sparsity=0.8, **OBS))) == 5
    magnitude = committee(PruneRNNEnv(tiny_calibrated(), target_sparsity=0.8))
    assert len(magnitude) == 7
    for a, b in zip(magnitude[0].net.state_dict().values(), default_policy("v6-magnitude").net.state_dict().values()):
        torch.testing.assert_close(a, b)
    (only,) = committee(PruneRNNEnv(tiny_task("gru"), target_sparsity=0.8))  # no calibration data: v4
    assert only.observation_format == 3


def test_members_of_a_committee_act_as_the_policies_joined():
    env = PruneRNNEnv(tiny_task("lstm", layers=2), target_sparsity=0.7)
    env.reset(seed=0)
    policies = []
    for seed in range(3):
        torch.manual_seed(seed)
        p = LayerwisePolicy(hidden=8)
        with torch.no_grad():
            for w in p.parameters():
                w.add_(0.5 * torch.randn_like(w))
        p.meta = {"seed": seed}
        policies.append(p)
    split = members(ensemble(policies))
    assert [m.meta for m in split] == [{"seed": s} for s in range(3)]
    for m, p in zip(split, policies):
        np.testing.assert_array_equal(m.allocation_action(env), p.allocation_action(env))
    assert members(policies[0]) == [policies[0]]


def test_a_task_without_a_loss_gets_the_first_policy():
    task = tiny_task("gru")
    task.train_loss = task.loss = None
    env = PruneRNNEnv(task, target_sparsity=0.8)
    result = agents.search("pick", env, 1)
    assert result.extras == {"chosen": "policy:0", "train_losses": {}}
    zero_shot = agents.search("policy", PruneRNNEnv(task, target_sparsity=0.8), 1)
    assert result.val_score == pytest.approx(zero_shot.val_score)


@pytest.mark.parametrize("kw", [OBS, {}])
def test_refine_lowers_the_training_loss_on_both_batch_sets_without_an_evaluation(kw):
    task = tiny_calibrated()
    counter = _Counting(task)
    env = PruneRNNEnv(task, target_sparsity=0.8, **kw)
    env.reset(seed=0)
    start = rule_allocation(env, "uniform")  # far from the best allocation: there is room to move
    counter.calls = 0
    refined, record = refine(env, start, 24)
    assert counter.calls == 0 and 0 < record["prunings"] <= 24
    assert abs(int(env.counts_for(refined).sum()) - round(0.8 * env.numels.sum())) <= 1  # still on the target
    assert record["kept"] and record["moves"] >= 1 and refined != start
    for seed in (0, 1):  # lower on the search's batches and on the fresh ones

        def loss(a, seed=seed):
            return training_loss(env.task, env.pruned_model(a).eval(), seed=seed)

        assert loss(refined) < loss(start)
    assert record["refined_loss"] == pytest.approx(training_loss(env.task, env.pruned_model(refined).eval()))
    assert refine(env, start, 24) == (refined, record)  # deterministic
    unchanged, none = refine(env, start, 0)
    assert unchanged == start and none["prunings"] == 0 and not none["kept"]


def test_pick_scores_once_the_refinement_with_the_lower_loss():
    task = tiny_calibrated()
    counter = _Counting(task)
    env = PruneRNNEnv(task, target_sparsity=0.9, **OBS)
    counter.calls = 0
    result = agents.search("pick", env, 1)  # refined by default, from the chosen candidate and from LAMP
    assert result.evals == 1 and counter.calls == 1
    fresh = PruneRNNEnv(tiny_calibrated(), target_sparsity=0.9, **OBS)
    allocations = candidates(fresh)
    chosen, losses = rank(fresh, allocations)
    assert chosen != "lamp"  # two starts here
    runs = {n: refine(fresh, allocations[n], REFINE_PRUNINGS, loss=losses[n]) for n in (chosen, "lamp")}
    assert result.extras["chosen"] == chosen and result.extras["refinements"] == {n: r for n, (_, r) in runs.items()}

    def final(record):
        return record["refined_loss"] if record["kept"] else record["loss"]

    best = min(runs, key=lambda n: final(runs[n][1]))
    assert result.extras["refined"] == {**runs[best][1], "from": best}
    np.testing.assert_array_equal(fresh.counts_for(result.allocation), fresh.counts_for(runs[best][0]))
    only = agents.search("pick", PruneRNNEnv(tiny_calibrated(), target_sparsity=0.9, **OBS), 1,
                         refine_from=("chosen",))
    assert list(only.extras["refinements"]) == [chosen] and only.extras["refined"] == {**runs[chosen][1],
                                                                                       "from": chosen}


def test_refine_needs_a_loss_and_pick_skips_it_without_one():
    task = tiny_task("gru")
    task.train_loss = task.loss = None
    env = PruneRNNEnv(task, target_sparsity=0.8)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="training loss"):
        refine(env, rule_allocation(env, "lamp"), 4)
    assert "refined" not in agents.search("pick", env, 1, refine_prunings=4).extras


def test_without_policies_pick_refines_the_rules_alone():
    env = PruneRNNEnv(tiny_calibrated(), target_sparsity=0.8, **OBS)
    result = agents.search("pick", env, 1, policies=[], rules=("lamp",))
    assert result.extras["chosen"] == "lamp" and list(result.extras["train_losses"]) == ["lamp"]
    refined, record = refine(env, rule_allocation(env, "lamp"), REFINE_PRUNINGS)
    assert result.extras["refined"] == {**record, "from": "lamp"}
    np.testing.assert_array_equal(env.counts_for(result.allocation), env.counts_for(refined))
    task = tiny_task("gru")
    task.train_loss = task.loss = None
    with pytest.raises(ValueError, match="policies"):  # nothing to rank and no policy to fall back on
        agents.search("pick", PruneRNNEnv(task, target_sparsity=0.8), 1, policies=[])


@pytest.mark.parametrize("kwargs, match", [({"rules": ("reinforce",)}, "rules"),
                                           ({"policies": [], "rules": ()}, "policies"), ({"policies": [3]}, "policies"),
                                           ({"batches": 0}, "batches"), ({"refine_prunings": -1}, "refine_prunings"),
                                           ({"refine_prunings": 2.5}, "refine_prunings"),
                                           ({"refine_from": ("nope",)}, "refine_from"),
                                           ({"refine_from": ()}, "refine_from")])
def test_bad_options_are_refused_by_name(kwargs, match):
    env = PruneRNNEnv(tiny_calibrated(), target_sparsity=0.8)
    with pytest.raises(ValueError, match=match):
        agents.search("pick", env, 1, **kwargs)


def test_pick_needs_a_budget_and_single_weights():
    with pytest.raises(ValueError, match="granularity|unstructured|pick"):
        agents.search("pick", PruneRNNEnv(tiny_task("gru"), target_sparsity=0.5, granularity="hidden_unit"), 1)
