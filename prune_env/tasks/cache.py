"""On-disk cache of the built-in tasks' trained dense models.

A dense model is trained on first use and its weights saved under :func:`cache_dir`, keyed by everything that
determines the weights (task name, full config, seed, torch version, :data:`TASK_CODE_VERSION` and any data
fingerprint the task adds). Writes are atomic, so a crash or a concurrent writer never leaves a half-written file
under the final name; an unreadable file is retrained with a warning instead of failing. Each entry records its
key and the SHA-256 of its weights (:func:`prune_env.hashing.model_hash`): an entry renamed to another key or with
edited weights is unreadable. Inside :func:`no_training` nothing is trained or written: a missing or unreadable
entry raises :class:`CacheMissError`.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune_env.io import atomic_save_torch
from prune_env.task import TaskError

#: Bump whenever a change to the built-in tasks' code changes the weights they train (data pipeline, model,
#: training loop), so stale cache entries are not reused.
TASK_CODE_VERSION = 1

ENV_VAR = "PRUNE_RNN_CACHE"

_NO_TRAINING: contextvars.ContextVar[bool] = contextvars.ContextVar("prune_rnn_no_training", default=False)


class CacheMissError(TaskError):
    """Inside :func:`no_training`: the model is not in the cache (or its entry is unreadable), and may not be
    trained."""


@contextlib.contextmanager
def no_training() -> Iterator[None]:
    """Within this block :func:`load_or_train` only reads the cache: it trains nothing and writes nothing, and a
    missing, unreadable or tampered entry (or ``retrain=True``) raises :class:`CacheMissError`."""
    token = _NO_TRAINING.set(True)
    try:
        yield
    finally:
        _NO_TRAINING.reset(token)


def cache_dir() -> Path:
    """The cache directory: ``$PRUNE_RNN_CACHE``, else ``$XDG_CACHE_HOME/prune-rnn-gym``, else
    ``~/.cache/prune-rnn-gym``. Not created here."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "prune-rnn-gym"


def cache_key(name: str, config: dict[str, Any], seed: int, extra: dict[str, Any] | None = None) -> str:
    """Hex digest identifying one trained model.

    :param name: preset name.
    :param config: the full, resolved training config (JSON-serialisable).
    :param seed: the training seed.
    :param extra: anything else the weights depend on, e.g. a data fingerprint.
    """
    blob = json.dumps({"task": name, "config": config, "seed": seed, "torch": torch.__version__,
                       "code": TASK_CODE_VERSION, "extra": extra or {}}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_path(name: str, key: str) -> Path:
    """Where the model with ``key`` is stored."""
    return cache_dir() / f"{name}-{key[:20]}.pt"


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (:func:`prune_env.io.atomic_save_torch`)."""
    atomic_save_torch(obj, path)


def load_or_train(name: str, config: dict[str, Any], seed: int, *,
                  build: Callable[[], nn.Module],
                  train: Callable[[], tuple[nn.Module, dict[str, Any]]],
                  retrain: bool = False,
                  extra: dict[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any], bool]:
    """Return a trained model from the cache, training (and caching) it when needed.

    :param name: preset name.
    :param config: full training config, part of the key.
    :param seed: training seed, part of the key.
    :param build: makes a fresh, untrained model of the right shape to load cached weights into.
    :param train: trains a model; returns ``(model, info)`` where ``info`` is a JSON-like dict (training time,
        dense scores) stored alongside the weights.
    :param retrain: ignore any cached entry and train afresh (the new weights replace the old entry).
    :param extra: further key material, e.g. a data fingerprint.
    :returns: ``(model, info, from_cache)``; ``info`` also gets ``cache_path``.
    """
    from prune_env.hashing import model_hash

    key = cache_key(name, config, seed, extra)
    path = cache_path(name, key)
    cache_only = _NO_TRAINING.get()
    if retrain and cache_only:
        raise CacheMissError(f"{name}: retraining is not allowed here (it would overwrite the cached model)")
    problem = "not cached"
    if not retrain and path.exists():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            model = build()
            model.load_state_dict(payload["state_dict"])
            if payload.get("key", key) != key:
                raise ValueError("the entry was written for another key (a renamed or copied file)")
            if payload.get("sha256", model_hash(model)) != model_hash(model):
                raise ValueError("its weights do not match their recorded SHA-256")
            info = dict(payload["info"])
            info["cache_path"] = str(path)
            info["model_hash"] = model_hash(model)
            return model, info, True
        except Exception as e:  # any unreadable/mismatched file means: retrain, never crash
            problem = f"unreadable ({type(e).__name__}: {e})"
            if not cache_only:
                warnings.warn(f"prune-rnn-gym: cached model {path} is {problem}; retraining it", RuntimeWarning,
                              stacklevel=3)
    if cache_only:
        raise CacheMissError(f"the dense model of {name} (seed {seed}) is {problem} in the cache {path}; training it "
                             "is not allowed here")
    model, info = train()
    # Plain JSON types only, so the entry loads under torch.load(weights_only=True).
    info = json.loads(json.dumps(info, default=str))
    try:
        atomic_save({"state_dict": model.state_dict(), "info": info, "key": key, "sha256": model_hash(model)}, path)
    except OSError as e:  # a read-only or full disk should cost a retrain next time, not the run
        warnings.warn(f"prune-rnn-gym: could not cache the trained model at {path} ({e}); set "
                      f"{ENV_VAR} to a writable directory to keep it", RuntimeWarning, stacklevel=3)
    info["cache_path"] = str(path)
    info["model_hash"] = model_hash(model)
    return model, info, False
