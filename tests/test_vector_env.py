"""PruneRNNVectorEnv: equal to K independent PruneRNNEnvs, batched scoring, fallbacks, SB3 adapter."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from tiny import bf16_available, tiny_task

from agents.searchers.sb3 import SB3VecEnv
from prune_env import PruneRNNEnv, PruneRNNVectorEnv, RNNTask, find_prunable_layers
from prune_env.envs.batched import BatchedScorer, LoopRNN, loop_model
from prune_env.pruning.criteria import apply_counts, prune_order

K = 3
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _episode_pairs(venv: PruneRNNVectorEnv, envs: list[PruneRNNEnv], steps: int, seed: int = 0):
    """Drive the vector env and K plain envs with the same actions (NEXT_STEP autoreset done by hand)."""
    rng = np.random.default_rng(seed)
    obs, _ = venv.reset(seed=7)
    ref = np.stack([e.reset(seed=7 + i)[0] for i, e in enumerate(envs)])
    yield obs, ref, np.zeros(K), np.zeros(K)
    done = [False] * K
    for _ in range(steps):
        actions = rng.uniform(-1.2, 1.2, venv.action_space.shape).astype(np.float32)
        obs, rewards, terminated, truncated, _ = venv.step(actions)
        ref_obs, ref_rew = [], []
        for i, e in enumerate(envs):
            if done[i]:
                o, _ = e.reset()
                r, done[i] = 0.0, False
            else:
                o, r, done[i], _, _ = e.step(actions[i])
            ref_obs.append(o)
            ref_rew.append(r)
        assert not truncated.any()
        assert terminated.tolist() == [bool(d) for d in done]
        yield obs, np.stack(ref_obs), rewards, np.array(ref_rew)


# Every pair of (cell, direction, mode, budget) values appears at least once: a covering set, not the full product.
CASES = [("gru", False, "joint", None), ("gru", True, "sequential", 0.6), ("lstm", True, "joint", 0.6),
         ("lstm", False, "sequential", None), ("lstm", True, "sequential", None), ("gru", False, "joint", 0.6)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rnn,bidirectional,mode,target", CASES)
def test_equals_independent_envs(rnn, bidirectional, mode, target, device):
    task = tiny_task(rnn, bidirectional=bidirectional, hidden=6)
    kw = dict(mode=mode, target_sparsity=target, device=device)
    venv = PruneRNNVectorEnv(task, K, batched=True, **kw)
    assert venv.eval_path == "batched"
    envs = [PruneRNNEnv(task, **kw) for _ in range(K)]
    length = envs[0].episode_length
    scored = 0
    for obs, ref_obs, rew, ref_rew in _episode_pairs(venv, envs, 2 * length + 1):
        np.testing.assert_allclose(obs, ref_obs, atol=1e-5, rtol=0)
        np.testing.assert_allclose(rew, ref_rew, atol=1e-5, rtol=0)
        scored += int(np.count_nonzero(rew))
    assert scored >= K, "no episode ended with a reward"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_bf16_batched_scores_track_bf16_envs(rnn, device):
    """precision="bf16": the batched pass runs under autocast too; its rewards follow bf16 single envs to the
    bf16 probe tolerance (both round differently from fp32), the observations exactly."""
    from prune_env.envs.vector import PROBE_TOLERANCE_BF16

    if not bf16_available(rnn.upper(), device):
        pytest.skip(f"no bf16 {rnn} kernel on this {device} (the env refuses bf16 here; tested in test_env.py)")
    base = tiny_task(rnn, hidden=6)
    task = RNNTask(base.model, eval_batch=base.eval_batch, metric="nll")
    kw = dict(target_sparsity=0.6, device=device, precision="bf16")
    venv = PruneRNNVectorEnv(task, K, batched=True, **kw)
    assert venv.scorer.autocast is torch.bfloat16
    envs = [PruneRNNEnv(task, **kw) for _ in range(K)]
    for obs, ref_obs, rew, ref_rew in _episode_pairs(venv, envs, 3):
        np.testing.assert_allclose(obs, ref_obs, atol=1e-5, rtol=0)
        np.testing.assert_allclose(rew, ref_rew, atol=PROBE_TOLERANCE_BF16, rtol=0)
    counts = np.stack([e.counts for e in envs])
    fp32 = BatchedScorer(task, venv.template.analysis.layers, venv.template.analysis.orders, torch.device(device))
    assert [s for s, _ in venv.scorer.score(counts)] != [s for s, _ in fp32.score(counts)]  # autocast really ran


def test_batched_scores_match_masked_models_and_nll_metric():
    task = tiny_task("lstm", bidirectional=True)
    task.metric = "nll"  # the scorer reads task.metric; evaluate stays accuracy, which this test does not use
    layers = find_prunable_layers(task.model)
    orders = [prune_order(dict(task.model.named_parameters())[x.name].detach().abs()) for x in layers]
    scorer = BatchedScorer(task, layers, orders, torch.device("cpu"), max_batch=2)
    rng = np.random.default_rng(1)
    counts = np.stack([rng.integers(0, [x.numel + 1 for x in layers]) for _ in range(5)])
    got = scorer.score(counts)  # 5 candidates in chunks of 2
    assert len(got) == 5
    x, y = task.eval_batch
    for c, (score, extras) in zip(counts, got):
        model = apply_counts(copy.deepcopy(task.model), layers, orders, c)
        with torch.no_grad():
            nll = torch.nn.functional.cross_entropy(model(x).reshape(-1, 12), y.reshape(-1)).item()
        assert score == pytest.approx(-nll, abs=1e-5)
        assert extras["nll"] == pytest.approx(nll, abs=1e-5)


@pytest.mark.parametrize("cls,kwargs", [(torch.nn.LSTM, {"proj_size": 3}), (torch.nn.GRU, {}), (torch.nn.RNN, {}),
                                        (torch.nn.RNN, {"nonlinearity": "relu", "bias": False})])
@pytest.mark.parametrize("batch_first", [True, False])
def test_loop_rnn_matches_pytorch(cls, kwargs, batch_first):
    torch.manual_seed(0)
    rnn = cls(5, 7, num_layers=2, batch_first=batch_first, bidirectional=True, **kwargs).eval()
    loop = LoopRNN(rnn)
    x = torch.randn(4, 6, 5)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # oneDNN has no LSTM projection; PyTorch says so
        want, got = rnn(x), loop(x)
        again_want, again_got = rnn(x, want[1]), loop(x, want[1])  # given initial state
        single_want, single_got = rnn(x[0]), loop(x[0])  # unbatched input
    for a, b in ((want, got), (again_want, again_got), (single_want, single_got)):
        torch.testing.assert_close(b[0], a[0], atol=1e-5, rtol=0)
        for p, q in zip(torch.utils._pytree.tree_leaves(a[1]), torch.utils._pytree.tree_leaves(b[1])):
            torch.testing.assert_close(q, p, atol=1e-5, rtol=0)


def test_loop_model_leaves_the_user_model_alone():
    task = tiny_task("gru")
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    work = loop_model(task.model)
    assert isinstance(work.rnn, LoopRNN) and isinstance(task.model.rnn, torch.nn.GRU)
    with torch.no_grad():
        work.rnn.weight_hh_l0.zero_()
    for k, v in task.model.state_dict().items():
        assert torch.equal(v, before[k])


def test_black_box_task_falls_back_with_one_warning_and_still_matches():
    task = tiny_task("gru", structured=False)
    with pytest.warns(UserWarning, match="one by one") as record:
        venv = PruneRNNVectorEnv(task, K, device="cpu")
    assert len([w for w in record if "one by one" in str(w.message)]) == 1
    assert venv.eval_path == "sequential" and venv.scorer is None
    envs = [PruneRNNEnv(task, device="cpu") for _ in range(K)]
    for obs, ref_obs, rew, ref_rew in _episode_pairs(venv, envs, 3):
        np.testing.assert_allclose(obs, ref_obs, atol=1e-5, rtol=0)
        np.testing.assert_allclose(rew, ref_rew, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="batched=True"):
        PruneRNNVectorEnv(task, K, device="cpu", batched=True)


def test_mismatched_evaluate_is_caught_by_the_probe():
    task = tiny_task("gru")
    task.evaluate = lambda m: 0.5  # no longer what eval_batch + metric compute
    with pytest.warns(UserWarning, match="differ from task.evaluate"):
        venv = PruneRNNVectorEnv(task, 2, device="cpu")
    assert venv.eval_path == "sequential"


def test_auto_path_is_recorded_and_batched_false_is_respected():
    task = tiny_task("gru")
    auto = PruneRNNVectorEnv(task, 2, device="cpu")
    assert auto.eval_path in ("batched", "sequential")
    assert set(auto.calibration) == {"sequential_s_per_candidate", "batched_s_per_candidate", "candidates_timed"}
    if auto.eval_path == "batched":  # kept only when clearly faster
        assert auto.calibration["batched_s_per_candidate"] <= 0.9 * auto.calibration["sequential_s_per_candidate"]
    single = PruneRNNVectorEnv(task, 1, device="cpu")
    assert single.eval_path == "sequential" and "nothing to batch" in single.eval_path_reason
    off = PruneRNNVectorEnv(task, 2, device="cpu", batched=False)
    assert off.eval_path == "sequential" and off.scorer is None


def test_same_step_autoreset_reports_final_obs():
    task = tiny_task("gru")
    venv = PruneRNNVectorEnv(task, 2, device="cpu", autoreset_mode="SameStep", batched=True)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    reset_obs, _ = venv.reset(seed=0)
    obs, rewards, terminated, _, infos = venv.step(venv.action_space.sample())
    assert terminated.all() and (rewards != 0).all()
    np.testing.assert_array_equal(obs, reset_obs)  # joint mode: already reset, back to the dense start
    assert infos["_final_obs"].all() and infos["final_obs"][0].shape == venv.single_observation_space.shape
    assert "score" in infos["final_info"]


def test_disabled_autoreset_needs_reset_mask():
    task = tiny_task("gru")
    venv = PruneRNNVectorEnv(task, 2, device="cpu", autoreset_mode=AutoresetMode.DISABLED, batched=True)
    venv.reset(seed=0)
    venv.step(venv.action_space.sample())
    with pytest.raises(RuntimeError, match="reset_mask"):
        venv.step(venv.action_space.sample())
    venv.reset(options={"reset_mask": np.array([True, True])})
    venv.step(venv.action_space.sample())


def test_same_seed_same_result_and_user_model_untouched():
    task = tiny_task("lstm")
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    runs = []
    for _ in range(2):
        venv = PruneRNNVectorEnv(task, 2, device="cpu", mode="sequential", target_sparsity=0.5, batched=True)
        venv.reset(seed=3)
        venv.action_space.seed(3)
        out = [venv.step(venv.action_space.sample())[1] for _ in range(venv.template.num_layers)]
        runs.append(np.stack(out))
    np.testing.assert_array_equal(runs[0], runs[1])
    for k, v in task.model.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("bad,match", [
    (dict(num_envs=0), "num_envs"),
    (dict(batched="yes"), "batched"),
    (dict(autoreset_mode="sometimes"), "autoreset_mode"),
    (dict(max_batch=0), "max_batch"),
    (dict(render_mode="ansi"), "render_mode"),
])
def test_bad_arguments_raise_value_error(bad, match):
    kwargs = {"num_envs": 2, "device": "cpu", **bad}
    with pytest.raises(ValueError, match=match):
        PruneRNNVectorEnv(tiny_task("gru"), batched=True if "batched" not in bad else bad["batched"],
                          **{k: v for k, v in kwargs.items() if k != "batched"})


def test_from_env_copies_the_config_and_rejects_other_envs():
    import gymnasium as gym

    env = PruneRNNEnv(tiny_task("gru"), target_sparsity=0.4, mode="sequential", max_sparsity=0.9, device="cpu")
    venv = PruneRNNVectorEnv.from_env(gym.wrappers.RecordEpisodeStatistics(env), 2, batched=False)
    sub = venv.envs[0]
    assert (sub.target_sparsity, sub.mode, sub.max_sparsity, venv.num_envs) == (0.4, "sequential", 0.9, 2)
    with pytest.raises(ValueError, match="`env` must be a PruneRNNEnv"):
        PruneRNNVectorEnv.from_env(gym.make("CartPole-v1"), 2)


def test_bad_step_and_reset_input():
    venv = PruneRNNVectorEnv(tiny_task("gru"), 2, device="cpu", batched=False)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="actions"):
        venv.step(np.zeros((3, venv.single_action_space.shape[0]), np.float32))
    with pytest.raises(ValueError, match="seed"):
        venv.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError, match="reset_mask"):
        venv.reset(options={"reset_mask": [True, False]})


def test_sb3_adapter_collects_episodes_with_ppo():
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecEnv

    task = tiny_task("gru")
    with pytest.raises(ValueError, match="SameStep"):
        SB3VecEnv(PruneRNNVectorEnv(task, 2, device="cpu", batched=True))
    vec = SB3VecEnv(PruneRNNVectorEnv(task, 4, device="cpu", autoreset_mode="SameStep", batched=True,
                                      target_sparsity=0.5))
    assert isinstance(vec, VecEnv)
    vec.seed(0)
    obs = vec.reset()
    assert obs.shape == (4, *vec.observation_space.shape)
    vec.step_async(np.stack([vec.action_space.sample() for _ in range(4)]))
    obs, rewards, dones, infos = vec.step_wait()
    assert dones.all() and rewards.dtype == np.float32
    assert all("terminal_observation" in i and i["overall_sparsity"] == pytest.approx(0.5, abs=1e-3)
               for i in infos)
    assert vec.get_attr("mode") == ["joint"] * 4
    model = PPO("MlpPolicy", vec, n_steps=4, batch_size=8, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=16)


@pytest.mark.parametrize("target", [None, 0.7])
def test_infos_match_independent_envs_including_batched_sizes(target):
    task = tiny_task("lstm", bidirectional=True)
    venv = PruneRNNVectorEnv(task, K, device="cpu", batched=True, autoreset_mode="SameStep", target_sparsity=target)
    assert venv.eval_path == "batched"
    envs = [PruneRNNEnv(task, device="cpu", target_sparsity=target) for _ in range(K)]
    venv.reset(seed=0)
    for i, e in enumerate(envs):
        e.reset(seed=i)
    rng = np.random.default_rng(0)
    for _ in range(3):
        actions = rng.uniform(-1, 1, venv.action_space.shape).astype(np.float32)
        _, _, _, _, infos = venv.step(actions)
        for i, e in enumerate(envs):
            _, _, _, _, ref = e.step(actions[i])
            e.reset()
            got = infos["final_info"]
            assert got["size_bytes"][i] == ref["size_bytes"]
            assert got["nonzero_params"][i] == ref["nonzero_params"]
            assert got["score"][i] == pytest.approx(ref["score"], abs=1e-5)
            assert got["overall_sparsity"][i] == pytest.approx(ref["overall_sparsity"])


@pytest.mark.parametrize("mode", [None, "sync", "async", "vector_entry_point"])
def test_make_vec_works_in_every_mode_with_default_arguments(mode):
    """gym.make_vec on a registered id, in a subprocess with a timeout: the default ("fork") async mode used to
    deadlock in the worker (torch's thread pool does not survive fork). None and vector_entry_point build the
    batched PruneRNNVectorEnv."""
    import os
    import subprocess
    import sys

    code = ("import gymnasium as gym, prune_env\n"
            f"v = gym.make_vec('PruneRNN-v0', 2, vectorization_mode={mode!r}, task='tiny:tiny_task', "
            "target_sparsity=0.5)\n"
            "v.reset(seed=0)\n"
            "_, r, term, _, _ = v.step(v.action_space.sample())\n"
            "assert term.all() and r.shape == (2,), (term, r)\n"
            "print(type(v.unwrapped).__name__)\n"
            "v.close()\n")
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = {None: "PruneRNNVectorEnv", "vector_entry_point": "PruneRNNVectorEnv", "sync": "SyncVectorEnv",
                "async": "AsyncVectorEnv"}[mode]
    assert proc.stdout.strip().endswith(expected)


def test_max_evals_caps_scoring_and_its_former_name_warns():
    """4 episodes end per joint step: a cap of 6 scores 4, then 2, and ends the other 2 unscored (reward 0,
    ``over_max_evals`` and the former ``over_budget`` in their final info)."""
    venv = PruneRNNVectorEnv(tiny_task("gru"), 4, device="cpu", target_sparsity=0.5, autoreset_mode="SameStep",
                             max_evals=6)
    venv.reset(seed=0)
    actions = np.zeros(venv.action_space.shape, dtype=np.float32)
    _, rewards, terminated, _, infos = venv.step(actions)
    assert venv.evaluations == 4 and "over_max_evals" not in infos["final_info"]
    _, rewards, terminated, _, infos = venv.step(actions)
    assert venv.evaluations == 6 and terminated.all()
    over = infos["final_info"]["_over_max_evals"]
    assert over.tolist() == [False, False, True, True]
    assert infos["final_info"]["over_budget"][over].all() and (rewards[over] == 0).all()
    assert (rewards[~over] != 0).all()
    with pytest.warns(DeprecationWarning, match="max_evals"):
        assert venv.max_evaluations == 6
    with pytest.warns(DeprecationWarning, match="max_evals"):
        venv.max_evaluations = 9
    assert venv.max_evals == 9
    with pytest.warns(DeprecationWarning, match="max_evals"):
        old = PruneRNNVectorEnv(tiny_task("gru"), 2, device="cpu", target_sparsity=0.5, max_evaluations=3)
    assert old.max_evals == 3
    with pytest.raises(ValueError, match="max_evals"):
        PruneRNNVectorEnv(tiny_task("gru"), 2, device="cpu", target_sparsity=0.5, max_evals=-1)
