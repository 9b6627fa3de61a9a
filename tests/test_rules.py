"""The one-shot rules (uniform, global, gradient, LAMP, ERK, OBD): one evaluation, exact targets, caps, and
hand-worked allocations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from agent_helpers import ONE_SHOT, RULES, CountingEvaluate, counted_env
from tiny import tiny_task
from torch import nn

import agents
from agents.rules.shared import global_threshold_counts
from prune_env import PruneRNNEnv, RNNTask
from prune_env.pruning import allocation as B
from prune_env.pruning.layers import get_param


def test_global_threshold_is_the_greedy_rule():
    rng = np.random.default_rng(0)
    scores = [rng.random(7), rng.random(5) * 0.1, rng.random(9)]
    cap = np.array([7, 3, 9])
    counts = global_threshold_counts(scores, 8, cap)
    # Brute force: repeatedly take the smallest remaining score whose layer has room.
    pool = sorted((s, i) for i, arr in enumerate(scores) for s in arr)
    expect = np.zeros(3, dtype=int)
    for _, i in pool:
        if expect.sum() == 8:
            break
        if expect[i] < cap[i]:
            expect[i] += 1
    assert counts.tolist() == expect.tolist()
    assert counts[1] == 3  # the layer of small weights is held at its cap


def test_global_matches_magnitude_threshold_when_uncapped():
    env, _ = counted_env(target=0.3)
    res = agents.search("global", env, 1)
    w = np.concatenate([get_param(env.task.model, layer).detach().abs().reshape(-1).numpy()
                        for layer in env.layers])
    thr = np.sort(w)[B.target_count(0.3, env.numels) - 1]
    for layer in env.layers:
        lw = get_param(env.task.model, layer).detach().abs().reshape(-1).numpy()
        assert res.allocation[layer.name] == pytest.approx(float((lw <= thr).mean()), abs=1.5 / lw.size)


def test_gradient_prunes_small_gradient_layers_harder():
    env, _ = counted_env(target=0.5)
    res = agents.search("gradient", env, 1)
    g = {n: s["grad_mean"] for n, s in zip(env.layer_names, env.layer_stats)}
    lo, hi = min(g, key=g.get), max(g, key=g.get)
    assert res.allocation[lo] > res.allocation[hi]
    res_g = agents.search("gradient", env, 1, variant="global")
    assert env.counts_for(res_g.allocation).sum() == B.target_count(0.5, env.numels)


def test_heuristics_penalty_mode_need_sparsity():
    env = PruneRNNEnv(tiny_task(), device="cpu")
    with pytest.raises(ValueError, match="sparsity"):
        agents.search("uniform", env, 1)
    res = agents.search("uniform", env, 1, sparsity=0.5)
    assert all(s == pytest.approx(0.5, abs=0.02) for s in res.allocation.values())


@pytest.mark.parametrize("name", ONE_SHOT)
@pytest.mark.parametrize("mode", ["joint", "sequential"])
def test_one_shot_rules_use_one_evaluation_and_meet_the_target(name, mode):
    env, counter = counted_env(mode=mode, target=0.7)
    res = agents.search(name, env, 5, seed=0)
    assert counter.calls == res.evals == len(res.history) == 1
    counts = env.counts_for(res.allocation)
    assert counts.sum() == B.target_count(0.7, env.numels)
    assert (counts <= env.cap).all()


class _Linears(nn.Module):
    """Bias-free ``nn.Linear`` layers of the given ``(fan_out, fan_in)`` shapes, weights set by hand (or 1)."""

    def __init__(self, shapes, weights=None):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(i, o, bias=False) for o, i in shapes)
        with torch.no_grad():
            for k, layer in enumerate(self.layers):
                layer.weight.copy_(torch.ones(layer.weight.shape) if weights is None
                                   else torch.as_tensor(weights[k], dtype=torch.float32).reshape(layer.weight.shape))


def _half(model: nn.Module) -> float:
    return 0.5


def linear_env(shapes, weights=None, target: float = 0.5, **env_kwargs) -> tuple[PruneRNNEnv, CountingEvaluate]:
    """A PruneRNNEnv on :class:`_Linears` with a constant score (the allocation is all these tests look at)."""
    counter = CountingEvaluate(_half)
    env = PruneRNNEnv(RNNTask(_Linears(shapes, weights), evaluate=counter, name="linears"), target_sparsity=target,
                      device="cpu", **env_kwargs)
    counter.calls = 0
    return env, counter


@pytest.mark.parametrize("target, expect", [(0.5, [2, 3]), (0.7, [3, 4])])
def test_lamp_scores_by_hand(target, expect):
    """Layer a: |w| = 1, 2, 3, 4, scores 1/30, 4/29, 9/25, 16/16. Layer b: six equal weights, scores (stable by
    index) 1/6, 1/5, 1/4, 1/3, 1/2, 1. Merged: a a b b b b a b a b. Global magnitude would take a: 1, b: 4 at 0.5."""
    a, b = [[-1.0, 2.0], [3.0, -4.0]], [[1.0] * 2] * 3
    env, counter = linear_env([(2, 2), (3, 2)], [a, b], target=target)
    res = agents.search("lamp", env, 3)
    assert counter.calls == res.evals == 1
    assert env.counts_for(res.allocation).tolist() == expect
    model = env.pruned_model(res.allocation)
    kept_a = model.layers[0].weight.detach().abs().reshape(-1)
    assert kept_a.tolist() == [0.0 if abs(w) <= expect[0] else abs(w) for w in (-1.0, 2.0, 3.0, -4.0)]
    from agents.rules.lamp import lamp_scores

    np.testing.assert_allclose(lamp_scores(np.array(a)), [1 / 30, 4 / 29, 9 / 25, 1.0])
    np.testing.assert_allclose(lamp_scores(np.array(b)), [1 / 6, 1 / 5, 1 / 4, 1 / 3, 1 / 2, 1.0])


ERK_SHAPES = [(20, 10), (40, 20), (4, 40)]  # (fan_out, fan_in); ERK weights 0.15, 0.075, 0.275


def test_erk_densities_proportional_to_fan_ratio():
    """At 0.8 no layer reaches density 1 or a cap: kept fraction = c * (fan_in + fan_out) / (fan_in * fan_out)."""
    env, counter = linear_env(ERK_SHAPES, target=0.8)
    res = agents.search("erk", env, 2)
    assert counter.calls == res.evals == 1
    counts = env.counts_for(res.allocation)
    assert counts.sum() == B.target_count(0.8, env.numels)
    d = np.array([(o + i) / (o * i) for o, i in ERK_SHAPES])
    c = (env.numels.sum() - counts.sum()) / (env.numels * d).sum()
    density = 1.0 - counts / env.numels
    assert (c * d < 1).all() and (counts < env.cap).all()
    assert (np.abs(density - c * d) <= 1.0 / env.numels).all(), (density, c * d)  # whole weights: one off at most
    assert res.extras == {"dense_layers": [], "capped_layers": []}


def test_erk_keeps_a_layer_dense_and_rescales_the_others():
    """At 0.5 the small layer's scaled density is 4.33 * 0.275 = 1.19: it stays dense, and the others share the
    580 kept weights left by 160 with c = 420 / 90: densities 0.7 and 0.35, i.e. 60 and 520 pruned."""
    env, _ = linear_env(ERK_SHAPES, target=0.5)
    res = agents.search("erk", env, 1)
    assert env.counts_for(res.allocation).tolist() == [60, 520, 0]
    assert res.extras["dense_layers"] == ["layers.2.weight"]


def _capped_env() -> PruneRNNEnv:
    """Three layers: a 128x128 of tiny weights plus one large (both rules want it past 98%), a 4x200 and a 16x16
    of weights in [1, 2] (ERK weights 0.255 and 0.125: different enough that sharing the rest in ERK proportion
    is not the common shift the env's projection would give an uncapped request)."""
    rng = np.random.default_rng(0)
    a = 1e-3 * (1 + rng.random(128 * 128))
    a[0] = 1.0
    weights = [a, 1 + rng.random(800), 1 + rng.random(256)]
    return linear_env([(128, 128), (4, 200), (16, 16)], weights, target=0.97, max_sparsity=0.98)[0]


def test_lamp_respects_the_caps_at_high_sparsity():
    """The tiny layer stops at its cap and the rest of the budget goes to the lowest LAMP scores of the others
    (brute-force greedy), not a common shift of the uncapped request."""
    from agents.rules.lamp import lamp_scores

    env = _capped_env()
    res = agents.search("lamp", env, 1)
    counts = env.counts_for(res.allocation)
    total = B.target_count(0.97, env.numels)
    pool = sorted((s, i) for i, w in enumerate(env.analysis.dense) for s in lamp_scores(w.numpy()))
    expect = np.zeros(3, dtype=int)
    for _, i in pool:
        if expect.sum() == total:
            break
        if expect[i] < env.cap[i]:
            expect[i] += 1
    assert counts[0] == env.cap[0] and counts.sum() == total and (counts <= env.cap).all()
    assert counts.tolist() == expect.tolist()
    assert res.extras["capped_layers"] == ["layers.0.weight"]


def test_erk_respects_the_caps_at_high_sparsity():
    """ERK would keep 1.66% of the 128x128 layer; it keeps 2% (its cap) and the other two share the rest in ERK
    proportion."""
    env = _capped_env()
    res = agents.search("erk", env, 1)
    counts = env.counts_for(res.allocation)
    assert counts[0] == env.cap[0] and counts.sum() == B.target_count(0.97, env.numels)
    assert (counts <= env.cap).all()
    d = np.array([256 / 16384, 204 / 800, 32 / 256])
    c = (env.numels[1:] - counts[1:]).sum() / (env.numels[1:] * d[1:]).sum()
    density = 1.0 - counts[1:] / env.numels[1:]
    assert (np.abs(density - c * d[1:]) <= 1.0 / env.numels[1:]).all(), (density, c * d[1:])
    assert res.extras["capped_layers"] == ["layers.0.weight"]


@pytest.mark.parametrize("name", RULES)
def test_one_shot_rules_penalty_mode_and_bad_arguments(name):
    env = PruneRNNEnv(tiny_task(), device="cpu")
    with pytest.raises(ValueError, match="sparsity"):
        agents.search(name, env, 1)
    res = agents.search(name, env, 1, sparsity=0.5)
    assert env.counts_for(res.allocation).sum() == B.target_count(0.5, env.numels)
    budgeted, _ = counted_env()
    with pytest.raises(ValueError, match="sparsity"):
        agents.search(name, budgeted, 1, sparsity=0.5)  # differs from the env's target 0.6
    with pytest.raises(ValueError, match="max_evals"):
        agents.search(name, budgeted, 0)
