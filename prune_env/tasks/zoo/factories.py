"""The model zoo: many small trained recurrent networks, for training pruning policies that transfer across models.

Every model has a stable, versioned name (``"zoo-v1/gru-char-email-2x128"``) and a frozen :class:`ZooSpec`
recording its split, data, task kind, architecture and training config. ``make_zoo_task(name)`` trains it on first
use (at most about a minute on a 2-core CPU), caches it like the presets (:func:`~prune_env.tasks.cache.load_or_train`)
and returns a structured :class:`~prune_env.task.RNNTask`; ``resolve_task(name)`` and therefore
``PruneRNNEnv(task=name)`` accept the names too.

- **Splits.** ``train`` models are for training a policy, ``validation`` models for selecting one. The splits never
  share a (data, architecture) pair; the ``pydoc-char`` preset's model and ``benchmarks/gru_task.py``'s model are
  in neither, so they stay unseen.
- **Data.** Character LMs on the CPython help text (:func:`prune_env.tasks.pydoc_char.load_text`) and on the source
  of stdlib packages (their ``.py`` files in sorted path order, a fixed leading slice); a word LM on a slice of PTB;
  sequence classification (digits read by rows, parity, the adding problem, counting); next-value regression on
  noisy sums of sinusoids. Synthetic data come from a ``torch.Generator`` seeded by the data name, so they do not
  depend on the model seed; the data splits of the texts and of digits are fixed too. The model seed sets the
  initialisation and the minibatch order.
- **PTB** is not bundled: its directory (``train.txt``, ``valid.txt``, ``test.txt``) comes from ``path=`` or the
  environment variable ``PRUNE_RNN_PTB``. Without either, its entries raise :class:`ZooDataUnavailable` naming the
  variable, and ``zoo_names(available_only=True)`` leaves them out.
- **Chance** is recorded for every model (``metadata["chance_val"]``, ``["chance_test"]``): the accuracy of always
  predicting the most frequent training class/token, or minus the MSE of always predicting the training mean.

Build (or check) the whole zoo with a progress bar::

    python -m prune_env.tasks.zoo build --split all --seed 0
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import math
import os
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from prune_env.checks import check_int
from prune_env.task import BatchEvaluator, RNNTask, TaskError, forward_in_mode
from prune_env.tasks.cache import load_or_train
from prune_env.tasks.config import check_config, finish_metadata
from prune_env.tasks.lm import build_lm_task
from prune_env.tasks.models import ZooLM, ZooSequenceNet
from prune_env.tasks.scoring import ChunkedScorer
from prune_env.tasks.training import BatchLoss, SampledLoss, seeded, single_thread, training_threads

ZOO_VERSION = "v1"
PREFIX = f"zoo-{ZOO_VERSION}/"
#: Environment variable naming the PTB directory (``train.txt``, ``valid.txt``, ``test.txt``).
PTB_ENV = "PRUNE_RNN_PTB"

SPLITS = ("train", "validation")
KINDS = ("char-lm", "word-lm", "classify", "regress")
CELLS = ("lstm", "gru", "rnn")
LM_HEADS = ("lm", "lm-mlp")
SEQ_HEADS = ("last", "mean", "mlp", "step")
#: Synthetic and bundled data sources of the sequence tasks, with their kind.
SEQUENCE_DATA = {"digits-rows": "classify", "parity": "classify", "adding": "classify", "counting": "classify",
                 "sines": "regress"}


class ZooDataUnavailable(ValueError):
    """A zoo model's data is not on this machine (PTB without ``path=`` or ``$PRUNE_RNN_PTB``)."""


@dataclass(frozen=True)
class ZooSpec:
    """One zoo model: what it learns, its architecture and how it is trained (all of it fixed by the name).

    :param split: ``"train"`` or ``"validation"``.
    :param data: ``"pydoc"``, ``"stdlib:<package>"``, ``"ptb"``, ``"digits-rows"``, ``"parity"``, ``"adding"``,
        ``"counting"`` or ``"sines"``.
    :param kind: ``"char-lm"``, ``"word-lm"``, ``"classify"`` or ``"regress"`` (follows from ``data``).
    :param cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (``nn.RNN``, tanh).
    :param layers: stacked recurrent layers (1-3).
    :param hidden: hidden units per layer and direction (32-512).
    :param head: language models ``"lm"`` (Linear per step) or ``"lm-mlp"`` (Linear-tanh-Linear per step);
        sequence models ``"last"`` (Linear on the last step), ``"mean"`` (Linear on the mean over time),
        ``"mlp"`` (a 2-layer MLP on the last step) or ``"step"`` (Linear on every step: a label per step).
    :param steps: Adam steps.
    :param lr: peak learning rate (cosine decay to a tenth).
    :param batch: windows / sequences per step.
    :param seq_len: LM window length, or the length of the synthetic sequences (digits: always 8 rows).
    :param bidirectional: a bidirectional recurrent module (sequence models only).
    :param emb: embedding size; 0 for none (LMs then read one-hot tokens, sequence models float features).
    :param mlp_hidden: width of the ``mlp`` / ``lm-mlp`` head (``lm-mlp`` uses ``hidden``).
    :param max_tokens: LMs: characters of the text (words of PTB's training file) used, from the start.
    :param max_vocab: word LM: most frequent words kept, the rest ``<unk>``.
    """

    split: str
    data: str
    kind: str
    cell: str
    layers: int
    hidden: int
    head: str
    steps: int
    lr: float
    batch: int
    seq_len: int
    bidirectional: bool = False
    emb: int = 0
    mlp_hidden: int = 0
    max_tokens: int | None = None
    max_vocab: int | None = None

    @property
    def architecture(self) -> tuple[Any, ...]:
        """``(cell, layers, hidden, bidirectional, has_embedding, head)``: what makes two models the same shape
        of network (sizes of the embedding or the MLP do not make a new architecture)."""
        return (self.cell, self.layers, self.hidden, self.bidirectional, self.emb > 0, self.head)

    @property
    def pair(self) -> tuple[str, tuple[Any, ...]]:
        """``(data, architecture)``, never shared by the two splits."""
        return (self.data, self.architecture)


def spec_name(spec: ZooSpec) -> str:
    """The versioned name a spec is filed under, e.g. ``zoo-v1/gru-char-email-2x128``.

    ``<cell>-<data>-<layers>x<hidden>`` then ``-bi`` (bidirectional), ``-onehot`` (an LM without embedding) or
    ``-emb`` (a sequence model with one), and the head unless it is the default (``lm`` / ``last``).
    """
    if spec.data.startswith("stdlib:"):
        label = "char-" + spec.data.split(":", 1)[1]
    elif spec.kind == "char-lm":
        label = "char-" + spec.data
    elif spec.kind == "word-lm":
        label = "word-" + spec.data
    else:
        label = spec.data.replace("-rows", "")
    parts = [spec.cell, label, f"{spec.layers}x{spec.hidden}"]
    if spec.bidirectional:
        parts.append("bi")
    lm = spec.kind in ("char-lm", "word-lm")
    if lm and not spec.emb:
        parts.append("onehot")
    if not lm and spec.emb:
        parts.append("emb")
    if spec.head not in ("lm", "last"):
        parts.append(spec.head.replace("lm-", ""))
    return PREFIX + "-".join(parts)


def _kind(data: str) -> str:
    if data == "ptb":
        return "word-lm"
    if data == "pydoc" or data.startswith("stdlib:"):
        return "char-lm"
    return SEQUENCE_DATA[data]


def _spec(split: str, data: str, cell: str, layers: int, hidden: int, head: str | None = None, **kw: Any
          ) -> ZooSpec:
    kind = _kind(data)
    return ZooSpec(split=split, data=data, kind=kind, cell=cell, layers=layers, hidden=hidden,
                   head=head or ("lm" if kind.endswith("-lm") else "last"), **kw)


# Training configs were sized so that each model trains in under about a minute on a busy 2-core CPU, on one
# thread (measured times are in docs/tasks.md and benchmarks/results/zoo_build.md).
_CHAR = {"lr": 6e-3, "batch": 32, "seq_len": 64, "max_tokens": 300_000}
_WORD = {"lr": 1e-2, "batch": 32, "seq_len": 35, "max_tokens": 300_000, "max_vocab": 5000}
_SEQ = {"lr": 5e-3, "batch": 64}

_SPECS: list[ZooSpec] = [
    # --- train: character LMs on the help text and on the source of stdlib packages
    _spec("train", "stdlib:email", "gru", 2, 128, emb=32, steps=500, **_CHAR),
    _spec("train", "stdlib:json", "lstm", 1, 128, emb=32, steps=500, **{**_CHAR, "max_tokens": None}),
    _spec("train", "stdlib:http", "rnn", 2, 128, emb=32, steps=1200, **_CHAR),
    _spec("train", "stdlib:asyncio", "lstm", 1, 256, emb=64, steps=600, **_CHAR),
    _spec("train", "stdlib:unittest", "gru", 1, 64, steps=1500, **_CHAR),
    _spec("train", "stdlib:xml", "rnn", 1, 256, steps=1200, **_CHAR),
    _spec("train", "stdlib:logging", "lstm", 3, 96, "lm-mlp", emb=32, steps=700, **_CHAR),
    _spec("train", "pydoc", "gru", 1, 192, emb=48, steps=650, **_CHAR),
    _spec("train", "pydoc", "rnn", 2, 64, emb=16, steps=1500, **_CHAR),
    # --- train: word LM on a slice of PTB
    _spec("train", "ptb", "lstm", 1, 128, emb=128, steps=400, **_WORD),
    # --- train: sequence classification
    _spec("train", "digits-rows", "lstm", 1, 32, steps=1500, seq_len=8, **_SEQ),
    _spec("train", "digits-rows", "gru", 2, 64, "mean", bidirectional=True, steps=800, seq_len=8, **_SEQ),
    _spec("train", "digits-rows", "rnn", 1, 512, steps=1500, seq_len=8, **_SEQ),
    _spec("train", "digits-rows", "gru", 1, 512, "mlp", mlp_hidden=64, steps=800, seq_len=8, **_SEQ),
    _spec("train", "parity", "lstm", 1, 64, "step", emb=8, steps=1000, seq_len=16, **_SEQ),
    _spec("train", "parity", "gru", 2, 32, "step", steps=1000, seq_len=16, **_SEQ),
    _spec("train", "parity", "rnn", 1, 128, "step", steps=2500, seq_len=16, **{**_SEQ, "lr": 1e-2}),
    _spec("train", "adding", "lstm", 2, 64, steps=1500, seq_len=16, **_SEQ),
    _spec("train", "adding", "gru", 1, 128, "mlp", bidirectional=True, mlp_hidden=64, steps=1500, seq_len=16,
          **_SEQ),
    _spec("train", "adding", "rnn", 1, 96, emb=16, steps=1500, seq_len=16, **_SEQ),
    _spec("train", "counting", "lstm", 1, 48, "mean", emb=8, steps=2000, seq_len=20, **_SEQ),
    _spec("train", "counting", "gru", 3, 64, emb=8, steps=1000, seq_len=20, **_SEQ),
    _spec("train", "counting", "rnn", 2, 128, "mean", bidirectional=True, emb=8, steps=1000, seq_len=20, **_SEQ),
    # --- train: next-value regression on noisy sums of sinusoids
    _spec("train", "sines", "lstm", 2, 64, steps=1500, seq_len=32, **_SEQ),
    _spec("train", "sines", "gru", 1, 256, "mlp", mlp_hidden=64, steps=800, seq_len=32, **_SEQ),
    _spec("train", "sines", "rnn", 3, 32, steps=1500, seq_len=32, **_SEQ),
    _spec("train", "sines", "lstm", 1, 128, "mean", bidirectional=True, steps=1200, seq_len=32, **_SEQ),
    # --- validation: the four families of issue 11 (GRU char LM, biLSTM classifier, 3-layer tanh char LM, word
    # LSTM LM) plus one model per synthetic family, never pairing data and architecture as the train split does
    _spec("validation", "stdlib:multiprocessing", "gru", 1, 160, emb=32, steps=850, **_CHAR),
    _spec("validation", "digits-rows", "lstm", 1, 96, "mean", bidirectional=True, steps=800, seq_len=8, **_SEQ),
    _spec("validation", "stdlib:importlib", "rnn", 3, 128, emb=32, steps=900, **_CHAR),
    _spec("validation", "ptb", "lstm", 2, 96, emb=64, steps=800, **{**_WORD, "lr": 1.5e-2, "max_vocab": 3000}),
    _spec("validation", "counting", "gru", 2, 48, "mlp", mlp_hidden=32, steps=1500, seq_len=20, **_SEQ),
    _spec("validation", "sines", "gru", 2, 96, steps=1000, seq_len=32, **_SEQ),
    _spec("validation", "parity", "lstm", 2, 64, "step", emb=8, steps=1000, seq_len=16, **_SEQ),
]

#: Every zoo model by versioned name, in a fixed order (train first).
ZOO: dict[str, ZooSpec] = {}
for _s in _SPECS:
    _n = spec_name(_s)
    if _n in ZOO:
        raise RuntimeError(f"duplicate zoo name {_n}")
    ZOO[_n] = _s
del _s, _n


# ------------------------------------------------------------------------------------------------ listing
def ptb_dir(path: str | os.PathLike | None = None) -> Path:
    """The PTB directory: ``path``, else ``$PRUNE_RNN_PTB``.

    :raises ZooDataUnavailable: naming ``PRUNE_RNN_PTB`` when neither is set, or the directory lacks a file.
    """
    source = "path="
    if path is None:
        path, source = os.environ.get(PTB_ENV) or None, f"${PTB_ENV}"
    if path is None:
        raise ZooDataUnavailable(f"the zoo's word LMs need the Penn Treebank: set the environment variable {PTB_ENV} "
                                 "to a directory holding train.txt, valid.txt and test.txt (or pass path=)")
    root = Path(path).expanduser()
    missing = [f for f in ("train.txt", "valid.txt", "test.txt") if not (root / f).is_file()]
    if missing:
        raise ZooDataUnavailable(f"PTB directory {str(root)!r} (from {source}) lacks {', '.join(missing)}; "
                                 f"point {PTB_ENV} at a directory holding train.txt, valid.txt and test.txt")
    return root.resolve()


def available(name: str) -> bool:
    """Whether the data of zoo model ``name`` is on this machine (only PTB may be missing)."""
    if ZOO[name].data != "ptb":
        return True
    try:
        ptb_dir()
    except ZooDataUnavailable:
        return False
    return True


def zoo_names(split: str | None = None, available_only: bool = False) -> list[str]:
    """The zoo's model names, in the zoo's fixed order.

    :param split: ``"train"``, ``"validation"`` or ``None`` for both.
    :param available_only: leave out models whose data is missing here (the PTB word LMs when neither
        ``$PRUNE_RNN_PTB`` nor a path is given), so a loop over the result never fails for want of data.
    :raises ValueError: for an unknown split.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"zoo_names: unknown `split` {split!r}; expected one of {SPLITS} or None")
    names = [n for n, s in ZOO.items() if split is None or s.split == split]
    return [n for n in names if available(n)] if available_only else names


# ------------------------------------------------------------------------------------------------ data
def stdlib_text(package: str) -> str:
    """The source of a stdlib package: its ``.py`` files (recursively) in sorted relative-path order, joined."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"]) / package
    if not root.is_dir():
        raise ZooDataUnavailable(f"stdlib package {package!r} not found under {root.parent}")
    files = sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix())
    return "".join(p.read_text(encoding="utf-8", errors="replace") for p in files)


def _text(data: str) -> str:
    if data == "pydoc":
        from prune_env.tasks.pydoc_char import load_text

        return load_text()
    return stdlib_text(data.split(":", 1)[1])


def _generator(data: str, split: str) -> torch.Generator:
    """A generator seeded by the data name and split only: synthetic data never depend on the model seed."""
    return torch.Generator().manual_seed(zlib.crc32(f"{PREFIX}{data}/{split}".encode()))


def synthetic(data: str, n: int, seq_len: int, gen: torch.Generator, tokens: bool
              ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``n`` samples of a synthetic sequence task.

    - ``parity``: random bits; the label at every step is the parity of the bits so far (2 classes; targets
      ``[n, seq_len]``). The parity of a whole sequence from one label per sequence did not train in thousands of
      steps (it stayed at chance for 6-12 bits), per-step labels train in a few hundred.
    - ``adding``: random digits 0-9, two marked (one in each half); the label is the sum of the marked two (19
      classes). Features: ``(digit / 9, mark)``; tokens: ``digit + 10 * mark``.
    - ``counting``: random symbols 0-4; the label is how often 0 occurs, capped at 9 (10 classes). Features:
      one-hot symbols.
    - ``sines``: three sinusoids of random frequency (0.02-0.2 cycles per step), amplitude (0.2-1) and phase,
      plus Gaussian noise (sd 0.1); the inputs are ``seq_len`` values, the target the next one (regression).

    :param tokens: token ids (for a model with an embedding) instead of float features.
    :returns: ``(inputs [n, seq_len, features] float or [n, seq_len] long, targets [n] (parity: [n, seq_len]),
        classes or 1)``.
    """
    if data == "parity":
        bits = torch.randint(0, 2, (n, seq_len), generator=gen)
        y = bits.cumsum(1) % 2
        return (bits if tokens else bits.float().unsqueeze(-1)), y, 2
    if data == "adding":
        digits = torch.randint(0, 10, (n, seq_len), generator=gen)
        half = seq_len // 2
        first = torch.randint(0, half, (n,), generator=gen)
        second = torch.randint(half, seq_len, (n,), generator=gen)
        mark = torch.zeros(n, seq_len, dtype=torch.long)
        rows = torch.arange(n)
        mark[rows, first] = 1
        mark[rows, second] = 1
        y = digits[rows, first] + digits[rows, second]
        if tokens:
            return digits + 10 * mark, y, 19
        return torch.stack([digits.float() / 9, mark.float()], -1), y, 19
    if data == "counting":
        sym = torch.randint(0, 5, (n, seq_len), generator=gen)
        y = (sym == 0).sum(1).clamp(max=9)
        return (sym if tokens else F.one_hot(sym, 5).float()), y, 10
    if data == "sines":
        t = torch.arange(seq_len + 1, dtype=torch.float32)
        freq = 0.02 + 0.18 * torch.rand(n, 3, 1, generator=gen)
        amp = 0.2 + 0.8 * torch.rand(n, 3, 1, generator=gen)
        phase = 2 * math.pi * torch.rand(n, 3, 1, generator=gen)
        series = (amp * torch.sin(2 * math.pi * freq * t + phase)).sum(1)
        series = series + 0.1 * torch.randn(n, seq_len + 1, generator=gen)
        return series[:, :-1].unsqueeze(-1), series[:, -1], 1
    raise ValueError(f"unknown synthetic data {data!r}")


def _digits_rows() -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], int]:
    """``load_digits`` read row by row (8 steps of 8 pixels in [0, 1]), a fixed stratified 60/20/20 split."""
    from prune_env.tasks.digits import load_splits

    return load_splits(0, 0.2, 0.2), 10


# ------------------------------------------------------------------------------------------------ scoring
class NegMSE:
    """``metric(outputs, targets)``: ``{"score": -MSE, "mse": MSE}`` (a class, so the task pickles)."""

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        mse = F.mse_loss(outputs.reshape(-1).float(), targets.reshape(-1).to(outputs.device).float()).item()
        return {"score": -mse, "mse": mse}


class RegressionScorer:
    """``test(model)``: ``{"score": -MSE, "mse", "r2"}`` on a fixed set, in chunks.

    :param variance: the targets' variance around the training mean (``r2 = 1 - mse / variance``).
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, variance: float, chunk: int = 1024):
        self.inputs, self.targets, self.variance, self.chunk = inputs, targets, variance, chunk

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        total = 0.0
        for i in range(0, self.inputs.shape[0], self.chunk):
            out = forward_in_mode(model, self.inputs[i:i + self.chunk], training=False)
            total += F.mse_loss(out.reshape(-1).float(), self.targets[i:i + self.chunk].to(out.device),
                                reduction="sum").item()
        mse = total / max(self.targets.numel(), 1)
        return {"score": -mse, "mse": mse, "r2": 1 - mse / self.variance}


class MSEBatchLoss:
    """``loss(model)``: MSE on a fixed batch (train mode, as :class:`~prune_env.tasks.training.BatchLoss`)."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor):
        self.inputs, self.targets = inputs, targets

    def __call__(self, model: nn.Module) -> torch.Tensor:
        out = forward_in_mode(model, self.inputs, training=True)
        return F.mse_loss(out.reshape(-1), self.targets.to(out.device))


class SampledMSELoss:
    """``train_loss(model, generator)``: MSE on ``batch`` random training rows drawn with ``generator``."""

    def __init__(self, data: tuple[torch.Tensor, torch.Tensor], batch: int):
        self.data, self.batch = data, batch

    def __call__(self, model: nn.Module, generator: torch.Generator | None = None) -> torch.Tensor:
        inputs, targets = self.data
        idx = torch.randint(0, targets.shape[0], (self.batch,), generator=generator)
        device = next(model.parameters()).device
        out = model(inputs[idx].to(device))
        return F.mse_loss(out.reshape(-1), targets[idx].to(device))


def _train_sequences(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, regress: bool, steps: int, batch: int,
                     lr: float, seed: int, progress: bool, desc: str) -> float:
    """Adam on random minibatches (cosine decay to lr/10, clipping at norm 1); returns wall seconds."""
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    t0 = time.perf_counter()
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False, mininterval=1.0):
        idx = torch.randint(0, y.shape[0], (batch,), generator=gen)
        out = model(x[idx])
        if regress:
            loss = F.mse_loss(out.reshape(-1), y[idx])
        else:
            loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y[idx].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------ building
#: Evaluation sizes shared by the zoo (overridable per call).
_LM_SIZES = {"val_frac": 0.05, "test_frac": 0.05, "eval_tokens": 8192, "test_tokens": 16384, "loss_tokens": 8192,
             "metric": "accuracy"}
_WORD_SIZES = {"eval_tokens": 8192, "test_tokens": 32768, "loss_tokens": 8192, "metric": "accuracy"}
_SEQ_SIZES = {"n_train": 16384, "n_val": 1024, "n_test": 4096, "loss_samples": 512}
_SEQ_INTS = ("n_train", "n_val", "n_test", "loss_samples", "mlp_hidden")


def defaults(spec: ZooSpec) -> dict[str, Any]:
    """The overridable config of a zoo model: its architecture sizes, training knobs and evaluation sizes.

    The identity of a model (data, kind, cell, head, direction, having an embedding) is not overridable.
    """
    cfg: dict[str, Any] = {"hidden": spec.hidden, "layers": spec.layers, "steps": spec.steps, "lr": spec.lr,
                           "batch": spec.batch}
    if spec.emb:
        cfg["emb"] = spec.emb
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
    if not isinstance(name, str) or name not in ZOO:
        close = difflib.get_close_matches(str(name), list(ZOO), n=3)
        hint = f"; did you mean {close}?" if close else f"; see zoo_names() ({len(ZOO)} models)"
        raise TaskError(f"unknown zoo model {name!r}{hint}")
    spec = ZOO[name]
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

    :param name: a key of :data:`ZOO`, e.g. ``"zoo-v1/gru-char-email-2x128"``.
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
    meta: dict[str, Any] = {"zoo_version": ZOO_VERSION, "zoo_name": name, "spec": dataclasses.asdict(spec),
                            "split": spec.split, "kind": spec.kind}
    make = {"char-lm": _make_char_lm, "word-lm": _make_word_lm}.get(spec.kind, _make_sequence)
    # Every zoo model is small enough that a second thread gains little, while on a shared 2-core CPU OpenMP's
    # spinning workers made training up to 12x slower (663 ms vs 56 ms per step for the 1x256 LSTM char LM); one
    # thread also makes the trained weights independent of the machine's core count.
    with single_thread():
        return _finish(make(name, spec, cfg, seed, retrain, progress, meta))




def _lm_factory(spec: ZooSpec) -> Any:
    import functools

    return functools.partial(ZooLM, cell=spec.cell, head=spec.head)


def class_chance(train: torch.Tensor, val: torch.Tensor, test: torch.Tensor, classes: int) -> dict[str, Any]:
    """Chance levels of a classifier or LM from its integer targets: the accuracy of always predicting the most
    frequent training class (``chance_val``, ``chance_test``) and the test NLL of always predicting the training
    class frequencies, add-one smoothed (``chance_test_loss``: the unigram model for an LM)."""
    counts = torch.bincount(train.reshape(-1), minlength=classes).double() + 1
    top = int(counts.argmax())
    logp = (counts / counts.sum()).log()
    return {"chance_val": float((val == top).double().mean()), "chance_test": float((test == top).double().mean()),
            "chance_test_loss": float(-logp[test.reshape(-1)].mean()), "chance_loss_name": "nll",
            "chance_rule": "accuracy of always the most frequent training class/token; loss: NLL of the training "
                           "frequencies (add-one smoothed)"}


def mean_chance(train: torch.Tensor, val: torch.Tensor, test: torch.Tensor) -> dict[str, Any]:
    """Chance levels of a regressor: minus the MSE of always predicting the training mean (val, test)."""
    mean = float(train.mean())
    mse_val, mse_test = float(((val - mean) ** 2).mean()), float(((test - mean) ** 2).mean())
    return {"chance_val": -mse_val, "chance_test": -mse_test, "chance_test_loss": mse_test,
            "chance_loss_name": "mse", "chance_rule": "minus the MSE of always the training mean"}


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
    return {"zoo": ZOO_VERSION, "data": spec.data, "kind": spec.kind, "cell": spec.cell, "head": spec.head,
            "bidirectional": spec.bidirectional}


def _make_char_lm(name: str, spec: ZooSpec, cfg: dict[str, Any], seed: int, retrain: bool, progress: bool,
                  meta: dict[str, Any]) -> RNNTask:
    text = _text(spec.data)
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
                         model_cls=_lm_factory(spec), vocab_size=vocab_size, splits=splits,
                         extra={**data_key, **_arch_key(spec)}, metadata=meta)
    task.metadata.update(class_chance(splits["train"], task.eval_batch[1], task.test.targets, vocab_size))
    return task


def _make_sequence(name: str, spec: ZooSpec, cfg: dict[str, Any], seed: int, retrain: bool, progress: bool,
                   meta: dict[str, Any]) -> RNNTask:
    regress = spec.kind == "regress"
    tokens = bool(spec.emb)
    if spec.data == "digits-rows":
        splits, out = _digits_rows()
    else:
        sizes = {"train": cfg["n_train"], "val": cfg["n_val"], "test": cfg["n_test"]}
        splits = {}
        for k, size in sizes.items():
            x, y, out = synthetic(spec.data, size, cfg["seq_len"], _generator(spec.data, k), tokens)
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
                              mlp_hidden=cfg.get("mlp_hidden", 64))

    def build() -> nn.Module:
        with seeded(seed):
            return new_model()

    def train() -> tuple[nn.Module, dict[str, Any]]:
        with seeded(seed):
            model = new_model()
            with training_threads(model):
                seconds = _train_sequences(model, x_tr, y_tr, regress=regress, steps=cfg["steps"],
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
                   metadata=meta, train_loss=train_loss)


# ------------------------------------------------------------------------------------------------ command line
class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m prune_env.tasks.zoo", description="Build (train and cache) the model zoo.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    b = sub.add_parser("build", help="train every model of a split (cached ones load) and print a table")
    b.add_argument("--split", default="all", choices=["train", "validation", "all"])
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--names", nargs="+", default=None, help="only these zoo names")
    b.add_argument("--retrain", action="store_true", help="ignore cached models")
    b.add_argument("--out", default=None, help="also write the table as Markdown to this file (atomically)")
    ls = sub.add_parser("list", help="print the zoo's specs")
    ls.add_argument("--split", default="all", choices=["train", "validation", "all"])
    return p


def _provenance(argv: Sequence[str]) -> str:
    import platform
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                "prune_env"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", ""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"`python -m prune_env.tasks.zoo {' '.join(argv)}` at {commit}"
            f"{' (uncommitted changes to prune_env/)' if dirty else ''} on {platform.machine()} "
            f"{os.cpu_count()} CPUs ({platform.processor() or platform.platform()}), torch {torch.__version__}, "
            f"Python {platform.python_version()}, models trained on 1 torch thread, 1-min load "
            f"{load:.1f} at start, {time.strftime('%Y-%m-%d %H:%M:%S')}.")


def _write_atomic(path: Path, text: str) -> None:
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a results file is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(x: Any) -> str:
    return "-" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x))


#: The build flags a model ``LOW`` when its dense test score is not well above chance: a ``skill`` (share of the
#: best constant predictor's test loss removed) under this, or a test accuracy under chance + :data:`MIN_MARGIN`.
MIN_SKILL = 0.1
MIN_MARGIN = 0.05
#: The build flags a model ``SLOW`` when its training took longer than this many seconds.
MAX_TRAIN_S = 60.0


def well_above_chance(metadata: dict[str, Any]) -> bool:
    """The zoo's bar for a dense model: ``skill >= MIN_SKILL`` and, for accuracy, ``chance + MIN_MARGIN``."""
    md = metadata
    margin = MIN_MARGIN if md["chance_loss_name"] == "nll" else 0.0
    return md["skill"] >= MIN_SKILL and md["dense_test"] >= md["chance_test"] + margin


def build(names: Sequence[str], *, seed: int = 0, retrain: bool = False) -> list[dict[str, Any]]:
    """Build ``names`` (tqdm over models); returns one row per model (missing data: a row with ``error``)."""
    from tqdm.auto import tqdm

    rows = []
    bar = tqdm(names, desc="zoo", unit="model")
    for name in bar:
        bar.set_postfix_str(name.removeprefix(PREFIX))
        try:
            task = make_zoo_task(name, seed=seed, retrain=retrain, progress=False)
        except ZooDataUnavailable as e:
            rows.append({"name": name, "split": ZOO[name].split, "error": str(e)})
            continue
        md = task.metadata
        rows.append({"name": name, "split": md["split"], "kind": md["kind"], "params": md["params"],
                     "metric": md["config"].get("metric", "accuracy") if md["kind"] != "regress" else "-mse",
                     "dense_val": md["dense_val"], "dense_test": md["dense_test"], "chance_test": md["chance_test"],
                     "loss_name": md["chance_loss_name"], "test_loss": md["dense_test_loss"],
                     "chance_loss": md["chance_test_loss"], "skill": md["skill"], "ok": well_above_chance(md),
                     "train_s": md["train_time_s"], "cached": md["from_cache"]})
    bar.close()
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The build rows as a Markdown table."""
    lines = ["| name | split | kind | params | metric | dense val | dense test | chance test | test loss | "
             "chance loss | skill | train s | cached |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name'].removeprefix(PREFIX)} | {r['split']} | not built: {r['error']} "
                         "|||||||||||")
            continue
        low = "" if r["ok"] else " LOW"
        slow = " SLOW" if (r["train_s"] or 0) > MAX_TRAIN_S else ""
        lines.append(f"| {r['name'].removeprefix(PREFIX)} | {r['split']} | {r['kind']} | {r['params']:,} | "
                     f"{r['metric']} | {r['dense_val']:.4f} | {r['dense_test']:.4f} | {r['chance_test']:.4f} | "
                     f"{r['loss_name']} {r['test_loss']:.3f} | {r['chance_loss']:.3f} | {r['skill']:.2f}{low} | "
                     f"{r['train_s']:.1f}{slow} | {'yes' if r['cached'] else 'no'} |")
    return "\n".join(lines)


LEGEND = ("chance test: the test score of always predicting the most frequent training class/token (accuracy) or "
          "the training mean (-mse). test loss / chance loss: test NLL (or MSE) of the model / of the best constant "
          "predictor (training frequencies, add-one smoothed; or the training mean). skill = 1 - test loss / chance "
          f"loss (R^2 for regression). LOW: skill < {MIN_SKILL} or accuracy < chance + {MIN_MARGIN}. SLOW: training "
          f"over {MAX_TRAIN_S:.0f} s. train s: training time recorded when the model was trained (also for cached "
          "models).")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m prune_env.tasks.zoo build|list``; returns the exit code (2 on bad input, one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
        if args.command == "list":
            for name in zoo_names(None if args.split == "all" else args.split):
                s = ZOO[name]
                print(f"{name}  {s.split}  {s.kind}  data={s.data}  steps={s.steps}  "
                      f"{'available' if available(name) else 'data missing'}")
            return 0
        if args.seed < 0:
            raise _UsageError(f"--seed must be >= 0, got {args.seed}")
        names = zoo_names(None if args.split == "all" else args.split)
        if args.names:
            unknown = [n for n in args.names if n not in ZOO]
            if unknown:
                raise _UsageError(f"unknown zoo name(s) {unknown}; see `python -m prune_env.tasks.zoo list`")
            names = [n for n in names if n in args.names]
        header = _provenance(argv)
        rows = build(names, seed=args.seed, retrain=args.retrain)
    except _UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = table(rows)
    print(text)
    built = [r for r in rows if "error" not in r]
    total = sum(r["train_s"] or 0 for r in built)
    summary = (f"{len(built)} of {len(rows)} models built; total training time {total:.0f} s; "
               f"{sum(not r['ok'] for r in built)} LOW, "
               f"{sum((r['train_s'] or 0) > MAX_TRAIN_S for r in built)} SLOW.")
    print(summary)
    if args.out:
        _write_atomic(Path(args.out), f"# Model zoo build ({ZOO_VERSION})\n\n{header}\n\n{text}\n\n{summary}\n\n"
                      f"{LEGEND}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
