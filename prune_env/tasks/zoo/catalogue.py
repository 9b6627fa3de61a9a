"""The zoo's catalogue: every model's versioned name and frozen :class:`ZooSpec`, its split, and where PTB lives.

- **Splits.** ``train`` models are for training a policy, ``validation`` models for selecting one. The splits never
  share a (data, architecture) pair; the ``pydoc-char`` preset's model and the ``custom-gru`` preset's model are
  in neither, so they stay unseen.
- **PTB** is not bundled: its directory (``train.txt``, ``valid.txt``, ``test.txt``) comes from ``path=`` or the
  environment variable ``PRUNE_RNN_PTB``. Without either, its entries raise :class:`ZooDataUnavailable` naming the
  variable, and ``zoo_names(available_only=True)`` leaves them out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ZOO_VERSION = "v1"
PREFIX = f"zoo-{ZOO_VERSION}/"
#: Environment variable naming the PTB directory (``train.txt``, ``valid.txt``, ``test.txt``).
PTB_ENV = "PRUNE_RNN_PTB"

#: ``test`` models (zoo-v2 on) are never read by any selection: they and the models outside the zoo make the final
#: transfer table.
SPLITS = ("train", "validation", "test")
KINDS = ("char-lm", "word-lm", "classify", "regress")
CELLS = ("lstm", "gru", "rnn")
LM_HEADS = ("lm", "lm-mlp")
SEQ_HEADS = ("last", "mean", "mlp", "step", "attn")
#: Synthetic and bundled data sources of the sequence tasks, with their kind.
SEQUENCE_DATA = {"digits-rows": "classify", "parity": "classify", "adding": "classify", "counting": "classify",
                 "sines": "regress", "adding-sum": "regress"}


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
    :param version: the zoo the model belongs to (``"v1"``, ``"v2"``); part of its name.
    :param in_proj: width of a ``Linear -> tanh`` input projection before the recurrent layer (0: none).
    :param proj_size: LSTM output projection (``nn.LSTM(proj_size=...)``; 0: none).
    :param tied: LMs: the head shares the embedding's weight.
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
    version: str = "v1"
    in_proj: int = 0
    proj_size: int = 0
    tied: bool = False

    @property
    def architecture(self) -> tuple[Any, ...]:
        """``(cell, layers, hidden, bidirectional, has_embedding, head)``, then whichever of input projection,
        LSTM projection and tied embedding the model has: what makes two models the same shape of network (sizes
        of the embedding or the MLP do not make a new architecture)."""
        extras = tuple(k for k in ("in_proj", "proj_size", "tied") if getattr(self, k))
        return (self.cell, self.layers, self.hidden, self.bidirectional, self.emb > 0, self.head, *extras)

    @property
    def prefix(self) -> str:
        """``"zoo-<version>/"``, the start of the model's name."""
        return f"zoo-{self.version}/"

    @property
    def pair(self) -> tuple[str, tuple[Any, ...]]:
        """``(data, architecture)``, never shared by two splits of a zoo."""
        return (self.data, self.architecture)


#: The fields a zoo-v1 spec was written with; the later ones appear in a model's metadata only when set.
V1_FIELDS = ("split", "data", "kind", "cell", "layers", "hidden", "head", "steps", "lr", "batch", "seq_len",
             "bidirectional", "emb", "mlp_hidden", "max_tokens", "max_vocab")


def spec_dict(spec: ZooSpec) -> dict[str, Any]:
    """The spec as a plain dict: the zoo-v1 fields, plus every later field that differs from its default (so a
    zoo-v1 model's recorded metadata is what it always was)."""
    import dataclasses

    out = dataclasses.asdict(spec)
    defaults = {f.name: f.default for f in dataclasses.fields(ZooSpec)}
    return {k: v for k, v in out.items() if k in V1_FIELDS or v != defaults[k]}


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
    if spec.in_proj:
        parts.append(f"in{spec.in_proj}")
    if spec.proj_size:
        parts.append(f"proj{spec.proj_size}")
    if spec.tied:
        parts.append("tied")
    return spec.prefix + "-".join(parts)


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
    # --- validation: four families of network (GRU char LM, biLSTM classifier, 3-layer tanh char LM, word
    # LSTM LM) plus one model per synthetic family, never pairing data and architecture as the train split does
    _spec("validation", "stdlib:multiprocessing", "gru", 1, 160, emb=32, steps=850, **_CHAR),
    _spec("validation", "digits-rows", "lstm", 1, 96, "mean", bidirectional=True, steps=800, seq_len=8, **_SEQ),
    _spec("validation", "stdlib:importlib", "rnn", 3, 128, emb=32, steps=900, **_CHAR),
    _spec("validation", "ptb", "lstm", 2, 96, emb=64, steps=800, **{**_WORD, "lr": 1.5e-2, "max_vocab": 3000}),
    _spec("validation", "counting", "gru", 2, 48, "mlp", mlp_hidden=32, steps=1500, seq_len=20, **_SEQ),
    _spec("validation", "sines", "gru", 2, 96, steps=1000, seq_len=32, **_SEQ),
    _spec("validation", "parity", "lstm", 2, 64, "step", emb=8, steps=1000, seq_len=16, **_SEQ),
]



def catalogue(specs: list[ZooSpec]) -> dict[str, ZooSpec]:
    """Specs by versioned name, in the order given; a duplicate name is a bug in the catalogue."""
    out: dict[str, ZooSpec] = {}
    for spec in specs:
        name = spec_name(spec)
        if name in out:
            raise RuntimeError(f"duplicate zoo name {name}")
        out[name] = spec
    return out


#: Every zoo-v1 model by versioned name, in a fixed order (train first).
ZOO: dict[str, ZooSpec] = catalogue(_SPECS)


# ------------------------------------------------------------------------------------------------ zoo-v2
# The families the unseen world has and zoo-v1 lacks: input projections before the recurrent layer, attention
# pooling, LSTMs with an output projection, tied embeddings, word LMs with a large vocabulary, 3-4 layer stacks and
# more sequence regression, beside v1's families on new data. Three splits: ``test`` models are read by no
# selection. No (data, architecture) pair is shared between splits. Every model trains well above chance
# (benchmarks/results/zoo_v2_build/): small corpora (dbm, tomllib) overfit a tied LM, and a tanh RNN that averages
# its outputs over time cannot predict the next value, so the catalogue does not use them.
def _v2(split: str, data: str, cell: str, layers: int, hidden: int, head: str | None = None, **kw: Any) -> ZooSpec:
    return _spec(split, data, cell, layers, hidden, head, version="v2", **kw)


_BIGWORD = {**_WORD, "max_vocab": 10000}
_SPECS_V2: list[ZooSpec] = [
    # --- train: character LMs (plain, input-projected, projected LSTM, tied, deep)
    _v2("train", "stdlib:collections", "lstm", 1, 128, emb=32, steps=600, **_CHAR),
    _v2("train", "stdlib:concurrent", "gru", 2, 96, emb=32, steps=600, **_CHAR),
    _v2("train", "stdlib:ctypes", "rnn", 1, 192, emb=32, steps=1200, **_CHAR),
    _v2("train", "stdlib:html", "lstm", 2, 128, emb=32, in_proj=64, steps=600, **_CHAR),
    _v2("train", "stdlib:urllib", "gru", 1, 160, emb=48, in_proj=96, steps=600, **_CHAR),
    _v2("train", "stdlib:wsgiref", "rnn", 2, 96, emb=32, in_proj=64, steps=1200, **_CHAR),
    _v2("train", "stdlib:xmlrpc", "lstm", 1, 192, emb=48, proj_size=64, steps=600, **_CHAR),
    _v2("train", "stdlib:tkinter", "lstm", 2, 128, emb=32, proj_size=48, steps=600, **_CHAR),
    _v2("train", "stdlib:lib2to3", "lstm", 1, 128, emb=128, tied=True, steps=600, **_CHAR),
    _v2("train", "stdlib:idlelib", "gru", 1, 96, emb=96, tied=True, steps=600, **_CHAR),
    _v2("train", "stdlib:encodings", "lstm", 2, 160, emb=64, proj_size=64, tied=True, steps=600, **_CHAR),
    _v2("train", "stdlib:re", "lstm", 4, 64, emb=32, steps=900, **_CHAR),
    _v2("train", "stdlib:distutils", "gru", 3, 96, emb=32, steps=700, **_CHAR),
    _v2("train", "stdlib:turtledemo", "rnn", 4, 64, emb=16, steps=1500, **_CHAR),
    _v2("train", "stdlib:email", "lstm", 2, 96, "lm-mlp", emb=32, in_proj=64, steps=700, **_CHAR),
    _v2("train", "stdlib:asyncio", "gru", 2, 128, emb=128, tied=True, steps=600, **_CHAR),
    # --- train: word LMs on PTB with a 10k vocabulary (large embedding and head)
    _v2("train", "ptb", "lstm", 1, 128, emb=128, tied=True, steps=400, **_BIGWORD),
    _v2("train", "ptb", "gru", 1, 128, emb=64, steps=400, **_BIGWORD),
    _v2("train", "ptb", "lstm", 2, 192, emb=64, proj_size=64, tied=True, steps=400, **_BIGWORD),
    # --- train: sequence classification
    _v2("train", "digits-rows", "lstm", 1, 64, "attn", steps=1000, seq_len=8, **_SEQ),
    _v2("train", "digits-rows", "gru", 1, 96, in_proj=32, steps=1000, seq_len=8, **_SEQ),
    _v2("train", "digits-rows", "lstm", 2, 96, proj_size=32, steps=1000, seq_len=8, **_SEQ),
    _v2("train", "digits-rows", "rnn", 3, 64, "mean", steps=1500, seq_len=8, **_SEQ),
    _v2("train", "digits-rows", "gru", 4, 48, "attn", bidirectional=True, steps=1000, seq_len=8, **_SEQ),
    _v2("train", "parity", "gru", 1, 64, "step", in_proj=16, steps=1000, seq_len=16, **_SEQ),
    _v2("train", "parity", "lstm", 3, 48, "step", steps=1000, seq_len=16, **_SEQ),
    _v2("train", "parity", "lstm", 1, 96, "step", proj_size=32, steps=1000, seq_len=16, **_SEQ),
    _v2("train", "adding", "gru", 2, 96, "attn", steps=1500, seq_len=16, **_SEQ),
    _v2("train", "adding", "lstm", 1, 128, in_proj=32, steps=1500, seq_len=16, **_SEQ),
    _v2("train", "adding", "lstm", 2, 96, proj_size=48, emb=16, steps=1500, seq_len=16, **_SEQ),
    _v2("train", "adding", "gru", 4, 64, steps=1500, seq_len=16, **_SEQ),
    _v2("train", "counting", "lstm", 1, 64, "attn", emb=8, steps=1500, seq_len=20, **_SEQ),
    _v2("train", "counting", "rnn", 1, 128, in_proj=32, steps=2000, seq_len=20, **_SEQ),
    _v2("train", "counting", "gru", 2, 64, "mean", bidirectional=True, in_proj=16, steps=1000, seq_len=20, **_SEQ),
    _v2("train", "counting", "lstm", 4, 48, emb=8, steps=1500, seq_len=20, **_SEQ),
    # --- train: regression (next value of noisy sines, and the sum of the marked pair as a number)
    _v2("train", "sines", "gru", 2, 64, "attn", steps=1000, seq_len=32, **_SEQ),
    _v2("train", "sines", "lstm", 1, 128, in_proj=16, steps=1000, seq_len=32, **_SEQ),
    _v2("train", "sines", "lstm", 2, 96, proj_size=32, steps=1000, seq_len=32, **_SEQ),
    _v2("train", "sines", "rnn", 1, 192, steps=1500, seq_len=32, **_SEQ),
    _v2("train", "sines", "gru", 4, 48, steps=1000, seq_len=32, **_SEQ),
    _v2("train", "sines", "lstm", 3, 64, "mlp", mlp_hidden=32, steps=1000, seq_len=32, **_SEQ),
    _v2("train", "adding-sum", "lstm", 1, 96, steps=1500, seq_len=16, **_SEQ),
    _v2("train", "adding-sum", "gru", 2, 64, "attn", steps=1500, seq_len=16, **_SEQ),
    _v2("train", "adding-sum", "rnn", 1, 128, in_proj=32, steps=2000, seq_len=16, **_SEQ),
    _v2("train", "adding-sum", "lstm", 2, 64, "mean", bidirectional=True, steps=1500, seq_len=16, **_SEQ),
    _v2("train", "adding-sum", "lstm", 1, 128, proj_size=32, steps=1500, seq_len=16, **_SEQ),
    _v2("train", "counting", "gru", 1, 256, "mlp", mlp_hidden=64, steps=1000, seq_len=20, **_SEQ),
    _v2("train", "parity", "rnn", 2, 64, "step", emb=8, steps=2000, seq_len=16, **{**_SEQ, "lr": 1e-2}),
    # --- validation: every new family at least once, on data/architecture pairs the train split does not have
    _v2("validation", "stdlib:zoneinfo", "gru", 1, 128, emb=32, in_proj=64, steps=700, **_CHAR),
    _v2("validation", "stdlib:venv", "lstm", 1, 160, emb=48, proj_size=48, steps=700, **_CHAR),
    _v2("validation", "stdlib:test", "lstm", 1, 96, emb=96, tied=True, steps=700, **_CHAR),
    _v2("validation", "stdlib:multiprocessing", "lstm", 3, 96, emb=32, steps=800, **_CHAR),
    _v2("validation", "stdlib:logging", "rnn", 2, 128, emb=32, in_proj=48, steps=1200, **_CHAR),
    _v2("validation", "stdlib:importlib", "gru", 4, 64, emb=32, steps=900, **_CHAR),
    _v2("validation", "ptb", "lstm", 1, 96, emb=96, tied=True, steps=400, **_BIGWORD),
    _v2("validation", "digits-rows", "gru", 2, 64, "attn", steps=1000, seq_len=8, **_SEQ),
    _v2("validation", "digits-rows", "lstm", 1, 128, proj_size=48, steps=1000, seq_len=8, **_SEQ),
    _v2("validation", "parity", "gru", 2, 48, "step", in_proj=16, steps=1000, seq_len=16, **_SEQ),
    _v2("validation", "adding", "lstm", 3, 64, steps=1500, seq_len=16, **_SEQ),
    _v2("validation", "counting", "gru", 1, 96, "attn", emb=8, steps=1500, seq_len=20, **_SEQ),
    _v2("validation", "sines", "lstm", 1, 96, "attn", steps=1000, seq_len=32, **_SEQ),
    _v2("validation", "sines", "gru", 1, 128, in_proj=16, steps=1000, seq_len=32, **_SEQ),
    _v2("validation", "adding-sum", "gru", 1, 96, steps=1500, seq_len=16, **_SEQ),
    _v2("validation", "adding-sum", "lstm", 3, 48, steps=1500, seq_len=16, **_SEQ),
    # --- test: read by no selection
    _v2("test", "stdlib:sqlite3", "gru", 2, 96, emb=32, steps=700, **{**_CHAR, "max_tokens": None}),
    _v2("test", "stdlib:curses", "lstm", 1, 128, emb=32, in_proj=64, steps=700, **{**_CHAR, "max_tokens": None}),
    _v2("test", "stdlib:unittest", "lstm", 2, 96, emb=96, tied=True, steps=700, **_CHAR),
    _v2("test", "stdlib:json", "rnn", 3, 96, emb=32, steps=1200, **{**_CHAR, "max_tokens": None}),
    _v2("test", "ptb", "gru", 2, 128, emb=128, tied=True, steps=400, **_BIGWORD),
    _v2("test", "digits-rows", "lstm", 2, 64, "attn", bidirectional=True, steps=1000, seq_len=8, **_SEQ),
    _v2("test", "adding", "gru", 1, 128, in_proj=32, steps=1500, seq_len=16, **_SEQ),
    _v2("test", "sines", "lstm", 2, 128, proj_size=32, steps=1000, seq_len=32, **_SEQ),
    _v2("test", "counting", "lstm", 4, 64, "mean", emb=8, steps=1500, seq_len=20, **_SEQ),
    _v2("test", "adding-sum", "rnn", 2, 96, "attn", steps=2000, seq_len=16, **_SEQ),
]

#: Every zoo-v2 model by versioned name, in a fixed order (train, validation, test).
ZOO_V2: dict[str, ZooSpec] = catalogue(_SPECS_V2)
#: Each zoo by version. A model's name starts with ``zoo-<version>/``.
ZOOS: dict[str, dict[str, ZooSpec]] = {"v1": ZOO, "v2": ZOO_V2}


def lookup(name: str) -> ZooSpec | None:
    """The spec of a versioned zoo name (any version), or ``None``."""
    for zoo in ZOOS.values():
        if name in zoo:
            return zoo[name]
    return None


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
    """Whether the data of zoo model ``name`` (any version) is on this machine (only PTB may be missing)."""
    if lookup(name).data != "ptb":
        return True
    try:
        ptb_dir()
    except ZooDataUnavailable:
        return False
    return True


def zoo_names(split: str | None = None, available_only: bool = False, version: str = "v1") -> list[str]:
    """A zoo's model names, in its fixed order.

    :param split: ``"train"``, ``"validation"``, ``"test"`` (zoo-v2) or ``None`` for all.
    :param available_only: leave out models whose data is missing here (the PTB word LMs when neither
        ``$PRUNE_RNN_PTB`` nor a path is given), so a loop over the result never fails for want of data.
    :param version: which zoo, a key of :data:`ZOOS` (``"v1"``, the default, or ``"v2"``).
    :raises ValueError: for an unknown split or version.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"zoo_names: unknown `split` {split!r}; expected one of {SPLITS} or None")
    if version not in ZOOS:
        raise ValueError(f"zoo_names: unknown `version` {version!r}; expected one of {sorted(ZOOS)}")
    names = [n for n, s in ZOOS[version].items() if split is None or s.split == split]
    return [n for n in names if available(n)] if available_only else names

