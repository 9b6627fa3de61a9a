"""Built-in tasks: building, scoring, determinism, the model cache and argument errors (tiny configs, seconds)."""

from __future__ import annotations

import copy
import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from tiny import tiny_task

from prune_env import PruneRNNEnv, RNNTask
from prune_env.tasks import PRESETS, TaskError, cache, corpus, digits, make_task, resolve_task
from prune_env.tasks.models import CharLM, SequenceClassifier, WordLM

PTB = Path("/work/shared/data/ptb")
TINY_DIGITS = {"hidden": 16, "epochs": 8, "progress": False}
TINY_CHAR = {"emb": 8, "hidden": 32, "steps": 30, "seq_len": 32, "batch": 16, "eval_tokens": 1024,
             "test_tokens": 2048, "loss_tokens": 512, "progress": False}
TINY_LM = {"emb": 16, "hidden": 32, "steps": 30, "seq_len": 20, "batch": 16, "eval_tokens": 1024,
           "test_tokens": 2048, "loss_tokens": 512, "progress": False}


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    """A cache dir of the test's own, for tests that count cache entries or training runs."""
    monkeypatch.setenv("PRUNE_RNN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def train_counter(monkeypatch) -> list[int]:
    """Counts calls of the digits training loop (so cache hits are checked without timing)."""
    calls = [0]
    real = digits._train

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(digits, "_train", counting)
    return calls


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def check_task_contract(task: RNNTask, name: str) -> float:
    """What every preset promises; returns the validation score."""
    assert isinstance(task, RNNTask) and task.name == name and task.structured
    assert not task.model.training
    score = task.evaluate(task.model)["score"]
    assert score == pytest.approx(task.metadata["dense_val"], abs=1e-6)
    test = task.test(task.model)
    assert set(test) >= {"score", "nll", "perplexity"}
    assert test["score"] == pytest.approx(task.metadata["dense_test"], abs=1e-6)
    loss = task.loss(task.model)
    assert loss.ndim == 0 and loss.requires_grad and torch.isfinite(loss)
    assert not task.model.training, "loss must restore eval mode"
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(task.train_loss(task.model, g1), task.train_loss(task.model, g2))
    for key in ("config", "seed", "splits", "dense_val", "dense_test", "train_time_s", "from_cache"):
        assert key in task.metadata, key
    # Tasks travel to vector-env workers and are deep-copied by the env.
    clone = pickle.loads(pickle.dumps(task))
    assert same_weights(clone.model, task.model)
    assert clone.evaluate(clone.model)["score"] == score
    assert copy.deepcopy(task).test(task.model)["score"] == test["score"]
    return score


# --- presets ---------------------------------------------------------------------------------------------------

def test_presets_listed():
    assert set(PRESETS) == {"digits", "pydoc-char", "corpus", "custom-gru"}
    assert all(isinstance(v, str) and v for v in PRESETS.values())


def test_digits_tiny():
    task = make_task("digits", **TINY_DIGITS)
    assert check_task_contract(task, "digits") > 0.5  # chance is 0.1
    assert isinstance(task.model, SequenceClassifier)
    x, y = task.eval_batch
    assert x.shape[1:] == (8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert task.model(x).shape == (x.shape[0], 10)
    assert task.metadata["splits"] == {"train": 1077, "val": 360, "test": 360}


def test_digits_default_accuracy():
    # The CI default; other test modules build it too, and it is cached for the session.
    task = make_task("digits", progress=False)
    assert task.metadata["dense_test"] >= 0.93
    names = [n for n, _ in task.model.named_parameters() if n.endswith("weight") or "weight_" in n]
    assert {"rnn.weight_ih_l1", "rnn.weight_hh_l1", "head.weight"} <= set(names)


def test_pydoc_char_tiny():
    task = make_task("pydoc-char", **TINY_CHAR)
    vocab = task.metadata["vocab_size"]
    assert isinstance(task.model, CharLM) and vocab == len(task.metadata["vocab"]) > 50
    assert check_task_contract(task, "pydoc-char") > 0.12  # chance ~0.01; always predicting " " gives ~0.18
    x, y = task.eval_batch
    assert x.shape == (1024 // 32, 32) and x.dtype == torch.long
    assert task.model(x[:2]).shape == (2, 32, vocab)
    assert task.metadata["eval_tokens"] == 1024 and task.metadata["test_tokens"] == 2048
    split = task.metadata["splits"]
    assert split["val"] == split["test"]
    assert split["train"] > 15 * split["val"]


@pytest.mark.skipif(not PTB.is_dir(), reason=f"PTB not found at {PTB} (shared read-only test data)")
@pytest.mark.parametrize("level", ["word", "char"])
def test_corpus_ptb_slice(level):
    task = make_task("corpus", path=str(PTB), level=level, max_train_tokens=20000, **TINY_LM)
    assert isinstance(task.model, WordLM if level == "word" else CharLM)
    assert task.metadata["level"] == level and task.metadata["splits"]["train"] == 20000
    # chance is 1/vocab; the frequent-token floor (<unk>, "the", <eos> / " ") is several per cent
    assert check_task_contract(task, "corpus") > (0.03 if level == "word" else 0.12)
    if level == "word":
        assert task.metadata["unk_rate"]["val"] > task.metadata["unk_rate"]["train"]


@pytest.mark.parametrize("model, x", [
    (SequenceClassifier(8, 6, 2, 10), torch.rand(3, 8, 8)),
    (CharLM(20, 4, 6, 2), torch.randint(0, 20, (3, 5))),
    (WordLM(30, 4, 6, 1), torch.randint(0, 30, (3, 5))),
])
def test_models_trace_pickle_and_copy(model, x):
    # Hidden-unit removal rewrites the torch.fx graph, so the forwards must trace.
    traced = torch.fx.symbolic_trace(model)
    assert torch.equal(traced(x), model(x))
    assert torch.equal(pickle.loads(pickle.dumps(model))(x), model(x))
    assert torch.equal(copy.deepcopy(model)(x), model(x))


# --- determinism -----------------------------------------------------------------------------------------------

def test_same_seed_same_weights_and_rng_untouched(fresh_cache):
    before = torch.get_rng_state()
    a = make_task("digits", seed=0, **TINY_DIGITS)
    b = make_task("digits", seed=0, retrain=True, **TINY_DIGITS)
    assert not b.metadata["from_cache"] and same_weights(a.model, b.model)
    assert torch.equal(torch.get_rng_state(), before), "building a task must not move the global RNG"
    c = make_task("digits", seed=1, **TINY_DIGITS)
    assert not same_weights(a.model, c.model)


def test_lm_same_seed_same_weights(fresh_cache):
    a = make_task("pydoc-char", seed=5, **{**TINY_CHAR, "steps": 3})
    b = make_task("pydoc-char", seed=5, retrain=True, **{**TINY_CHAR, "steps": 3})
    c = make_task("pydoc-char", seed=6, **{**TINY_CHAR, "steps": 3})
    assert same_weights(a.model, b.model) and not same_weights(a.model, c.model)
    assert torch.equal(a.eval_batch[0], c.eval_batch[0]), "the LM data split does not depend on the seed"


# --- cache -----------------------------------------------------------------------------------------------------

def test_cache_hit_does_not_retrain(fresh_cache, train_counter):
    a = make_task("digits", **TINY_DIGITS)
    assert train_counter[0] == 1 and not a.metadata["from_cache"]
    b = make_task("digits", **TINY_DIGITS)
    assert train_counter[0] == 1 and b.metadata["from_cache"]
    assert same_weights(a.model, b.model) and not b.model.training
    assert b.metadata["dense_val"] == a.metadata["dense_val"]
    assert b.metadata["train_time_s"] == a.metadata["train_time_s"]
    assert Path(b.metadata["cache_path"]).parent == fresh_cache
    make_task("digits", retrain=True, **TINY_DIGITS)
    assert train_counter[0] == 2
    make_task("digits", **{**TINY_DIGITS, "hidden": 17})  # another config is another entry
    assert train_counter[0] == 3
    assert len(list(fresh_cache.glob("digits-*.pt"))) == 2


def test_no_temp_files_left(fresh_cache):
    make_task("digits", **TINY_DIGITS)
    assert [p.suffix for p in fresh_cache.iterdir()] == [".pt"]


def test_atomic_save_cleans_up_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "x.pt"
    cache.atomic_save({"a": 1}, target)

    def broken_save(obj, f):
        f.write(b"half a file")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk on fire"):
        cache.atomic_save({"a": 2}, target)
    assert os.listdir(tmp_path) == ["x.pt"]
    monkeypatch.undo()
    assert torch.load(target) == {"a": 1}, "a failed write must not clobber the old entry"


def test_corrupt_cache_file_is_retrained(fresh_cache, train_counter):
    a = make_task("digits", **TINY_DIGITS)
    path = Path(a.metadata["cache_path"])
    path.write_bytes(b"not a torch file")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        b = make_task("digits", **TINY_DIGITS)
    assert train_counter[0] == 2 and same_weights(a.model, b.model)
    torch.save({"state_dict": {"wrong": torch.zeros(1)}, "info": {}}, path)  # readable but not this model
    with pytest.warns(RuntimeWarning, match="unreadable"):
        make_task("digits", **TINY_DIGITS)
    assert train_counter[0] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_task("digits", **TINY_DIGITS).metadata["from_cache"]


def test_unwritable_cache_warns_and_still_returns(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache dir should be")
    monkeypatch.setenv("PRUNE_RNN_CACHE", str(blocker / "cache"))
    with pytest.warns(RuntimeWarning, match="could not cache"):
        task = make_task("digits", **TINY_DIGITS)
    assert task.metadata["dense_val"] > 0.3


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNE_RNN_CACHE", str(tmp_path / "a"))
    assert cache.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("PRUNE_RNN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "prune-rnn-gym"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "prune-rnn-gym"


def test_cache_key_covers_everything():
    base = cache.cache_key("digits", {"hidden": 64}, 0)
    assert base == cache.cache_key("digits", {"hidden": 64}, 0)
    assert len({base, cache.cache_key("digits", {"hidden": 65}, 0), cache.cache_key("digits", {"hidden": 64}, 1),
                cache.cache_key("pydoc-char", {"hidden": 64}, 0),
                cache.cache_key("digits", {"hidden": 64}, 0, extra={"files": 1})}) == 5


def write_corpus(root: Path, train: str = "a b c\nb c a\n" * 40) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.txt").write_text(train)
    (root / "valid.txt").write_text("a b c d\n" * 20)
    (root / "test.txt").write_text("c b a\n" * 20)
    return root


def test_corpus_small_dir_and_file_change_retrains(tmp_path, fresh_cache):
    root = write_corpus(tmp_path / "toy")
    kw = {**TINY_LM, "seq_len": 8, "eval_tokens": 64, "test_tokens": 64, "loss_tokens": 64}
    a = make_task("corpus", path=root, **kw)
    assert a.metadata["vocab_size"] == 5  # <eos>, <unk>, a, b, c
    assert a.metadata["unk_rate"]["val"] == pytest.approx(1 / 5)  # "d" is unseen
    assert make_task("corpus", path=str(root), **kw).metadata["from_cache"]
    for f in corpus.FILES:  # a copy or a remount changes modification times, not content: still cached
        os.utime(root / f, ns=(1, 1))
    assert make_task("corpus", path=root, **kw).metadata["from_cache"]
    write_corpus(root, train="a b c\n" * 90)
    assert not make_task("corpus", path=root, **kw).metadata["from_cache"]


# --- errors ----------------------------------------------------------------------------------------------------

def test_unknown_task_is_one_error_type(tmp_path):
    with pytest.raises(TaskError, match=r"`name`.*digits.*pydoc-char"):
        make_task("mnist")
    for spec, match in [("mnist", "unknown task 'mnist'.*digits"), (3, "`task` must be an RNNTask.*got int"),
                        (str(tmp_path / "nowhere"), "corpus directory not found"),
                        ("no_such_module:f", "cannot import"), ("tiny:VOCAB", "not a factory"),
                        ("corpus", "corpus directory")]:
        with pytest.raises(TaskError, match=match):
            resolve_task(spec)
    with pytest.raises(TaskError, match="returned str"):
        resolve_task("os:getcwd")
    assert issubclass(TaskError, ValueError)
    with pytest.raises(TaskError, match="task_kwargs|keyword"):
        PruneRNNEnv(tiny_task("gru"), task_kwargs={"seed": 1})


def test_resolve_task():
    task = make_task("digits", **TINY_DIGITS)
    assert resolve_task(task) is task
    with pytest.raises(TaskError, match="seed"):
        resolve_task(task, seed=3)
    assert same_weights(resolve_task("digits", **TINY_DIGITS).model, task.model)
    factory = resolve_task("tiny:tiny_task", rnn="lstm", hidden=5)  # module:function with its keyword arguments
    assert factory.model.rnn.hidden_size == 5 and isinstance(factory.model.rnn, torch.nn.LSTM)


@pytest.mark.parametrize("name, kwargs, match", [
    ("digits", {"hiddn": 3}, r"unknown config key.*hiddn.*valid keys.*hidden"),
    ("pydoc-char", {"layer": 1}, r"unknown config key.*layer.*layers"),
    ("corpus", {"path": str(PTB), "levle": "word"}, r"levle.*valid keys"),
    ("digits", {"hidden": 0}, r"`hidden` must be an int >= 1, got 0"),
    ("pydoc-char", {"steps": None}, r"`steps` must be an int >= 1, got None"),
    ("pydoc-char", {"emb": 2.5}, r"`emb` must be an int >= 1"),
    ("digits", {"lr": -1}, r"`lr` must be a finite number in \(0, inf\]"),
    ("digits", {"val_frac": 0.7}, r"`val_frac`"),
    ("digits", {"seed": -1}, r"`seed`"),
    ("pydoc-char", {"metric": "bleu"}, r"`metric`"),
    ("pydoc-char", {"seq_len": 100_000}, r"seq_len"),
    ("corpus", {"path": str(PTB), "level": "byte"}, r"`level`"),
])
def test_bad_config(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_task(name, progress=False, **kwargs)


def test_corpus_bad_path(tmp_path):
    with pytest.raises(ValueError, match=r"`path` is required.*train.txt"):
        make_task("corpus")
    with pytest.raises(ValueError, match=r"`path`.*not a directory.*train.txt, valid.txt, test.txt"):
        make_task("corpus", path=tmp_path / "nowhere")
    (tmp_path / "train.txt").write_text("a b\n")
    with pytest.raises(ValueError, match=r"`path`.*lacks valid.txt, test.txt"):
        make_task("corpus", path=tmp_path)
    assert corpus.FILES == ("train.txt", "valid.txt", "test.txt")
