"""The layer-wise policy: any number of layers, target-conditioned, learns across a zoo, safe files."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from tiny import TinyLM, tiny_task

from agents.policies.layerwise import LayerwisePolicy, PretrainArgs, ensemble, load, pretrain, save
from prune_env import PruneRNNEnv, PruneRNNZooEnv, RNNTask
from prune_env.envs.zoo import observation


class HiddenHiddenKept:
    """A synthetic score: the fraction of recurrent (hidden-hidden) weights left. The best allocation at any target
    prunes only the other layers, which the layer-kind feature identifies; uniform pruning scores 1 - target."""

    def __call__(self, model: torch.nn.Module) -> float:
        hh = [p for n, p in model.named_parameters() if "weight_hh" in n]
        return float(sum(int((p != 0).sum()) for p in hh) / sum(p.numel() for p in hh))


def _synthetic(rnn: str, seed: int, **kw) -> RNNTask:
    torch.manual_seed(seed)
    return RNNTask(TinyLM(rnn, **kw).eval(), evaluate=HiddenHiddenKept(), name=f"hh-{rnn}-{seed}")


def _score(policy: LayerwisePolicy, task: RNNTask, target: float) -> float:
    env = PruneRNNEnv(task, target_sparsity=target)
    env.reset(seed=0)
    return env.step(policy.allocation_action(env))[4]["score"]


def _lamp_score(task: RNNTask, target: float) -> float:
    import agents

    return agents.search("lamp", PruneRNNEnv(task, target_sparsity=target), 1).val_score


@pytest.mark.parametrize("layers, bidirectional", [(1, False), (3, True)])
def test_any_number_of_layers(layers, bidirectional):
    """2 to 12 recurrent weight matrices (4 to 14 prunable layers) with one policy."""
    policy = LayerwisePolicy(hidden=8)
    env = PruneRNNEnv(tiny_task("lstm", layers=layers, bidirectional=bidirectional), target_sparsity=0.6)
    env.reset(seed=0)
    action = policy.allocation_action(env)
    assert action.shape == env.action_space.shape
    _, _, done, _, info = env.step(action)
    assert done and info["overall_sparsity"] == pytest.approx(0.6, abs=1e-3)


@pytest.mark.parametrize("group_size", [1, 4])
def test_pretraining_learns_a_feature_dependent_allocation_and_transfers(group_size):
    zoo = PruneRNNZooEnv([_synthetic("gru", 0), _synthetic("lstm", 1), _synthetic("rnn", 2, layers=3)],
                         target_sparsity=(0.35, 0.5))
    unseen = _synthetic("lstm", 3, layers=2, bidirectional=True, hidden=10)
    fresh = LayerwisePolicy(hidden=16)
    lamp = {}
    for target in (0.4, 0.5):  # untrained: LAMP's allocation
        lamp[target] = _lamp_score(unseen, target)
        assert _score(fresh, unseen, target) == pytest.approx(lamp[target], abs=0.01)
    policy, curve = pretrain(zoo, PretrainArgs(episodes=480, batch_size=16, learning_rate=0.01, hidden=16, seed=0,
                                               group_size=group_size))
    assert np.mean(curve[-5:]) > np.mean(curve[:5]) + 0.1
    for target in (0.4, 0.5):  # one evaluation on a model it never saw beats uniform and LAMP by a wide margin
        assert _score(policy, unseen, target) > max(1 - target, lamp[target]) + 0.1


def test_group_advantages_leave_one_out():
    from agents.policies.layerwise import _group_advantages

    adv = _group_advantages([1.0, 2.0, 3.0, 6.0])
    assert sum(adv) == pytest.approx(0.0, abs=1e-12)  # the group's level drops out
    assert adv[3] > adv[2] > adv[1] > adv[0]
    assert adv[3] == pytest.approx((6.0 - 2.0) / (np.std([1, 2, 3, 6]) + 1e-3))
    assert _group_advantages([5.0]) == [0.0]
    assert _group_advantages([7.0, 7.0]) == [0.0, 0.0]


def test_group_size_draws_each_model_and_target_group_size_times():
    zoo = PruneRNNZooEnv([_synthetic("gru", 0), _synthetic("lstm", 1)], target_sparsity=(0.35, 0.5))
    seen = []
    real = zoo.step
    zoo.step = lambda a: (seen.append((zoo.task_index, zoo.env.target_sparsity)), real(a))[1]
    pretrain(zoo, PretrainArgs(episodes=14, batch_size=7, group_size=3, hidden=8))
    assert len(seen) == 14
    groups = [seen[0:3], seen[3:6], seen[6:7], seen[7:10], seen[10:13], seen[13:14]]  # a batch never splits a group
    assert all(len(set(g)) == 1 for g in groups)
    assert len({g[0] for g in groups}) > 1
    with pytest.raises(ValueError, match="group_size"):
        pretrain(zoo, PretrainArgs(episodes=4, group_size=0))


def test_policy_files_load_safely(tmp_path):
    policy = LayerwisePolicy(hidden=8)
    with torch.no_grad():
        policy.net[-1].bias.fill_(0.25)
    path = tmp_path / "policy.pt"
    save(policy, path, {"zoo": "test"})
    loaded = load(path)
    assert loaded.meta == {"zoo": "test"}
    obs = observation(_reset(PruneRNNEnv(tiny_task("gru"), target_sparsity=0.5)))
    np.testing.assert_array_equal(loaded.act(obs), policy.act(obs))
    # a fresh process loads it
    code = f"from agents.policies.layerwise import load; p = load({str(path)!r}); print(p.hidden)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "8", proc.stderr
    # corrupt, foreign and code-running files are refused with a clear error, and never execute
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:100])
    foreign = tmp_path / "foreign.pt"
    torch.save({"something": torch.zeros(2)}, foreign)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Evil(str(marker))))
    for bad in (corrupt, foreign, evil):
        with pytest.raises(ValueError, match="policy"):
            load(bad)
    assert not marker.exists()


def _random_policy(seed: int, hidden: int = 8) -> LayerwisePolicy:
    torch.manual_seed(seed)
    policy = LayerwisePolicy(hidden=hidden)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return policy


def test_an_ensemble_acts_as_the_mean_of_its_members(tmp_path):
    members = [_random_policy(s) for s in range(3)]
    envs = [_reset(PruneRNNEnv(tiny_task(rnn, layers=2), target_sparsity=0.7)) for rnn in ("gru", "lstm")]
    obs = torch.as_tensor(np.stack([observation(e, joint=True, observation_format=3) for e in envs]))
    both = ensemble(members)
    assert both.members == 3 and len(both.meta["members"]) == 3
    mu, valid = both.means(obs)
    # the departures are averaged, and centring is linear: the mean action is the members' mean
    torch.testing.assert_close(mu, torch.stack([m.means(obs)[0] for m in members]).mean(0))
    assert not torch.equal(mu, members[0].means(obs)[0])
    torch.testing.assert_close(both.log_std, torch.stack([m.log_std for m in members]).mean())
    # one member is that member; nested ensembles are flattened
    torch.testing.assert_close(ensemble(members[:1]).means(obs)[0], members[0].means(obs)[0])
    nested = ensemble([ensemble(members[:2]), members[2]])
    assert nested.members == 3
    torch.testing.assert_close(nested.means(obs)[0], mu)
    # it saves and loads like any policy, and its members are not changed by building it
    path = tmp_path / "ensemble.pt"
    save(both, path)
    loaded = load(path)
    assert loaded.members == 3
    torch.testing.assert_close(loaded.means(obs)[0], mu)
    torch.testing.assert_close(members[0].means(obs)[0], _random_policy(0).means(obs)[0])
    for bad, match in (([], "non-empty"), ([members[0], LayerwisePolicy(hidden=4)], "hidden width"),
                       ([members[0], "policy.pt"], "LayerwisePolicy")):
        with pytest.raises(ValueError, match=match):
            ensemble(bad)
    # a file claiming more networks than it holds weights for is refused before anything is built
    blob = torch.load(path, weights_only=True)
    crafted = tmp_path / "crafted.pt"
    torch.save({**blob, "members": 10**9}, crafted)
    with pytest.raises(ValueError, match="policy"):
        load(crafted)


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _reset(env):
    env.reset(seed=0)
    return env


@pytest.mark.parametrize("mode", ["joint", "sequential"])
def test_search_policy_zero_shot_and_few_shot(tmp_path, mode):
    import agents

    calls = {"test": 0}
    task = tiny_task("lstm", layers=2)
    real_test = task.test

    def counted_test(m):
        calls["test"] += 1
        return real_test(m)

    task.test = counted_test
    policy = LayerwisePolicy(hidden=8)
    with torch.no_grad():
        policy.net[-1].weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "p.pt"
    save(policy, path)
    env = PruneRNNEnv(task, target_sparsity=0.7, mode=mode)
    zero = agents.search("policy", env, 1, seed=0, policy=str(path))  # a path works like the object
    assert zero.evals == 1 and len(zero.history) == 1
    counts = env.counts_for(zero.allocation)
    assert int(counts.sum()) == int(0.7 * env.numels.sum() + 0.5)  # the budget exactly
    assert zero.extras["zero_shot_allocation"] == pytest.approx(policy.allocation(_reset(env)))
    few = agents.search("policy", env, 12, seed=0, policy=policy)
    assert few.evals == 12 and few.history[0] == pytest.approx(zero.val_score)
    assert few.val_score >= zero.val_score  # adaptation never ends below the zero-shot allocation
    assert calls["test"] == 0  # the search never touches the test split
    # the one-shot rivals are scored right after the policy, and few-shot never ends below any of them
    from agents.policies.policy import default_rivals

    rivals = default_rivals(env)  # read from the agent registry (each rule's record)
    assert rivals == ("lamp", "erk", "global", "obd")
    rival_scores = [agents.search(r, env, 1).val_score for r in rivals]
    assert few.val_score >= max(rival_scores)
    assert few.history[len(rivals)] == pytest.approx(max(zero.val_score, *rival_scores))
    # a task without a loss has no OBD rival: the other three, then the search
    import dataclasses

    lossless = PruneRNNEnv(dataclasses.replace(task, loss=None), target_sparsity=0.7, mode=mode)
    assert default_rivals(lossless) == ("lamp", "erk", "global")
    assert agents.search("policy", lossless, 12, seed=0, policy=policy).evals == 12
    bare = agents.search("policy", env, 12, seed=0, policy=policy, rivals=())
    assert bare.evals == 12 and bare.val_score >= zero.val_score
    with pytest.raises(ValueError, match="rivals"):
        agents.search("policy", env, 12, seed=0, policy=policy, rivals=("random",))
    with pytest.raises(ValueError, match="rivals"):
        agents.search("policy", env, 12, seed=0, policy=policy, rivals=5)


def test_the_shipped_policy_zero_shot_is_one_evaluation_at_the_budget_and_never_sees_test(tmp_path):
    """``policy=None`` is the default policy in the package; one evaluation, the exact budget, no test-split call."""
    import agents
    from agents.policies.layerwise import default_policy
    from agents.policies.policy import shipped_policy

    for version, zoo, fmt in (("v6", "zoo-v2/", 4), ("v6-magnitude", "zoo-v2/", 4), ("v5", "zoo-v2/", 4),
                              ("v4", "zoo-v1/", 3)):
        policy = default_policy(version)
        assert policy.meta["command"].startswith("prune-rnn pretrain") and policy.meta["git_commit"]
        assert all(t.startswith(zoo) for t in policy.meta["train_tasks"]) and policy.observation_format == fmt
    for version, operator in (("v6", {"criterion": "obs", "reconstruct": "obs"}),
                              ("v6-magnitude", {"criterion": "magnitude", "reconstruct": None})):
        assert default_policy(version).meta["operator"] == operator  # each trained on the operator it serves
    assert default_policy().observation_format == 4
    with pytest.raises(ValueError, match="version"):
        default_policy("v3")
    task = tiny_task("lstm", layers=3)
    # no calibration data: the calibration-aware default cannot read its features, so the format-3 one acts
    assert shipped_policy(PruneRNNEnv(task, target_sparsity=0.7)).observation_format == 3
    calls = {"evaluate": 0, "test": 0}

    def evaluate(model, _f=task.evaluate):
        calls["evaluate"] += 1
        return _f(model)

    def test(model, _f=task.test):
        calls["test"] += 1
        return _f(model)

    task.evaluate, task.test = evaluate, test
    env = PruneRNNEnv(task, target_sparsity=0.7)
    calls["evaluate"] = 0  # the dense model's score, taken when the env is built
    result = agents.search("policy", env, 1)
    assert result.evals == 1 and calls == {"evaluate": 1, "test": 0}
    assert env.counts_for(result.allocation).sum() == round(0.7 * env.numels.sum())
    # a fresh process loads it; a corrupted copy is refused with a clear error
    code = ("from agents.policies.layerwise import default_policy; "
            "print(default_policy().meta['selected_after_episodes'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and int(proc.stdout.strip()) > 0, proc.stderr
    from importlib.resources import files

    corrupt = tmp_path / "policy.pt"
    corrupt.write_bytes(files("agents").joinpath("data/default_policy.pt").read_bytes()[:-200])
    with pytest.raises(ValueError, match="policy"):
        agents.search("policy", env, 1, policy=str(corrupt))


def test_the_shipped_default_reads_calibration_features_where_the_task_has_calibration():
    """A task with calibration data gets a format-4 policy, the one trained on the env's operator where one ships;
    zero-shot is still one evaluation at the budget and reads neither validation beyond it nor test; hidden-unit
    granularity falls back to the format-3 policy."""
    from test_layer_features import split_task

    import agents
    from agents.policies.policy import shipped_policy

    task = split_task(0, "gru")
    calls = {"test": 0}

    def test(model):
        calls["test"] += 1
        return 0.0

    task.test = test
    env = PruneRNNEnv(task, target_sparsity=0.8)
    assert shipped_policy(env).meta["operator"]["criterion"] == "magnitude"  # the env's default operator's policy
    for criterion, reconstruct in (("obs", "obs"), ("magnitude", "obs"), ("wanda", None)):
        other = PruneRNNEnv(task, target_sparsity=0.8, criterion=criterion, reconstruct=reconstruct)
        assert shipped_policy(other).meta["operator"] == {"criterion": "obs", "reconstruct": "obs"}  # v6
    result = agents.search("policy", env, 1)
    assert result.evals == 1 and calls["test"] == 0
    assert env.counts_for(result.allocation).sum() == round(0.8 * env.numels.sum())
    units = PruneRNNEnv(task, target_sparsity=0.5, granularity="hidden_unit")
    assert shipped_policy(units).observation_format == 3


def _two_model_zoo() -> PruneRNNZooEnv:
    return PruneRNNZooEnv([_synthetic("gru", 0), _synthetic("lstm", 1)], target_sparsity=(0.35, 0.5))


def _dies_in_round(real, n: int, calls: list):
    """``real`` (``agents.policies.layerwise.pretrain``), interrupted as a kill would at its ``n``-th call (one per
    round)."""

    def run(*a, **k):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*a, **k)

    return run


def test_pretraining_killed_mid_run_resumes_to_the_same_policy(tmp_path, monkeypatch):
    """A checkpoint after every round: a run killed in round 3 of 4 and resumed ends with exactly the uninterrupted
    run's policy and log, without redoing finished rounds; another run's checkpoint is refused, a corrupted one too."""
    import agents.policies.layerwise as L
    from agents.core.checkpoint import CheckpointError

    val = [_synthetic("rnn", 2)]
    args = PretrainArgs(episodes=64, batch_size=8, learning_rate=0.01, hidden=8, seed=3)
    whole, whole_log = L.pretrain_selected(_two_model_zoo(), val, args, rounds=4)

    ckpt = tmp_path / "pretrain.ckpt"
    rounds_run = []
    real = L.pretrain
    monkeypatch.setattr(L, "pretrain", _dies_in_round(real, 3, rounds_run))
    with pytest.raises(KeyboardInterrupt):
        L.pretrain_selected(_two_model_zoo(), val, args, rounds=4, checkpoint=ckpt)
    monkeypatch.setattr(L, "pretrain", lambda *a, **k: rounds_run.append(1) or real(*a, **k))
    rounds_run.clear()
    resumed, resumed_log = L.pretrain_selected(_two_model_zoo(), val, args, rounds=4, checkpoint=ckpt)
    assert len(rounds_run) == 2  # rounds 3 and 4 only
    assert resumed_log == whole_log and resumed.meta == whole.meta
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), whole.state_dict().values()))

    other = PretrainArgs(**{**args.__dict__, "learning_rate": 0.02})
    with pytest.raises(CheckpointError, match="learning_rate"):
        L.pretrain_selected(_two_model_zoo(), val, other, rounds=4, checkpoint=ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match="unreadable|corrupted"):
        L.pretrain_selected(_two_model_zoo(), val, args, rounds=4, checkpoint=ckpt)


def test_selection_metrics_score_raw_validation_scores_or_clipped_rewards(tmp_path):
    """``metric="score"`` averages the raw validation scores the env reports, ``"reward"`` the rewards clipped to
    [0, 1]; a pretraining checkpoint written under one selection is refused under another."""
    import agents.policies.layerwise as L
    from agents.core.checkpoint import CheckpointError

    policy, tasks, targets = LayerwisePolicy(hidden=8), [tiny_task("gru"), tiny_task("lstm")], (0.4, 0.8)
    scores, rewards = [], []
    for task in tasks:
        for target in targets:
            env = PruneRNNEnv(task, target_sparsity=target)
            env.reset(seed=0)
            _, reward, _, _, info = env.step(policy.allocation_action(env))
            scores.append(info["score"])
            rewards.append(min(max(reward, 0.0), 1.0))
    assert L.zero_shot_score(policy, tasks, targets, "score") == pytest.approx(np.mean(scores), abs=1e-9)
    assert L.zero_shot_score(policy, tasks, targets, "reward") == pytest.approx(np.mean(rewards), abs=1e-9)
    assert np.mean(scores) != pytest.approx(np.mean(rewards))  # two different criteria on this task
    with pytest.raises(ValueError, match="metric"):
        L.zero_shot_score(policy, tasks, targets, "accuracy")

    zoo = PruneRNNZooEnv(tasks, target_sparsity=(0.35, 0.5))
    args = PretrainArgs(episodes=16, batch_size=8, learning_rate=0.01, hidden=8, seed=3)
    ckpt = tmp_path / "pretrain.ckpt"
    _, log = L.pretrain_selected(zoo, tasks, args, rounds=1, checkpoint=ckpt, selection_metric="score",
                                 selection_targets=targets)
    assert log[0]["validation"] == pytest.approx(np.mean(scores), abs=1e-9)  # episode 0: the untrained policy
    with pytest.raises(CheckpointError, match="selection"):
        L.pretrain_selected(zoo, tasks, args, rounds=1, checkpoint=ckpt, selection_targets=targets)
    with pytest.raises(ValueError, match="selection_targets"):
        L.pretrain_selected(zoo, tasks, args, rounds=1, selection_targets=(0.5, 1.5))


def test_weight_average_moves_by_the_decay_and_resumes_bit_for_bit(tmp_path, monkeypatch):
    """``ema_decay``: after one update the average is ``d * old + (1 - d) * new``; pretrain_selected scores and returns
    the average, and a run killed after its first round resumes to the same policy."""
    import copy

    import agents.policies.layerwise as L

    args = PretrainArgs(episodes=8, batch_size=8, learning_rate=0.05, hidden=8, seed=3, ema_decay=0.75)
    torch.manual_seed(0)
    policy = LayerwisePolicy(hidden=8)
    before = copy.deepcopy(policy)
    average = copy.deepcopy(policy)
    with torch.no_grad():
        for p in average.parameters():
            p.add_(1.0)  # an average that differs from the policy, to see both terms
    old = copy.deepcopy(average)
    trained, _ = pretrain(_two_model_zoo(), args, policy=policy, average=average)
    assert any(not torch.equal(a, b) for a, b in zip(trained.parameters(), before.parameters()))
    for avg, o, p in zip(average.parameters(), old.parameters(), trained.parameters()):
        assert torch.allclose(avg, 0.75 * o + 0.25 * p, atol=1e-6)
    with pytest.raises(ValueError, match="ema_decay"):
        pretrain(_two_model_zoo(), PretrainArgs(**{**args.__dict__, "ema_decay": 1.0}))

    val = [_synthetic("rnn", 2)]
    args = PretrainArgs(episodes=48, batch_size=8, learning_rate=0.05, hidden=8, seed=3, ema_decay=0.5)
    whole, whole_log = L.pretrain_selected(_two_model_zoo(), val, args, rounds=3)
    raw_args = PretrainArgs(**{**args.__dict__, "ema_decay": 0.0})
    _, raw_log = L.pretrain_selected(_two_model_zoo(), val, raw_args, rounds=3)
    # the same training, but the average is what gets scored
    assert [r["train_reward"] for r in whole_log[1:]] == [r["train_reward"] for r in raw_log[1:]]
    assert [r["validation"] for r in whole_log[1:]] != [r["validation"] for r in raw_log[1:]]
    assert L.zero_shot_score(whole, val) == pytest.approx(whole.meta["validation_zero_shot"])
    ckpt = tmp_path / "ema.ckpt"
    real = L.pretrain
    monkeypatch.setattr(L, "pretrain", _dies_in_round(real, 2, []))
    with pytest.raises(KeyboardInterrupt):
        L.pretrain_selected(_two_model_zoo(), val, args, rounds=3, checkpoint=ckpt)
    monkeypatch.setattr(L, "pretrain", real)
    resumed, resumed_log = L.pretrain_selected(_two_model_zoo(), val, args, rounds=3, checkpoint=ckpt)
    assert resumed_log == whole_log
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), whole.state_dict().values()))


def _random_pooled(seed: int, hidden: int = 8) -> LayerwisePolicy:
    torch.manual_seed(seed)
    policy = LayerwisePolicy(hidden=hidden, pool=True)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return policy


def _rows(obs: torch.Tensor, policy: LayerwisePolicy) -> tuple[torch.Tensor, torch.Tensor]:
    from prune_env.envs.zoo import CONTEXT

    n = len(CONTEXT)
    return obs[..., :-n].reshape(*obs.shape[:-1], -1, len(policy.row)), obs[..., -n:]


def test_a_pooled_policy_reads_the_other_layers_and_nothing_else():
    env = _reset(PruneRNNEnv(tiny_task("lstm", layers=2), target_sparsity=0.7))
    obs = torch.as_tensor(observation(env, joint=True, observation_format=3))
    untrained = LayerwisePolicy(hidden=8, pool=True)
    torch.testing.assert_close(untrained.means(obs)[0], LayerwisePolicy(hidden=8).means(obs)[0])  # LAMP
    pooled, single = _random_pooled(0), _random_policy(0)
    rows, ctx = _rows(obs, pooled)
    valid = rows[:, pooled._valid] > 0.5
    first, last = 0, int(valid.nonzero().max())
    changed = rows.clone()
    changed[last, pooled.row.index("w_q90")] += 1.0  # another layer's statistic

    def delta(policy, r):  # the uncentred departure of each layer
        x = torch.cat([r.index_select(-1, policy._index), ctx.expand(len(r), -1)], -1)
        return policy.net(x, r[:, policy._valid] > 0.5).squeeze(-1)

    assert not torch.allclose(delta(pooled, rows)[first], delta(pooled, changed)[first])
    torch.testing.assert_close(delta(single, rows)[first], delta(single, changed)[first])
    # the order of the layers does not matter: permuting them permutes the departures
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(delta(pooled, rows[perm]), delta(pooled, rows)[perm])
    # padding rows (invalid layers) do not move the real layers' departures
    padded = rows.clone()
    padded[~valid] = 5.0
    padded[~valid, pooled._valid] = 0.0
    torch.testing.assert_close(delta(pooled, padded)[valid], delta(pooled, rows)[valid])


def test_pooled_policies_save_load_and_ensemble(tmp_path):
    envs = [_reset(PruneRNNEnv(tiny_task(rnn, layers=2), target_sparsity=0.7)) for rnn in ("gru", "lstm")]
    obs = torch.as_tensor(np.stack([observation(e, joint=True, observation_format=3) for e in envs]))
    members = [_random_pooled(s) for s in range(2)]
    save(members[0], tmp_path / "p.pt")
    loaded = load(tmp_path / "p.pt")
    assert loaded.pool
    torch.testing.assert_close(loaded.means(obs)[0], members[0].means(obs)[0])
    both = ensemble(members)
    assert both.pool and both.members == 2
    torch.testing.assert_close(both.means(obs)[0], torch.stack([m.means(obs)[0] for m in members]).mean(0))
    save(both, tmp_path / "e.pt")
    torch.testing.assert_close(load(tmp_path / "e.pt").means(obs)[0], both.means(obs)[0])
    with pytest.raises(ValueError, match="pool"):
        ensemble([members[0], _random_policy(0)])
    # a per-layer file is not read as a pooled one, and a crafted `pool` is refused
    blob = torch.load(tmp_path / "p.pt", weights_only=True)
    for bad in ({k: v for k, v in blob.items() if k != "pool"}, {**blob, "pool": "yes"}):
        torch.save(bad, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match="policy"):
            load(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="pool"):
        LayerwisePolicy(pool=1)


def test_a_pooled_policy_pretrains_and_transfers():
    zoo = PruneRNNZooEnv([_synthetic("gru", 0), _synthetic("lstm", 1), _synthetic("rnn", 2, layers=3)],
                         target_sparsity=(0.35, 0.5))
    unseen = _synthetic("lstm", 3, layers=2, bidirectional=True, hidden=10)
    policy, curve = pretrain(zoo, PretrainArgs(episodes=480, batch_size=16, learning_rate=0.01, hidden=16, seed=0,
                                               group_size=4, pool=True))
    assert policy.pool and np.mean(curve[-5:]) > np.mean(curve[:5]) + 0.1
    for target in (0.4, 0.5):
        assert _score(policy, unseen, target) > max(1 - target, _lamp_score(unseen, target)) + 0.1


@pytest.mark.parametrize("pool", [False, True])
def test_a_scaled_policy_departs_from_lamp_by_the_factor(pool):
    from agents.policies.layerwise import scaled

    policy = _random_pooled(1) if pool else _random_policy(1)
    policy.meta = {"zoo": "v2"}
    env = _reset(PruneRNNEnv(tiny_task("lstm", layers=2), target_sparsity=0.7))
    obs = torch.as_tensor(observation(env, joint=True, observation_format=3))
    lamp = LayerwisePolicy(hidden=8).means(obs)[0]
    mu = policy.means(obs)[0]
    for factor in (0.0, 0.5, 2.0):
        torch.testing.assert_close(scaled(policy, factor).means(obs)[0], lamp + factor * (mu - lamp))
    torch.testing.assert_close(policy.means(obs)[0], mu)  # the original is not changed
    assert scaled(scaled(policy, 2.0), 0.5).meta == {"zoo": "v2", "scale": 1.0}
    for bad in (-1.0, float("nan"), "2"):
        with pytest.raises(ValueError, match="factor"):
            scaled(policy, bad)
