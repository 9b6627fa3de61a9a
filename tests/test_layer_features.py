"""Calibration-aware, evaluation-free layer features and observation format 4 of the zoo env."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from tiny import VOCAB, TinyLM, tiny_task

from prune_env import PruneRNNZooEnv, RNNTask
from prune_env.envs.zoo import LAYER_COLUMNS, ROW, ROW_V4, layer_columns, observation
from prune_env.pruning import layer_features as LF
from prune_env.pruning.analysis import analyse, calibration
from prune_env.pruning.calibration import LayerInputs
from prune_env.pruning.layers import find_prunable_layers, get_param
from prune_env.tasks.models import ZooLM, ZooSequenceNet
from prune_env.tasks.training import SampledLoss


def split_task(seed: int = 0, rnn: str = "lstm") -> RNNTask:
    """A tiny LM whose training data (calibration batches, train_loss) and validation data are disjoint tensors."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TinyLM(rnn, hidden=8, layers=1).eval()
    train = torch.randint(0, VOCAB, (400,), generator=g)
    xv = torch.randint(0, VOCAB, (8, 10), generator=g)
    calib = [train[:60].reshape(6, 10), train[60:120].reshape(6, 10)]
    return RNNTask(model, eval_batch=(xv, (xv + 1) % VOCAB), metric="accuracy", name=f"split-{rnn}",
                   train_loss=SampledLoss(train, batch=4, seq_len=10), calibration_batches=calib)


# --- each feature against a hand computation --------------------------------------------------------------------

def _with_spectrum(eigs, rows: int = 6, seed: int = 0) -> torch.Tensor:
    """A ``(rows, len(eigs))`` matrix whose ``W^T W`` has eigenvalues ``eigs``."""
    g = torch.Generator().manual_seed(seed)
    n = len(eigs)
    u, _ = torch.linalg.qr(torch.randn(rows, n, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(eigs, dtype=torch.float64).sqrt()) @ v.T


def test_hill_alpha_on_a_known_spectrum():
    # eigenvalues 1, 2, 4, 8: xmin = 4 (index N // 2), n = 2, sum ln(l / 4) over {4, 8} = ln 2
    assert LF.hill_alpha(_with_spectrum([1.0, 2.0, 4.0, 8.0])) == pytest.approx(1 + 2 / math.log(2), rel=1e-9)
    # eigenvalues below the floor are left out: the same four plus two (near-)zero ones give the same exponent
    w = _with_spectrum([0.0, 1e-9, 1.0, 2.0, 4.0, 8.0])
    assert LF.hill_alpha(w) == pytest.approx(1 + 2 / math.log(2), rel=1e-6)
    assert LF.hill_alpha(_with_spectrum([1.0, 3.0, 3.0, 3.0])) == math.inf  # a flat upper half
    assert LF.hill_alpha(torch.zeros(3, 3)) == 1.0


def test_hill_alpha_recovers_a_power_law_exponent():
    # quantiles of a Pareto law with density ~ l^-3: the Hill estimate of the upper half is close to 3
    n, a = 400, 3.0
    eigs = sorted((n / np.arange(1, n + 1)) ** (1 / (a - 1)))
    assert LF.hill_alpha(_with_spectrum(eigs, rows=n + 10)) == pytest.approx(a, abs=0.15)
    heavier = sorted((n / np.arange(1, n + 1)) ** (1 / (2.0 - 1)))
    assert LF.hill_alpha(_with_spectrum(heavier, rows=n + 10)) < LF.hill_alpha(_with_spectrum(eigs, rows=n + 10))


def test_owl_share_on_a_hand_built_matrix():
    w = torch.ones(2, 3)
    inputs = LayerInputs(torch.diag(torch.tensor([1.0, 1.0, 4.0], dtype=torch.float64)), rows=5)
    # scores |w| * ||x||: [1, 1, 2] per row, mean 4/3; above 1.2 * 4/3 = 1.6: the two 2s of six
    assert LF.owl_share(w, inputs, m=1.2) == pytest.approx(2 / 6)
    assert LF.owl_share(w, inputs) == 0.0  # M = 5 by default: nothing that far out
    w2 = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 40.0]])
    ident = LayerInputs(torch.eye(3, dtype=torch.float64), rows=3)
    assert LF.owl_share(w2, ident) == pytest.approx(1 / 6)  # mean 7.5, threshold 37.5: only the 40
    # an embedding's score is |w| * sqrt(token count)
    emb = LayerInputs(None, rows=10, token_counts=torch.tensor([0, 1, 100]))
    assert LF.owl_share(torch.ones(3, 2), emb, m=2.0) == pytest.approx(2 / 6)  # scores 0,0,1,1,10,10; mean 22/6


def test_relative_error_is_the_pre_activation_error():
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(30, 4, generator=g, dtype=torch.float64)
    inputs = LayerInputs(x.T @ x, rows=30)
    pruned = w.clone()
    pruned[:, :2] = 0.0
    hand = float(((x @ (pruned - w).T) ** 2).sum() / ((x @ w.T) ** 2).sum())
    assert LF.relative_error(w, pruned, inputs) == pytest.approx(hand, rel=1e-9)
    assert LF.relative_error(w, w, inputs) == 0.0
    assert LF.relative_error(w, torch.zeros_like(w), inputs) == pytest.approx(1.0)
    emb = LayerInputs(None, rows=3, token_counts=torch.tensor([2, 0, 1]))
    we = torch.tensor([[1.0, 1.0], [5.0, 5.0], [2.0, 0.0]])
    cut = torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    assert LF.relative_error(we, cut, emb) == pytest.approx(2 * 1 / (2 * 2 + 4))  # counts weigh the rows


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_curves_zero_at_sparsity_zero_and_reconstruction_lowers_the_error(rnn):
    task = split_task(rnn=rnn)
    a = analyse(task)
    c = LF.layer_curves(a, task)
    assert c.grid[0] == 0.0 and c.grid[-1] == 1.0
    np.testing.assert_array_equal(c.error[:, 0], 0.0)
    np.testing.assert_array_equal(c.error_obs[:, 0], 0.0)
    np.testing.assert_allclose(c.error[:, -1], 1.0)  # everything pruned: the whole pre-activation is lost
    assert (c.error_obs <= c.error + 1e-12).all()
    matrices = [i for i, layer in enumerate(a.layers) if layer.kind != "embedding"]
    assert all((c.error_obs[i, 1:-1] < c.error[i, 1:-1]).any() for i in matrices)
    emb = [i for i, layer in enumerate(a.layers) if layer.kind == "embedding"]
    np.testing.assert_array_equal(c.error_obs[emb], c.error[emb])  # nothing to re-fit in a lookup table


def test_error_and_loss_at_a_grid_point_match_a_hand_computation():
    task = split_task()
    a = analyse(task)
    stats = calibration(a, task)
    c = LF.layer_curves(a, task)
    j = LF.SPARSITY_GRID.index(0.8)
    for i, layer in enumerate(a.layers):
        k = int(0.8 * layer.numel + 0.5)
        w = a.dense[i].reshape(layer.shape[0], -1)
        zeroed = w.clone().reshape(-1)
        zeroed[a.orders[i][:k]] = 0.0
        assert c.error[i, j] == pytest.approx(LF.relative_error(w, zeroed.reshape(w.shape), stats[layer.name]))
        model = copy.deepcopy(task.model)
        with torch.no_grad():
            get_param(model, layer).copy_(zeroed.reshape(layer.shape))
        gen = torch.Generator().manual_seed(LF.LOSS_SEED)
        with torch.no_grad():
            hand = np.mean([float(task.train_loss(model, gen)) for _ in range(LF.LOSS_DRAWS)])
        assert c.loss[i, j] == pytest.approx(hand, rel=1e-5)
    raw = LF.raw_features(c, np.full(a.num_layers, 0.8))
    np.testing.assert_allclose(raw["loss_increase"], (c.loss[:, j] - c.dense_loss) / c.dense_loss)
    between = LF.raw_features(c, np.full(a.num_layers, 0.825))["recon_error"]  # halfway between 0.8 and 0.85
    np.testing.assert_allclose(between, 0.5 * (c.error[:, j] + c.error[:, j + 1]))


def test_roles_from_the_adapters_and_the_order_modules_run_in():
    net = ZooSequenceNet(4, 8, 1, 3, cell="gru", in_proj=6, head="attn")
    layers = find_prunable_layers(net)
    roles = LF.layer_roles(net, layers, torch.randn(2, 5, 4))
    assert dict(zip([x.name for x in layers], roles)) == {
        "in_proj.weight": "input", "rnn.weight_ih_l0": "input", "rnn.weight_hh_l0": "recurrent",
        "attn.weight": "attention", "head.weight": "head"}
    lm = ZooLM(10, 6, 6, 1, cell="lstm", tied=True, head="lm-mlp")
    layers = find_prunable_layers(lm)
    roles = LF.layer_roles(lm, layers, torch.randint(0, 10, (2, 5)))
    assert dict(zip([x.name for x in layers], roles)) == {
        "embed.weight": "embedding", "rnn.weight_ih_l0": "input", "rnn.weight_hh_l0": "recurrent",
        "mlp.weight": "head"}  # the tied head is the embedding's weight, listed once
    proj = ZooLM(10, 0, 8, 1, cell="lstm", proj_size=4)
    assert "projection" in LF.layer_roles(proj, find_prunable_layers(proj), torch.randint(0, 10, (2, 5)))


# --- no evaluation, no validation data ---------------------------------------------------------------------------

def test_features_spend_no_evaluation_and_never_read_validation():
    task = split_task()
    clean = LF.feature_columns(analyse(task), task, np.full(4, 0.7))
    poisoned = RNNTask(copy.deepcopy(task.model), name="poisoned", train_loss=task.train_loss,
                       calibration_batches=task.calibration_batches,
                       evaluate=lambda m: pytest.fail("the validation split was read"),
                       test=lambda m: pytest.fail("the test split was read"))
    np.testing.assert_array_equal(LF.feature_columns(analyse(poisoned), poisoned, np.full(4, 0.7)), clean)
    assert clean[:, LF.COLUMNS.index("loss_increase")].any() and clean[:, LF.COLUMNS.index("recon_error")].any()
    with pytest.raises(ValueError, match="shares"):
        LF.feature_columns(analyse(task), task, np.full(3, 0.7))


def test_zoo_env_format_4_spends_no_evaluation():
    task = split_task()
    calls = []
    inner = task.evaluate
    task.evaluate = lambda m: calls.append(1) or inner(m)
    env = PruneRNNZooEnv([task], target_sparsity=(0.5, 0.9), observation_format=4)
    assert env.env.dense_score is not None  # building the model's env scores the dense model once
    before = len(calls)
    for seed in range(3):
        env.reset(seed=seed)
    assert len(calls) == before  # resets observe: the features cost no evaluation


# --- the zoo observation -----------------------------------------------------------------------------------------

def test_format_4_keeps_the_format_3_columns_bit_for_bit():
    tasks = [split_task(0, "lstm"), split_task(1, "gru")]
    old = PruneRNNZooEnv(tasks, target_sparsity=(0.5, 0.9))
    new = PruneRNNZooEnv(tasks, target_sparsity=(0.5, 0.9), observation_format=4)
    assert old.observation_format == 3 and old.observation_space.shape == (old.max_layers * len(ROW) + 8,)
    assert new.observation_space.shape == (new.max_layers * len(ROW_V4) + 8,)
    keep = [ROW_V4.index(c) for c in ROW]
    for seed in range(3):
        o3, i3 = old.reset(seed=seed)
        o4, i4 = new.reset(seed=seed)
        assert i3["target_sparsity"] == i4["target_sparsity"] and new.observation_space.contains(o4)
        rows3, rows4 = o3[:-8].reshape(old.max_layers, -1), o4[:-8].reshape(new.max_layers, -1)
        np.testing.assert_array_equal(rows4[:, keep], rows3)
        np.testing.assert_array_equal(o4[-8:], o3[-8:])
        cols = rows4[:, [ROW_V4.index(c) for c in LAYER_COLUMNS]]
        n = new.env.num_layers
        np.testing.assert_array_equal(cols[:n], layer_columns(new.env).astype(np.float32))
        assert (cols[:n, -len(LF.COLUMNS) + 6:].sum(1) == 1).all()  # one role each
        a = np.zeros(new.action_space.shape, np.float32)
        o3, r3, *_ = old.step(a)
        o4, r4, *_ = new.step(a)
        assert r3 == r4
    seq = PruneRNNZooEnv(tasks, target_sparsity=0.7, mode="sequential", observation_format=4)
    o, _ = seq.reset(seed=0)
    assert o.shape == (len(ROW_V4) + 8,)


def test_format_4_options_and_errors():
    task = split_task()
    with pytest.raises(ValueError, match="observation_format"):
        PruneRNNZooEnv([task], observation_format=5)
    bare = RNNTask(copy.deepcopy(task.model), eval_batch=task.eval_batch, metric="accuracy", name="bare")
    with pytest.raises(ValueError, match="observation_format"):
        PruneRNNZooEnv([bare], observation_format=4)
    env = PruneRNNZooEnv([task], target_sparsity=0.7)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="observation_format"):
        observation(env.env, observation_format=2)
    units = PruneRNNZooEnv([task], target_sparsity=0.7, observation_format=4, granularity="hidden_unit")
    o, _ = units.reset(seed=0)
    rows = o[:-8].reshape(units.max_layers, -1)
    assert not rows[:, [ROW_V4.index(c) for c in LAYER_COLUMNS]].any()  # no per-weight features for unit groups


def test_loss_follows_the_env_operator():
    task = split_task()
    a = analyse(task)
    zeroed, refit = LF.layer_curves(a, task, None), LF.layer_curves(a, task, "obs")
    matrices = [i for i, layer in enumerate(a.layers) if layer.kind != "embedding"]
    assert not np.array_equal(zeroed.loss[matrices], refit.loss[matrices])
    np.testing.assert_array_equal(zeroed.loss[0], refit.loss[0])  # the embedding is only zeroed either way
    np.testing.assert_array_equal(zeroed.error, refit.error)
    env = PruneRNNZooEnv([task], target_sparsity=0.8, observation_format=4, reconstruct="obs")
    env.reset(seed=0)
    assert env.env.analysis is a and a.cached(("layer_curves", "obs"), lambda: None) is refit


# --- the layer-wise policy on format 4 ---------------------------------------------------------------------------

def test_a_format_4_policy_starts_at_lamp_saves_and_pretrains(tmp_path):
    from agents.policies.layerwise import LayerwisePolicy, PretrainArgs, load, pretrain, save

    tasks = [split_task(0, "lstm"), split_task(1, "gru")]
    new = LayerwisePolicy(hidden=8, columns=ROW_V4)
    old = LayerwisePolicy(hidden=8)
    assert (new.observation_format, old.observation_format) == (4, 3)
    zoo4 = PruneRNNZooEnv(tasks, target_sparsity=0.7, observation_format=4)
    zoo3 = PruneRNNZooEnv(tasks, target_sparsity=0.7)
    o4, _ = zoo4.reset(seed=0)
    o3, _ = zoo3.reset(seed=0)
    np.testing.assert_array_equal(new.act(o4), old.act(o3))  # untrained: LAMP's allocation, either format
    np.testing.assert_array_equal(new.allocation_action(zoo4.env), old.allocation_action(zoo3.env))
    save(new, tmp_path / "v4.pt")
    back = load(tmp_path / "v4.pt")
    assert back.columns == ROW_V4 and back.observation_format == 4
    with pytest.raises(ValueError, match="observation format"):
        pretrain(zoo3, PretrainArgs(episodes=2, batch_size=2), policy=new)
    trained, curve = pretrain(zoo4, PretrainArgs(episodes=4, batch_size=2, hidden=8))
    assert trained.observation_format == 4 and len(curve) == 2


def test_format_4_reads_no_gradient_from_the_user_model():
    task = split_task()
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    LF.layer_curves(analyse(task), task, "obs")
    after = task.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in task.model.parameters())


def test_tiny_fixture_tasks_calibrate_through_train_loss_or_fail_clearly():
    task = tiny_task("gru")  # a loss and an eval batch, but no training batches to calibrate on
    with pytest.raises(ValueError, match="observation_format"):
        LF.layer_curves(analyse(task), task)


def test_pretrain_selected_scores_validation_with_the_training_operator():
    from agents.policies.layerwise import LayerwisePolicy, PretrainArgs, pretrain_selected, zero_shot_score

    train = PruneRNNZooEnv([split_task(0, "lstm")], target_sparsity=(0.6, 0.8), observation_format=4,
                           reconstruct="obs")
    val = [split_task(1, "gru")]
    policy, log = pretrain_selected(train, val, PretrainArgs(episodes=2, batch_size=2, hidden=8), rounds=1,
                                    selection_targets=(0.7,))
    assert policy.observation_format == 4 and policy.columns == ROW_V4
    lamp = LayerwisePolicy(hidden=8, columns=ROW_V4)
    assert log[0]["validation"] == zero_shot_score(lamp, val, (0.7,), reconstruct="obs")
