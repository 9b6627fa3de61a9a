"""Agents learn: a synthetic env with a known optimum, the REINFORCE options, vector envs and PPO on them."""

from __future__ import annotations

import numpy as np
import pytest
from agent_helpers import counted_env, synthetic_env
from tiny import tiny_task

import agents
from agents.policies.policy import play
from prune_env import PruneRNNEnv

MARGIN = 0.03  # the learned policy's own (deterministic) allocation must score >= 1 - MARGIN


def _policy_score(env: PruneRNNEnv, res: agents.SearchResult) -> float:
    """Score of the trained policy's deterministic allocation, outside the search budget."""
    return play(env, res.policy)[1]["score"]


@pytest.mark.parametrize("name, kwargs", [("reinforce", {}), ("ppo", {"n_envs": 4})])
def test_learning_reaches_known_optimum(name, kwargs):
    env = synthetic_env()
    uniform = agents.search("uniform", env, 1).val_score
    assert uniform < 1 - 10 * MARGIN, "the synthetic task must separate learning from uniform pruning"
    res = agents.search(name, env, 240, seed=0, **kwargs)
    assert _policy_score(env, res) >= 1 - MARGIN
    assert res.val_score >= 1 - MARGIN


@pytest.mark.parametrize("name, kwargs", [("reinforce", {"learning_rate": 0.0}),
                                          ("ppo", {"n_envs": 4, "learning_rate": 0.0})])
def test_learning_test_fails_an_agent_that_learns_nothing(name, kwargs):
    env = synthetic_env()
    res = agents.search(name, env, 240, seed=0, **kwargs)
    assert _policy_score(env, res) < 1 - MARGIN


@pytest.mark.parametrize("kwargs, ablation", [({"init_mean": "uniform"}, None),
                                              ({"batch_size": 16, "init_std": 0.5},
                                               {"advantage": "rank", "mirrored": True})])
def test_reinforce_options_still_learn(kwargs, ablation):
    from agents.searchers.reinforce import _Ablation

    env = synthetic_env()
    private = {"_ablation": _Ablation(**ablation)} if ablation else {}
    res = agents.search("reinforce", env, 240, seed=0, **kwargs, **private)
    assert _policy_score(env, res) >= 1 - MARGIN


@pytest.mark.parametrize("knob", [{"advantage": "rank"}, {"mirrored": True}, {"std_learning_rate": 0.02},
                                  {"joint_hidden": 64}, {"center": False}])
def test_reinforce_ablation_knobs_are_not_options(knob):
    """Knobs without a measured gain are not ``Args``; the ablation benchmarks reach them through ``_Ablation``."""
    from agents.searchers.reinforce import _Ablation

    env, counter = counted_env()
    with pytest.raises(ValueError, match=next(iter(knob))):
        agents.search("reinforce", env, 4, seed=0, **knob)
    res = agents.search("reinforce", env, 4, seed=0, _ablation=_Ablation(**knob))
    assert res.evals == counter.calls == 4


def test_reinforce_ablation_checks_its_knobs():
    from agents.searchers.reinforce import _Ablation

    for bad in ({"advantage": "x"}, {"mirrored": 1}, {"center": "yes"}, {"std_learning_rate": -1.0},
                {"joint_hidden": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            _Ablation(**bad)
    env, _ = counted_env()
    with pytest.raises(ValueError, match="_ablation"):
        agents.search("reinforce", env, 2, _ablation={"advantage": "rank"})


@pytest.mark.parametrize("init_mean", ["mid", "uniform"])
def test_reinforce_starts_at_uniform_pruning(init_mean):
    env = synthetic_env(target=0.9)
    res = agents.search("reinforce", env, 8, seed=0, learning_rate=0.0, init_mean=init_mean)
    start = play(env, res.policy)[1]["layer_sparsity"]
    uniform = agents.search("uniform", env, 1).allocation
    assert start == pytest.approx(uniform, abs=2e-3)


def test_rank_advantage_is_measured_from_the_baseline():
    from agents.searchers.reinforce import _advantages

    adv = _advantages(np.array([0.1, 0.3, 0.2, 0.3]), 0.25, "rank")
    np.testing.assert_allclose(adv, [-0.5, 0.375, -0.25, 0.375])  # ties share a rank; above b: positive
    assert (_advantages(np.array([0.5, 0.6]), 0.0, "rank") > 0).all()


def test_reinforce_learns_in_sequential_mode():
    env = synthetic_env(mode="sequential")
    res = agents.search("reinforce", env, 300, seed=0)
    assert _policy_score(env, res) >= 1 - 2 * MARGIN


@pytest.mark.parametrize("name", ["random", "reinforce"])
def test_vector_envs_same_result_same_budget(name):
    from prune_env import PruneRNNVectorEnv

    env, counter = counted_env()
    plain = agents.search(name, env, 10, seed=0)
    counter.calls = 0
    PruneRNNVectorEnv(env.task, num_envs=4, target_sparsity=0.6, device="cpu", autoreset_mode="Disabled")
    setup = counter.calls  # the vector env's own dense score and probe: calibration, not candidates
    counter.calls = 0
    batched = agents.search(name, env, 10, seed=0, vector_envs=4)  # 2 batched passes of 4, then 2 single
    assert batched.evals == 10 and len(batched.history) == 10
    # Batched passes bypass task.evaluate; a vector env that found one-by-one scoring faster uses it. Either way
    # no candidate is scored twice and none past the budget.
    assert 2 <= counter.calls - setup <= 10
    assert batched.allocation == plain.allocation
    np.testing.assert_allclose(batched.history, plain.history, atol=1e-5)


@pytest.mark.parametrize("mode", ["joint", "sequential"])
def test_ppo_on_the_batched_vector_env_matches_plain_ppo(mode):
    """vector_envs=K: PPO steps one PruneRNNVectorEnv (SB3VecEnv) instead of K wrapped env copies."""
    env, counter = counted_env(mode=mode)
    opts = {"n_steps": 2, "n_epochs": 1}
    plain = agents.search("ppo", env, 8, seed=0, n_envs=4, **opts)
    batched = agents.search("ppo", env, 8, seed=0, vector_envs=4, **opts)
    assert batched.evals == 8 and len(batched.history) == 8
    assert batched.allocation == pytest.approx(plain.allocation, abs=1e-6)
    np.testing.assert_allclose(batched.history, plain.history, atol=1e-5)
    odd = agents.search("ppo", env, 6, seed=0, vector_envs=4, **opts)  # the last round ends 2 episodes too many
    assert odd.evals == 6 and len(odd.history) == 6
    with pytest.raises(ValueError, match="vec_env"):
        agents.search("ppo", env, 6, seed=0, vector_envs=4, vec_env="subproc")


@pytest.mark.parametrize("batched", [True, False])
def test_ppo_on_the_vector_env_never_scores_past_the_cap(monkeypatch, batched):
    """search("ppo", env, max_evals=20, vector_envs=8) scores at most 20 candidates: 8 + 8 + 4, the last round's other
    4 episodes end unscored. Counted where the vector env scores (batched pass or each sub-env's evaluate)."""
    from prune_env import PruneRNNVectorEnv

    scored = []
    original = PruneRNNVectorEnv._score

    def counting(self, ended):
        scored.append(len(ended))
        return original(self, ended)

    monkeypatch.setattr(PruneRNNVectorEnv, "_score", counting)
    if not batched:
        monkeypatch.setattr(PruneRNNVectorEnv, "_choose_path", lambda self, b, m: ("sequential", "test"))
    env, _ = counted_env()
    result = agents.search("ppo", env, 20, seed=0, vector_envs=8, n_steps=2, n_epochs=1)
    assert sum(scored) == 20 and max(scored) <= 8
    assert result.evals == 20 and len(result.history) == 20


def test_heuristics_read_the_shared_analysis(monkeypatch):
    """The gradient baseline reuses the gradients of the env's analysis (never recomputes them), and the heuristics'
    caps are the env's, hidden-unit floor included (every recurrent layer keeps one unit)."""
    from agents.rules import shared as _alloc
    from prune_env import PruneRNNEnv

    env = PruneRNNEnv(tiny_task("gru", hidden=8), granularity="hidden_unit", target_sparsity=0.8, max_sparsity=1.0)
    assert (_alloc.caps(env) == env.numels - 1).all()
    flat = PruneRNNEnv(tiny_task("gru"), target_sparsity=0.8)
    def recomputed(*a, **k):
        pytest.fail("recomputed gradients")

    monkeypatch.setattr("prune_env.pruning.criteria.compute_gradients", recomputed)
    monkeypatch.setattr("prune_env.pruning.analysis.compute_gradients", recomputed)
    for variant in ("layer", "global"):
        result = agents.search("gradient", flat, 1, variant=variant)
        assert result.evals == 1
    result = agents.search("gradient", env, 1)
    assert max(result.allocation.values()) < 1.0
