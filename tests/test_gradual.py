"""Gradual pruning with fine-tuning (prune_env.compression.gradual): the cubic schedule, fixed masks, magnitude
re-ranking, the best checkpoint after the ramp, hidden units, quantization-aware training, seeding and argument
checks."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from tiny import VOCAB, tiny_task
from torch import nn

from prune_env import PruneRNNEnv, RNNTask
from prune_env.compression.finetune import finetune
from prune_env.compression.gradual import cubic_schedule, gradual_prune
from prune_env.compression.quantize import quantize
from prune_env.pruning.allocation import allocation_counts
from prune_env.pruning.layers import find_prunable_layers, get_param
from prune_env.task import split_score


class TrainLoss:
    """A fresh random batch of the tiny rule ``y = x + 1`` per call."""

    def __call__(self, model: nn.Module, generator: torch.Generator) -> torch.Tensor:
        x = torch.randint(0, VOCAB, (16, 10), generator=generator)
        return nn.functional.cross_entropy(model(x).reshape(-1, VOCAB), ((x + 1) % VOCAB).reshape(-1))


def _task(rnn: str = "gru", trained: bool = True, metric: str = "nll") -> RNNTask:
    """The tiny LM (hidden 16, 2 layers) scored by validation NLL, with fresh training batches; ``trained``: first
    trained dense for 150 steps, so that pruning hurts and fine-tuning has something to recover."""
    base = tiny_task(rnn, hidden=16)
    model = base.model
    if trained:
        model = copy.deepcopy(model)
        finetune(model, dataclasses.replace(base, train_loss=TrainLoss()), 150, {}, torch.Generator().manual_seed(0),
                 lr=1e-2)
        model.eval()
    return RNNTask(model, eval_batch=base.eval_batch, metric=metric, test=base.test, loss=base.loss,
                   train_loss=TrainLoss(), name=f"tiny-{rnn}")


@pytest.fixture(scope="module")
def task() -> RNNTask:
    return _task()


def _env(task, **kwargs) -> PruneRNNEnv:
    return PruneRNNEnv(task, device="cpu", **kwargs)


def _uniform(env, s):
    return {n: s for n in env.layer_names}


def _score(task, model) -> float:
    return split_score(task.evaluate(model))[0]


# --------------------------------------------------------------------------------------------- the schedule
def test_cubic_schedule_follows_the_formula_and_ends_exact():
    numels = np.array([96, 1000, 7, 1])
    final = np.array([77, 312, 7, 0])
    for s_i in (0.0, 0.1):
        sched = cubic_schedule(final, numels, start=3, end=23, frequency=5, initial_sparsity=s_i)
        assert list(sched) == [3, 8, 13, 18, 23]  # t0 + k * dt, k = 0..n
        k_i = np.minimum(final, np.floor(s_i * numels + 0.5))
        prev = np.zeros_like(final)
        for t, counts in sched.items():
            # s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n dt))**3, in counts, rounded half up
            expected = np.floor(final + (k_i - final) * (1 - (t - 3) / 20) ** 3 + 0.5)
            np.testing.assert_array_equal(counts, expected)
            assert np.all(counts >= prev) and np.all(counts <= final)
            prev = counts
        np.testing.assert_array_equal(sched[23], final)
        assert sched[3].tolist() == k_i.tolist()
    # The cubic shape: most of the pruning early, little near the end.
    big = cubic_schedule([1000], [1000], 0, 100, 1)
    assert big[50][0] == 875 and big[10][0] == 271 and big[90][0] == 999


def test_cubic_schedule_ends_at_end_off_the_grid_and_at_once():
    sched = cubic_schedule([50], [100], 0, 10, 4)
    assert list(sched) == [0, 4, 8, 10] and sched[10][0] == 50
    assert {t: c.tolist() for t, c in cubic_schedule([5, 2], [10, 4], 7, 7, 3).items()} == {7: [5, 2]}


@pytest.mark.parametrize("kwargs, word", [({"start": -1}, "start"), ({"end": 2}, "end"),
                                          ({"frequency": 0}, "frequency"), ({"final_counts": [11]}, "final_counts"),
                                          ({"initial_sparsity": 1.5}, "initial_sparsity")])
def test_cubic_schedule_bad_arguments(kwargs, word):
    args = {"final_counts": [5], "numels": [10], "start": 3, "end": 9, "frequency": 2, **kwargs}
    with pytest.raises(ValueError, match=word):
        cubic_schedule(**args)


# ------------------------------------------------------------------------------------ unstructured runs
def test_every_layer_reaches_its_exact_final_count(task):
    env = _env(task)
    # Different sparsities per layer, including round-half-up cases and a dense layer.
    allocation = {"emb.weight": 0.5, "rnn.weight_ih_l0": 0.3, "rnn.weight_hh_l0": 0.8, "rnn.weight_hh_l1": 0.95,
                  "head.weight": 0.4166666}
    result = gradual_prune(env, allocation, steps=12, end=8, frequency=2, lr=1e-2, eval_every=4)
    expected = allocation_counts(allocation, env.layer_names, env.numels)
    assert result.counts == dict(zip(env.layer_names, expected.tolist()))
    assert result.schedule[8] == result.counts and max(result.schedule) == 8
    for layer, k in zip(env.layers, expected):
        assert int((get_param(result.model, layer) == 0).sum()) == k, layer.name
    assert result.counts["rnn.weight_ih_l1"] == 0


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_masks_fixed_between_pruning_steps_and_magnitude_of_current_weights(task, optimizer):
    """After every optimizer step each layer has exactly its scheduled count of zeros, a zero never comes back to
    life, and each pruning step removes the lowest |w| of the weights as they are at that step (fine-tuned, not
    dense)."""
    env = _env(task)
    layers = env.layers
    snaps = {0: [get_param(task.model, la).detach().clone() for la in layers]}

    def record(step, model):
        snaps[step] = [get_param(model, la).detach().clone() for la in layers]

    result = gradual_prune(env, _uniform(env, 0.7), steps=20, start=2, end=14, frequency=4, lr=5e-2,
                           optimizer=optimizer, eval_every=5, callback=record)
    assert sorted(snaps) == list(range(21))
    pruning = sorted(result.schedule)
    assert pruning == [2, 6, 10, 14]
    for s in range(1, 21):
        in_force = max([p for p in pruning if p <= s - 1], default=None)
        for i, layer in enumerate(layers):
            zero, before = snaps[s][i] == 0, snaps[s - 1][i] == 0
            expected = 0 if in_force is None else result.schedule[in_force][layer.name]
            assert int(zero.sum()) == expected, (s, layer.name)
            assert torch.all(zero[before]), (s, layer.name)  # the mask only shrinks
            if s - 1 in pruning:
                new = zero & ~before
                if new.any():  # chosen from the current weights: the pruned ones are the smallest
                    w = snaps[s - 1][i].abs()
                    assert w[new].max() <= w[~zero].min(), (s, layer.name)
    # Fine-tuning moved the weights between pruning steps, so the current ranking differs from the dense one.
    final = [get_param(result.model, la) == 0 for la in layers]
    dense_order = [set(o[:result.counts[la.name]].tolist()) for o, la in zip(env.analysis.orders, layers)]
    assert any(set(torch.nonzero(z.reshape(-1)).reshape(-1).tolist()) != d for z, d in zip(final, dense_order))


def test_other_criteria_follow_the_envs_fixed_order(task):
    env = _env(task, criterion="saliency")
    result = gradual_prune(env, _uniform(env, 0.6), steps=10, end=6, frequency=2, lr=5e-2, eval_every=5)
    for layer, order in zip(env.layers, env.analysis.orders):
        zero = set(torch.nonzero(get_param(result.model, layer).reshape(-1) == 0).reshape(-1).tolist())
        assert zero == set(order[:result.counts[layer.name]].tolist()), layer.name


def test_zero_steps_is_one_shot_magnitude_pruning(task):
    env = _env(task)
    allocation = _uniform(env, 0.6)
    result = gradual_prune(env, allocation, steps=0)
    one_shot = env.pruned_model(allocation)
    assert all(torch.equal(a, b) for a, b in zip(result.model.parameters(), one_shot.parameters()))
    assert result.step == result.end == 0 and result.losses == [] and result.score == _score(task, one_shot)


def test_fine_tuning_beats_one_shot_at_the_same_allocation(task):
    env = _env(task)
    allocation = _uniform(env, 0.8)
    one_shot = _score(task, env.pruned_model(allocation))
    dense = _score(task, task.model)
    result = gradual_prune(env, allocation, steps=60, end=30, frequency=5, lr=1e-2, eval_every=10)
    assert result.score == _score(task, result.model)  # the reported score is the returned model's
    # validation NLL: dense ~0.1 on this rule; one-shot 80% loses most of it; 60 steps recover most of that
    assert one_shot < dense - 0.5
    assert result.score > one_shot + 0.5, (dense, one_shot, result.score)
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[25:35])


class ScriptedEvaluate:
    """Validation scores from a script, in call order (the last one repeats)."""

    def __init__(self, scores):
        self.scores, self.calls = list(scores), 0

    def __call__(self, model):
        self.calls += 1
        return self.scores[min(self.calls, len(self.scores)) - 1]


def test_best_checkpoint_is_taken_after_the_ramp_only():
    base = _task(trained=False)
    # evaluations at t = 2, 4 (ramp), 5 (= end), 6, 8, 10, 12, then the returned model once more
    script = ScriptedEvaluate([10.0, 9.0, 1.0, 3.0, 5.0, 2.0, 4.0, 5.0])
    task = RNNTask(base.model, evaluate=script, loss=base.loss, train_loss=TrainLoss())
    snaps = {}
    result = gradual_prune(task, {"rnn.weight_hh_l0": 0.5}, steps=12, end=5, frequency=1, lr=1e-2, eval_every=2,
                           callback=lambda s, m: snaps.__setitem__(s, copy.deepcopy(m)))
    assert result.curve == [(2, 10.0), (4, 9.0), (5, 1.0), (6, 3.0), (8, 5.0), (10, 2.0), (12, 4.0)]
    assert result.step == 8 and result.score == 5.0 and result.end == 5 and script.calls == 8
    assert all(torch.equal(a, b) for a, b in zip(result.model.parameters(), snaps[8].parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(result.model.parameters(), snaps[12].parameters()))


def test_select_nll_keeps_the_lowest_validation_nll_not_the_best_score():
    base = _task(trained=False)
    # evaluations at t = 2, 4 (ramp, never kept), 5 (= end), 6, 8, 10, 12, then the returned model once more: after
    # the ramp the score peaks at 8, the NLL bottoms at 10
    rows = [(9.0, 0.1), (9.0, 0.1), (1.0, 3.0), (2.0, 2.5), (5.0, 2.0), (3.0, 1.0), (4.0, 1.5), (3.0, 1.0)]
    script = ScriptedEvaluate([{"score": s, "nll": n} for s, n in rows])
    task = RNNTask(base.model, evaluate=script, loss=base.loss, train_loss=TrainLoss())
    result = gradual_prune(task, {"rnn.weight_hh_l0": 0.5}, steps=12, end=5, frequency=1, lr=1e-2, eval_every=2,
                           select="nll")
    assert result.curve == [(2, 9.0), (4, 9.0), (5, 1.0), (6, 2.0), (8, 5.0), (10, 3.0), (12, 4.0)]  # scores
    assert result.step == 10 and result.info["select"] == "nll"
    script.calls = 0
    assert gradual_prune(task, {"rnn.weight_hh_l0": 0.5}, steps=12, end=5, frequency=1, lr=1e-2,
                         eval_every=2).step == 8
    with pytest.raises(ValueError, match="select.*nll"):
        gradual_prune(RNNTask(base.model, evaluate=lambda m: 1.0, loss=base.loss, train_loss=TrainLoss()),
                      {"rnn.weight_hh_l0": 0.5}, steps=2, select="nll")


def test_cosine_schedule_keeps_lr_through_the_ramp_then_decays_to_zero(task):
    """Plain SGD without momentum or clipping: a step's update is ``lr_t * grad``; the learning rate each step used is
    read back from the optimizer through the callback's view of the working model's update sizes."""
    from prune_env.compression.gradual import schedule as S
    from prune_env.compression.gradual.trainer import MaskedTrainer
    assert [S.cosine_factor(t, 4, 12) for t in (0, 3, 4)] == [1.0, 1.0, 1.0]
    assert S.cosine_factor(8, 4, 12) == pytest.approx(0.5) and 0 < S.cosine_factor(11, 4, 12) < 0.05
    assert S.cosine_factor(3, 4, 4) == 1.0
    env = _env(task)
    allocation = _uniform(env, 0.5)
    kw = dict(steps=12, end=4, frequency=1, lr=1e-2, eval_every=4, optimizer="sgd", momentum=0.0, clip=None)
    lrs = []
    original = MaskedTrainer.set_lr
    try:
        MaskedTrainer.set_lr = lambda self, lr: (lrs.append(lr), original(self, lr))[1]
        cos = gradual_prune(env, allocation, lr_schedule="cosine", **kw)
    finally:
        MaskedTrainer.set_lr = original
    const = gradual_prune(env, allocation, **kw)
    assert lrs == pytest.approx([1e-2 * S.cosine_factor(t, 4, 12) for t in range(12)])
    assert cos.losses[:5] == const.losses[:5] and cos.losses[5:] != const.losses[5:]
    assert cos.info["lr_schedule"] == "cosine" and const.info["lr_schedule"] == "constant"


def test_same_seed_same_result_other_seed_differs(task):
    env = _env(task)
    allocation = _uniform(env, 0.7)
    kw = dict(steps=12, end=6, frequency=2, lr=1e-2, eval_every=3)
    a, b = gradual_prune(env, allocation, seed=1, **kw), gradual_prune(env, allocation, seed=1, **kw)
    c = gradual_prune(env, allocation, seed=2, **kw)
    assert a.losses == b.losses and a.curve == b.curve and a.step == b.step
    assert all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters()))
    assert a.losses != c.losses
    assert not all(torch.equal(x, y) for x, y in zip(a.model.parameters(), c.model.parameters()))


def test_gradient_clipping_bounds_the_step_on_the_live_weights():
    """One plain SGD step after pruning 90% moves the weights by ``lr * clip`` (the clipped norm is that of the live
    weights' gradients: pruned gradients are masked first); without clipping it moves further."""
    task = _task(trained=False)
    allocation = {n.name: 0.9 for n in find_prunable_layers(task.model)}
    pruned = gradual_prune(task, allocation, steps=0).model
    moved = {}
    for clip in (1e-3, None):
        after = []
        gradual_prune(task, allocation, steps=1, end=0, lr=0.1, optimizer="sgd", momentum=0.0, clip=clip,
                      callback=lambda s, m, out=after: out.extend(p.detach().clone() for p in m.parameters()))
        moved[clip] = torch.cat([(a - b).reshape(-1) for a, b in zip(after, pruned.parameters())]).norm().item()
    assert moved[1e-3] == pytest.approx(0.1 * 1e-3, rel=1e-3)
    assert moved[None] > 10 * moved[1e-3]


def test_falls_back_to_the_fixed_loss_batch():
    base = _task(trained=False)
    task = RNNTask(base.model, eval_batch=base.eval_batch, metric="nll", loss=base.loss)
    result = gradual_prune(task, {"head.weight": 0.5}, steps=6, start=1, end=3, frequency=1, lr=1e-2)
    assert result.losses[0] == pytest.approx(base.loss(base.model).item(), rel=1e-6)  # step 0 prunes nothing
    assert result.losses[-1] < result.losses[0]


def test_the_users_model_is_untouched(task):
    before = copy.deepcopy(task.model.state_dict())
    flags = [p.requires_grad for p in task.model.parameters()]
    env = _env(task)
    gradual_prune(env, _uniform(env, 0.7), steps=6, lr=1e-1)
    gradual_prune(task, _uniform(env, 0.7), steps=6, lr=1e-1, bits=4)
    hu = _env(task, granularity="hidden_unit")
    gradual_prune(hu, {"rnn.l0": 0.5}, steps=6, lr=1e-1)
    after = task.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in task.model.parameters()] == flags and not task.model.training


# ------------------------------------------------------------------------------------------ hidden units
def test_hidden_units_ramp_and_return_the_smaller_model(task):
    env = _env(task, granularity="hidden_unit")
    allocation = {"rnn.l0": 0.5, "rnn.l1": 0.25}
    masked = {}

    def record(step, model):
        masked[step] = {n: p.detach().clone() for n, p in model.named_parameters()}

    result = gradual_prune(env, allocation, steps=16, end=8, frequency=2, lr=1e-2, eval_every=4, callback=record)
    assert result.counts == {"rnn.l0": 8, "rnn.l1": 4} and result.schedule[8] == result.counts
    assert [c["rnn.l0"] for _, c in sorted(result.schedule.items())] == [0, 5, 7, 8, 8]
    # The removed units' weights (rows, columns and biases) stay zero after every step, in the env's unit order.
    for s in range(1, 17):
        in_force = result.schedule[max(p for p in result.schedule if p <= s - 1)]
        masks = env.kind.plan.param_masks(env.kind.keep([in_force[n] for n in env.layer_names]), task.model)
        for name, m in masks.items():
            assert torch.all(masked[s][name][m == 0] == 0), (s, name)
    rnns = [m for m in result.model.modules() if isinstance(m, nn.RNNBase)]
    assert sorted(m.hidden_size for m in rnns) == [8, 12]
    assert sum(p.numel() for p in result.model.parameters()) < sum(p.numel() for p in task.model.parameters())
    assert result.score == _score(task, result.model)
    one_shot = _score(task, env.pruned_model(allocation))
    assert result.score > one_shot


# ----------------------------------------------------------------------------------------------- quantized
@pytest.mark.parametrize("method", ["linear", "kmeans"])
def test_quantized_returns_weights_on_the_grid(task, method):
    env = _env(task, quantize=method)
    bits = {n: 4 for n in env.layer_names}
    bits["head.weight"] = 8
    result = gradual_prune(env, _uniform(env, 0.5), bits=bits, steps=12, end=4, frequency=2, lr=1e-2, eval_every=4)
    assert result.bits == bits
    for layer in env.layers:
        w = get_param(result.model, layer)
        assert torch.equal(quantize(w, bits[layer.name], method), w), layer.name
        assert int((w == 0).sum()) >= result.counts[layer.name]
        rows = [w] if method == "kmeans" else list(w)  # one codebook per layer, or one scale per output row
        assert all(len(torch.unique(r)) <= 2 ** bits[layer.name] for r in rows), layer.name
    assert result.score == _score(task, result.model)


def test_straight_through_rounding_only_in_the_last_phase(task):
    env = _env(task)
    kw = dict(bits=3, steps=12, end=4, frequency=2, lr=1e-2, eval_every=4)
    qat = gradual_prune(env, _uniform(env, 0.5), qat_fraction=0.5, **kw)
    plain = gradual_prune(env, _uniform(env, 0.5), qat_fraction=0.0, **kw)
    assert qat.info["qat_start"] == 6 and plain.info["qat_start"] == 12
    assert qat.losses[:6] == plain.losses[:6]
    assert all(a != b for a, b in zip(qat.losses[6:], plain.losses[6:]))
    # The first straight-through step's loss is the loss of the quantized weights.
    snaps = {}
    gradual_prune(env, _uniform(env, 0.5), qat_fraction=0.5,
                  callback=lambda s, m: snaps.__setitem__(s, copy.deepcopy(m)), **kw)
    model = snaps[6]
    with torch.no_grad():
        for layer in env.layers:
            get_param(model, layer).copy_(quantize(get_param(model, layer), 3))
    assert qat.losses[6] == pytest.approx(TrainLoss()(model, _generator_after(6)).item(), rel=1e-5)


def _generator_after(batches: int) -> torch.Generator:
    """The batch generator of seed 0 after ``batches`` training batches of :class:`TrainLoss`."""
    g = torch.Generator().manual_seed(0)
    for _ in range(batches):
        torch.randint(0, VOCAB, (16, 10), generator=g)
    return g


def test_quantized_env_defaults_to_its_last_episode(task):
    env = _env(task, quantize=True, target_sparsity=0.5)
    env.reset(seed=0)
    env.step(env.action_for(_uniform(env, 0.5), {n: 6 for n in env.layer_names}))
    result = gradual_prune(env, steps=4, end=2, frequency=1, lr=1e-2)
    assert result.bits == env.bit_allocation == {n: 6 for n in env.layer_names}
    assert result.counts == dict(zip(env.layer_names, env.counts_for(env.allocation).tolist()))


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, word", [
    ({"steps": -1}, "steps"), ({"steps": 2.5}, "steps"), ({"start": 11}, "start"), ({"end": 11}, "end"),
    ({"start": 4, "end": 2}, "end"), ({"frequency": 0}, "frequency"), ({"lr": 0.0}, "lr"), ({"lr": "x"}, "lr"),
    ({"clip": 0.0}, "clip"), ({"clip": -1}, "clip"), ({"optimizer": "rmsprop"}, "optimizer"),
    ({"momentum": 1.0}, "momentum"), ({"eval_every": 0}, "eval_every"), ({"seed": "a"}, "seed"),
    ({"allocation": {"nope": 0.5}}, "allocation"), ({"allocation": {"head.weight": 1.5}}, "allocation"),
    ({"allocation": [0.5]}, "allocation"), ({"allocation": None}, "allocation"),
    ({"qat_fraction": 0.5}, "qat_fraction"), ({"bits": {"head.weight": 5}}, "bits"), ({"bits": "8"}, "bits"),
    ({"bits": {"nope": 8}}, "bits"), ({"bits": 8, "qat_fraction": 0.9}, "qat_fraction"),
    ({"bits": 8, "qat_fraction": 2.0}, "qat_fraction"), ({"bits": 8, "method": "round"}, "method"),
    ({"initial_sparsity": -0.1}, "initial_sparsity"), ({"lr_schedule": "step"}, "lr_schedule"),
    ({"select": "loss"}, "select")])
def test_bad_input_raises_naming_the_argument(task, kwargs, word):
    env = _env(task)
    args = {"allocation": _uniform(env, 0.5), "steps": 10, "end": 4, **kwargs}
    with pytest.raises(ValueError, match=word):
        gradual_prune(env, **args)


def test_bad_source_and_hidden_unit_inputs(task):
    with pytest.raises(ValueError, match="source"):
        gradual_prune(task.model, {}, steps=2)
    hu = _env(task, granularity="hidden_unit")
    with pytest.raises(ValueError, match="allocation"):
        gradual_prune(hu, {"rnn.l0": 1.0}, steps=2)
    with pytest.raises(ValueError, match="bits"):
        gradual_prune(hu, {"rnn.l0": 0.5}, steps=2, bits=8)
    no_training = RNNTask(task.model, eval_batch=task.eval_batch, metric="nll")
    with pytest.raises(ValueError, match="train_loss"):
        gradual_prune(no_training, {}, steps=2)
    assert find_prunable_layers(task.model)  # the model is fine; only the arguments were bad
