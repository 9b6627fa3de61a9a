"""PruneRNNEnv: exactness of pruning, observations, and error handling. API conformance (both checkers),
determinism and pickling, over every registered id, are in tests/test_registry.py."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tiny import TinyLM, bf16_available, kind_for, tiny_task
from torch import nn

from prune_env import PruneRNNEnv, RNNTask, find_prunable_layers
from prune_env.compression.size import size_bytes
from prune_env.pruning.criteria import apply_counts
from prune_env.pruning.layers import get_param

MODES = ["joint", "sequential"]


def rollout(env: PruneRNNEnv, seed: int, episodes: int = 2):
    """Random-action episodes; returns everything observable."""
    env.action_space.seed(seed)
    out = []
    obs, _ = env.reset(seed=seed)
    for _ in range(episodes):
        done = False
        while not done:
            obs, reward, done, truncated, info = env.step(env.action_space.sample())
            out.append((obs.copy(), reward, done, truncated))
        out.append(info["layer_sparsity"])
        obs, _ = env.reset()
    return out


def random_episode(env: PruneRNNEnv, rng: np.random.Generator, scale: float = 1.0) -> dict:
    """One episode of uniform actions in [-scale, scale]; returns the final info."""
    env.reset()
    done = False
    while not done:
        _, _, done, _, info = env.step(rng.uniform(-scale, scale, env.action_space.shape).astype(np.float32))
    return info


def count_zeros(model: nn.Module, names: list[str]) -> dict[str, int]:
    params = dict(model.named_parameters())
    return {n: int((params[n] == 0).sum()) for n in names}


@pytest.fixture(scope="module")
def gru_task():
    return tiny_task("gru", bidirectional=True)


def test_user_model_untouched(gru_task):
    before = copy.deepcopy(gru_task.model.state_dict())
    env = PruneRNNEnv(gru_task, target_sparsity=0.9, criterion="saliency")
    rollout(env, seed=0)
    env.pruned_model()
    for k, v in gru_task.model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("criterion", ["magnitude", "gradient", "saliency"])
def test_budget_is_exact(gru_task, mode, criterion):
    env = PruneRNNEnv(gru_task, mode=mode, target_sparsity=0.73, criterion=criterion)
    total = int(env.numels.sum())
    rng = np.random.default_rng(0)
    for _ in range(5):
        info = random_episode(env, rng, 1.5)
        zeros = count_zeros(env.pruned_model(), env.layer_names)
        assert abs(sum(zeros.values()) - 0.73 * total) <= 1
        for name, n in zip(env.layer_names, env.numels):
            assert zeros[name] == round(info["layer_sparsity"][name] * n)
            assert zeros[name] <= env.max_sparsity * n


@pytest.mark.parametrize("extreme", [-1.0, 1.0])
def test_action_wall_meets_budget_at_extremes(gru_task, extreme):
    env = PruneRNNEnv(gru_task, mode="sequential", target_sparsity=0.5)
    env.reset()
    done = False
    while not done:
        _, _, done, _, info = env.step(np.array([extreme], np.float32))
    assert abs(info["overall_sparsity"] * env.numels.sum() - 0.5 * env.numels.sum()) <= 1


def test_penalty_mode_exact_per_layer_and_reward(gru_task):
    env = PruneRNNEnv(gru_task, size_penalty=0.3)
    env.reset(seed=0)
    action = np.linspace(-1, 1, env.num_layers).astype(np.float32)
    _, reward, _, _, info = env.step(action)
    want = (action.astype(np.float64) + 1) / 2 * env.max_sparsity
    zeros = count_zeros(env.pruned_model(), env.layer_names)
    for name, s, n in zip(env.layer_names, want, env.numels):
        assert zeros[name] == int(s * n + 0.5)
    kept = 1 - sum(zeros.values()) / env.numels.sum()
    assert reward == pytest.approx(info["score"] / info["dense_score"] - 0.3 * kept)
    assert info["reward_terms"]["size_term"] == pytest.approx(-0.3 * kept)


def test_uniform_request_gives_uniform_pruning(gru_task):
    env = PruneRNNEnv(gru_task, target_sparsity=0.6)
    env.reset()
    _, _, _, _, info = env.step(np.zeros(env.num_layers, np.float32))
    for s in info["layer_sparsity"].values():
        assert s == pytest.approx(0.6, abs=0.01)


def test_info_contents_and_no_test_score(gru_task):
    env = PruneRNNEnv(gru_task, target_sparsity=0.5)
    env.reset()
    _, reward, _, _, info = env.step(env.action_space.sample())
    for key in ("score", "dense_score", "overall_sparsity", "layer_sparsity", "nonzero_params", "size_bytes"):
        assert key in info
    assert not any("test" in k for k in info)
    assert reward == pytest.approx(info["score"] / info["dense_score"])
    total = sum(p.numel() for p in gru_task.model.parameters())
    assert info["nonzero_params"] == total - round(0.5 * env.numels.sum())
    assert isinstance(info["size_bytes"], int) and info["size_bytes"] < total * 4


@pytest.mark.parametrize("mode,criterion", [("joint", "magnitude"), ("sequential", "gradient")])
def test_size_bytes_is_the_exact_size_of_the_pruned_model(gru_task, mode, criterion):
    """``info["size_bytes"]`` (read from precomputed tables) equals the layout search on the model itself, also
    when the user's model already holds zeros (they stay zero at every count)."""
    task = copy.copy(gru_task)
    task.model = copy.deepcopy(gru_task.model)
    with torch.no_grad():
        for p in task.model.parameters():
            p[..., ::3] = 0
    env = PruneRNNEnv(task, mode=mode, max_sparsity=0.98, criterion=criterion)  # gradient: zeros not first
    rng = np.random.default_rng(0)
    for _ in range(4):
        info = random_episode(env, rng)
        assert info["size_bytes"] == size_bytes(env.pruned_model())


def test_scores_match_pruned_model(gru_task):
    """The score the reward saw is the score of the model pruned_model() returns."""
    env = PruneRNNEnv(gru_task, target_sparsity=0.8)
    env.reset()
    _, _, _, _, info = env.step(env.action_space.sample())
    assert gru_task.evaluate(env.pruned_model())["score"] == pytest.approx(info["score"])


@pytest.mark.parametrize("mode", ["joint", "sequential"])
def test_episodes_do_not_leak_masks_into_each_other(gru_task, mode):
    """reset() leaves the last episode's masks in place (the next step moves each layer from its old count to its
    new one); whatever ran before, an episode must score and size exactly as in a fresh env."""
    kwargs = dict(target_sparsity=0.5, mode=mode, max_sparsity=0.98)
    env, fresh = PruneRNNEnv(gru_task, **kwargs), PruneRNNEnv(gru_task, **kwargs)
    rng = np.random.default_rng(0)
    n = env.action_space.shape
    for _ in range(3):  # a different allocation each time, the first as extreme as possible
        env.reset()
        done = False
        while not done:
            _, _, done, _, _ = env.step(np.ones(n, np.float32))
        actions = [rng.uniform(-1, 1, n).astype(np.float32) for _ in range(env.num_layers if mode == "sequential"
                                                                          else 1)]
        results = []
        for e in (env, fresh):
            obs0, _ = e.reset()
            for a in actions:
                obs, reward, done, _, info = e.step(a)
            results.append((obs0, obs, reward, info["size_bytes"], info["score"]))
        for x, y in zip(*results):
            np.testing.assert_array_equal(x, y)
    env.reset()
    for a in actions:
        env.step(a)
    pruned = env.pruned_model()
    for layer, p in zip(env.layers, env.kind.params):
        assert torch.equal(p, get_param(pruned, layer)), layer.name


def test_incremental_masker_matches_fresh_masks(gru_task):
    model = copy.deepcopy(gru_task.model)
    layers = find_prunable_layers(model)
    orders = [torch.randperm(layer.numel, generator=torch.Generator().manual_seed(i)) for i, layer in
              enumerate(layers)]
    kind, model = kind_for(gru_task.model, orders=orders)
    rng = np.random.default_rng(1)
    for _ in range(20):
        counts = [int(rng.integers(0, layer.numel + 1)) for layer in layers]
        kind.apply(counts)
        fresh = apply_counts(copy.deepcopy(gru_task.model), layers, orders, counts)
        for (n, a), (_, b) in zip(model.named_parameters(), fresh.named_parameters()):
            assert torch.equal(a, b), n


def test_ties_pruned_exactly():
    """A layer of identical weights still loses exactly the requested count."""
    model = TinyLM("lstm", hidden=4, layers=1)
    with torch.no_grad():
        model.rnn.weight_hh_l0.fill_(0.5)
    x = torch.zeros(2, 3, dtype=torch.long)
    env = PruneRNNEnv(RNNTask(model, eval_batch=(x, x), metric="accuracy"), size_penalty=0.0)
    env.reset()
    action = -np.ones(env.num_layers, np.float32)
    action[env.layer_names.index("rnn.weight_hh_l0")] = 2 * 0.37 / env.max_sparsity - 1
    env.step(action)
    zeros = count_zeros(env.pruned_model(), ["rnn.weight_hh_l0"])["rnn.weight_hh_l0"]
    assert zeros == int(0.37 * 64 + 0.5)


@pytest.mark.parametrize("mode", MODES)
def test_observation_finite_and_in_bounds(gru_task, mode):
    env = PruneRNNEnv(gru_task, mode=mode, target_sparsity=0.5)
    for obs, *_ in (x for x in rollout(env, seed=1) if not isinstance(x, dict)):
        assert obs.dtype == np.float32 and np.all(np.isfinite(obs))
        assert env.observation_space.contains(obs)


def _make_in_child(env_id: str, task_kwargs: dict) -> float:
    import gymnasium as gym

    env = gym.make(env_id, target_sparsity=0.5, task_kwargs=task_kwargs)
    env.reset(seed=0)
    return env.step(np.zeros(env.action_space.shape, np.float32))[1]


def test_make_in_spawned_process():
    import multiprocessing as mp

    kwargs = {"progress": False}
    with mp.get_context("spawn").Pool(1) as pool:
        child = pool.apply(_make_in_child, ("prune_env:PruneRNN-v0", kwargs))
    assert child == pytest.approx(_make_in_child("prune_env:PruneRNN-v0", kwargs))


def test_config_dict_construction(gru_task):
    env = PruneRNNEnv({"task": gru_task, "target_sparsity": 0.4, "mode": "sequential"})
    assert env.mode == "sequential" and env.target_sparsity == 0.4
    with pytest.raises(ValueError, match="config"):
        PruneRNNEnv({"task": gru_task, "bogus": 1})


def test_lstm_layer_names():
    model = TinyLM("lstm", layers=2, bidirectional=True)
    names = [layer.name for layer in find_prunable_layers(model)]
    assert names[0] == "emb.weight" and names[-1] == "head.weight"
    assert "rnn.weight_hh_l1_reverse" in names and not any("bias" in n for n in names)
    assert len(names) == 2 + 2 * 2 * 2


def test_tied_weights_listed_once():
    model = TinyLM("gru", hidden=6, layers=1)
    model.head.weight = model.emb.weight
    names = [layer.name for layer in find_prunable_layers(model)]
    assert names.count("emb.weight") == 1 and "head.weight" not in names


# ------------------------------------------------------------------------------------------- bad input
def test_no_prunable_weights_lists_supported_types():
    with pytest.raises(ValueError, match=r"nn\.LSTM.*nn\.GRU.*nn\.RNN.*nn\.Linear.*nn\.Embedding"):
        PruneRNNEnv(RNNTask(nn.Sequential(nn.Conv2d(1, 1, 1)), evaluate=lambda m: 1.0))


@pytest.mark.parametrize("bad", [[np.nan], [np.inf], [-np.inf]])
def test_non_finite_action_rejected(gru_task, bad):
    env = PruneRNNEnv(gru_task, mode="sequential")
    env.reset()
    with pytest.raises(ValueError, match="action"):
        env.step(np.array(bad, np.float32))


def test_wrong_shape_action_rejected(gru_task):
    env = PruneRNNEnv(gru_task)
    env.reset()
    with pytest.raises(ValueError, match=r"action.*shape"):
        env.step(np.zeros(env.num_layers + 1, np.float32))


def test_out_of_range_action_is_clipped(gru_task):
    a = PruneRNNEnv(gru_task, size_penalty=0.1)
    b = PruneRNNEnv(gru_task, size_penalty=0.1)
    a.reset()
    b.reset()
    big = np.full(a.num_layers, 5.0, np.float32)
    assert a.step(big)[1] == b.step(np.ones(b.num_layers, np.float32))[1]


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_bf16_precision_scores_under_autocast_close_to_fp32_or_is_refused(rnn):
    """Where this CPU has a bf16 kernel for the model's recurrent layers, bf16 scores track fp32; where it has none
    (oneDNN has no bf16 LSTM on AVX2-only CPUs), the env refuses bf16 at construction, naming fp32."""
    base = tiny_task(rnn)
    task = RNNTask(base.model, eval_batch=base.eval_batch, metric="nll")  # nll shows the rounding; accuracy may not
    if not bf16_available(rnn.upper()):
        with pytest.raises(ValueError, match="precision='fp32'"):
            PruneRNNEnv(task, target_sparsity=0.5, precision="bf16", device="cpu")
        return
    envs = {p: PruneRNNEnv(task, target_sparsity=0.5, precision=p, device="cpu") for p in ("fp32", "bf16")}
    assert envs["bf16"].dense_score != envs["fp32"].dense_score  # autocast really ran
    assert envs["bf16"].dense_score == pytest.approx(envs["fp32"].dense_score, rel=0.02)
    action = np.random.default_rng(0).uniform(-1, 1, envs["fp32"].num_layers).astype(np.float32)
    infos = {}
    for p, env in envs.items():
        env.reset(seed=0)
        _, _, _, _, infos[p] = env.step(action)
    assert infos["bf16"]["score"] == pytest.approx(infos["fp32"]["score"], rel=0.02)
    assert infos["bf16"]["size_bytes"] == infos["fp32"]["size_bytes"]


def test_bad_precision_is_refused(gru_task):
    with pytest.raises(ValueError, match="precision"):
        PruneRNNEnv(gru_task, precision="fp16")


def test_bf16_without_an_lstm_kernel_is_refused_at_construction():
    """On a CPU limited to AVX2 (as an AMD EPYC without AVX-512) oneDNN has no bf16 LSTM: the env must refuse bf16
    with a ValueError at construction, never fail with a RuntimeError mid-search. Emulated with ONEDNN_MAX_CPU_ISA."""
    import os
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, 'tests'); from tiny import tiny_task; from prune_env import PruneRNNEnv\n"
            "try:\n    env = PruneRNNEnv(tiny_task('lstm'), target_sparsity=0.5, precision='bf16', device='cpu')\n"
            "except ValueError as e:\n    print('REFUSED', e)\nelse:\n"
            "    env.reset(seed=0); env.step(env.action_space.sample()); print('SCORED')\n")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "SCORED" in proc.stdout or ("REFUSED" in proc.stdout and "precision='fp32'" in proc.stdout)


@pytest.mark.parametrize("target", [-0.1, 1.0, 1.5, "0.5", np.nan])
def test_bad_target_sparsity(gru_task, target):
    with pytest.raises(ValueError, match="target_sparsity"):
        PruneRNNEnv(gru_task, target_sparsity=target)


def test_unreachable_target(gru_task):
    with pytest.raises(ValueError, match="max_sparsity"):
        PruneRNNEnv(gru_task, target_sparsity=0.9, max_sparsity=0.5)


@pytest.mark.parametrize("kwargs, arg", [({"criterion": "l2"}, "criterion"), ({"mode": "both"}, "mode"),
                                         ({"max_sparsity": 0.0}, "max_sparsity"),
                                         ({"size_penalty": -1}, "size_penalty"),
                                         ({"render_mode": "human"}, "render_mode")])
def test_bad_arguments_name_the_argument(gru_task, kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        PruneRNNEnv(gru_task, **kwargs)


def test_unknown_preset():
    with pytest.raises(ValueError, match="digits"):
        PruneRNNEnv("no-such-task")


def test_gradient_criterion_needs_loss():
    task = tiny_task("gru")
    task.loss = None
    with pytest.raises(ValueError, match="loss"):
        PruneRNNEnv(task, criterion="gradient")


def test_pruned_model_bad_allocation(gru_task):
    env = PruneRNNEnv(gru_task)
    with pytest.raises(ValueError, match="no episode"):
        env.pruned_model()
    with pytest.raises(ValueError, match="unknown layers"):
        env.pruned_model({"nope.weight": 0.5})
    with pytest.raises(ValueError, match=r"allocation.*\[0, 1\]"):
        env.pruned_model({env.layer_names[0]: 1.5})


def test_black_box_task_works():
    task = tiny_task("lstm", structured=False)
    env = PruneRNNEnv(task, target_sparsity=0.5)
    env.reset()
    _, reward, *_ = env.step(env.action_space.sample())
    assert np.isfinite(reward)


def test_projection_rounding_moves_at_most_one_weight_per_layer():
    """Float32 actions lose ~1e-7 per sparsity; the exact-budget rounding must not pile the error on one layer."""
    from prune_env.pruning.allocation import caps, project_to_budget

    numels = np.array([96, 96, 96, 96, 96, 96])
    request = np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.5]) + np.float32(1e-7) * np.arange(6)
    counts = project_to_budget(request, numels, total=int(0.5 * 576) + 3, cap=caps(numels, 0.98))
    assert counts.sum() == 291
    assert counts.max() - counts.min() <= 1
