"""Shared helpers of the agent tests: the registered agents, an env whose evaluations are counted, and a
synthetic env with a known optimum (also the task of ``benchmarks/reinforce_ablation.py``)."""

from __future__ import annotations

import numpy as np
import torch
from tiny import tiny_task
from torch import nn

from agents import registry
from prune_env import PruneRNNEnv, RNNTask
from prune_env.pruning import allocation as B
from prune_env.pruning.layers import find_prunable_layers, get_param

#: Options that keep an agent fast on the tiny task (agents not named here run with their defaults).
FAST = {"ppo": {"n_envs": 2, "n_steps": 4, "n_epochs": 2}}
#: Every registered agent that runs without an optional extra (``rllib-ppo`` needs Ray: tests/test_rllib.py).
SPECS = [s for s in registry.specs() if not s.extras]
NAMES = [s.name for s in SPECS]
ONE_SHOT = [s.name for s in SPECS if s.one_shot]
#: The one-shot rules (``agents.rules``): one-shot agents that also prune in penalty mode (``sparsity=``).
RULES = [s.name for s in SPECS if s.one_shot and s.run.startswith("agents.rules.")]


class CountingEvaluate:
    """Wraps ``task.evaluate`` and counts calls: the ground truth the budget is checked against."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = 0

    def __call__(self, model):
        self.calls += 1
        return self.fn(model)

    def __deepcopy__(self, memo):
        return self  # env copies made by vectorized agents (in-process) share the one counter


def counted_env(mode: str = "joint", target: float = 0.6, **task_kwargs) -> tuple[PruneRNNEnv, CountingEvaluate]:
    task = tiny_task(**task_kwargs)
    counter = CountingEvaluate(task.evaluate)
    task.evaluate = counter
    env = PruneRNNEnv(task, target_sparsity=target, mode=mode, device="cpu")
    counter.calls = 0  # the env's dense-score evaluation is not the agent's
    return env, counter


class _SynModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(12, 6)
        self.rnn = nn.GRU(6, 8, batch_first=True)
        self.head = nn.Linear(8, 12)

    def forward(self, x):
        return self.head(self.rnn(self.emb(x))[0])


class SyntheticScore:
    """``1 - 4 * mean((s - s*)^2)`` over per-layer sparsities read off the model (count of zeros): optimum 1."""

    def __init__(self, optimum: np.ndarray):
        self.optimum = optimum

    def __call__(self, model: nn.Module) -> float:
        s = np.array([float((get_param(model, layer) == 0).float().mean()) for layer in find_prunable_layers(model)])
        return float(1.0 - 4.0 * np.mean((s - self.optimum) ** 2))


def synthetic_env(mode: str = "joint", target: float = 0.5) -> PruneRNNEnv:
    """A real PruneRNNEnv whose score is a known smooth function of the allocation, maximal at a known point."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _SynModel().eval()
    numels = np.array([layer.numel for layer in find_prunable_layers(model)])
    # A lopsided optimum, moved onto the budget with the env's own projection, so it is exactly reachable.
    want = np.array([0.9, 0.1, 0.8, 0.2])
    optimum = B.project_to_target(want, numels, B.target_count(target, numels), B.caps(numels, 0.98)) / numels
    task = RNNTask(model, evaluate=SyntheticScore(optimum), test=SyntheticScore(optimum), name="synthetic")
    return PruneRNNEnv(task, target_sparsity=target, mode=mode, device="cpu")
