"""A user's evaluate that raises or returns NaN/inf stops the search with an error naming the allocation; a model with
a non-finite weight is refused when the env is built, naming the weight; ``step()`` before ``reset()`` raises."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny import tiny_task

import agents
from prune_env import EvaluationError, PruneRNNEnv, PruneRNNVectorEnv, RNNTask


class Flaky:
    """Scores normally until call ``n``, then misbehaves as ``mode`` says."""

    def __init__(self, task: RNNTask, n: int, mode: str):
        self.inner, self.n, self.mode, self.calls = task.evaluate, n, mode, 0

    def __call__(self, model):
        self.calls += 1
        if self.calls >= self.n:
            if self.mode == "raise":
                raise RuntimeError("disk on fire")
            return {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[self.mode]
        return self.inner(model)


@pytest.mark.parametrize("mode", ["raise", "nan", "inf", "-inf"])
def test_a_bad_score_stops_the_search_naming_the_allocation(mode):
    task = tiny_task("gru")
    task.evaluate = Flaky(task, 4, mode)  # the dense score (call 1) and two episodes are fine
    env = PruneRNNEnv(task, target_sparsity=0.6)
    with pytest.raises(EvaluationError, match=r"allocation \{'emb\.weight': ") as info:
        agents.search("random", env, 10, seed=0)
    assert "tiny-gru" in str(info.value)
    if mode == "raise":
        assert isinstance(info.value.__cause__, RuntimeError)
    assert task.evaluate.calls == 4  # it stopped at the bad one


def test_a_bad_dense_score_is_named_as_such():
    task = tiny_task("lstm")
    task.evaluate = Flaky(task, 1, "nan")
    with pytest.raises(EvaluationError, match="the dense model"):
        PruneRNNEnv(task, target_sparsity=0.5)


def test_a_non_finite_batched_score_is_caught_too(monkeypatch):
    task = tiny_task("gru")
    venv = PruneRNNVectorEnv(task, 2, target_sparsity=0.6, batched=True, autoreset_mode="SameStep")
    monkeypatch.setattr(venv.scorer, "score", lambda counts: [(float("inf"), {})] * len(counts))
    venv.reset(seed=0)
    with pytest.raises(EvaluationError, match="allocation"):
        venv.step(np.zeros((2, venv.single_action_space.shape[0]), np.float32))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_weight_is_refused_at_construction_naming_it(bad):
    task = tiny_task("gru")
    with torch.no_grad():
        task.model.rnn.weight_hh_l1[3, 2] = bad
    with pytest.raises(ValueError, match=r"parameter 'rnn\.weight_hh_l1' holds 1 NaN or infinite value\(s\) of 192"):
        PruneRNNEnv(task, target_sparsity=0.5)
    with pytest.raises(ValueError, match="rnn.weight_hh_l1"):  # the vector env builds the same env
        PruneRNNVectorEnv(task, 2, target_sparsity=0.5)


def test_a_non_finite_buffer_is_refused_too():
    task = tiny_task("gru")
    task.model.register_buffer("scale", torch.tensor([1.0, math.nan]))
    with pytest.raises(ValueError, match="buffer 'scale'"):
        PruneRNNEnv(task, target_sparsity=0.5)


def test_step_before_reset_raises():
    from gymnasium.error import ResetNeeded

    env = PruneRNNEnv(tiny_task("gru"), target_sparsity=0.5)
    with pytest.raises(ResetNeeded, match="before reset"):
        env.step(env.action_space.sample())
    env.reset(seed=0)
    *_, terminated, _, info = env.step(env.action_space.sample())
    assert terminated and 0.0 <= info["score"] <= 1.0
