"""PruneRNNZooEnv: many models and targets behind one observation space."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from tiny import tiny_task

from prune_env.envs.zoo import CONTEXT, ROW, PruneRNNZooEnv
from prune_env.pruning.analysis import analyse
from prune_env.pruning.stats import FEATURES


def _zoo():
    """Models with 4 to 14 prunable layers: GRU, 3-layer bidirectional LSTM, 1-layer tanh RNN."""
    return [tiny_task("gru"), tiny_task("lstm", layers=3, bidirectional=True, hidden=6), tiny_task("rnn", layers=1)]


@pytest.mark.parametrize("mode", ["joint", "sequential"])
def test_checkers_pass_without_warnings(mode):
    env = PruneRNNZooEnv(_zoo(), mode=mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)


def test_one_observation_space_for_every_model_and_padding():
    tasks = _zoo()
    env = PruneRNNZooEnv(tasks)
    layers = [analyse(t).num_layers for t in tasks]
    assert env.max_layers == max(layers) == 14  # embedding + 3 layers x 2 directions x (ih, hh) + head
    assert min(layers) == 4  # embedding, ih, hh, head
    width = len(ROW)
    for i, n in enumerate(layers):
        obs, info = env.reset(seed=0, options={"task_index": i, "target_sparsity": 0.7})
        assert obs.shape == env.observation_space.shape == (env.max_layers * width + len(CONTEXT),)
        rows = obs[:-len(CONTEXT)].reshape(env.max_layers, width)
        assert (rows[:n, -1] == 1).all() and (rows[n:] == 0).all()
        np.testing.assert_allclose(rows[:n, :len(FEATURES)], analyse(tasks[i]).features)
        assert obs[-len(CONTEXT) + CONTEXT.index("target_sparsity")] == pytest.approx(0.7)
        assert info["task_index"] == i and info["task"] == tasks[i].name


@pytest.mark.parametrize("mode", ["joint", "sequential"])
def test_every_episode_meets_its_drawn_target_exactly(mode):
    env = PruneRNNZooEnv(_zoo(), target_sparsity=(0.5, 0.95), mode=mode)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(8):
        _, info = env.reset()
        target = info["target_sparsity"]
        assert 0.5 <= target <= 0.95
        done = False
        while not done:
            _, reward, done, _, info = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        numels = env.env.numels
        assert int(round(info["overall_sparsity"] * numels.sum())) == int(target * numels.sum() + 0.5)
        seen.add(info["task_index"])
    assert len(seen) > 1  # the draw really moves between models


def test_padding_actions_are_ignored():
    env = PruneRNNZooEnv(_zoo())
    a = np.random.default_rng(0).uniform(-1, 1, env.max_layers).astype(np.float32)
    b = a.copy()
    n = analyse(env.tasks[0]).num_layers
    b[n:] = -a[n:]
    rewards = []
    for action in (a, b):
        env.reset(seed=0, options={"task_index": 0, "target_sparsity": 0.8})
        rewards.append(env.step(action)[1])
    assert rewards[0] == rewards[1]


def test_same_seed_same_rollouts_and_pickles():
    def rollout(env, seed):
        out = [env.reset(seed=seed)[0]]
        rng = np.random.default_rng(seed)
        for _ in range(5):
            obs, reward, done, _, info = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
            out += [obs, reward, info["task_index"], info["target_sparsity"]]
            if done:
                out.append(env.reset()[0])
        return out

    a, b = PruneRNNZooEnv(_zoo(), mode="sequential"), PruneRNNZooEnv(_zoo(), mode="sequential")
    ra, rb = rollout(a, 5), rollout(b, 5)
    assert all(np.array_equal(x, y) for x, y in zip(ra, rb))
    assert not all(np.array_equal(x, y) for x, y in zip(ra, rollout(b, 6)))
    a.reset(seed=1)
    c = pickle.loads(pickle.dumps(a))
    action = np.zeros(1, np.float32)
    assert np.array_equal(a.step(action)[0], c.step(action)[0])


def test_the_analysis_of_each_model_is_shared():
    tasks = _zoo()
    env = PruneRNNZooEnv(tasks)
    for i, t in enumerate(tasks):
        env.reset(seed=0, options={"task_index": i})
        assert env.env.analysis is env.analyses[i] is analyse(t)


def test_sb3_vectorized_and_bad_input():
    from stable_baselines3.common.vec_env import DummyVecEnv

    vec = DummyVecEnv([lambda: PruneRNNZooEnv(_zoo(), mode="sequential") for _ in range(2)])
    vec.seed(0)
    vec.reset()
    for _ in range(4):
        _, rewards, dones, infos = vec.step(np.zeros((2, 1), np.float32))
    assert rewards.shape == (2,)
    with pytest.raises(ValueError, match="tasks"):
        PruneRNNZooEnv([])
    with pytest.raises(ValueError, match="target_sparsity"):
        PruneRNNZooEnv(_zoo(), target_sparsity=(0.9, 0.5))
    with pytest.raises(ValueError, match="max_layers"):
        PruneRNNZooEnv(_zoo(), max_layers=3)
    with pytest.raises(ValueError, match="mode"):
        PruneRNNZooEnv(_zoo(), mode="both")
