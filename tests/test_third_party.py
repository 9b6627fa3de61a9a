"""Recurrent models written by other libraries, wrapped in ``RNNTask`` as a user would: the real ``sru`` package
(skipped when not installed: ``pip install .[sru]``), ``nn.MultiheadAttention`` models, and faithful small stand-ins
for pytorch-forecasting's ``RecurrentNetwork`` (a Lightning ``_hparams`` attribute dict, a loss module with plain
attributes, dict inputs) and flair's ``SequenceTagger`` (``Dictionary`` vocabularies, a CRF transition matrix).

For each: the coverage report, exact sparsities over the whole model, a one-evaluation agent search and an
export/load round trip that scores the same."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from torch import nn

import agents
from prune_env import PruneRNNEnv, RNNTask, export, load
from prune_env.compression.export import can_export
from prune_env.pruning.coverage import CoverageWarning, matrix_zeros, removed_matrix_weights
from prune_env.task import split_score

VOCAB = 12
GEN = torch.Generator().manual_seed(0)
TOKENS = torch.randint(0, VOCAB, (8, 10), generator=GEN)
pytestmark = [pytest.mark.filterwarnings("ignore:Just-in-time loading and compiling the CUDA kernels of SRU"),
              pytest.mark.filterwarnings("ignore:Running SRU on CPU with grad_enabled")]


def test_search_takes_max_evals():
    params = inspect.signature(agents.search).parameters
    assert "max_evals" in params and "budget" in params  # ``budget`` is the deprecated alias


def _search_and_check(task: RNNTask, target: float = 0.8, strict: bool = True):
    """A LAMP search (one evaluation); the whole model's sparsity as the env reports it and as counted."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoverageWarning)
        env = PruneRNNEnv(task, target_sparsity=target, device="cpu", config={"strict_coverage": strict})
    res = agents.search("lamp", env, max_evals=1, seed=0)
    assert res.evals == 1
    counts = env.counts_for(res.allocation)
    pruned = env.pruned_model(res.allocation)
    zeros, total = matrix_zeros(pruned)
    model_sparsity = env.coverage.model_sparsity(removed_matrix_weights(env.kind, counts))
    assert total == env.coverage.weight_numel
    assert model_sparsity == pytest.approx(zeros / total, abs=1e-12)
    assert counts.sum() / env.numels.sum() == pytest.approx(target, abs=1e-3)
    return env, res, pruned, model_sparsity


# ----------------------------------------------------------------------------------------------------- sru
class SRULM(nn.Module):
    def __init__(self):
        super().__init__()
        import sru

        self.emb = nn.Embedding(VOCAB, 6)
        self.sru = sru.SRU(6, 16, num_layers=2)
        self.head = nn.Linear(16, VOCAB)

    def forward(self, x):
        h, _ = self.sru(self.emb(x).transpose(0, 1))
        return self.head(h.transpose(0, 1))


def _sru_task():
    pytest.importorskip("sru")
    torch.manual_seed(0)
    return RNNTask(SRULM().eval(), eval_batch=(TOKENS, (TOKENS + 1) % VOCAB), metric="accuracy", name="sru")


def test_sru_weights_are_pruned_to_the_whole_model_target(tmp_path):
    task = _sru_task()
    env, res, pruned, model_sparsity = _search_and_check(task)
    assert env.coverage.dense == ()
    layers = {layer.name: layer for layer in env.layers}
    assert {"sru.rnn_lst.0.weight", "sru.rnn_lst.1.weight"} <= set(layers)
    assert layers["sru.rnn_lst.0.weight"].role == "input" and layers["sru.rnn_lst.0.weight"].shape == (6, 64)
    assert "sru.rnn_lst.0.weight_c" not in layers  # a vector
    assert model_sparsity == pytest.approx(0.8, abs=0.01)
    assert float((pruned.sru.rnn_lst[1].weight == 0).float().mean()) > 0.5
    export(pruned, tmp_path / "sru.prnn", weights_only=True)
    loaded = load(tmp_path / "sru.prnn", model=SRULM())
    assert task.evaluate(loaded) == task.evaluate(pruned)
    torch.testing.assert_close(loaded(TOKENS), pruned(TOKENS))


def test_sru_refuses_the_data_aware_operators_clearly():
    task = _sru_task()
    task.calibration_batches = (TOKENS,)
    with pytest.raises(ValueError, match="SRU stores its weights transposed"):
        PruneRNNEnv(task, target_sparsity=0.5, device="cpu", criterion="wanda")


# ----------------------------------------------------------------------------------------------- attention
class AttentionClassifier(nn.Module):
    """BiLSTM -> multi-head self-attention (packed ``in_proj_weight``) -> mean over time -> head; or, ``separate``,
    attention from one learned query over the LSTM's states (``kdim`` differs: separate q/k/v weights)."""

    def __init__(self, separate: bool = False):
        super().__init__()
        self.separate = separate
        self.emb = nn.Embedding(VOCAB, 6)
        self.lstm = nn.LSTM(6, 8, batch_first=True, bidirectional=True)
        width = 8 if separate else 16
        self.query = nn.Parameter(torch.randn(1, 1, width)) if separate else None
        self.attn = nn.MultiheadAttention(width, 2, batch_first=True, kdim=16, vdim=16)
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        h, _ = self.lstm(self.emb(x))
        q = self.query.expand(x.shape[0], 1, -1) if self.separate else h
        a, _ = self.attn(q, h, h, need_weights=False)
        return self.head(a.mean(1))


@pytest.mark.parametrize("separate", [False, True], ids=["in_proj", "q-k-v"])
def test_attention_is_pruned_whole_and_round_trips(tmp_path, separate):
    torch.manual_seed(0)
    model = AttentionClassifier(separate).eval()
    labels = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(1))
    task = RNNTask(model, eval_batch=(TOKENS, labels), metric="accuracy", name="attn")
    env, res, pruned, model_sparsity = _search_and_check(task)
    names = ["attn.q_proj_weight", "attn.k_proj_weight", "attn.v_proj_weight"] if separate else [
        "attn.in_proj_weight"]
    assert [d.name for d in env.coverage.dense] == (["query"] if separate else [])  # a (1, 1, 8) learned query
    assert model_sparsity == pytest.approx(0.8 * env.coverage.pruned_numel / env.coverage.weight_numel, abs=1e-3)
    assert [n for n in env.layer_names if n.startswith("attn")] == [*names, "attn.out_proj.weight"]
    assert all(res.allocation[n] > 0.5 for n in names)
    export(pruned, tmp_path / "full.prnn")
    loaded = load(tmp_path / "full.prnn", classes=[AttentionClassifier])
    assert task.evaluate(loaded) == task.evaluate(pruned)
    torch.testing.assert_close(loaded(TOKENS), pruned(TOKENS))
    export(pruned, tmp_path / "w.prnn", weights_only=True)
    torch.testing.assert_close(load(tmp_path / "w.prnn", model=AttentionClassifier(separate))(TOKENS), pruned(TOKENS))


# ----------------------------------------------------------------------------------- library-model stand-ins
class AttributeDict(dict):
    """Lightning's ``AttributeDict``: the ``_hparams`` of every LightningModule."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as e:
            raise AttributeError(key) from e


class GroupNormalizer:
    """A pytorch-forecasting target normalizer (an sklearn-style estimator, not a module), kept in the hparams."""

    def __init__(self, groups=(), transformation="softplus"):
        self.groups = list(groups)
        self.transformation = transformation
        self.norm_ = {"series": (0.0, 1.0)}


class QuantileLoss(nn.Module):
    """A pytorch-forecasting metric: a module with plain attributes and no parameters."""

    def __init__(self, quantiles=(0.1, 0.5, 0.9)):
        super().__init__()
        self.quantiles = list(quantiles)
        self.name = "QuantileLoss"


class RecurrentNetwork(nn.Module):
    """pytorch-forecasting's ``RecurrentNetwork``, small: categorical embeddings and continuous inputs into a
    stacked LSTM, a linear output projector; dict inputs and outputs, hyper-parameters in ``_hparams``."""

    def __init__(self):
        super().__init__()
        self._hparams = AttributeDict(cell_type="LSTM", hidden_size=8, rnn_layers=2, dropout=0.0,
                                      static_categoricals=[], time_varying_reals_encoder=["x0", "x1", "x2"],
                                      embedding_sizes={"weekday": (7, 3)}, target="y",
                                      output_transformer=GroupNormalizer(["series"]))
        self.embeddings = nn.ModuleDict({"weekday": nn.Embedding(7, 3)})
        self.rnn = nn.LSTM(3 + 3, 8, num_layers=2, batch_first=True)
        self.output_projector = nn.Linear(8, 3)
        self.loss = QuantileLoss()

    @property
    def hparams(self):
        return self._hparams

    def forward(self, x: dict) -> dict:
        emb = self.embeddings["weekday"](x["encoder_cat"][..., 0])
        out, _ = self.rnn(torch.cat([x["encoder_cont"], emb], -1))
        return {"prediction": self.output_projector(out)}


FORECAST_X = {"encoder_cont": torch.randn(6, 9, 3, generator=GEN), "encoder_cat": torch.randint(0, 7, (6, 9, 1),
                                                                                                   generator=GEN)}
FORECAST_Y = torch.randn(6, 9, generator=GEN)


@torch.no_grad()
def _neg_mae(model):
    return -float((model(FORECAST_X)["prediction"][..., 1] - FORECAST_Y).abs().mean())


class Dictionary:
    """flair's ``Dictionary``: items as bytes, an index, an unknown-item flag."""

    def __init__(self, items, add_unk=True):
        self.item2idx = {}
        self.idx2item = []
        self.add_unk = add_unk
        for item in (["<unk>"] if add_unk else []) + list(items):
            self.item2idx[item.encode()] = len(self.idx2item)
            self.idx2item.append(item.encode())


class CRF(nn.Module):
    """flair's CRF layer: a ``(tags, tags)`` transition matrix (no nn.Linear; no adapter prunes it)."""

    def __init__(self, tag_dictionary: Dictionary):
        super().__init__()
        self.tag_dictionary = tag_dictionary
        n = len(tag_dictionary.idx2item)
        self.transitions = nn.Parameter(torch.randn(n, n))

    def forward(self, features):
        return features.unsqueeze(-1) + self.transitions.unsqueeze(0).unsqueeze(0)


class SequenceTagger(nn.Module):
    """flair's ``SequenceTagger``, small: word embeddings with their vocabulary, a BiLSTM, a linear layer, a CRF."""

    def __init__(self):
        super().__init__()
        self.tag_dictionary = Dictionary(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC",
                                          "I-MISC", "<START>"], add_unk=False)
        self.vocab = Dictionary([f"w{i}" for i in range(VOCAB - 1)])
        self.tag_type = "ner"
        self.embeddings = nn.Embedding(VOCAB, 8)
        self.rnn = nn.LSTM(8, 16, batch_first=True, bidirectional=True)
        self.linear = nn.Linear(32, 10)
        self.crf = CRF(self.tag_dictionary)

    def forward(self, tokens):
        features = self.linear(self.rnn(self.embeddings(tokens))[0])
        return self.crf(features).amax(-1)  # each tag's best score over the previous tag


def _flair_task():
    torch.manual_seed(0)
    tags = torch.randint(0, 10, TOKENS.shape, generator=torch.Generator().manual_seed(2))
    return RNNTask(SequenceTagger().eval(), eval_batch=(TOKENS, tags), metric="accuracy", name="tagger")


def test_forecasting_stand_in_is_covered_and_round_trips_weights_only(tmp_path):
    torch.manual_seed(0)
    task = RNNTask(RecurrentNetwork().eval(), evaluate=_neg_mae, name="forecast")
    env, res, pruned, model_sparsity = _search_and_check(task)
    assert env.coverage.dense == () and model_sparsity == pytest.approx(0.8, abs=1e-3)
    assert env.layer_names[0] == "embeddings.weekday.weight" and "output_projector.weight" in env.layer_names
    ok, why = can_export(pruned)
    assert not ok and "weights_only=True" in why
    export(pruned, tmp_path / "f.prnn", weights_only=True)
    loaded = load(tmp_path / "f.prnn", model=RecurrentNetwork())
    assert _neg_mae(loaded) == _neg_mae(pruned) == res.val_score
    assert loaded.hparams.hidden_size == 8  # the attribute dict the user's own model keeps


def test_flair_stand_in_lists_the_crf_transitions_and_round_trips_weights_only(tmp_path):
    task = _flair_task()
    env, res, pruned, model_sparsity = _search_and_check(task)
    (crf,) = env.coverage.dense
    assert (crf.name, crf.module_type, crf.shape) == ("crf.transitions", "CRF", (10, 10))
    total = sum(p.numel() for p in task.model.parameters())
    assert crf.share == pytest.approx(100 / total) and env.coverage.dense_share < 0.05
    assert model_sparsity == pytest.approx(0.8 * env.coverage.pruned_numel / env.coverage.weight_numel, abs=1e-3)
    assert model_sparsity < 0.8
    assert not can_export(pruned)[0]
    export(pruned, tmp_path / "t.prnn", weights_only=True)
    loaded = load(tmp_path / "t.prnn", model=SequenceTagger())
    assert split_score(task.evaluate(loaded))[0] == split_score(task.evaluate(pruned))[0] == res.val_score
    torch.testing.assert_close(loaded(TOKENS), pruned(TOKENS))


def test_compress_ends_with_a_loadable_file_for_the_library_stand_ins(tmp_path, capsys):
    import agents.cli.compress as C

    torch.manual_seed(0)
    task = RNNTask(RecurrentNetwork().eval(), evaluate=_neg_mae, name="forecast")
    report = C.compress(task, 0.8, tmp_path / "forecast", agent="lamp", steps=0)
    assert "weights-only" in capsys.readouterr().err and "model=" in report["load"]
    loaded = load(tmp_path / "forecast" / "model.prnn", model=RecurrentNetwork())
    assert _neg_mae(loaded) == pytest.approx(report["rows"]["final"]["val_score"], abs=1e-9)
    assert report["rows"]["final"]["model_sparsity"] == pytest.approx(0.8, abs=2e-3)
    task = _flair_task()
    report = C.compress(task, 0.8, tmp_path / "tagger", agent="erk", steps=0)
    loaded = load(tmp_path / "tagger" / "model.prnn", model=SequenceTagger())
    assert split_score(task.evaluate(loaded))[0] == pytest.approx(report["rows"]["final"]["val_score"], abs=1e-9)
