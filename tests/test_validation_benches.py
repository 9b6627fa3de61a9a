"""The validation-only benchmark helpers (`zero_shot_by_target`, `allocations_vs_search`) on tiny models: what they
report is what the env scores, every allocation meets the budget, and no test split is read."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tiny import tiny_task

from agents.layerwise import LayerwisePolicy
from prune_env import PruneRNNEnv

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import allocations_vs_search  # noqa: E402
import zero_shot_by_target  # noqa: E402


def _no_test(task):
    def refuse(model):
        raise AssertionError("a validation-only benchmark read the test split")

    task.test = refuse
    return task


def test_zero_shot_by_target_rewards_and_scores_agree():
    import agents

    task = _no_test(tiny_task("gru"))
    policy = LayerwisePolicy(hidden=8)  # untrained: LAMP's allocation
    out = zero_shot_by_target.rewards(task, 0.7, ["lamp", "erk"], {"p": policy})
    env = PruneRNNEnv(task, target_sparsity=0.7)
    dense = env.dense_score
    for m in ("lamp", "erk", "p"):
        assert out[m] == pytest.approx(1.0 + (out[f"{m}:score"] - dense) / abs(dense))
    assert out["lamp:score"] == pytest.approx(agents.search("lamp", env, 1).val_score)
    assert out["p:score"] == pytest.approx(out["lamp:score"])  # the untrained policy is LAMP


def test_allocations_vs_search_rows_meet_the_budget():
    task = _no_test(tiny_task("lstm", layers=2))
    rows = allocations_vs_search.allocations(task, 0.8, ["lamp", "global"], {"p": LayerwisePolicy(hidden=8)},
                                             budget=4, seed=0)
    assert [r["method"] for r in rows] == ["lamp", "global", "p", "random-4"]
    env = PruneRNNEnv(task, target_sparsity=0.8)
    for r in rows:
        assert list(r["allocation"]) == env.layer_names
        assert int(env.counts_for(r["allocation"]).sum()) == round(0.8 * env.numels.sum())
    assert rows[2]["val"] == pytest.approx(rows[0]["val"])  # untrained policy = LAMP
