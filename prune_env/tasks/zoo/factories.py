"""Building a zoo model: its overridable config, its data, chance levels and the cached training
(:func:`make_zoo_task`)."""

from __future__ import annotations

import difflib
import hashlib
from typing import Any

import torch
from torch import nn

from prune_env.checks import check_int
from prune_env.task import BatchEvaluator, RNNTask, TaskError
from prune_env.tasks.cache import load_or_train
from prune_env.tasks.config import check_config, finish_metadata
from prune_env.tasks.lm import build_lm_task
from prune_env.tasks.models import ZooLM, ZooSequenceNet
from prune_env.tasks.scoring import ChunkedScorer
from prune_env.tasks.training import BatchLoss, SampledLoss, seeded, single_thread, training_threads
from prune_env.tasks.zoo.catalogue import ZOOS, ZooSpec, lookup, ptb_dir, spec_dict
from prune_env.tasks.zoo.data import data_generator, digits_rows, source_text, synthetic
from prune_env.tasks.zoo.scoring import (
    MSEBatchLoss,
    NegMSE,
    RegressionScorer,
    SampledMSELoss,
    class_chance,
    mean_chance,
)
from prune_env.tasks.zoo.training import train_sequences

#: Evaluation sizes shared by the zoo (overridable per call).
_LM_SIZES = {"val_frac": 0.05, "test_frac": 0.05, "eval_tokens": 8192, "test_tokens": 16384, "loss_tokens": 8192,
             "metric": "accuracy"}
_WORD_SIZES = {"eval_tokens": 8192, "test_tokens": 32768, "loss_tokens": 8192, "metric": "accuracy"}
_SEQ_SIZES = {"n_train": 16384, "n_val": 1024, "n_test": 4096, "loss_samples": 512}
_SEQ_INTS = ("n_train", "n_val", "n_test", "loss_samples", "mlp_hidden", "in_proj", "proj_size")


def defaults(spec: ZooSpec) -> dict[str, Any]:
    """The overridable config of a zoo model: its architecture sizes, training knobs and evaluation sizes.

    The identity of a model (data, kind, cell, head, direction, having an embedding, an input projection, an LSTM
    projection, tied weights) is not overridable; the sizes are.
    """
    cfg: dict[str, Any] = {"hidden": spec.hidden, "layers": spec.layers, "steps": spec.steps, "lr": spec.lr,
                           "batch": spec.batch}
    if spec.emb:
        cfg["emb"] = spec.emb
    for k in ("in_proj", "proj_size"):  # zoo-v2 sizes, in the config only where set (zoo-v1 keys unchanged)
        if getattr(spec, k):
            cfg[k] = getattr(spec, k)
    if spec.kind == "char-lm":
        cfg.update(seq_len=spec.seq_len, max_tokens=spec.max_tokens, **_LM_SIZES)
    elif spec.kind == "word-lm":
        cfg.update(seq_len=spec.seq_len, max_tokens=spec.max_tokens, max_vocab=spec.max_vocab, path=None,
                   **_WORD_SIZES)
    else:
        if spec.data != "digits-rows":
            cfg["seq_len"] = spec.seq_len
        if spec.head == "mlp":
            cfg["mlp_hidden"] = spec.mlp_hidden
        cfg.update(_SEQ_SIZES)
        if spec.data == "digits-rows":
            for k in ("n_train", "n_val", "n_test"):
                del cfg[k]
    return cfg


def _resolve(name: Any, overrides: dict[str, Any]) -> tuple[ZooSpec, dict[str, Any]]:
    spec = lookup(name) if isinstance(name, str) else None
    if spec is None:
        every = [n for zoo in ZOOS.values() for n in zoo]
        close = difflib.get_close_matches(str(name), every, n=3)
        hint = f"; did you mean {close}?" if close else f"; see zoo_names(version=...) ({len(every)} models)"
        raise TaskError(f"unknown zoo model {name!r}{hint}")
    base = defaults(spec)
    cfg = check_config(name, base, overrides)
    for k in (*_SEQ_INTS, "max_tokens", "max_vocab"):
        if k in cfg and not (base[k] is None and cfg[k] is None):
            try:
                cfg[k] = check_int(k, cfg[k], 1)
            except ValueError as e:
                none = " (or None)" if base[k] is None else ""
                raise ValueError(f"make_zoo_task({name!r}): config {e}{none}") from None
    return spec, cfg


def make_zoo_task(name: str, *, seed: int = 0, retrain: bool = False, progress: bool = True,
                  **overrides: Any) -> RNNTask:
    """Build zoo model ``name``, training it on first use and caching it (keyed by name, config and seed).

    :param name: a versioned zoo name (:data:`ZOOS`), e.g. ``"zoo-v1/gru-char-email-2x128"``.
    :param seed: the model's initialisation and minibatch order (the data do not depend on it).
    :param retrain: ignore the cached model, train afresh and overwrite the entry.
    :param progress: show a tqdm bar while training.
    :param overrides: keys of :func:`defaults` (sizes, steps, evaluation sizes; ``path=`` for the PTB models),
        e.g. ``hidden=16, steps=20`` for a quick test model.
    :returns: a structured :class:`RNNTask` (``eval_batch`` + ``metric``) scored on the validation split, with
        ``test`` on a held-out test split, ``loss`` on a fixed training batch, ``train_loss`` drawing training
        batches, and ``metadata`` holding the ``spec``, ``config``, dense val/test scores, chance levels and the
        training time.
    :raises TaskError: for an unknown name; ``ValueError`` for a bad override; :class:`ZooDataUnavailable` when the
        data are missing (PTB).
    """
    from prune_env.tasks.config import check_seed

    spec, cfg = _resolve(name, overrides)
    seed = check_seed(seed)
    meta: dict[str, Any] = {"zoo_version": spec.version, "zoo_name": name, "spec": spec_dict(spec),
                            "split": spec.split, "kind": spec.kind}
    make = {"char-lm": _make_char_lm, "word-lm": _make_word_lm}.get(spec.kind, _make_sequence)
    # Every zoo model is small enough that a second thread gains little, while on a shared 2-core CPU OpenMP's
    # spinning workers made training up to 12x slower (663 ms vs 56 ms per step for the 1x256 LSTM char LM); one
    # thread also makes the trained weights independent of the machine's core count.
    with single_thread():
        return _finish(make(name, spec, cfg, seed, retrain, progress, meta))




def _lm_factory(spec: ZooSpec, cfg: dict[str, Any]) -> Any:
    import functools

    extra = {k: cfg[k] for k in ("in_proj", "proj_size") if k in cfg}
    if spec.tied:
        extra["tied"] = True
    return functools.partial(ZooLM, cell=spec.cell, head=spec.head, **extra)

def _finish(task: RNNTask) -> RNNTask:
    """Add ``dense_test_loss`` (test NLL or MSE) and ``skill`` (``1 - dense_test_loss / chance_test_loss``: the
    share of the best constant predictor's loss the model removes; R^2 for regression) to the metadata."""
    md = task.metadata
    md["dense_test_loss"] = md["dense_test_metrics"][md["chance_loss_name"]]
    md["skill"] = 1 - md["dense_test_loss"] / md["chance_test_loss"]
    md["params"] = sum(p.numel() for p in task.model.parameters())
    return task


def _arch_key(spec: ZooSpec) -> dict[str, Any]:
    """What the cache key needs beyond the overridable config: the fixed identity of the model."""
    key = {"zoo": spec.version, "data": spec.data, "kind": spec.kind, "cell": spec.cell, "head": spec.head,
           "bidirectional": spec.bidirectional}
    if spec.tied:
        key["tied"] = True
    return key


def _make_char_lm(name: str, spec: ZooSpec, cfg: dict[str, Any], seed: int, retrain: bool, progress: bool,
                  meta: dict[str, Any]) -> RNNTask:
    text = source_text(spec.data)
    if cfg["max_tokens"] is not None:
        text = text[:cfg["max_tokens"]]
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    n = ids.numel()
    n_test, n_val = int(n * cfg["test_frac"]), int(n * cfg["val_frac"])
    n_train = n - n_val - n_test
    splits = {"train": ids[:n_train], "val": ids[n_train:n_train + n_val], "test": ids[n_train + n_val:]}
    fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
    lm_cfg = {**cfg, "emb": cfg.get("emb", 0)}
    meta.update(data=spec.data, vocab="".join(chars), text_sha256=fingerprint, text_chars=n)
    return _lm_task(name, spec, lm_cfg, seed, retrain, progress, meta, len(chars), splits,
                    {"text_sha256": fingerprint})


def _make_word_lm(name: str, spec: ZooSpec, cfg: dict[str, Any], seed: int, retrain: bool, progress: bool,
                  meta: dict[str, Any]) -> RNNTask:
    from prune_env.tasks.corpus import FILES, load_corpus

    root = ptb_dir(cfg.pop("path"))
    vocab, splits = load_corpus(root, "word", cfg["max_tokens"], cfg["max_vocab"])
    digest = hashlib.sha256()
    for f in FILES:
        digest.update((root / f).read_bytes())
    fingerprint = digest.hexdigest()[:16]
    meta.update(data=spec.data, data_path=str(root), ptb_sha256=fingerprint, vocab_size=len(vocab))
    return _lm_task(name, spec, cfg, seed, retrain, progress, meta, len(vocab), splits, {"ptb_sha256": fingerprint})


def _lm_task(name: str, spec: ZooSpec, cfg: dict[str, Any], seed: int, retrain: bool, progress: bool,
             meta: dict[str, Any], vocab_size: int, splits: dict[str, torch.Tensor],
             data_key: dict[str, Any]) -> RNNTask:
    """Train (or load) a zoo LM on token splits; ``data_key`` (a data fingerprint) joins the cache key."""
    task = build_lm_task(preset=name, cfg=cfg, seed=seed, retrain=retrain, progress=progress,
                         model_cls=_lm_factory(spec, cfg), vocab_size=vocab_size, splits=splits,
                         extra={**data_key, **_arch_key(spec)}, metadata=meta)
    task.metadata.update(class_chance(splits["train"], task.eval_batch[1], task.test.targets, vocab_size))
    return task


def _make_sequence(name: str, spec: ZooSpec, cfg: dict[str, Any], seed: int, retrain: bool, progress: bool,
                   meta: dict[str, Any]) -> RNNTask:
    regress = spec.kind == "regress"
    tokens = bool(spec.emb)
    if spec.data == "digits-rows":
        splits, out = digits_rows()
    else:
        sizes = {"train": cfg["n_train"], "val": cfg["n_val"], "test": cfg["n_test"]}
        splits = {}
        for k, size in sizes.items():
            x, y, out = synthetic(spec.data, size, cfg["seq_len"], data_generator(spec.data, k), tokens)
            splits[k] = (x, y)
    (x_tr, y_tr), (x_val, y_val), (x_te, y_te) = splits["train"], splits["val"], splits["test"]
    vocab = int(max(int(x.max()) for x, _ in splits.values())) + 1 if tokens else None
    in_features = cfg["emb"] if tokens else x_tr.shape[-1]
    n_loss = min(cfg["loss_samples"], y_tr.shape[0])

    if regress:
        chance = mean_chance(y_tr, y_val, y_te)
        metric: Any = NegMSE()
        test: Any = RegressionScorer(x_te, y_te, variance=chance["chance_test_loss"])
        loss: Any = MSEBatchLoss(x_tr[:n_loss], y_tr[:n_loss])
        train_loss: Any = SampledMSELoss((x_tr, y_tr), cfg["batch"])
    else:
        chance = class_chance(y_tr, y_val, y_te, out)
        metric = "accuracy"
        test = ChunkedScorer(x_te, y_te, metric="accuracy", chunk=1024)
        loss = BatchLoss(x_tr[:n_loss], y_tr[:n_loss])
        train_loss = SampledLoss((x_tr, y_tr), cfg["batch"])
    evaluate = BatchEvaluator((x_val, y_val), metric)

    def new_model() -> ZooSequenceNet:
        return ZooSequenceNet(in_features, cfg["hidden"], cfg["layers"], out, cell=spec.cell,
                              bidirectional=spec.bidirectional, vocab_size=vocab, head=spec.head,
                              mlp_hidden=cfg.get("mlp_hidden", 64), in_proj=cfg.get("in_proj", 0),
                              proj_size=cfg.get("proj_size", 0))

    def build() -> nn.Module:
        with seeded(seed):
            return new_model()

    def train() -> tuple[nn.Module, dict[str, Any]]:
        with seeded(seed):
            model = new_model()
            with training_threads(model):
                seconds = train_sequences(model, x_tr, y_tr, regress=regress, steps=cfg["steps"],
                                           batch=cfg["batch"], lr=cfg["lr"], seed=seed, progress=progress,
                                           desc=f"training {name}")
                scores = {"dense_val": evaluate(model), "dense_test": test(model)}
        return model, {"train_time_s": round(seconds, 2), "torch": str(torch.__version__), **scores}

    model, info, hit = load_or_train(name, cfg, seed, build=build, train=train, retrain=retrain,
                                     extra=_arch_key(spec))
    model.eval()
    meta.update({"preset": name, "config": dict(cfg), "seed": seed, "model": type(model).__name__,
                 "data": spec.data, "splits": {k: int(v[1].shape[0]) for k, v in splits.items()},
                 "outputs": out, "vocab_size": vocab, **chance})
    finish_metadata(meta, info, hit)
    return RNNTask(model=model, test=test, loss=loss, name=name, eval_batch=(x_val, y_val), metric=metric,
                   metadata=meta, train_loss=train_loss, calibration_batches=tuple(x_tr[:n_loss].split(64)))
