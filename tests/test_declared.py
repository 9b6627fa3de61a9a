"""Hidden-unit pruning past what torch.fx can follow: pooling over time (traced), and the declared path for attention
consumers and forwards with control flow."""

from __future__ import annotations

import pytest
import torch
from tiny import VOCAB
from torch import nn

from prune_env import PruneRNNEnv, RNNTask
from prune_env.pruning.coverage import matrix_zeros
from prune_env.pruning.structured.declared import DeclaredPlan

X = torch.randint(0, VOCAB, (8, 7), generator=torch.Generator().manual_seed(0))
Y = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(1))


def _env(model, target=0.5, **task_kwargs):
    task = RNNTask(model.eval(), eval_batch=(X, Y), metric="accuracy", **task_kwargs)
    return PruneRNNEnv(task, target_sparsity=target, granularity="hidden_unit", device="cpu")


def _episode(env, seed=0):
    env.reset(seed=seed)
    return env.step(env.action_space.sample())[4]


class Pooled(nn.Module):
    """A bidirectional LSTM classifier pooling over time."""

    def __init__(self, pool: str):
        super().__init__()
        self.pool = pool
        self.emb = nn.Embedding(VOCAB, 6)
        self.lstm = nn.LSTM(6, 8, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        out, _ = self.lstm(self.emb(x))
        if self.pool == "mean":
            p = out.mean(1)
        elif self.pool == "sum":
            p = torch.sum(out, dim=1)
        elif self.pool == "max":
            p = out.max(1)[0]
        elif self.pool == "max-values":
            p = torch.max(out, 1).values
        else:
            p = out.amax(dim=(1,), keepdim=True)[:, 0]
        return self.head(p)


class PooledHidden(Pooled):
    """Pools the hidden dimension away: nothing left to follow."""

    def __init__(self):
        super().__init__("hidden")
        self.head = nn.Linear(7, 3)

    def forward(self, x):
        return self.head(self.lstm(self.emb(x))[0].mean(-1))


@pytest.mark.parametrize("pool", ["mean", "sum", "max", "max-values", "amax-keepdim"])
def test_pooling_over_time_is_traced_and_shrinks_exactly(pool):
    torch.manual_seed(0)
    env = _env(Pooled(pool))
    assert env.layer_names == ["lstm.l0", "lstm.l1"]
    info = _episode(env)
    small = env.pruned_model()
    assert small.lstm.l1.hidden_size < 8 and small.head.in_features < 16
    torch.testing.assert_close(small(X), env._model(X))
    zeros, kept = matrix_zeros(small)
    assert info["model_sparsity"] == pytest.approx((env.coverage.weight_numel - kept + zeros)
                                                   / env.coverage.weight_numel, abs=1e-12)


def test_pooling_the_hidden_dimension_is_refused_pointing_to_the_declared_path():
    with pytest.raises(ValueError, match=r"call_method `mean`.*unit_consumers"):
        _env(PooledHidden())


class Attention(nn.Module):
    """LSTM -> multi-head self-attention -> mean pooling -> head."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 6)
        self.lstm = nn.LSTM(6, 8, bidirectional=True, batch_first=True)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h, _ = self.lstm(self.emb(x))
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.head(a.mean(1))


def _rows_only(model, env, small):
    """The dense model with only the removed units' recurrent rows zeroed (no consumer column touched)."""
    ref = type(model)()
    ref.load_state_dict(model.state_dict())
    named = dict(small.named_parameters())
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.startswith("lstm") or name.startswith("rnns"):
                p.copy_(named[name])
    return ref.eval()


def test_lstm_attention_head_by_declaration():
    torch.manual_seed(0)
    model = Attention()
    with pytest.raises(ValueError, match=r"module `attn` \(MultiheadAttention\).*unit_consumers"):
        _env(model)
    env = _env(model, unit_consumers={"lstm": ["attn"]})
    assert isinstance(env.analysis.plan, DeclaredPlan) and env.layer_names == ["lstm.l0"]
    info = _episode(env)
    small = env.pruned_model()
    assert type(small) is Attention and small.lstm.hidden_size == 8  # the masked model: same classes and shapes
    keep = env.kind.keep(env.kind.counts)[0]
    removed = torch.cat([~keep[0], ~keep[1]])
    assert removed.any() and not removed.all()
    assert torch.all(small.attn.in_proj_weight[:, removed] == 0)
    assert torch.all(small.lstm(small.emb(X))[0][..., removed] == 0)  # a removed unit's output stays 0
    torch.testing.assert_close(small(X), _rows_only(model, env, small)(X))
    zeros, total = matrix_zeros(small)
    assert info["model_sparsity"] == pytest.approx(zeros / total, abs=1e-12)
    assert info["weight_sparsity"] > info["model_sparsity"] > 0


class Stacked(nn.Module):
    """Two LSTMs in a ModuleList, a forward with data-dependent control flow."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 6)
        self.rnns = nn.ModuleList([nn.LSTM(6, 8, batch_first=True), nn.LSTM(8, 8, batch_first=True)])
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.emb(x)
        for rnn in self.rnns:
            h, _ = rnn(h)
            if bool(h.abs().max() > 100):  # data-dependent: torch.fx cannot trace it
                h = h / h.abs().max()
        return self.head(h[:, -1])


def test_stacked_model_with_control_flow_by_declaration():
    torch.manual_seed(0)
    model = Stacked()
    with pytest.raises(ValueError, match=r"torch\.fx cannot trace.*unit_consumers"):
        _env(model)
    env = _env(model, unit_consumers={"rnns.0": ["rnns.1"], "rnns.1": ["head"]})
    assert env.layer_names == ["rnns.0.l0", "rnns.1.l0"]
    info = _episode(env)
    small = env.pruned_model()
    keep = env.kind.keep(env.kind.counts)
    assert torch.all(small.rnns[1].weight_ih_l0[:, ~keep[0][0]] == 0)
    assert torch.all(small.head.weight[:, ~keep[1][0]] == 0)
    torch.testing.assert_close(small(X), _rows_only(model, env, small)(X))
    zeros, total = matrix_zeros(small)
    assert info["model_sparsity"] == pytest.approx(zeros / total, abs=1e-12)


class CrossAttention(nn.Module):
    """The LSTM feeds only the keys and values of an attention whose queries are learned."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 6)
        self.lstm = nn.LSTM(6, 5, batch_first=True)
        self.query = nn.Parameter(torch.randn(1, 1, 4))
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True, kdim=5, vdim=5)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h, _ = self.lstm(self.emb(x))
        a, _ = self.attn(self.query.expand(x.shape[0], 1, 4), h, h, need_weights=False)
        return self.head(a[:, 0])


def test_parameters_named_in_full_and_bad_declarations():
    torch.manual_seed(0)
    model = CrossAttention()
    env = _env(model, unit_consumers={"lstm": ["attn.k_proj_weight", "attn.v_proj_weight"]})
    _episode(env)
    small = env.pruned_model()
    removed = ~env.kind.keep(env.kind.counts)[0][0]
    assert torch.all(small.attn.k_proj_weight[:, removed] == 0) and torch.all(small.attn.v_proj_weight[:, removed] == 0)
    assert torch.equal(small.attn.q_proj_weight, model.attn.q_proj_weight)  # the queries do not read the LSTM
    torch.testing.assert_close(small(X), _rows_only(model, env, small)(X))
    with pytest.raises(ValueError, match=r"attn\.q_proj_weight reads 4 features, but `lstm` gives 5"):
        _env(CrossAttention(), unit_consumers={"lstm": ["attn"]})  # the queries are not the LSTM's
    with pytest.raises(ValueError, match="not an nn.LSTM"):
        _env(CrossAttention(), unit_consumers={"head": ["attn"]})
    with pytest.raises(ValueError, match="neither a module nor a parameter"):
        _env(CrossAttention(), unit_consumers={"lstm": ["nowhere"]})
    with pytest.raises(TypeError, match="unit_consumers"):
        RNNTask(CrossAttention(), eval_batch=(X, Y), metric="accuracy", unit_consumers=["lstm"])
