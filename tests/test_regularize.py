"""Sparsity learned while training: soft and group soft thresholding, ISS groups of recurrent hidden units, exact
counts of regularised gradual pruning, and movement scores."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tiny import VOCAB, TinyLM, tiny_task
from torch import nn

from prune_env import PruneRNNEnv
from prune_env.compression.gradual import gradual_prune
from prune_env.compression.gradual.regularize import GroupLassoProx, group_soft_threshold, soft_threshold, strength_at
from prune_env.pruning.structured import UnitPlan, shrink


def test_soft_threshold_closed_form():
    w = torch.tensor([1.5, -0.2, 0.5, -2.0, 0.0])
    torch.testing.assert_close(soft_threshold(w, 0.5), torch.tensor([1.0, 0.0, 0.0, -1.5, 0.0]), rtol=0, atol=0)


def test_group_soft_threshold_zeroes_below_and_shrinks_above():
    w = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0], [0.6, 0.8], [-1.2, 1.6]])
    out = group_soft_threshold(w, 1.0)
    # norms 5, 0.5, 0, 1 (= tau), 2: factors 1 - 1/5, 0, 0, 0, 1 - 1/2
    torch.testing.assert_close(out, torch.tensor([[2.4, 3.2], [0, 0], [0, 0], [0, 0], [-0.6, 0.8]]))
    assert torch.equal(out[1:4], torch.zeros(3, 2))  # exactly zero, not nearly
    kept = out[[0, 4]]
    torch.testing.assert_close(kept.norm(dim=1), w[[0, 4]].norm(dim=1) - 1.0)  # shrunk by tau in norm
    torch.testing.assert_close(kept / kept.norm(dim=1, keepdim=True), w[[0, 4]] / w[[0, 4]].norm(dim=1, keepdim=True))


def test_strength_schedules():
    assert [strength_at(t, 2, 6, 1.0, "ramp") for t in range(8)] == [0, 0, 0.25, 0.5, 0.75, 1.0, 0, 0]
    assert [strength_at(t, 2, 6, 1.0, "constant") for t in range(8)] == [0, 0, 1, 1, 1, 1, 0, 0]


# ------------------------------------------------------------------------------------------- ISS groups
_REMOVED = {0: ([1, 4], [0, 5]), 1: ([2, 3], [7, 3])}  # layer -> units removed per direction


def _keep(plan, bidirectional):
    keep = []
    for g, grp in enumerate(plan.groups):
        per_dir = []
        for d in range(grp.directions):
            m = torch.ones(grp.hidden_size, dtype=torch.bool)
            m[_REMOVED[g][d]] = False
            per_dir.append(m)
        keep.append(per_dir)
    return keep


@pytest.mark.parametrize("rnn", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_iss_zeroed_groups_equal_the_smaller_model(rnn, bidirectional):
    """Units whose ISS groups the proximal step zeroes (their rows in every gate, own column, the next layer's and
    the head's input columns, biases): exactly zero, and the model shrunk without them computes the same."""
    torch.manual_seed(3)
    model = TinyLM(rnn, hidden=8, layers=2, bidirectional=bidirectional).eval()
    plan = UnitPlan(model)
    keep = _keep(plan, bidirectional)
    with torch.no_grad():  # the chosen units' groups made small, so a small threshold zeroes exactly them
        named = dict(model.named_parameters())
        for name, mask in plan.param_masks(keep, model).items():
            named[name].mul_(mask + (1 - mask) * 1e-3)
    prox = GroupLassoProx(plan, model, [2, 2])
    prox.step(0.02)
    zero = prox.zero_units()
    for g, per_dir in enumerate(keep):
        for d, k in enumerate(per_dir):
            assert torch.equal(zero[g][d], ~k)
    named = dict(model.named_parameters())
    for name, mask in plan.param_masks(keep, model).items():
        assert torch.equal(named[name][mask == 0], torch.zeros(int((mask == 0).sum()))), name
        assert bool((named[name][mask == 1] != 0).all()), name  # everything else only shrinks
    assert named["head.weight"].shape[1] == 8 * (2 if bidirectional else 1)
    small = shrink(model, plan, keep)
    rnns = [m for m in small.modules() if isinstance(m, nn.RNNBase)]
    assert [m.hidden_size for m in rnns] == [6, 6]
    assert small.head.in_features == 6 * (2 if bidirectional else 1)
    x = torch.randint(0, VOCAB, (4, 7))
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-6, atol=1e-6)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("rnn", ["lstm", "gru", "rnn"])
def test_group_lasso_run_removes_exact_counts_and_shrinks(rnn):
    task = tiny_task(rnn, hidden=8, layers=2, bidirectional=True)
    before = _state(task.model)
    env = PruneRNNEnv(task, target_sparsity=0.5, granularity="hidden_unit")
    allocation = {env.layer_names[0]: 0.5, env.layer_names[1]: 0.25}
    result = gradual_prune(env, allocation, steps=12, end=8, frequency=2, lr=1e-2, eval_every=4,
                           regularizer="group_lasso", regularizer_strength=10.0, regularizer_schedule="constant")
    assert result.counts == {env.layer_names[0]: 4, env.layer_names[1]: 2}
    assert result.schedule[8] == result.counts  # the last pruning step: exactly the final counts
    assert result.info["kept_units"] == {env.layer_names[0]: [4, 4], env.layer_names[1]: [6, 6]}
    assert max(result.info["pruned_by_penalty"].values()) > 0  # the penalty reached exact zeros on its own
    assert all(0 <= v <= result.counts[k] for k, v in result.info["pruned_by_penalty"].items())
    rnns = [m for m in result.model.modules() if isinstance(m, nn.RNNBase)]
    assert [m.hidden_size for m in rnns] == [4, 6] and result.model.head.in_features == 12
    x = torch.randint(0, VOCAB, (3, 5))
    assert result.model(x).shape == (3, 5, VOCAB)
    assert all(torch.equal(v, before[k]) for k, v in task.model.state_dict().items())  # the user's model untouched


def test_group_lasso_takes_what_the_penalty_zeroed_first():
    """Units whose whole group the penalty zeroed during the ramp are among the removed ones."""
    task = tiny_task("gru", hidden=8, layers=2)
    env = PruneRNNEnv(task, target_sparsity=0.5, granularity="hidden_unit")
    seen = {}
    plan = env.kind.plan

    def spy(step, model):
        if step == 8:
            seen["zero"] = GroupLassoProx(plan, model, [1, 1]).zero_units()

    result = gradual_prune(env, {n: 0.5 for n in env.layer_names}, steps=10, end=8, frequency=2, lr=1e-2,
                           eval_every=5, regularizer="group_lasso", regularizer_strength=5.0,
                           regularizer_schedule="constant", callback=spy)
    zeroed = [torch.nonzero(z[0]).reshape(-1).tolist() for z in seen["zero"]]
    assert sum(result.info["pruned_by_penalty"].values()) > 0
    for name, z in zip(env.layer_names, zeroed):
        removed = result.info["removed_units"][name][0]
        assert len(removed) == 4
        assert set(z) <= set(removed) if len(z) <= 4 else set(removed) <= set(z)
    small_rnns = [m for m in result.model.modules() if isinstance(m, nn.RNNBase)]
    assert [m.hidden_size for m in small_rnns] == [4, 4]


def test_l1_run_prunes_exact_counts_zeroed_first():
    task = tiny_task("lstm", hidden=8, layers=2)
    before = _state(task.model)
    env = PruneRNNEnv(task, target_sparsity=0.7)
    allocation = {n: 0.7 for n in env.layer_names}
    seen = {}

    def spy(step, model):
        if step == 8:
            named = dict(model.named_parameters())
            seen["zero"] = {n: (named[n] == 0) for n in env.layer_names}

    result = gradual_prune(env, allocation, steps=12, end=8, frequency=2, lr=1e-2, eval_every=4,
                           regularizer="l1", regularizer_strength=1.0, callback=spy)
    assert result.schedule[8] == result.counts
    named = dict(result.model.named_parameters())
    for n, k in result.counts.items():
        zeros = named[n] == 0
        assert int(zeros.sum()) >= k
        if int(seen["zero"][n].sum()) <= k:  # what the penalty zeroed is pruned first
            assert bool(zeros[seen["zero"][n]].all()), n
    assert 0 < sum(result.info["pruned_by_penalty"].values()) <= sum(result.counts.values())
    assert all(torch.equal(v, before[k]) for k, v in task.model.state_dict().items())


def test_regularised_runs_are_deterministic_and_differ_from_plain():
    task = tiny_task("gru", hidden=8, layers=2)
    env = PruneRNNEnv(task, target_sparsity=0.6)
    allocation = {n: 0.6 for n in env.layer_names}
    kw = dict(steps=10, end=6, frequency=2, lr=1e-2, eval_every=5)
    a = gradual_prune(env, allocation, regularizer="l1", regularizer_strength=0.5, **kw)
    b = gradual_prune(env, allocation, regularizer="l1", regularizer_strength=0.5, **kw)
    plain = gradual_prune(env, allocation, **kw)
    assert a.losses == b.losses and all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters()))
    assert a.losses[:1] == plain.losses[:1] and a.losses[1:] != plain.losses[1:]


def test_candidate_scope_penalises_only_the_lowest():
    from prune_env.compression.gradual.regularize import L1Prox

    w = nn.Parameter(torch.tensor([[0.5, -0.05, 2.0], [0.1, -1.0, 0.02]]))
    L1Prox([w], [2], scope="candidates").step(0.06)  # the 2 lowest |w|: -0.05, 0.02 -> 0; the rest untouched
    assert torch.equal(w.detach(), torch.tensor([[0.5, 0.0, 2.0], [0.1, -1.0, 0.0]]))
    torch.manual_seed(4)
    model = TinyLM("lstm", hidden=8, layers=2).eval()
    plan = UnitPlan(model)
    prox = GroupLassoProx(plan, model, [3, 0], scope="candidates")
    norms = prox.norms()
    before = _state(model)
    prox.step(1e-3)
    after = prox.norms()
    low = torch.argsort(norms[0][0])[:3]
    rows = torch.zeros(8, dtype=torch.bool)
    rows[low] = True
    rows = rows.repeat(4)  # every LSTM gate
    w_ih = model.rnn.weight_ih_l0.detach()
    # layer 0: only its 3 lowest-norm units' rows shrink (their group: rows of every gate); the others stay
    assert torch.equal(w_ih[~rows], before["rnn.weight_ih_l0"][~rows])
    assert bool((w_ih[rows].abs() < before["rnn.weight_ih_l0"][rows].abs()).all())
    assert bool((after[0][0][low] < norms[0][0][low]).all())
    # layer 1 (count 0) is never penalised: its recurrent weight is untouched
    assert torch.equal(model.rnn.weight_hh_l1.detach(), before["rnn.weight_hh_l1"])


def test_candidate_scope_run_meets_the_counts():
    task = tiny_task("gru", hidden=8, layers=2)
    env = PruneRNNEnv(task, target_sparsity=0.5, granularity="hidden_unit")
    result = gradual_prune(env, {n: 0.5 for n in env.layer_names}, steps=8, end=6, frequency=2, lr=1e-2,
                           eval_every=4, regularizer="group_lasso", regularizer_strength=3.0,
                           regularizer_scope="candidates")
    assert [m.hidden_size for m in result.model.modules() if isinstance(m, nn.RNNBase)] == [4, 4]
    assert result.info["regularizer_scope"] == "candidates" and result.schedule[6] == result.counts
    with pytest.raises(ValueError, match="regularizer_scope"):
        gradual_prune(env, {n: 0.5 for n in env.layer_names}, steps=2, regularizer="group_lasso",
                      regularizer_scope="some")


@pytest.mark.parametrize("strength, by_penalty", [(20.0, True), (1e-6, False)])
def test_penalty_removal_takes_only_zeroed_units_during_the_ramp(strength, by_penalty):
    """removal='penalty': before ``end`` the counts are what the penalty zeroed (locked in every step); at ``end``
    exactly the final counts. A strong penalty zeroes them all itself; a vanishing one leaves them all to ``end``."""
    task = tiny_task("gru", hidden=8, layers=2)
    before = _state(task.model)
    env = PruneRNNEnv(task, target_sparsity=0.5, granularity="hidden_unit")
    result = gradual_prune(env, {n: 0.5 for n in env.layer_names}, steps=12, end=8, lr=1e-2, eval_every=4,
                           regularizer="group_lasso", regularizer_strength=strength, regularizer_schedule="constant",
                           regularizer_scope="candidates", removal="penalty")
    assert result.info["removal"] == "penalty" and result.info["frequency"] == 1
    assert sorted(result.schedule) == list(range(9)) and result.schedule[8] == result.counts
    assert all(v == 4 for v in result.counts.values())
    ramp = [sum(result.schedule[t].values()) for t in range(8)]
    assert ramp == sorted(ramp)  # locked in: never trained back
    if by_penalty:
        assert result.info["pruned_by_penalty"] == result.counts and ramp[-1] == 8
    else:
        assert sum(result.info["pruned_by_penalty"].values()) == 0 and ramp[-1] == 0
    assert [m.hidden_size for m in result.model.modules() if isinstance(m, nn.RNNBase)] == [4, 4]
    assert all(torch.equal(v, before[k]) for k, v in task.model.state_dict().items())


def test_penalty_removal_needs_a_regularizer():
    env = PruneRNNEnv(tiny_task("gru", hidden=8, layers=2), target_sparsity=0.5, granularity="hidden_unit")
    allocation = {n: 0.5 for n in env.layer_names}
    with pytest.raises(ValueError, match="removal.*regularizer"):
        gradual_prune(env, allocation, steps=2, removal="penalty")
    with pytest.raises(ValueError, match="removal"):
        gradual_prune(env, allocation, steps=2, regularizer="group_lasso", removal="never")


# ------------------------------------------------------------------------------------------- movement
def test_movement_prunes_lowest_accumulated_minus_w_times_grad():
    """One SGD step, then the pruning step: the pruned weights are the lowest ``-w * dL/dw`` at the first step."""
    task = tiny_task("gru", hidden=8, layers=1)
    env = PruneRNNEnv(task, target_sparsity=0.5)
    allocation = {n: 0.5 for n in env.layer_names}
    work = copy.deepcopy(task.model).train()
    task.loss(work).backward()
    named = dict(work.named_parameters())
    kw = dict(steps=3, start=0, end=1, frequency=1, lr=1e-2, optimizer="sgd", momentum=0.0, eval_every=3)
    result = gradual_prune(env, allocation, criterion="movement", **kw)
    magnitude = gradual_prune(env, allocation, criterion="magnitude", **kw)
    got = dict(result.model.named_parameters())
    differs = False
    for n, k in result.counts.items():
        score = (-named[n].detach() * named[n].grad).reshape(-1)
        expected = torch.zeros(score.numel(), dtype=torch.bool)
        expected[torch.argsort(score, stable=True)[:k]] = True
        assert torch.equal(got[n].detach().reshape(-1) == 0, expected), n
        mag_zero = dict(magnitude.model.named_parameters())[n].detach().reshape(-1) == 0
        differs |= not torch.equal(mag_zero, expected)
    assert differs
    assert result.info["criterion"] == "movement"


# ------------------------------------------------------------------------------------------- arguments
def test_bad_combinations_name_the_argument():
    task = tiny_task("gru", hidden=8, layers=2)
    unstructured = PruneRNNEnv(task, target_sparsity=0.5)
    units = PruneRNNEnv(task, target_sparsity=0.5, granularity="hidden_unit")
    a_w = {n: 0.5 for n in unstructured.layer_names}
    a_u = {n: 0.5 for n in units.layer_names}
    with pytest.raises(ValueError, match="regularizer.*hidden_unit"):
        gradual_prune(unstructured, a_w, steps=2, regularizer="group_lasso")
    with pytest.raises(ValueError, match="regularizer.*unstructured"):
        gradual_prune(units, a_u, steps=2, regularizer="l1")
    with pytest.raises(ValueError, match="criterion"):
        gradual_prune(units, a_u, steps=2, criterion="movement")
    with pytest.raises(ValueError, match="criterion"):
        gradual_prune(unstructured, a_w, steps=2, criterion="movement", regularizer="l1")
    with pytest.raises(ValueError, match="regularizer_strength"):
        gradual_prune(unstructured, a_w, steps=2, regularizer="l1", regularizer_strength=0.0)
    with pytest.raises(ValueError, match="regularizer_schedule"):
        gradual_prune(unstructured, a_w, steps=2, regularizer="l1", regularizer_schedule="cubic")
    with pytest.raises(ValueError, match="criterion"):
        gradual_prune(unstructured, a_w, steps=2, criterion="fisher")
    assert np.isfinite(gradual_prune(unstructured, a_w, steps=0, regularizer="l1").score)


# ------------------------------------------------------------------------------------------- compress
def test_compress_passes_the_options_and_reports_units_kept(tmp_path):
    import json

    import agents.cli.compress as C
    from agents.cli.main import main

    task = tiny_task("lstm", hidden=8, layers=2)
    report = C.compress(task, 0.5, tmp_path / "iss", steps=6, granularity="hidden_unit", regularizer="group_lasso",
                        regularizer_strength=2.0)
    assert report["hidden_units"] == {"rnn.l0": [4, 8], "rnn.l1": [4, 8]}
    assert report["settings"]["regularizer"] == "group_lasso" and report["settings"]["regularizer_strength"] == 2.0
    assert "Hidden units kept per layer (of): `rnn.l0` 4 (8)" in (tmp_path / "iss" / "report.md").read_text()
    info = json.loads((tmp_path / "iss" / "finetune.json").read_text())["info"]
    assert info["regularizer"] == "group_lasso" and info["kept_units"] == {"rnn.l0": [4], "rnn.l1": [4]}
    assert "regularizer_scope" not in report["settings"]  # the default is not recorded: older directories resume
    cand = C.compress(task, 0.5, tmp_path / "cand", steps=6, granularity="hidden_unit", regularizer="group_lasso",
                      regularizer_strength=2.0, regularizer_scope="candidates")
    assert cand["settings"]["regularizer_scope"] == "candidates"
    assert json.loads((tmp_path / "cand" / "finetune.json").read_text())["info"]["regularizer_scope"] == "candidates"
    with pytest.raises(ValueError, match="regularizer_scope"):
        C.compress(task, 0.5, tmp_path / "bad-scope", steps=2, granularity="hidden_unit", regularizer="group_lasso",
                   regularizer_scope="some")
    plain = C.compress(task, 0.5, tmp_path / "mv", steps=4, criterion="movement")
    assert "regularizer" not in plain["settings"] and plain["settings"]["criterion"] == "movement"
    assert plain["hidden_units"] is None
    with pytest.raises(ValueError, match="regularizer.*hidden_unit"):
        C.compress(task, 0.5, tmp_path / "bad", steps=2, regularizer="group_lasso")
    assert main(["compress", "--task", "digits", "--sparsity", "0.5", "--criterion", "movement", "--granularity",
                 "hidden_unit", "--out", str(tmp_path / "cli")]) == 2
