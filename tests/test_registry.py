"""Every registered id, the Minigrid way: the ids are read from the Gymnasium registry (every id whose entry point
is ``PruneRNNEnv``), and each one passes both checkers with warnings as errors, is deterministic under a seed, and
survives pickling. ``task="tiny:tiny_task"`` overrides an id's preset so that these run in seconds; the presets
themselves are built once each below (``digits`` as it is, ``pydoc-char`` in a tiny config)."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import prune_env  # noqa: F401  (registers the ids)
from prune_env.envs.registration import ENV_IDS
from prune_env.tasks import PRESETS, digits

ENTRY_POINT = "prune_env.envs.env:PruneRNNEnv"
ENV_IDS_REGISTERED = sorted(env_id for env_id, spec in gym.registry.items() if spec.entry_point == ENTRY_POINT)
MODES = ["joint", "sequential"]
TINY = "tiny:tiny_task"  # tests/tiny.py, importable because pytest puts tests/ on sys.path
#: Quiet, small configs of each preset, so that every registered id is built and checked in seconds. ``digits`` is
#: its default config (it trains in seconds); ``pydoc-char`` (minutes at its default size) is a tiny one.
TINY_PRESET_KWARGS = {"digits": {"progress": False},
                      "pydoc-char": {"progress": False, "hidden": 16, "emb": 8, "steps": 5, "batch": 8,
                                     "eval_tokens": 512, "test_tokens": 512, "loss_tokens": 512}}


def preset_of(env_id: str) -> str:
    return gym.spec(env_id).kwargs["task"]


def make(env_id: str, **kwargs) -> gym.Env:
    """``gym.make(env_id)`` on the tiny task (a bidirectional GRU LM), ``kwargs`` on top."""
    return gym.make(env_id, **{"task": TINY, "task_kwargs": {"bidirectional": True}, **kwargs})


def assert_same(a, b, where: str = "") -> None:
    """Exact equality of nested observations, rewards and infos (arrays element-wise, floats bit for bit)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def rollout(env: gym.Env, actions: np.random.Generator, seed: int | None, episodes: int = 2) -> list:
    """``episodes`` episodes of uniform actions from ``actions``, the first reset with ``seed``; returns every
    observation, reward, termination flag and info."""
    out = []
    for e in range(episodes):
        obs, info = env.reset(seed=seed if e == 0 else None)
        out.append((obs, info))
        done = False
        while not done:
            action = actions.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            obs, reward, done, truncated, info = env.step(action)
            out.append((obs, reward, done, truncated, info))
    return out


def test_registry_holds_exactly_the_registered_presets():
    """The ids the tests below run over are the ones ``register_envs`` registers (none lost, none stray)."""
    assert ENV_IDS_REGISTERED == sorted(ENV_IDS)
    prune_env.register_envs()  # idempotent
    assert sorted(i for i, s in gym.registry.items() if s.entry_point == ENTRY_POINT) == ENV_IDS_REGISTERED


@pytest.mark.parametrize("env_id", ENV_IDS_REGISTERED)
def test_spec_names_a_preset(env_id):
    spec = gym.spec(env_id)
    assert spec.entry_point == ENTRY_POINT
    assert spec.vector_entry_point == "prune_env.envs.vector:PruneRNNVectorEnv"
    assert spec.kwargs["task"] in PRESETS
    assert spec.kwargs["task"] != "corpus"  # needs a user's directory, so it cannot be a default


@pytest.mark.parametrize("env_id", ENV_IDS_REGISTERED)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("target", [None, 0.7])
def test_checkers_pass_without_warnings(env_id, mode, target):
    env = make(env_id, mode=mode, target_sparsity=target)
    assert env.unwrapped.task.name == "tiny-gru"  # the task kwarg overrode the preset
    assert env.unwrapped.mode == mode and env.unwrapped.target_sparsity == target
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(make(env_id, mode=mode, target_sparsity=target).unwrapped)
        # and through gym.make's own wrappers (the passive checker warns on the first reset and step)
        rollout(env, np.random.default_rng(0), seed=0, episodes=1)


@pytest.mark.parametrize("env_id", ENV_IDS_REGISTERED)
@pytest.mark.parametrize("mode", MODES)
def test_same_seed_same_rollout(env_id, mode):
    """Two envs, the same seed and actions: identical observations, rewards and infos, episode after episode."""
    a = rollout(make(env_id, mode=mode, target_sparsity=0.6), np.random.default_rng(3), seed=3, episodes=3)
    b = rollout(make(env_id, mode=mode, target_sparsity=0.6), np.random.default_rng(3), seed=3, episodes=3)
    assert len(a) == len(b) == 3 * (1 + (1 if mode == "joint" else make(env_id).unwrapped.num_layers))
    assert_same(a, b)
    # The comparison sees a difference where there is one: other actions give another rollout.
    c = rollout(make(env_id, mode=mode, target_sparsity=0.6), np.random.default_rng(4), seed=3, episodes=3)
    with pytest.raises(AssertionError):
        assert_same(a, c)


@pytest.mark.parametrize("env_id", ENV_IDS_REGISTERED)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("finetune_steps", [0, 2])
def test_pickle_round_trip_continues_identically(env_id, mode, finetune_steps):
    """Pickled after an episode and mid-way through the next (sequential mode), the copy continues exactly as the
    original: same RNG state, same results for the rest of this episode and the next, same pruned model."""
    env = make(env_id, mode=mode, target_sparsity=0.5, finetune_steps=finetune_steps)
    actions = np.random.default_rng(1)
    rollout(env, actions, seed=1, episodes=1)
    env.reset()
    if mode == "sequential":
        env.step(actions.uniform(-1, 1, env.action_space.shape).astype(np.float32))
    clone = pickle.loads(pickle.dumps(env))
    assert clone.unwrapped is not env.unwrapped and clone.spec.id == env_id
    assert_same(clone.unwrapped.np_random.bit_generator.state, env.unwrapped.np_random.bit_generator.state)
    assert_same(clone.unwrapped.counts.copy(), env.unwrapped.counts.copy())
    assert_same(clone.unwrapped.allocation, env.unwrapped.allocation)

    results = []
    for e in (env, clone):
        rng = np.random.default_rng(2)
        steps, done = [], False
        while not done:
            obs, reward, done, truncated, info = e.step(rng.uniform(-1, 1, e.action_space.shape).astype(np.float32))
            steps.append((obs, reward, done, truncated, info))
        results.append((steps, rollout(e, rng, seed=None, episodes=1), e.unwrapped.pruned_model().state_dict()))
    assert_same(results[0][:2], results[1][:2])
    for name, p in results[0][2].items():
        assert torch.equal(p, results[1][2][name]), name


@pytest.mark.parametrize("env_id", ENV_IDS_REGISTERED)
def test_default_task_builds(env_id):
    """``gym.make(id)`` with the preset's default task (quiet) builds and scores. Only ``digits`` is cheap to train;
    other presets are covered by :func:`test_spec_names_a_preset` and, in a tiny config, by
    :func:`test_preset_ids_pass_checkers`."""
    if preset_of(env_id) != "digits":
        pytest.skip(f"{preset_of(env_id)} trains for minutes at its default size")
    env = gym.make(env_id, target_sparsity=0.5, task_kwargs={"progress": False})
    task = env.unwrapped.task
    assert task.metadata["preset"] == "digits" and task.metadata["config"] == digits.DEFAULTS
    assert env.unwrapped.dense_score > 0.9
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, np.float32))
    assert terminated and not truncated and np.isfinite(reward) and info["overall_sparsity"] == pytest.approx(0.5)


@pytest.mark.parametrize("env_id", ENV_IDS_REGISTERED)
@pytest.mark.parametrize("mode", MODES)
def test_preset_ids_pass_checkers(env_id, mode):
    """Each id's own preset (quiet and small, see :data:`TINY_PRESET_KWARGS`) passes both checkers and renders."""
    preset = preset_of(env_id)
    assert preset in TINY_PRESET_KWARGS, f"add a small config of preset {preset!r} to TINY_PRESET_KWARGS"
    env = gym.make(env_id, mode=mode, target_sparsity=0.5, render_mode="ansi", task_kwargs=TINY_PRESET_KWARGS[preset])
    assert env.unwrapped.task.metadata["preset"] == preset
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped)
        sb3_check_env(env.unwrapped)
    assert "overall sparsity" in env.unwrapped.render()
