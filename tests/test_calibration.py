"""Calibration: the task contract, input capture through the layer adapters, the Wanda/OBS rankings."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tiny import VOCAB, tiny_task
from torch import nn

from prune_env import PruneRNNEnv, RNNTask
from prune_env.pruning.analysis import analyse
from prune_env.pruning.calibration import DRAWS, calibration_inputs, calibration_stats, capture_inputs
from prune_env.pruning.layers import find_prunable_layers
from prune_env.pruning.obs import row_balanced_order, wanda_scores
from prune_env.tasks.training import SampledLoss

CELLS = {"LSTM": nn.LSTMCell, "GRU": nn.GRUCell, "RNN": nn.RNNCell}


def hand_unrolled(rnn: nn.RNNBase, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What each weight reads, from PyTorch's own cells stepped by hand: x_t for weight_ih, h_{t-1} for weight_hh.

    ``x`` is ``(batch, time, features)``; rows are ordered batch-major, then time (the capture's order).
    """
    dirs = 2 if rnn.bidirectional else 1
    out: dict[str, torch.Tensor] = {}
    seq = x
    for layer in range(rnn.num_layers):
        outputs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            cell = CELLS[type(rnn).__name__](seq.shape[-1], rnn.hidden_size)
            cell.load_state_dict({f"{p}_{w}": getattr(rnn, f"{p}_{w}{sfx}") for p in ("weight", "bias")
                                  for w in ("ih", "hh")})
            h = torch.zeros(seq.shape[0], rnn.hidden_size)
            state = (h, torch.zeros_like(h)) if isinstance(rnn, nn.LSTM) else h
            prev, hs = [None] * seq.shape[1], [None] * seq.shape[1]
            for t in (reversed(range(seq.shape[1])) if d else range(seq.shape[1])):
                prev[t] = state[0] if isinstance(rnn, nn.LSTM) else state
                state = cell(seq[:, t], state)
                hs[t] = state[0] if isinstance(rnn, nn.LSTM) else state
            out["weight_ih" + sfx] = seq.reshape(-1, seq.shape[-1])
            out["weight_hh" + sfx] = torch.stack(prev, 1).reshape(-1, rnn.hidden_size)
            outputs.append(torch.stack(hs, 1))
        seq = torch.cat(outputs, -1)
    return out


class Wrap(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[0]


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_captured_inputs_equal_a_hand_unrolled_loop(kind, bidirectional, batch_first):
    torch.manual_seed(0)
    rnn = getattr(nn, kind)(3, 5, num_layers=2, bidirectional=bidirectional, batch_first=batch_first)
    model = Wrap(rnn).eval()
    x = torch.randn(4, 6, 3)  # batch, time, features
    got = capture_inputs(model, find_prunable_layers(model), [x if batch_first else x.transpose(0, 1)])
    want = hand_unrolled(rnn, x)
    assert set(got) == {f"rnn.{k}" for k in want}
    for name, ref in want.items():
        torch.testing.assert_close(got[f"rnn.{name}"], ref, atol=1e-5, rtol=1e-5)


def test_lstm_projection_reads_the_unprojected_output():
    torch.manual_seed(0)
    rnn = nn.LSTM(3, 5, num_layers=2, proj_size=2, batch_first=True)
    model = Wrap(rnn).eval()
    x = torch.randn(2, 4, 3)
    got = capture_inputs(model, find_prunable_layers(model), [x])
    assert got["rnn.weight_hh_l1"].shape == (8, 2) and got["rnn.weight_hr_l1"].shape == (8, 5)
    # the projection of what weight_hr reads is the layer's output, which the next step's weight_hh reads
    out = model(x)
    proj = got["rnn.weight_hr_l1"] @ rnn.weight_hr_l1.T
    torch.testing.assert_close(proj, out.reshape(-1, 2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["rnn.weight_hh_l1"].reshape(2, 4, 2)[:, 1:], out[:, :-1], atol=1e-5, rtol=1e-5)


def test_linear_and_embedding_capture():
    task = tiny_task("gru")
    x = torch.randint(0, VOCAB, (3, 7))
    got = capture_inputs(task.model, find_prunable_layers(task.model), [x])
    assert torch.equal(got["emb.weight"], x.reshape(-1))
    rnn_out = task.model.rnn(task.model.emb(x))[0]
    torch.testing.assert_close(got["head.weight"], rnn_out.reshape(-1, rnn_out.shape[-1]))
    stats = calibration_stats(task.model, find_prunable_layers(task.model), [x])
    assert torch.equal(stats["emb.weight"].token_counts, torch.bincount(x.reshape(-1), minlength=VOCAB))
    torch.testing.assert_close(stats["head.weight"].gram, (got["head.weight"].double().T @ got["head.weight"].double()))
    assert stats["head.weight"].rows == 21


def test_packed_sequences_are_refused_clearly():
    class Packed(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(2, 3, batch_first=True)

        def forward(self, x):
            packed = nn.utils.rnn.pack_padded_sequence(x, [x.shape[1]] * x.shape[0], batch_first=True)
            return self.rnn(packed)[1]

    model = Packed()
    with pytest.raises(ValueError, match="packed sequences"):
        capture_inputs(model, find_prunable_layers(model), [torch.randn(2, 3, 2)])


# --- the task contract ------------------------------------------------------------------------------------------

def calibrated_tiny(rnn="gru", **kwargs) -> RNNTask:
    task = tiny_task(rnn, **kwargs)
    g = torch.Generator().manual_seed(7)
    task.calibration_batches = tuple(torch.randint(0, VOCAB, (8, 10), generator=g) for _ in range(2))
    return task


@pytest.mark.parametrize("setting", [{"criterion": "wanda"}, {"criterion": "obs"}, {"reconstruct": "obs"},
                                     {"quantize": "gptq"}])
def test_missing_calibration_is_a_clear_error(setting):
    task = tiny_task("gru")  # a loss on a fixed batch, but neither calibration_batches nor train_loss
    name = next(iter(setting))
    with pytest.raises(ValueError, match=rf"`{name}` needs calibration data.*calibration_batches"):
        PruneRNNEnv(task, target_sparsity=0.5, device="cpu", **setting)


def test_bad_calibration_batches_name_the_argument():
    model = tiny_task("gru").model
    x = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(TypeError, match="calibration_batches"):
        RNNTask(model, eval_batch=(x, x), metric="accuracy", calibration_batches=x)
    with pytest.raises(ValueError, match="calibration_batches"):
        RNNTask(model, eval_batch=(x, x), metric="accuracy", calibration_batches=[])
    with pytest.raises(TypeError, match=r"calibration_batches\[1\]"):
        RNNTask(model, eval_batch=(x, x), metric="accuracy", calibration_batches=[x, "text"])


def test_train_loss_lends_its_training_inputs():
    task = tiny_task("gru")
    train_x = torch.randint(0, VOCAB, (50, 10), generator=torch.Generator().manual_seed(3))
    task.train_loss = SampledLoss((train_x, (train_x + 1) % VOCAB), batch=4)
    batches = calibration_inputs(task)
    assert len(batches) == DRAWS and all(b.shape == (4, 10) for b in batches)
    rows = {tuple(r.tolist()) for r in train_x}
    assert all(tuple(r.tolist()) in rows for b in batches for r in b)
    again = calibration_inputs(task)
    assert all(torch.equal(a, b) for a, b in zip(batches, again))  # fixed seed: the same task calibrates the same


def test_calibration_never_reads_validation_or_test_data():
    task = calibrated_tiny()
    clean = analyse(task, "wanda").cached("calibration", lambda: None)
    poisoned = copy.copy(task)
    poisoned.eval_batch = (torch.full_like(task.eval_batch[0], 3), task.eval_batch[1])
    poisoned.test = lambda model: pytest.fail("the test split was read")
    stats = analyse(poisoned, "wanda").cached("calibration", lambda: None)
    assert stats is not clean and stats.digest == clean.digest
    for name, inputs in clean.inputs.items():
        if inputs.gram is not None:
            assert torch.equal(inputs.gram, stats[name].gram)


@pytest.mark.parametrize("preset", ["digits", "lm"])
def test_presets_calibrate_on_training_data_only(monkeypatch, preset):
    """Poisoned validation and test splits leave a preset's calibration batches unchanged."""
    if preset == "digits":
        from prune_env.tasks import digits

        real = digits.load_splits

        def poisoned(*args, **kwargs):
            splits = real(*args, **kwargs)
            return {**splits, "val": (torch.full_like(splits["val"][0], 9.0), splits["val"][1]),
                    "test": (torch.full_like(splits["test"][0], 9.0), splits["test"][1])}

        clean = digits.make(progress=False, epochs=1)
        monkeypatch.setattr(digits, "load_splits", poisoned)
        dirty = digits.make(progress=False, epochs=1)
        train_rows = {tuple(r.reshape(-1).tolist()) for r in real(0, 0.2, 0.2)["train"][0]}
    else:
        from prune_env.tasks.lm import build_lm_task
        from prune_env.tasks.models import CharLM

        g = torch.Generator().manual_seed(0)
        splits = {k: torch.randint(0, 9, (600,), generator=g) for k in ("train", "val", "test")}
        cfg = {"emb": 4, "hidden": 8, "layers": 1, "steps": 2, "seq_len": 16, "batch": 4, "lr": 1e-2,
               "eval_tokens": 64, "test_tokens": None, "loss_tokens": 128, "metric": "accuracy"}

        def make(s):
            return build_lm_task(preset="calib-test", cfg=cfg, seed=0, retrain=False, progress=False,
                                 model_cls=CharLM, vocab_size=9, splits=s, extra={}, metadata={})

        clean = make(splits)
        dirty = make({**splits, "val": torch.zeros(600, dtype=torch.long), "test": torch.ones(600, dtype=torch.long)})
        text = "," + ",".join(map(str, splits["train"].tolist())) + ","
        train_rows = {tuple(r.tolist()) for b in clean.calibration_batches for r in b
                      if "," + ",".join(map(str, r.tolist())) + "," in text}  # windows of the training split
    assert len(clean.calibration_batches) == len(dirty.calibration_batches) > 0
    assert all(torch.equal(a, b) for a, b in zip(clean.calibration_batches, dirty.calibration_batches))
    rows = [tuple(r.reshape(-1).tolist()) for b in clean.calibration_batches for r in b]
    assert all(r in train_rows for r in rows)


# --- rankings ---------------------------------------------------------------------------------------------------

def test_row_balanced_order_prunes_rows_evenly_and_lowest_first():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(6, 9, generator=g)
    order = row_balanced_order(scores)
    assert sorted(order.tolist()) == list(range(54))
    for k in range(55):
        per_row = torch.zeros(54, dtype=torch.bool)
        per_row[order[:k]] = True
        per_row = per_row.reshape(6, 9)
        n = per_row.sum(1)
        assert int(n.sum()) == k and int(n.max() - n.min()) <= 1
        for r in range(6):  # within a row the pruned weights score lowest
            if 0 < n[r] < 9:
                assert scores[r][per_row[r]].max() <= scores[r][~per_row[r]].min()


@pytest.mark.parametrize("criterion", ["wanda", "obs"])
def test_calibrated_criteria_keep_exact_counts(criterion):
    task = calibrated_tiny("lstm")
    env = PruneRNNEnv(task, target_sparsity=0.6, criterion=criterion, device="cpu")
    env.reset(seed=0)
    action = np.random.default_rng(0).uniform(-1, 1, env.action_space.shape)
    *_, info = env.step(action)
    model = env.pruned_model()
    total = 0
    for layer, k in zip(env.layers, env.counts):
        w = dict(model.named_parameters())[layer.name]
        assert int((w == 0).sum()) == int(k), layer.name
        if layer.kind != "embedding":  # rows as even as the count allows
            per_row = (w == 0).sum(1)
            assert int(per_row.max() - per_row.min()) <= 1
        total += int(k)
    assert total == round(0.6 * int(env.numels.sum()))
    assert info["overall_sparsity"] == pytest.approx(total / env.numels.sum())


def test_wanda_ranks_by_input_norm_within_rows():
    task = calibrated_tiny("gru")
    a = analyse(task, "wanda")
    stats = a.cached("calibration", lambda: None)
    i = a.layer_names.index("head.weight")
    w = a.dense[i].reshape(a.layers[i].shape)
    assert torch.equal(a.orders[i], row_balanced_order(wanda_scores(w, stats["head.weight"].sq_norms)))
    assert not torch.equal(a.orders[i], analyse(task, "magnitude").orders[i])


def test_task_model_is_never_mutated():
    task = calibrated_tiny("lstm")
    before = copy.deepcopy(task.model.state_dict())
    env = PruneRNNEnv(task, target_sparsity=0.7, criterion="obs", reconstruct="obs", device="cpu")
    env.reset(seed=0)
    env.step(np.zeros(env.action_space.shape))
    env.pruned_model()
    env.pruned_model(env.allocation, sequential=True)
    for k, v in task.model.state_dict().items():
        assert torch.equal(v, before[k]), k
