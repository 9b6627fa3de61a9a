"""Hidden-unit (structured) pruning: masked == physically smaller, tracing errors, env integration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import VOCAB, TinyLM, kind_for, tiny_task
from torch import nn

from prune_env import PruneRNNEnv
from prune_env.pruning.structured import UnitPlan, shrink
from prune_env.tasks.models import SequenceClassifier


def _masked_and_small(model: nn.Module, counts_fn):
    kind, work = kind_for(model, "hidden_unit")
    plan = kind.plan
    counts = counts_fn(plan)
    kind.apply(counts)
    return plan, kind, work, shrink(work, plan, kind.keep(counts))


@pytest.mark.parametrize("rnn", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
def test_masked_equals_physically_smaller(rnn, bidirectional, layers):
    torch.manual_seed(0)
    model = TinyLM(rnn, hidden=8, layers=layers, bidirectional=bidirectional).eval()
    plan, masker, work, small = _masked_and_small(model, lambda p: [3 + i for i in range(len(p.groups))])
    x = torch.randint(0, VOCAB, (5, 9))
    torch.testing.assert_close(small(x), work(x), atol=1e-5, rtol=1e-5)
    # Physically smaller: every kept parameter of the masked model is a parameter of the small one, no more.
    assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in model.parameters()) \
        - masker.removed_params(masker.counts)
    rnns = [m for m in small.modules() if isinstance(m, nn.RNNBase)]
    assert [m.hidden_size for m in rnns] == [8 - 3 - i for i in range(layers)]
    assert all(type(m) is type(model.rnn) for m in rnns)
    assert small.head.in_features == (8 - 3 - layers + 1) * (2 if bidirectional else 1)


def test_masker_is_incremental_and_resets_exactly():
    torch.manual_seed(1)
    model = TinyLM("lstm", hidden=8, layers=2, bidirectional=True).eval()
    plan, masker, work, _ = _masked_and_small(model, lambda p: [2, 5])
    other, fresh = kind_for(model, "hidden_unit")
    masker.apply([6, 1])
    masker.apply([4, 3])
    other.apply([4, 3])
    for a, b in zip(work.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    masker.reset()
    for a, b in zip(work.parameters(), model.parameters()):
        assert torch.equal(a, b)


def test_pruned_unit_has_all_its_weights_zero():
    torch.manual_seed(2)
    model = TinyLM("gru", hidden=6, layers=2).eval()
    plan, masker, work, _ = _masked_and_small(model, lambda p: [1, 1])
    j = int(torch.nonzero(~masker.keep(masker.counts)[0][0])[0])
    h = 6
    rnn = work.rnn
    for q in range(3):
        assert not rnn.weight_ih_l0[q * h + j].any() and not rnn.weight_hh_l0[q * h + j].any()
        assert rnn.bias_ih_l0[q * h + j] == 0 and rnn.bias_hh_l0[q * h + j] == 0
    assert not rnn.weight_hh_l0[:, j].any() and not rnn.weight_ih_l1[:, j].any()
    k = int(torch.nonzero(~masker.keep(masker.counts)[1][0])[0])
    assert not work.head.weight[:, k].any()


def test_preset_classifier_shape_out_last_step():
    torch.manual_seed(0)
    model = SequenceClassifier(8, 12, 2, 10).eval()
    plan, masker, work, small = _masked_and_small(model, lambda p: [5, 7])
    x = torch.rand(4, 8, 8)
    torch.testing.assert_close(small(x), work(x), atol=1e-5, rtol=1e-5)
    assert [g.name for g in plan.groups] == ["rnn.l0", "rnn.l1"]


class _Chained(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 5)
        self.a = nn.LSTM(5, 7, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(0.1)
        self.b = nn.GRU(14, 6, batch_first=True)
        self.head = nn.Linear(6, VOCAB)

    def forward(self, x):
        y, _ = self.a(self.emb(x))
        y, _ = self.b(torch.tanh(self.drop(y)))
        return self.head(y[:, 1:])


def test_two_recurrent_modules_in_a_chain():
    torch.manual_seed(3)
    model = _Chained().eval()
    plan, masker, work, small = _masked_and_small(model, lambda p: [3, 2])
    x = torch.randint(0, VOCAB, (3, 6))
    torch.testing.assert_close(small(x), work(x), atol=1e-5, rtol=1e-5)
    assert small.b.input_size == 8 and small.b.hidden_size == 4


class _LastState(nn.Module):
    """A classifier on the final hidden state ``h_n[index]`` (the common ``h[-1]`` pattern)."""

    def __init__(self, rnn: str, layers: int, bidirectional: bool, index: int = -1):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 5)
        self.rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[rnn](5, 8, layers, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(8, 3)
        self.index = index

    def forward(self, x):
        _, h = self.rnn(self.emb(x))
        if isinstance(self.rnn, nn.LSTM):
            h = h[0]
        return self.head(torch.relu(h[self.index]))


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
@pytest.mark.parametrize("layers, bidirectional, index", [(1, False, -1), (2, False, -1), (2, True, -1),
                                                          (2, True, -2), (3, False, 0)])
def test_classifier_on_final_hidden_state(rnn, layers, bidirectional, index):
    torch.manual_seed(4)
    model = _LastState(rnn, layers, bidirectional, index).eval()
    plan, masker, work, small = _masked_and_small(model, lambda p: [2 + i for i in range(len(p.groups))])
    x = torch.randint(0, VOCAB, (4, 6))
    torch.testing.assert_close(small(x), work(x), atol=1e-5, rtol=1e-5)
    dirs = 2 if bidirectional else 1
    layer = (index % (layers * dirs)) // dirs
    assert small.head.in_features == 8 - 2 - layer


class _UsesCell(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        _, (h, c) = self.rnn(x)
        return self.head(c[-1])


class _SumsHidden(_UsesCell):
    def forward(self, x):
        _, (h, c) = self.rnn(x)
        return self.head(h.sum(0))


class _Norm(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 5, batch_first=True)
        self.norm = nn.LayerNorm(5)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        return self.head(self.norm(self.rnn(x)[0]))


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        if x.sum() > 0:
            x = -x
        return self.head(self.rnn(x)[0])


class _Sliced(_Norm):
    def forward(self, x):
        return self.head(torch.cat([self.rnn(x)[0][..., :3], x[..., :2]], -1))


@pytest.mark.parametrize("model, words", [(_UsesCell(), "c_n"), (_SumsHidden(), "h_n"), (_Norm(), "LayerNorm"),
                                          (_Branchy(), "torch.fx"), (_Sliced(), "getitem")])
def test_untraceable_or_unsupported_models_name_the_blocker(model, words):
    with pytest.raises(ValueError, match=words):
        UnitPlan(model)


def test_lstm_with_projection_is_rejected():
    class P(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(4, 6, proj_size=3, batch_first=True)
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    with pytest.raises(ValueError, match="proj_size"):
        UnitPlan(P())


@pytest.mark.parametrize("criterion", ["magnitude", "gradient", "saliency"])
def test_env_hidden_unit_pruned_model_scores_what_env_scored(criterion):
    task = tiny_task("lstm", hidden=12, layers=2, bidirectional=True)
    env = PruneRNNEnv(task, granularity="hidden_unit", target_sparsity=0.5, criterion=criterion)
    assert env.layer_names == ["rnn.l0", "rnn.l1"] and env.action_space.shape == (2,)
    env.reset(seed=0)
    _, _, done, _, info = env.step(np.array([0.8, -0.6], dtype=np.float32))
    assert done and info["overall_sparsity"] == pytest.approx(0.5)
    small = env.pruned_model()
    x = task.eval_batch[0]
    torch.testing.assert_close(small(x), env._model(x), atol=1e-5, rtol=1e-5)
    assert task.evaluate(small)["score"] == info["score"]
    assert sum(p.numel() for p in small.parameters()) == info["nonzero_params"]
    assert info["size_bytes"] == 4 * info["nonzero_params"]
    assert 0 < info["weight_sparsity"] < 1
    # The user's model is untouched.
    assert all(p.all() for n, p in task.model.named_parameters() if "weight" in n)


def test_env_hidden_unit_keeps_one_unit_per_layer():
    env = PruneRNNEnv(tiny_task("gru", hidden=4, layers=2), granularity="hidden_unit", max_sparsity=1.0)
    env.reset(seed=0)
    env.step(np.ones(2, dtype=np.float32))
    assert env.allocation == {"rnn.l0": 0.75, "rnn.l1": 0.75}
    assert all(m.hidden_size == 1 for m in env.pruned_model().modules() if isinstance(m, nn.RNNBase))


def test_env_rejects_bad_granularity_and_quantize_combination():
    with pytest.raises(ValueError, match="granularity"):
        PruneRNNEnv(tiny_task(), granularity="channel")
    with pytest.raises(ValueError, match="quantize"):
        PruneRNNEnv(tiny_task(), granularity="hidden_unit", quantize=True)


@pytest.mark.parametrize("target", [None, 0.5])
@pytest.mark.parametrize("kwargs", [{"granularity": "hidden_unit"},
                                    {"granularity": "hidden_unit", "mode": "sequential"},
                                    {"quantize": "kmeans", "mode": "sequential"}])
def test_new_modes_pass_checkers_without_warnings_and_pickle(kwargs, target):
    """Both checkers with warnings as errors (as tests/test_env.py and tests/test_registry.py hold every env)."""
    import pickle
    import warnings

    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    task = tiny_task("gru")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(PruneRNNEnv(task, target_sparsity=target, **kwargs), skip_render_check=True)
        sb3_check_env(PruneRNNEnv(task, target_sparsity=target, **kwargs))
    env = PruneRNNEnv(task, target_sparsity=target, **kwargs)
    env.reset(seed=5)
    clone = pickle.loads(pickle.dumps(env))
    results = []
    for e in (env, clone):
        done = False
        while not done:
            _, reward, done, _, info = e.step(np.full(e.action_space.shape, 0.25, dtype=np.float32))
        results.append((reward, info["size_bytes"], info["layer_sparsity"]))
    assert results[0] == results[1]
