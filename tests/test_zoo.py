"""The model zoo: its size, variety and splits, its names, and tiny-override builds of every task kind (seconds).

Full-size dense scores ("well above chance") are checked by ``python -m prune_env.tasks.zoo build`` (see
benchmarks/results/zoo_build/), not here.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from prune_env import PruneRNNEnv, RNNTask
from prune_env.envs.vector import PruneRNNVectorEnv
from prune_env.tasks import PRESETS, TaskError, resolve_task
from prune_env.tasks import zoo as Z
from prune_env.tasks.models import ZooLM, ZooSequenceNet

# The shared read-only PTB copy next to the checkout, used only when $PRUNE_RNN_PTB is not set.
_PTB_HERE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"
PTB = os.environ.get(Z.PTB_ENV) or (str(_PTB_HERE) if _PTB_HERE.is_dir() else None)

#: The v1 names, frozen: renaming or dropping a model must come with a new ZOO_VERSION.
V1_NAMES = [
    "zoo-v1/gru-char-email-2x128", "zoo-v1/lstm-char-json-1x128", "zoo-v1/rnn-char-http-2x128",
    "zoo-v1/lstm-char-asyncio-1x256", "zoo-v1/gru-char-unittest-1x64-onehot", "zoo-v1/rnn-char-xml-1x256-onehot",
    "zoo-v1/lstm-char-logging-3x96-mlp", "zoo-v1/gru-char-pydoc-1x192", "zoo-v1/rnn-char-pydoc-2x64",
    "zoo-v1/lstm-word-ptb-1x128", "zoo-v1/lstm-digits-1x32", "zoo-v1/gru-digits-2x64-bi-mean",
    "zoo-v1/rnn-digits-1x512", "zoo-v1/gru-digits-1x512-mlp", "zoo-v1/lstm-parity-1x64-emb-step",
    "zoo-v1/gru-parity-2x32-step", "zoo-v1/rnn-parity-1x128-step", "zoo-v1/lstm-adding-2x64",
    "zoo-v1/gru-adding-1x128-bi-mlp", "zoo-v1/rnn-adding-1x96-emb", "zoo-v1/lstm-counting-1x48-emb-mean",
    "zoo-v1/gru-counting-3x64-emb", "zoo-v1/rnn-counting-2x128-bi-emb-mean", "zoo-v1/lstm-sines-2x64",
    "zoo-v1/gru-sines-1x256-mlp", "zoo-v1/rnn-sines-3x32", "zoo-v1/lstm-sines-1x128-bi-mean",
    "zoo-v1/gru-char-multiprocessing-1x160", "zoo-v1/lstm-digits-1x96-bi-mean", "zoo-v1/rnn-char-importlib-3x128",
    "zoo-v1/lstm-word-ptb-2x96", "zoo-v1/gru-counting-2x48-mlp", "zoo-v1/gru-sines-2x96",
    "zoo-v1/lstm-parity-2x64-emb-step",
]

#: Tiny overrides per kind: a model builds in about a second.
TINY_LM = {"hidden": 16, "layers": 1, "steps": 8, "batch": 8, "seq_len": 16, "eval_tokens": 256,
           "test_tokens": 512, "loss_tokens": 256}
TINY_SEQ = {"hidden": 8, "layers": 1, "steps": 8, "batch": 16, "loss_samples": 32}
TINY_SYNTH = {**TINY_SEQ, "n_train": 128, "n_val": 64, "n_test": 64}


def tiny(name: str) -> dict:
    spec = Z.ZOO[name]
    if spec.kind == "char-lm":
        over = {**TINY_LM, "max_tokens": 20_000}
    elif spec.kind == "word-lm":
        over = {**TINY_LM, "max_tokens": 5000, "max_vocab": 300, "path": PTB}
    else:
        over = dict(TINY_SYNTH if spec.data != "digits-rows" else TINY_SEQ)
    if "emb" in Z.defaults(spec):
        over["emb"] = 4
    if "mlp_hidden" in Z.defaults(spec):
        over["mlp_hidden"] = 4
    return over


def first_of(**fields) -> str:
    """The first zoo name whose spec matches ``fields``."""
    return next(n for n, s in Z.ZOO.items() if all(getattr(s, k) == v for k, v in fields.items()))


# --- the catalogue -----------------------------------------------------------------------------------------------

def test_split_sizes():
    assert len(Z.zoo_names("train")) >= 24 and len(Z.zoo_names("validation")) >= 6
    assert Z.zoo_names() == Z.zoo_names("train") + Z.zoo_names("validation") == list(Z.ZOO)
    # Even without PTB both splits keep their minimum size.
    non_ptb = [n for n in Z.ZOO if Z.ZOO[n].data != "ptb"]
    assert sum(Z.ZOO[n].split == "train" for n in non_ptb) >= 24
    assert sum(Z.ZOO[n].split == "validation" for n in non_ptb) >= 6
    assert Z.zoo_names("test") == []  # zoo-v1 has no test split
    with pytest.raises(ValueError, match="split"):
        Z.zoo_names("holdout")
    with pytest.raises(ValueError, match="version"):
        Z.zoo_names(version="v9")


def test_names_stable_and_versioned():
    assert Z.ZOO_VERSION == "v1" and list(Z.ZOO) == V1_NAMES
    pattern = re.compile(r"^zoo-v1/(lstm|gru|rnn)-[a-z0-9-]+-[1-3]x\d+(-[a-z]+)*$")
    for name, spec in Z.ZOO.items():
        assert pattern.match(name), name
        assert Z.spec_name(spec) == name
        assert f"{spec.cell}-" in name and f"-{spec.layers}x{spec.hidden}" in name
    assert not set(Z.ZOO) & set(PRESETS), "zoo names are not presets"


def test_specs_frozen_and_consistent():
    spec = Z.ZOO["zoo-v1/gru-char-email-2x128"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.hidden = 8
    assert hash(spec) == hash(copy.deepcopy(spec))
    for name, s in Z.ZOO.items():
        assert s.split in Z.SPLITS and s.kind in Z.KINDS and s.cell in Z.CELLS, name
        assert s.head in (Z.LM_HEADS if s.kind.endswith("-lm") else Z.SEQ_HEADS), name
        assert not (s.kind.endswith("-lm") and s.bidirectional), f"{name}: a bidirectional LM would see the future"
        assert s.steps > 0 and s.lr > 0 and s.batch > 0 and s.seq_len > 0, name
        assert (s.mlp_hidden > 0) == (s.head == "mlp"), name


def test_variety():
    specs = list(Z.ZOO.values())
    assert {s.cell for s in specs} == {"lstm", "gru", "rnn"}
    assert {s.layers for s in specs} == {1, 2, 3}
    assert min(s.hidden for s in specs) == 32 and max(s.hidden for s in specs) == 512
    assert {s.bidirectional for s in specs} == {True, False}
    assert {s.emb > 0 for s in specs} == {True, False}
    assert {s.kind for s in specs} == set(Z.KINDS)
    assert {s.head for s in specs} >= {"lm", "lm-mlp", "last", "mean", "mlp", "step"}
    data = {s.data for s in specs}
    assert {"pydoc", "ptb", "digits-rows", "parity", "adding", "counting", "sines"} <= data
    assert len({d for d in data if d.startswith("stdlib:")}) >= 6
    # every cell type in each split's character LMs and classifiers, so no family is train-only
    for split in ("train", "validation"):
        assert {s.kind for s in specs if s.split == split} == set(Z.KINDS), split
    for kind in Z.KINDS:
        assert len({s.cell for s in specs if s.kind == kind and s.split == "train"}) >= (1 if kind == "word-lm"
                                                                                           else 3), kind


def test_splits_share_no_data_architecture_pair():
    train = {s.pair for s in Z.ZOO.values() if s.split == "train"}
    validation = {s.pair for s in Z.ZOO.values() if s.split == "validation"}
    assert not train & validation


def test_unseen_models_not_in_train():
    from prune_env.tasks.pydoc_char import DEFAULTS

    # the pydoc-char preset: a 2x256 LSTM char LM (embedding, per-step Linear head) on the help text
    pydoc_char = ("pydoc", ("lstm", DEFAULTS["layers"], DEFAULTS["hidden"], False, True, "lm"))
    # the custom-gru preset: a bidirectional 1x64 GRU over digits, mean over time; the zoo reads digits by rows,
    # the custom GRU by columns, and no train model has its architecture on any digits reading
    gru_arch = ("gru", 1, 64, True)
    for name in Z.zoo_names("train"):
        s = Z.ZOO[name]
        assert s.pair != pydoc_char, name
        assert not (s.data.startswith("digits") and s.architecture[:4] == gru_arch), name
        assert s.data != "digits-cols", name


def test_zoo_names_available_only(monkeypatch):
    monkeypatch.delenv(Z.PTB_ENV, raising=False)
    names = Z.zoo_names(available_only=True)
    assert names and all(Z.ZOO[n].data != "ptb" for n in names)
    assert set(Z.zoo_names()) - set(names) == {n for n, s in Z.ZOO.items() if s.data == "ptb"}
    with pytest.raises(Z.ZooDataUnavailable, match=Z.PTB_ENV):
        Z.make_zoo_task("zoo-v1/lstm-word-ptb-1x128", progress=False)
    monkeypatch.setenv(Z.PTB_ENV, "/nonexistent/ptb")
    assert "zoo-v1/lstm-word-ptb-1x128" not in Z.zoo_names(available_only=True)
    with pytest.raises(Z.ZooDataUnavailable, match="lacks train.txt"):
        Z.make_zoo_task("zoo-v1/lstm-word-ptb-1x128", progress=False)


# --- building ----------------------------------------------------------------------------------------------------

KIND_EXAMPLES = [
    "zoo-v1/gru-char-email-2x128",          # char LM, embedding
    "zoo-v1/gru-char-unittest-1x64-onehot",  # char LM, one-hot input
    "zoo-v1/lstm-char-logging-3x96-mlp",    # char LM, MLP head per step
    "zoo-v1/lstm-word-ptb-1x128",           # word LM
    "zoo-v1/gru-digits-2x64-bi-mean",       # digits rows, bidirectional, mean over time
    "zoo-v1/lstm-parity-1x64-emb-step",     # parity, a label per step
    "zoo-v1/gru-adding-1x128-bi-mlp",       # adding, MLP head
    "zoo-v1/rnn-counting-2x128-bi-emb-mean",  # counting, tokens
    "zoo-v1/gru-sines-1x256-mlp",           # regression
]


def _check_structured(task: RNNTask, name: str) -> None:
    md = task.metadata
    assert isinstance(task, RNNTask) and task.structured and task.name == name
    assert not task.model.training
    val = task.evaluate(task.model)
    assert val["score"] == pytest.approx(md["dense_val"], abs=1e-6)
    test = task.test(task.model)
    assert test["score"] == pytest.approx(md["dense_test"], abs=1e-6)
    loss = task.loss(task.model)
    assert loss.ndim == 0 and loss.requires_grad and torch.isfinite(loss)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(task.train_loss(task.model, g1), task.train_loss(task.model, g2))
    for key in ("spec", "config", "seed", "split", "kind", "dense_val", "dense_test", "train_time_s", "chance_val",
                "chance_test", "chance_test_loss", "dense_test_loss", "skill", "params", "zoo_version"):
        assert key in md, key
    # zoo-v1 metadata records exactly the fields zoo-v1 specs were written with
    assert md["spec"] == {k: v for k, v in dataclasses.asdict(Z.ZOO[name]).items() if k in Z.V1_FIELDS}
    assert md["zoo_version"] == "v1"
    assert md["params"] == sum(p.numel() for p in task.model.parameters())
    clone = pickle.loads(pickle.dumps(task))
    assert clone.evaluate(clone.model)["score"] == val["score"]


@pytest.mark.parametrize("name", KIND_EXAMPLES)
def test_tiny_build_structured_and_env_step(name):
    if Z.ZOO[name].data == "ptb" and PTB is None:
        pytest.skip(f"PTB not found (set {Z.PTB_ENV})")
    task = Z.make_zoo_task(name, progress=False, **tiny(name))
    _check_structured(task, name)
    spec = Z.ZOO[name]
    assert isinstance(task.model, ZooLM if spec.kind.endswith("-lm") else ZooSequenceNet)
    assert (task.model.embed is not None) == (spec.emb > 0)
    assert task.model.rnn.bidirectional == spec.bidirectional
    assert type(task.model.rnn).__name__.lower() == spec.cell
    # one joint step of the env on it, and the batched (vmap) scorer agrees with the env
    env = PruneRNNEnv(task, target_sparsity=0.5, device="cpu")
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(env.action_space.sample())
    assert terminated and np.isfinite(reward) and info["overall_sparsity"] == pytest.approx(0.5, abs=1e-3)
    venv = PruneRNNVectorEnv(task, num_envs=2, batched=True, target_sparsity=0.5, device="cpu")
    assert venv.eval_path == "batched"
    venv.close()


def test_every_kind_has_a_tiny_example():
    kinds = {Z.ZOO[n].kind for n in KIND_EXAMPLES}
    assert kinds == set(Z.KINDS)
    assert {Z.ZOO[n].data for n in KIND_EXAMPLES if Z.ZOO[n].kind == "classify"} == {
        "digits-rows", "parity", "adding", "counting"}


def test_resolve_task_and_env_take_zoo_names():
    name = "zoo-v1/rnn-sines-3x32"
    task = resolve_task(name, progress=False, **TINY_SYNTH)
    assert task.name == name and callable(task.metric) and task.metadata["kind"] == "regress"
    env = PruneRNNEnv(name, target_sparsity=0.3, device="cpu", task_kwargs={"progress": False, **TINY_SYNTH})
    env.reset(seed=0)
    *_, info = env.step(env.action_space.sample())
    assert info["score"] <= 0 and "mse" in info
    with pytest.raises(TaskError, match="unknown zoo model"):
        resolve_task("zoo-v1/gru-char-emial-2x128")
    with pytest.raises(TaskError, match="did you mean"):
        resolve_task("zoo-v1/gru-char-emial-2x128")
    with pytest.raises(TaskError):
        resolve_task("zoo-v9/anything")


def test_determinism_same_seed_same_weights(tmp_path, monkeypatch):
    name = "zoo-v1/gru-counting-3x64-emb"
    over = {**tiny(name), "layers": 2}
    a = Z.make_zoo_task(name, seed=3, progress=False, **over)
    monkeypatch.setenv("PRUNE_RNN_CACHE", str(tmp_path / "other"))  # a fresh cache: trained again
    b = Z.make_zoo_task(name, seed=3, progress=False, **over)
    assert not b.metadata["from_cache"]
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(a.eval_batch[0], b.eval_batch[0]) and torch.equal(a.eval_batch[1], b.eval_batch[1])
    c = Z.make_zoo_task(name, seed=4, progress=False, **over)
    assert not torch.equal(c.model.state_dict()["rnn.weight_hh_l0"], sa["rnn.weight_hh_l0"])
    # the data do not depend on the model seed
    assert torch.equal(c.eval_batch[0], a.eval_batch[0])
    # the cache gives back the same model
    d = Z.make_zoo_task(name, seed=3, progress=False, **over)
    assert d.metadata["from_cache"] and torch.equal(d.model.state_dict()["head.weight"], sa["head.weight"])


def test_training_learns_something():
    # A real (if short) training run: the score must leave chance, so a broken trainer or data pipeline fails.
    name = "zoo-v1/lstm-digits-1x32"
    task = Z.make_zoo_task(name, progress=False, steps=150, hidden=16)
    assert task.metadata["dense_test"] > task.metadata["chance_test"] + 0.3
    assert task.metadata["skill"] > 0.3


def test_synthetic_data_are_what_they_say():
    gen = torch.Generator().manual_seed(0)
    x, y, c = Z.synthetic("parity", 64, 12, gen, tokens=True)
    assert c == 2 and torch.equal(y, x.cumsum(1) % 2)
    x, y, c = Z.synthetic("adding", 64, 10, gen, tokens=False)
    assert c == 19 and x.shape == (64, 10, 2) and torch.all(x[..., 1].sum(1) == 2)
    digits = (x[..., 0] * 9).round().long()
    assert torch.equal((digits * x[..., 1].long()).sum(1), y)
    x, y, c = Z.synthetic("counting", 64, 20, gen, tokens=True)
    assert c == 10 and torch.equal((x == 0).sum(1).clamp(max=9), y)
    x, y, c = Z.synthetic("sines", 64, 32, gen, tokens=False)
    assert c == 1 and x.shape == (64, 32, 1) and y.shape == (64,)
    a = Z.synthetic("sines", 8, 16, Z.data_generator("sines", "train"), tokens=False)[0]
    b = Z.synthetic("sines", 8, 16, Z.data_generator("sines", "train"), tokens=False)[0]
    assert torch.equal(a, b)


def test_stdlib_text_sorted_and_deterministic():
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"]) / "json"
    text = Z.stdlib_text("json")
    assert text == Z.stdlib_text("json")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py"))
    assert files[0] == "__init__.py" and text.startswith((root / "__init__.py").read_text())
    assert len(text) == sum(len((root / f).read_text()) for f in files)
    with pytest.raises(Z.ZooDataUnavailable):
        Z.stdlib_text("no_such_package_here")


def test_bad_overrides():
    name = "zoo-v1/lstm-digits-1x32"
    with pytest.raises(ValueError, match="unknown config key"):
        Z.make_zoo_task(name, emb=8)  # no embedding on a float-feature model
    with pytest.raises(ValueError, match="unknown config key"):
        Z.make_zoo_task(name, cell="gru")  # the identity of a model is not overridable
    with pytest.raises(ValueError, match="hidden"):
        Z.make_zoo_task(name, hidden=0)
    with pytest.raises(ValueError, match="n_train"):
        Z.make_zoo_task("zoo-v1/rnn-sines-3x32", n_train=0)


def test_regression_metric_pickles():
    metric = pickle.loads(pickle.dumps(Z.NegMSE()))
    out = metric(torch.tensor([[1.0], [2.0]]), torch.tensor([1.0, 4.0]))
    assert out == {"score": -2.0, "mse": 2.0}


# --- the command line --------------------------------------------------------------------------------------------

def test_cli_bad_input_exits_2_with_one_line(capsys):
    for argv in (["build", "--split", "holdout"], ["build", "--zoo", "v9"], ["build", "--seed", "-1"],
                 ["build", "--names", "zoo-v1/nope"], [], ["frobnicate"]):
        assert Z.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err, (argv, err)


def test_cli_build_table(tmp_path, capsys, monkeypatch):
    # Shrink the two models' defaults so the command itself runs in a second.
    names = ["zoo-v1/lstm-digits-1x32", "zoo-v1/rnn-sines-3x32"]
    for n in names:
        monkeypatch.setitem(Z.ZOO, n, dataclasses.replace(Z.ZOO[n], hidden=8, steps=60))
    out = tmp_path / "zoo.md"
    assert Z.main(["build", "--names", *names, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for n in names:
        assert n.removeprefix("zoo-v1/") in text
    assert "2 of 2 models built" in text
    md = out.read_text()
    assert md.startswith("# Model zoo build (v1)") and "chance test" in md and "torch" in md
