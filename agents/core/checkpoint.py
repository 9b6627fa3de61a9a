"""Search checkpoints: sealed files, search fingerprints and the global RNG state.

Long searches can be checkpointed and resumed (:func:`save_checkpoint`, :func:`load_checkpoint`): the evaluation
cap's count, the best-so-far and its curve (:meth:`agents.core.cap.EvalCap.state_dict`), the env's ``np_random``
and the global RNGs travel with the agent's own state, so the evaluation cap counts across an interruption.

A checkpoint is a *sealed* file (:func:`write_sealed`, :func:`read_sealed`): the content is stored as bytes under
its SHA-256, so any changed byte is caught, and everything is read back with ``torch.load(weights_only=True)``:
tensors and plain values only, no code is unpickled. A *fingerprint* (:func:`search_fingerprint`) says what makes
a search the same search, so a checkpoint is never resumed by a different one.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import random
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from prune_env.io import atomic_save_torch

#: What :func:`save_checkpoint` writes in ``"format"`` (and :func:`load_checkpoint` expects), and its version.
CHECKPOINT_FORMAT = "prune-rnn-gym search checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A search checkpoint that cannot be resumed: unreadable, corrupted, or written by a different search."""


def check_checkpoint_path(name: str, path: Any) -> str | None:
    """``path`` as a string (``None`` stays ``None``); :raises ValueError: naming ``name`` unless it is a path
    whose directory exists and that is not itself a directory."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"`{name}` must be a file path (str) or None, got {path!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"`{name}`: the directory {folder!r} of {path!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"`{name}` must be a file path, got the directory {path!r}")
    return path


def search_fingerprint(env: gym.Env, agent: str, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    """What makes a search the same search: the agent, its evaluation cap and seed, the options that change its
    result, and the task and env it runs on (task name, dense validation score, layer names and sizes, a hash of
    the model's weights, the env's settings and target). Plain values only.

    :param env: the capped env (:class:`~agents.core.cap.EvalCap`).
    :param agent: the agent's name.
    :param seed: the search's seed.
    :param options: the agent's options that change its result (not where it logs or saves).
    """
    base = env.unwrapped
    digest = hashlib.sha256()
    for name, t in base.task.model.state_dict().items():
        digest.update(name.encode())
        digest.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                      if t.numel() else b"")
    settings = {k: v for k, v in base.config.items() if k not in ("task", "task_kwargs", "device", "render_mode")}
    settings["target_sparsity"] = base.target_sparsity
    return {"agent": agent, "max_evals": int(env.max_evals), "seed": int(seed), "options": _plain(options),
            "task": str(base.task.name), "dense_score": float(base.dense_score),
            "layer_names": list(base.layer_names), "numels": [int(n) for n in base.numels],
            "model_sha256": digest.hexdigest(), "env": _plain(settings)}


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists, NumPy scalars and arrays as Python values (what ``torch.load`` with
    ``weights_only=True`` reads back and ``==`` compares)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def global_rng_state() -> dict[str, Any]:
    """Python's, NumPy's (legacy global) and torch's CPU RNG states as plain values and tensors."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {"python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "torch": torch.get_rng_state()}


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`global_rng_state` recorded."""
    py, npy = state["python"], state["numpy"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), int(npy["pos"]),
                         int(npy["has_gauss"]), float(npy["cached_gaussian"])))
    torch.set_rng_state(state["torch"])


def save_checkpoint(path: str, fingerprint: dict[str, Any], cap: Any, agent_state: dict[str, Any],
                    evals: int | None = None) -> None:
    """Write a search checkpoint to ``path`` atomically: a temporary file in the same directory, flushed to disk,
    then renamed over ``path``; a crash at any point leaves the previous checkpoint (or none) in place.

    :param path: the checkpoint file.
    :param fingerprint: :func:`search_fingerprint` of the search.
    :param cap: the search's capped env, an :class:`~agents.core.cap.EvalCap` (its count, tracker and
        ``np_random``).
    :param agent_state: the agent's own state: tensors, state dicts, plain values (no objects: it is read back
        with ``torch.load(weights_only=True)``).
    :param evals: the evaluations the search has recorded; default ``cap.used`` (an agent that counts them
        elsewhere, like ``ppo`` with its env copies, passes its own count).
    """
    evals = cap.used if evals is None else int(evals)
    blob = {"fingerprint": fingerprint, "evals": evals, "cap": cap.state_dict(), "global_rng": global_rng_state(),
            "agent": agent_state}
    write_sealed(path, blob, CHECKPOINT_FORMAT, evals=evals)


def write_sealed(path: str | os.PathLike, blob: dict[str, Any], fmt: str, **header: Any) -> None:
    """Write ``blob`` (tensors and plain values) to ``path`` atomically, sealed under its SHA-256 and marked with
    ``fmt`` and :data:`CHECKPOINT_VERSION` (``header``: more plain values readable without unsealing).

    ``torch.load`` does not check the zip's CRCs: the content goes in as bytes under its SHA-256, so that any changed
    byte is caught by :func:`read_sealed`.
    """
    buf = io.BytesIO()
    torch.save(blob, buf)
    payload = buf.getvalue()
    outer = {"format": fmt, "version": CHECKPOINT_VERSION, **header, "sha256": hashlib.sha256(payload).hexdigest(),
             "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}
    atomic_save_torch(outer, path)


def load_checkpoint(path: str, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (as :func:`save_checkpoint` wrote it), or ``None`` if there is no file there.

    Read with ``torch.load(weights_only=True)``: tensors and plain values only, no code is unpickled.

    :param path: the checkpoint file.
    :param fingerprint: :func:`search_fingerprint` of the search that wants to resume.
    :raises CheckpointError: if the file is unreadable or corrupted, is not a search checkpoint, or was written by
        a different search (the message names what differs).
    """
    if not os.path.exists(path):
        return None
    blob = read_checkpoint(path)
    saved = blob["fingerprint"]
    if isinstance(saved, dict) and "budget" in saved and "max_evals" not in saved:  # the cap's former name
        saved = {("max_evals" if k == "budget" else k): v for k, v in saved.items()}
    diff = differences(saved, fingerprint)
    if diff:
        raise CheckpointError(f"checkpoint {path!r} was written by a different search ({'; '.join(diff)}); pass "
                              "the same agent, max_evals, seed, options, task and env to resume it, or another "
                              "checkpoint path to start afresh")
    return blob


def read_checkpoint(path: str) -> dict[str, Any]:
    """The content of the checkpoint at ``path``: ``fingerprint``, ``evals`` (evaluations it records), ``cap``,
    ``global_rng``, ``agent``. Read with ``torch.load(weights_only=True)``: no code is unpickled.

    :raises CheckpointError: if the file is unreadable, corrupted (its SHA-256 does not match) or not a checkpoint.
    """
    return read_sealed(path, CHECKPOINT_FORMAT, ("fingerprint", "evals", "cap", "global_rng", "agent"))


def read_sealed(path: str | os.PathLike, fmt: str, required: tuple[str, ...]) -> dict[str, Any]:
    """What :func:`write_sealed` wrote to ``path`` as ``fmt``, with the ``required`` keys. Read with
    ``torch.load(weights_only=True)``: no code is unpickled.

    :raises CheckpointError: if the file is unreadable, corrupted (its SHA-256 does not match), not a ``fmt``, of
        another version, or without a required key.
    """
    path = os.fspath(path)

    def unreadable(e: BaseException) -> CheckpointError:
        return CheckpointError(f"checkpoint {path!r} is unreadable (corrupted or not a checkpoint): "
                               f"{type(e).__name__}: {e}")

    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad magic, a pickle that is not plain data...
        raise unreadable(e) from None
    if not isinstance(outer, dict) or outer.get("format") != fmt:
        raise CheckpointError(f"{path!r} is not a {fmt}")
    if outer.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path!r} has version {outer.get('version')!r}; this code reads version "
                              f"{CHECKPOINT_VERSION}")
    payload = outer.get("payload")
    if not isinstance(payload, torch.Tensor) or payload.dtype != torch.uint8:
        raise CheckpointError(f"checkpoint {path!r} is incomplete (no payload)")
    data = payload.numpy().tobytes()
    if hashlib.sha256(data).hexdigest() != outer.get("sha256"):
        raise CheckpointError(f"checkpoint {path!r} is corrupted: its content does not match its SHA-256")
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise unreadable(e) from None
    missing = [k for k in required if not isinstance(blob, dict) or k not in blob]
    if missing:
        raise CheckpointError(f"checkpoint {path!r} is incomplete (no {missing})")
    return blob


def differences(saved: Any, now: Any, where: str = "") -> list[str]:
    """Human-readable differences between two fingerprints (the dense score compared to a relative 1e-9)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for k in sorted(set(saved) | set(now), key=str):
            key = f"{where}.{k}" if where else str(k)
            if k not in saved or k not in now:
                out.append(f"{key}: {saved.get(k, '<absent>')!r} in the checkpoint, {now.get(k, '<absent>')!r} now")
            else:
                out += differences(saved[k], now[k], key)
        return out
    if isinstance(saved, float) and isinstance(now, float) and where == "dense_score":
        same = math.isclose(saved, now, rel_tol=1e-9, abs_tol=1e-12)
    else:
        same = saved == now
    if same:
        return []
    shown = (lambda v: f"{str(v)[:80]}...") if isinstance(saved, list) else repr
    return [f"{where}: {shown(saved)} in the checkpoint, {shown(now)} now"]

