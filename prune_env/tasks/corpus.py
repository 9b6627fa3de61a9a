"""``corpus``: a word- or character-level LSTM language model on your own text corpus.

The directory must follow the PTB / WikiText layout: ``train.txt``, ``valid.txt`` and ``test.txt``. Word level
follows the usual recipe (pytorch/examples ``word_language_model``): whitespace tokens, an ``<eos>`` token after
every line, the vocabulary taken from the training text, and ``<unk>`` for anything unseen. Character level reads
the raw text (newlines included) with the training text's characters as vocabulary plus one ``<unk>`` id.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from prune_env.task import RNNTask
from prune_env.tasks.config import check_config
from prune_env.tasks.lm import build_lm_task
from prune_env.tasks.models import CharLM, WordLM

NAME = "corpus"
FILES = ("train.txt", "valid.txt", "test.txt")
EOS, UNK = "<eos>", "<unk>"

_COMMON: dict[str, Any] = {
    "path": None,              # the corpus directory (required)
    "level": "word",           # "word" or "char"
    "max_train_tokens": None,  # use only the first N training tokens (None: all); the vocabulary comes from them
    "max_vocab": None,         # word level: keep the N most frequent words, the rest become <unk>
    "eval_tokens": 8192,       # size of the fixed validation batch the reward scores
    "test_tokens": 65536,      # test tokens scored by `test` (None: the whole test split)
    "loss_tokens": 8192,       # size of the fixed training batch behind `loss`
    "metric": "accuracy",      # next-token accuracy; "nll" scores minus the mean NLL (perplexity is always in info)
}
#: Word-level defaults: the "small" PTB model size (2x200), a few minutes on 2 CPU cores.
WORD_DEFAULTS: dict[str, Any] = {**_COMMON, "emb": 200, "hidden": 200, "layers": 2, "steps": 1000,
                                 "seq_len": 35, "batch": 32, "lr": 3e-3}
#: Character-level defaults: the ``pydoc-char`` model size.
CHAR_DEFAULTS: dict[str, Any] = {**_COMMON, "emb": 64, "hidden": 256, "layers": 2, "steps": 500,
                                 "seq_len": 128, "batch": 64, "lr": 6e-3}
DEFAULTS = WORD_DEFAULTS


def check_path(path: Any) -> Path:
    """Resolve the corpus directory.

    :raises ValueError: naming ``path`` and the expected files, when the directory or a file is missing.
    """
    if path is None:
        raise ValueError(f"make_task({NAME!r}): `path` is required: a directory holding {', '.join(FILES)} "
                         "(the PTB / WikiText layout)")
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"make_task({NAME!r}): `path` must be a str or os.PathLike directory, got "
                         f"{type(path).__name__}")
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"make_task({NAME!r}): `path` {str(path)!r} is not a directory; expected a directory "
                         f"holding {', '.join(FILES)}")
    missing = [f for f in FILES if not (root / f).is_file()]
    if missing:
        raise ValueError(f"make_task({NAME!r}): `path` {str(path)!r} lacks {', '.join(missing)}; expected "
                         f"{', '.join(FILES)} (the PTB / WikiText layout)")
    return root


def _read_words(file: Path, limit: int | None = None) -> list[str]:
    """Whitespace tokens with ``<eos>`` after each line; stops after ``limit`` tokens."""
    out: list[str] = []
    with open(file, encoding="utf-8", errors="replace") as f:
        for line in f:
            out.extend(line.split())
            out.append(EOS)
            if limit is not None and len(out) >= limit:
                return out[:limit]
    return out


def _read_chars(file: Path, limit: int | None = None) -> str:
    with open(file, encoding="utf-8", errors="replace") as f:
        return f.read(limit) if limit is not None else f.read()


def load_corpus(root: Path, level: str, max_train_tokens: int | None, max_vocab: int | None
                ) -> tuple[list[str], dict[str, torch.Tensor]]:
    """Tokenise the three files.

    :returns: ``(vocab, {"train", "val", "test": LongTensor})``; ids index ``vocab``.
    """
    if level == "word":
        train = _read_words(root / "train.txt", max_train_tokens)
        counts = Counter(train)
        # Frequency order (ties alphabetical) makes the vocabulary deterministic and lets max_vocab keep the top.
        words = sorted((w for w in counts if w not in (EOS, UNK)), key=lambda w: (-counts[w], w))
        if max_vocab is not None:
            words = words[:max(max_vocab - 2, 0)]
        vocab = [EOS, UNK, *words]
        seqs = {"train": train, "val": _read_words(root / "valid.txt"), "test": _read_words(root / "test.txt")}
    else:
        train_text = _read_chars(root / "train.txt", max_train_tokens)
        vocab = [*sorted(set(train_text)), UNK]
        seqs = {"train": train_text, "val": _read_chars(root / "valid.txt"),
                "test": _read_chars(root / "test.txt")}
    lookup = {t: i for i, t in enumerate(vocab)}
    unk = lookup[UNK]
    splits = {k: torch.tensor([lookup.get(t, unk) for t in s], dtype=torch.long) for k, s in seqs.items()}
    return vocab, splits


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make(*, seed: int = 0, retrain: bool = False, progress: bool = True, **config: Any) -> RNNTask:
    """Build the ``corpus`` task. ``path=`` is required; other keys are those of :data:`WORD_DEFAULTS`, with
    :data:`CHAR_DEFAULTS` as the defaults when ``level="char"``.

    :param seed: model seed (the data split is the corpus's own).
    :param retrain: ignore a cached model and train afresh.
    :param progress: show a progress bar while training.
    """
    level = config.get("level", "word")
    if level not in ("word", "char"):
        raise ValueError(f"make_task({NAME!r}): config `level` must be 'word' or 'char', got {level!r}")
    cfg = check_config(NAME, WORD_DEFAULTS if level == "word" else CHAR_DEFAULTS, config)
    root = check_path(cfg["path"])
    cfg["path"] = str(root)
    vocab, splits = load_corpus(root, level, cfg["max_train_tokens"], cfg["max_vocab"])
    # The files may change under the same path: key the cache on their content too (not their modification times,
    # which a copy, a checkout or a remount changes without changing a byte, costing a retrain).
    stats = {f: _sha256(root / f) for f in FILES}
    unk_rate = {k: round(float((v == vocab.index(UNK)).float().mean()), 4) for k, v in splits.items()}
    return build_lm_task(preset=NAME, cfg=cfg, seed=seed, retrain=retrain, progress=progress,
                         model_cls=WordLM if level == "word" else CharLM, vocab_size=len(vocab), splits=splits,
                         extra={"files": stats}, metadata={"data": str(root), "level": level,
                                                           "unk_rate": unk_rate})
