"""``pydoc-char``: a character-level LSTM language model on the documentation text shipped with CPython.

The text is ``pydoc_data.topics.topics`` (the help topics behind ``help()``), its values joined in sorted key
order: about 465k characters, always available offline, no download. It is cut into contiguous train/val/test
chunks (90/5/5 by default), so the held-out text is unseen prose rather than shuffled-in neighbours.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from prune_env.task import RNNTask
from prune_env.tasks.config import check_config
from prune_env.tasks.lm import build_lm_task
from prune_env.tasks.models import CharLM

NAME = "pydoc-char"

#: Defaults: about 2.5 minutes of training on 2 idle CPU cores (see docs/tasks.md for measured numbers).
DEFAULTS: dict[str, Any] = {
    "emb": 64,            # embedding size
    "hidden": 256,        # LSTM units per layer
    "layers": 2,          # stacked LSTM layers
    "steps": 500,         # Adam steps
    "seq_len": 128,       # truncated-BPTT window
    "batch": 64,          # windows per step
    "lr": 6e-3,           # peak Adam learning rate (cosine decay to lr/10); 6e-3 beat 3e-3 and 1e-2
    "val_frac": 0.05,     # contiguous validation chunk (after the training chunk)
    "test_frac": 0.05,    # contiguous test chunk (the end of the text)
    "eval_tokens": 8192,  # size of the fixed validation batch the reward scores
    "test_tokens": None,  # test tokens scored by `test` (None: the whole test split)
    "loss_tokens": 8192,  # size of the fixed training batch behind `loss`
    "metric": "accuracy",  # next-character accuracy; "nll" scores minus the mean NLL
}


def load_text() -> str:
    """The CPython help-topics text, values joined in sorted key order."""
    from pydoc_data.topics import topics

    return "".join(topics[k] for k in sorted(topics))


def make(*, seed: int = 0, retrain: bool = False, progress: bool = True, **config: Any) -> RNNTask:
    """Build the ``pydoc-char`` task (see the module docstring); config keys are those of :data:`DEFAULTS`.

    :param seed: model seed (the data split does not depend on it).
    :param retrain: ignore a cached model and train afresh.
    :param progress: show a progress bar while training.
    """
    cfg = check_config(NAME, DEFAULTS, config)
    text = load_text()
    # The vocabulary covers the whole text, so no <unk> is needed; it is tiny (about 100 characters).
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    n = ids.numel()
    n_test = int(n * cfg["test_frac"])
    n_val = int(n * cfg["val_frac"])
    n_train = n - n_val - n_test
    splits = {"train": ids[:n_train], "val": ids[n_train:n_train + n_val], "test": ids[n_train + n_val:]}
    # The text ships with the running Python, so it changes between Python versions: key the cache on it.
    fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
    return build_lm_task(preset=NAME, cfg=cfg, seed=seed, retrain=retrain, progress=progress, model_cls=CharLM,
                         vocab_size=len(chars), splits=splits, extra={"text_sha256": fingerprint},
                         metadata={"data": "pydoc_data.topics.topics", "vocab": "".join(chars),
                                   "text_sha256": fingerprint})
