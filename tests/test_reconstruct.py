"""Reconstruction (``reconstruct="obs"``) and GPTQ: exact least squares, exact counts, every path that prunes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_calibration import calibrated_tiny

from prune_env import PruneRNNEnv, PruneRNNVectorEnv
from prune_env.compression.quantize import quantize
from prune_env.pruning import obs
from prune_env.pruning.reconstruction import Calibrated, check_reconstruct


def closed_form(x: torch.Tensor, w: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """Per row, the least-squares weights on the kept inputs reproducing ``x @ w_r`` (numpy's lstsq)."""
    out = np.zeros(tuple(w.shape))
    for r in range(w.shape[0]):
        keep = ~pruned[r].numpy()
        if keep.any():
            out[r, keep] = np.linalg.lstsq(x.numpy()[:, keep], x.numpy() @ w[r].numpy(), rcond=None)[0]
    return torch.from_numpy(out)


@pytest.mark.parametrize("density", [0.15, 0.5, 0.85])  # the OBS form (few pruned) and the kept-set form (many)
def test_linear_reconstruction_is_closed_form_least_squares(density):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 7, generator=g, dtype=torch.float64)
    w = torch.randn(5, 7, generator=g, dtype=torch.float64)
    pruned = torch.rand(5, 7, generator=g) > density
    pruned[0] = True  # a row pruned entirely
    pruned[1] = False  # a row kept entirely
    got = obs.reconstruct(w, pruned, obs.damped(x.T @ x, 0.0))
    torch.testing.assert_close(got, closed_form(x, w, pruned), atol=1e-10, rtol=1e-9)
    assert torch.equal(got[pruned], torch.zeros(int(pruned.sum()), dtype=torch.float64))
    assert torch.equal(got[1], w[1])


def test_reconstruction_never_increases_the_output_error():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 12, generator=g) @ torch.randn(12, 12, generator=g)  # correlated inputs
    w = torch.randn(8, 12, generator=g)
    pruned = torch.rand(8, 12, generator=g) < 0.6
    zeroed = w.masked_fill(pruned, 0.0)
    refit = obs.reconstruct(w, pruned, obs.damped(x.double().T @ x.double()))
    err = lambda v: float(((x @ (v - w).T) ** 2).sum())  # noqa: E731
    assert err(refit) < 0.9 * err(zeroed)


def test_gptq_is_on_the_linear_grid_and_beats_rounding_to_nearest():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(300, 16, generator=g) @ torch.randn(16, 16, generator=g)
    w = torch.randn(10, 16, generator=g)
    pruned = torch.rand(10, 16, generator=g) < 0.3
    h = obs.damped(x.double().T @ x.double())
    q = obs.gptq(w, pruned, h, 3)
    assert torch.equal(q[pruned], torch.zeros(int(pruned.sum())))
    assert torch.equal(quantize(q, 3, "linear"), q)  # a fixed point: export re-encodes it unchanged
    rtn = quantize(w.masked_fill(pruned, 0.0), 3, "linear")
    err = lambda v: float(((x @ (v - w).T) ** 2).sum())  # noqa: E731
    assert err(q) < err(rtn)
    # with an identity Hessian there is nothing to feed forward: GPTQ is rounding to nearest
    torch.testing.assert_close(obs.gptq(w, pruned, torch.eye(16, dtype=torch.float64), 3), rtn)


def test_check_reconstruct():
    assert check_reconstruct("none") is None and check_reconstruct(False) is None and check_reconstruct("obs") == "obs"
    with pytest.raises(ValueError, match="reconstruct"):
        check_reconstruct("sparsegpt")
    with pytest.raises(ValueError, match="reconstruct"):
        PruneRNNEnv(calibrated_tiny(), reconstruct="ls", device="cpu")


def _step(env, seed=0):
    env.reset(seed=seed)
    action = np.random.default_rng(seed).uniform(-1, 1, env.action_space.shape)
    return env.step(action)[-1]


@pytest.mark.parametrize("rnn", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("criterion", ["magnitude", "obs"])
def test_exact_counts_and_target_with_reconstruction(rnn, criterion):
    task = calibrated_tiny(rnn, bidirectional=True)
    env = PruneRNNEnv(task, target_sparsity=0.75, criterion=criterion, reconstruct="obs", device="cpu")
    info = _step(env)
    model = env.pruned_model()
    params = dict(model.named_parameters())
    zeros = [int((params[layer.name] == 0).sum()) for layer in env.layers]
    assert zeros == env.counts.tolist()
    assert sum(zeros) == round(0.75 * int(env.numels.sum()))
    assert info["overall_sparsity"] == pytest.approx(sum(zeros) / env.numels.sum())
    # the model handed out is the one the reward scored, and reconstruction moved the kept weights
    assert task.evaluate(model)["score"] == pytest.approx(info["score"], abs=1e-6)
    dense = dict(task.model.named_parameters())
    moved = [name for name in params if "rnn.weight_hh" in name
             and not torch.equal(params[name][params[name] != 0], dense[name][params[name] != 0])]
    assert moved


def test_reconstruction_is_cached_per_layer_and_count():
    task = calibrated_tiny("gru")
    env = PruneRNNEnv(task, target_sparsity=0.5, reconstruct="obs", device="cpu")
    twin = PruneRNNEnv(task, target_sparsity=0.5, reconstruct="obs", device="cpu")
    shared = env.kind.calibrated
    assert isinstance(shared, Calibrated) and twin.kind.calibrated is shared
    _step(env)
    misses = shared.misses
    _step(twin)  # same action, another env on the same analysis: every layer is a hit
    assert shared.misses == misses and shared.hits >= env.num_layers - 1


def test_vector_env_scores_reconstruction_in_batches():
    task = calibrated_tiny("lstm")
    venv = PruneRNNVectorEnv(task, 3, batched=True, target_sparsity=0.6, reconstruct="obs", criterion="wanda",
                             device="cpu")
    single = PruneRNNEnv(task, target_sparsity=0.6, reconstruct="obs", criterion="wanda", device="cpu")
    venv.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, venv.action_space.shape).astype(np.float32)
    _, rewards, *_ = venv.step(actions)
    for i in range(3):
        single.reset(seed=i)
        _, r, *_ = single.step(actions[i])
        assert rewards[i] == pytest.approx(r, abs=1e-5)
    assert venv.eval_path == "batched"


def test_hidden_units_refit_the_consuming_matrices():
    task = calibrated_tiny("gru")
    plain = PruneRNNEnv(task, target_sparsity=0.5, granularity="hidden_unit", device="cpu")
    refit = PruneRNNEnv(task, target_sparsity=0.5, granularity="hidden_unit", reconstruct="obs", device="cpu")
    a, b = _step(plain), _step(refit)
    assert a["overall_sparsity"] == b["overall_sparsity"] and a["size_bytes"] == b["size_bytes"]
    small_plain, small_refit = plain.pruned_model(), refit.pruned_model()
    assert [p.shape for p in small_plain.parameters()] == [p.shape for p in small_refit.parameters()]
    assert task.evaluate(small_refit)["score"] == pytest.approx(b["score"], abs=1e-6)
    head_plain, head_refit = small_plain.head.weight, small_refit.head.weight
    assert not torch.equal(head_plain, head_refit)  # the head reads the removed units: re-fitted


def test_gptq_quantize_mode():
    task = calibrated_tiny("gru")
    env = PruneRNNEnv(task, target_sparsity=0.5, quantize="gptq", reconstruct="obs", device="cpu")
    info = _step(env)
    model = env.pruned_model()
    params = dict(model.named_parameters())
    for layer, k, bits in zip(env.layers, env.counts, info["layer_bits"].values()):
        p = params[layer.name]
        assert int((p == 0).sum()) >= int(k)
        assert torch.equal(quantize(p, bits, "linear"), p), layer.name
    assert task.evaluate(model)["score"] == pytest.approx(info["score"], abs=1e-6)


def test_sequential_calibration_keeps_counts_and_differs():
    task = calibrated_tiny("lstm", layers=2)
    env = PruneRNNEnv(task, target_sparsity=0.7, criterion="obs", reconstruct="obs", device="cpu")
    _step(env)
    one_shot = env.pruned_model()
    sequential = env.pruned_model(env.allocation, sequential=True)
    params = dict(sequential.named_parameters())
    assert [int((params[layer.name] == 0).sum()) for layer in env.layers] == env.counts.tolist()
    later = "rnn.weight_ih_l1"
    assert not torch.equal(params[later], dict(one_shot.named_parameters())[later])
    with pytest.raises(ValueError, match="sequential"):
        PruneRNNEnv(task, target_sparsity=0.7, device="cpu").pruned_model({}, sequential=True)


def test_export_round_trip_keeps_the_reconstructed_score(tmp_path):
    from tiny import TinyLM

    from prune_env import export, load

    task = calibrated_tiny("gru")
    env = PruneRNNEnv(task, target_sparsity=0.6, criterion="obs", reconstruct="obs", device="cpu")
    info = _step(env)
    path = tmp_path / "model.prc"
    export(env.pruned_model(), path)
    loaded = load(path, classes=[TinyLM])
    assert task.evaluate(loaded)["score"] == info["score"]
    for (name, p), q in zip(env.pruned_model().named_parameters(), loaded.parameters()):
        assert torch.equal(p, q), name


def test_validate_rescores_a_reconstructed_run(tmp_path, capsys):
    import json

    from agents.cli.main import main

    assert main(["bench", "--task", "digits", "--sparsity", "0.9", "--agents", "lamp", "--criterion", "obs",
                 "--reconstruct", "obs", "--out", str(tmp_path), "--no-progress"]) == 0
    run = next(tmp_path.iterdir())
    row = json.loads((run / "results.json").read_text())["runs"][0]
    assert (row["criterion"], row["reconstruct"]) == ("obs", "obs")
    assert row["replay"]["reconstruct"] == "obs" and len(row["replay"]["calibration"]["digest"]) == 64
    capsys.readouterr()
    assert main(["validate", str(run)]) == 0
    assert "1 passed" in capsys.readouterr().out


def test_gptq_model_exports_unchanged(tmp_path):
    from tiny import TinyLM

    from prune_env import export, load

    task = calibrated_tiny("lstm")
    env = PruneRNNEnv(task, target_sparsity=0.5, quantize="gptq", device="cpu")
    info = _step(env, seed=3)
    model = env.pruned_model()
    path = tmp_path / "q.prc"
    export(model, path, bits=info["layer_bits"], method="gptq")
    loaded = load(path, classes=[TinyLM])
    for (name, p), q in zip(model.named_parameters(), loaded.parameters()):
        assert torch.equal(p, q), name
    assert task.evaluate(loaded)["score"] == info["score"]


def test_a_reconstructing_env_pickles():
    import pickle

    task = calibrated_tiny("gru")
    env = PruneRNNEnv(task, target_sparsity=0.6, reconstruct="obs", device="cpu")
    info = _step(env)
    copy_ = pickle.loads(pickle.dumps(env))
    assert _step(copy_)["score"] == info["score"]


def test_zoo_env_prunes_with_the_operator():
    from prune_env import PruneRNNZooEnv

    tasks = [calibrated_tiny("gru"), calibrated_tiny("lstm", layers=1)]
    env = PruneRNNZooEnv(tasks, 0.6, criterion="wanda", reconstruct="obs", device="cpu")
    for i in range(2):
        env.reset(seed=0, options={"task_index": i})
        *_, info = env.step(np.zeros(env.action_space.shape, np.float32))
        inner = env.env
        assert inner.reconstruct == "obs" and inner.kind.calibrated is not None
        assert info["overall_sparsity"] == pytest.approx(round(0.6 * inner.numels.sum()) / inner.numels.sum())
