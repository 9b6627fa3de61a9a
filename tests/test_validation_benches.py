"""The validation-only benchmark reports (``benchmarks.transfer``'s ``rewards`` and ``allocations``, and
``benchmarks.distill_search``) on tiny models: what they report is what the env scores, every allocation meets the
target, and no test split is read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny import tiny_task

from agents.policies.layerwise import LayerwisePolicy
from benchmarks import distill_search, transfer
from prune_env import PruneRNNEnv


def _no_test(task):
    def refuse(model):
        raise AssertionError("a validation-only benchmark read the test split")

    task.test = refuse
    return task


def test_zero_shot_by_target_rewards_and_scores_agree():
    import agents

    task = _no_test(tiny_task("gru"))
    policy = LayerwisePolicy(hidden=8)  # untrained: LAMP's allocation
    out = transfer.rewards(task, 0.7, ["lamp", "erk"], {"p": policy})
    env = PruneRNNEnv(task, target_sparsity=0.7)
    dense = env.dense_score
    for m in ("lamp", "erk", "p"):
        assert out[m] == pytest.approx(1.0 + (out[f"{m}:score"] - dense) / abs(dense))
    assert out["lamp:score"] == pytest.approx(agents.search("lamp", env, 1).val_score)
    assert out["p:score"] == pytest.approx(out["lamp:score"])  # the untrained policy is LAMP


def test_allocations_vs_search_rows_meet_the_budget():
    task = _no_test(tiny_task("lstm", layers=2))
    rows = transfer.allocations(task, 0.8, ["lamp", "global"], {"p": LayerwisePolicy(hidden=8)},
                                             budget=4, seed=0)
    assert [r["method"] for r in rows] == ["lamp", "global", "p", "random-4"]
    env = PruneRNNEnv(task, target_sparsity=0.8)
    for r in rows:
        assert list(r["allocation"]) == env.layer_names
        assert int(env.counts_for(r["allocation"]).sum()) == round(0.8 * env.numels.sum())
    assert rows[2]["val"] == pytest.approx(rows[0]["val"])  # untrained policy = LAMP


def test_distill_search_examples_and_the_centred_fit():
    """A search example is the better of REINFORCE's and LAMP's allocations on validation; fitting the policy to
    examples drives the centred loss down, and a common shift of the target actions does not change the loss."""
    import torch

    task = _no_test(tiny_task("gru", hidden=12))
    example = distill_search.search_example(task, 0.7, budget=6, seed=0)
    assert example["source"] in ("search", "lamp")
    assert max(example["search_val"], example["lamp_val"]) == pytest.approx(
        example["search_val"] if example["source"] == "search" else example["lamp_val"])
    env = PruneRNNEnv(task, target_sparsity=0.7)
    assert list(example["allocation"]) == env.layer_names
    assert env.score_counts(env.counts_for(example["allocation"]))[0] == pytest.approx(
        max(example["search_val"], example["lamp_val"]))
    examples = [example, {**example, "target": 0.5, "allocation": {n: 0.5 for n in env.layer_names}}]
    obs, target = distill_search.examples_tensors(examples, {task.name: task}, max_layers=env.num_layers + 2)
    assert obs.shape[0] == 2 and target.shape == (2, env.num_layers + 2)
    assert torch.all(target[:, env.num_layers:] == 0)  # padding
    policy = LayerwisePolicy(hidden=8)
    before = distill_search.centred_loss(policy, obs, target).item()
    assert distill_search.centred_loss(policy, obs, target + 0.3).item() == pytest.approx(before, abs=1e-6)
    opt = torch.optim.Adam(policy.parameters(), lr=0.01)
    for _ in range(100):
        loss = distill_search.centred_loss(policy, obs, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * before


def test_distill_search_subset_refuses_a_bad_size(tmp_path):
    import json

    (tmp_path / "search_0.jsonl").write_text(json.dumps({"model": "m", "target": 0.5, "allocation": {}}) + "\n")
    with pytest.raises(SystemExit, match="--subset must be in"):
        distill_search.main(["fit", "--subset", "2", "--out", str(tmp_path)])


def test_an_ensemble_ships_only_ahead_of_lamp_and_the_incumbent():
    from benchmarks.policy_ensemble import against

    def decision(scores, lamp):
        cells = [{"model": "m", "target": t, "policy_score": s, "lamp_score": lamp} for t, s in zip((0.8, 0.9), scores)]
        mean = sum(scores) / len(scores)
        return {"cells": cells, "mean": {"policy_score": mean, "lamp_score": lamp}, "beats_lamp": mean > lamp}

    incumbent = decision([0.5, 0.3], 0.35)
    assert against(decision([0.6, 0.3], 0.35), incumbent)["ships"]
    assert against(decision([0.6, 0.3], 0.35), incumbent)["share_ahead_of_incumbent"] == 0.5
    assert not against(decision([0.5, 0.3], 0.35), incumbent)["ships"]  # a tie with the incumbent
    assert not against(decision([0.6, 0.3], 0.5), decision([0.5, 0.3], 0.5))["ships"]  # below LAMP
    with pytest.raises(ValueError, match="same cells"):
        against(decision([0.6], 0.35), incumbent)


def test_pretraining_selection_never_reads_the_decision_a_test_split_or_the_training_models():
    from benchmarks.policy_ship import parse, pretrain_argv

    args = parse(["--selection-splits", "v1:train", "v1:validation", "--train-splits", "v2:train"])
    words = pretrain_argv(args, Path("out"))
    assert words[words.index("--zoo") + 1:words.index("--validation")] == ["v2:train"]
    i = words.index("--validation")
    assert words[i + 1:i + 4] == ["v1:train", "v1:validation", "--observation-format"]
    assert parse([]).selection_splits == ["v1:validation"] and parse([]).train_splits == ["v2:train"]
    for bad in (["--selection-splits", "v1:train", "v2:validation"], ["--selection-splits", "test"],
                ["--train-splits", "v2:train", "v2:test"], ["--train-splits", "v2:validation"],
                ["--train-splits", "v2:train", "v1:train", "--selection-splits", "v1:train"]):
        with pytest.raises(SystemExit):
            parse(bad)


def test_departure_scales_are_scored_on_one_env_per_cell_and_0_is_lamp():
    import agents
    from benchmarks.policy_scale import means, score_scales

    task = _no_test(tiny_task("lstm", layers=2))
    policy = LayerwisePolicy(hidden=8)
    with torch.no_grad():
        policy.net[-1].bias.fill_(0.0)
        policy.net[-1].weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
    rows = score_scales(policy, [task], [0.6, 0.8], [0.0, 1.0, 2.0], {})
    assert [(r["model"], r["target"]) for r in rows] == [("tiny-lstm", 0.6), ("tiny-lstm", 0.8)]
    for r in rows:
        assert r["score"]["0.0"] == pytest.approx(agents.search("lamp", PruneRNNEnv(task, target_sparsity=r["target"]),
                                                                1).val_score)
        env = PruneRNNEnv(task, target_sparsity=r["target"])
        env.reset(seed=0)
        assert r["score"]["1.0"] == pytest.approx(env.step(policy.allocation_action(env))[4]["score"])
        assert all(0.0 <= v <= 1.0 for v in r["reward"].values())
    assert means(rows)["2.0"] == pytest.approx((rows[0]["score"]["2.0"] + rows[1]["score"]["2.0"]) / 2)
