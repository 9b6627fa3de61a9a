"""Coverage: the env reports which weights it prunes and which matrices it leaves dense, warns (or, strict, fails)
when those exceed 5 % of the model, and reports the sparsity of the whole model beside that of the prunable weights."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from tiny import VOCAB, TinyLM, tiny_task
from torch import nn

from prune_env import PruneRNNEnv, RNNTask
from prune_env.pruning.coverage import THRESHOLD, CoverageWarning, coverage_report, matrix_zeros


class Mixer(nn.Module):
    """A user's own layer that no adapter knows: one (n, n) matrix."""

    def __init__(self, n: int):
        super().__init__()
        self.mix = nn.Parameter(torch.randn(n, n) / n ** 0.5)
        self.scale = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return torch.tanh(x @ self.mix.T) * self.scale


class WithMixer(nn.Module):
    def __init__(self, n: int = 16):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 6)
        self.rnn = nn.GRU(6, 8, batch_first=True)
        self.proj = nn.Linear(8, n)
        self.mixer = Mixer(n)
        self.head = nn.Linear(n, VOCAB)

    def forward(self, x):
        return self.head(self.mixer(self.proj(self.rnn(self.emb(x))[0])))


def _task(model: nn.Module) -> RNNTask:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, VOCAB, (8, 6), generator=g)
    return RNNTask(model.eval(), eval_batch=(x, (x + 1) % VOCAB), metric="accuracy", name="mixer")


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_a_builtin_model_is_fully_covered_and_construction_is_silent():
    task = tiny_task("lstm", bidirectional=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoverageWarning)
        env = PruneRNNEnv(task, target_sparsity=0.5, device="cpu")
    report = env.coverage
    assert report.dense == () and report.dense_share == 0.0
    assert list(report.pruned) == env.layer_names
    assert report.total_params == _params(task.model) == env.total_params
    assert report.weight_numel == report.pruned_numel == int(env.numels.sum())


def test_dense_matrices_are_listed_with_their_share_and_warned_about():
    torch.manual_seed(0)
    model = WithMixer(16)
    with pytest.warns(CoverageWarning, match=r"mixer\.mix \(Mixer, 23\.8%\).*model_sparsity"):
        env = PruneRNNEnv(_task(model), target_sparsity=0.5, device="cpu")
    (dense,) = env.coverage.dense
    assert (dense.name, dense.module_type, dense.shape) == ("mixer.mix", "Mixer", (16, 16))
    assert dense.share == pytest.approx(256 / _params(model))
    assert env.coverage.dense_share > THRESHOLD
    assert "mixer.mix" not in env.layer_names and "mixer.scale" not in env.layer_names
    assert "mixer.mix" in env.coverage.table() and env.coverage.as_dict()["dense"][0]["shape"] == [16, 16]


def test_strict_coverage_turns_the_warning_into_an_error():
    with pytest.raises(ValueError, match=r"strict_coverage.*mixer\.mix"):
        PruneRNNEnv(_task(WithMixer(16)), target_sparsity=0.5, device="cpu", config={"strict_coverage": True})
    with pytest.raises(ValueError, match="strict_coverage"):
        PruneRNNEnv(_task(WithMixer(16)), device="cpu", config={"strict_coverage": "yes"})
    # a small dense matrix, under the threshold: listed, neither warned about nor refused
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoverageWarning)
        env = PruneRNNEnv(_task(WithMixer(2)), device="cpu", config={"strict_coverage": True})
    assert [d.name for d in env.coverage.dense] == ["mixer.mix"] and env.coverage.dense_share < THRESHOLD


def test_model_sparsity_is_exact_over_every_matrix():
    torch.manual_seed(0)
    model = WithMixer(16)
    with pytest.warns(CoverageWarning):
        env = PruneRNNEnv(_task(model), target_sparsity=0.8, device="cpu")
    env.reset(seed=0)
    info = env.step(env.action_space.sample())[4]
    pruned = env.pruned_model()
    zeros, total = matrix_zeros(pruned)
    assert total == env.coverage.weight_numel == sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    assert info["model_sparsity"] == pytest.approx(zeros / total, abs=1e-12)
    assert info["overall_sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert info["model_sparsity"] == pytest.approx(0.8 * env.coverage.pruned_numel / total, abs=1e-3)
    assert info["model_sparsity"] < 0.8 - 0.05  # the skipped matrix shows


def test_model_sparsity_at_hidden_unit_granularity_counts_every_removed_matrix_entry():
    task = tiny_task("lstm", layers=2)
    env = PruneRNNEnv(task, target_sparsity=0.5, granularity="hidden_unit", device="cpu")
    env.reset(seed=0)
    info = env.step(env.action_space.sample())[4]
    small = env.pruned_model()
    zeros, kept = matrix_zeros(small)
    dense = env.coverage.weight_numel
    assert kept < dense
    assert info["model_sparsity"] == pytest.approx((dense - kept + zeros) / dense, abs=1e-12)


def test_tied_weights_count_once():
    model = TinyLM("gru", hidden=6, layers=1)
    model.head.weight = model.emb.weight
    report = coverage_report(model)
    assert report.dense == () and "head.weight" not in report.pruned
    assert report.weight_numel == sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    assert report.total_params == _params(model)


def test_unscored_counts_cost_nothing_extra():
    """``model_sparsity`` comes from the counts: the same as summing them, for any allocation."""
    torch.manual_seed(0)
    with pytest.warns(CoverageWarning):
        env = PruneRNNEnv(_task(WithMixer(16)), device="cpu")
    rng = np.random.default_rng(0)
    for _ in range(3):
        env.reset()
        info = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))[4]
        counts = env.counts_for(info["layer_sparsity"])
        assert info["model_sparsity"] == pytest.approx(counts.sum() / env.coverage.weight_numel, abs=1e-12)
