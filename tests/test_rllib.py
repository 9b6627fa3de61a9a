"""The Ray extra: agent ``rllib-ppo`` (RLlib PPO, new API stack, 2 env runners on a local Ray instance) keeps the hard
evaluation cap across processes, and RLlib trains the envs built from ``env_config`` dicts (``PruneRNNEnv`` and the
zoo env). Skipped without ``pip install -e ".[ray]"``, except the check of the error that says so."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import tiny_task

import agents
from prune_env import PruneRNNEnv, RNNTask
from prune_env.pruning.allocation import budget_count

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HAVE_RAY = importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.rllib") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason='needs the ray extra: pip install -e ".[ray]"')


# ------------------------------------------------------------------------------ a task that counts its scorings
def counting_task(path: str, **kwargs) -> RNNTask:
    """``test_rllib:counting_task``: the tiny GRU task whose validation scorer appends one line to ``path`` for every
    scoring of a pruned model (from whichever process scores it), so evaluations are counted independently."""
    t = tiny_task(structured=False, **kwargs)
    return RNNTask(t.model, evaluate=partial(_counted, inner=t.evaluate, path=path), test=t.test, loss=t.loss,
                   name="tiny-counted")


def _counted(model: torch.nn.Module, inner, path: str) -> float:
    if any(bool((p == 0).any()) for p in model.parameters()):  # the dense model (scored at env build) has no zeros
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")
    return inner(model)


def _scorings(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def mismatched_task() -> RNNTask:
    """``test_rllib:mismatched_task``: the tiny task, with other weights in Ray's workers than in the driver."""
    driver = int(os.environ.get("RLLIB_TEST_DRIVER_PID", os.getpid()))
    return tiny_task(seed=0 if os.getpid() == driver else 1)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module (2 CPUs, on the loopback address); its workers import ``tiny`` and
    this module from tests/."""
    if "ray" not in sys.modules:  # read when ray is imported: Linux nodes then use 127.0.0.1, not the network address
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]),
                                       "OMP_NUM_THREADS": "1", "RLLIB_TEST_DRIVER_PID": str(os.getpid())}})
    yield ray
    ray.shutdown()


# ------------------------------------------------------------------------------------------------------ tests
@needs_ray
def test_rllib_ppo_keeps_the_evaluation_cap_across_runners(local_ray, tmp_path):
    count = tmp_path / "scorings.txt"
    env = PruneRNNEnv("test_rllib:counting_task", target_sparsity=0.5, device="cpu",
                      task_kwargs={"path": str(count)})
    budget = 13  # not a multiple of the 8-step train batch: the last iteration is partly over the cap
    res = agents.search("rllib-ppo", env, budget, seed=0, num_env_runners=2, train_batch_size=8, minibatch_size=8,
                        num_epochs=2)
    scorings = _scorings(count)
    # Counted at the task, in whichever process scored: exactly the cap, never more, and by the runners only.
    assert len(scorings) == budget
    assert str(os.getpid()) not in scorings
    assert len(set(scorings)) == 2  # both env runners scored
    assert res.agent == "rllib-ppo" and res.evals == budget and len(res.history) == budget
    assert res.extras["num_env_runners"] == 2 and res.extras["iterations"] >= 2
    hist = np.array(res.history)
    assert np.all(np.diff(hist) >= 0) and hist[-1] == res.val_score
    # The result is a real allocation at the target: re-scored here it gives the score the runner saw.
    counts = env.counts_for(res.allocation)
    assert int(counts.sum()) == budget_count(0.5, env.numels)
    assert set(res.allocation) == set(env.layer_names)
    before = len(_scorings(count))
    assert env.task.evaluate(env.pruned_model(res.allocation)) == pytest.approx(res.val_score, abs=1e-6)
    assert len(_scorings(count)) == before + 1
    # The trained policy acts on the driver's env: a joint action the env accepts.
    obs, info = env.reset(seed=0)
    action = res.policy.act(obs, info)
    assert action.shape == env.action_space.shape and np.all(np.abs(action) <= 1)


@needs_ray
@pytest.mark.parametrize("kind", ["env", "zoo"])
def test_rllib_trains_envs_built_from_env_config(local_ray, kind):
    """The new user's recipe: ``PPOConfig().environment(cls, env_config={...})`` with 2 env runners."""
    from ray.rllib.algorithms.ppo import PPOConfig

    from agents.searchers.rllib_ppo import RLlibEnv

    if kind == "env":
        env_cls, env_config = PruneRNNEnv, {"task": "tiny:tiny_lstm", "target_sparsity": 0.6, "device": "cpu"}
    else:
        env_cls, env_config = RLlibEnv, {"tasks": ["tiny:tiny_task", "tiny:tiny_rnn"], "target_sparsity": [0.5, 0.8],
                                         "device": "cpu"}
    config = (PPOConfig().environment(env_cls, env_config=env_config)
              .env_runners(num_env_runners=2, num_cpus_per_env_runner=1)
              .training(train_batch_size_per_learner=8, minibatch_size=8, num_epochs=1)
              .rl_module(model_config={"fcnet_hiddens": [16]})
              .debugging(seed=0, log_level="WARN"))
    algo = config.build_algo()
    try:
        result = algo.train()
        result = algo.train()
    finally:
        algo.stop()
    runners = result["env_runners"]
    assert runners["num_episodes"] > 0
    assert np.isfinite(runners["episode_return_mean"])
    assert result["num_env_steps_sampled_lifetime"] >= 16


@needs_ray
def test_runners_that_build_another_model_stop_the_search_clearly(local_ray):
    env = PruneRNNEnv("test_rllib:mismatched_task", target_sparsity=0.5, device="cpu")
    with pytest.raises(ValueError, match="could not build their env.*not the driver's"):
        agents.search("rllib-ppo", env, 8, seed=0, train_batch_size=8, minibatch_size=8)


def test_runner_refuses_a_different_model():
    from agents.searchers.rllib_ppo import RunnerEnv, _fingerprint

    env = PruneRNNEnv(tiny_task(), target_sparsity=0.5, device="cpu")
    other = PruneRNNEnv(tiny_task(seed=1), target_sparsity=0.5, device="cpu")
    with pytest.raises(ValueError, match="not the driver's"):
        RunnerEnv(env, {"ledger": "-", "namespace": "-", "expect": _fingerprint(other)})


def test_without_the_extra_the_error_says_how_to_install(monkeypatch):
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    env = PruneRNNEnv(tiny_task(), target_sparsity=0.5, device="cpu")
    with pytest.raises(ImportError, match=r'pip install -e "\.\[ray\]"'):
        agents.search("rllib-ppo", env, 4, seed=0)
    with pytest.raises(ValueError, match="unknown options"):
        agents.search("rllib-ppo", env, 4, seed=0, n_envs=2)
