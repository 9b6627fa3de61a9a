"""Replayable results: what a result needs so that it can be re-scored later, and the re-scoring itself.

A result row of ``prune-rnn bench``/``train`` carries a ``replay`` record (:func:`replay_record`): how to rebuild the
task (the spec as typed, its seed, config and code version), a hash of the dense model (:func:`model_hash`), the env
options that change a score (target, mode, granularity, criterion, max sparsity, quantization, precision, device),
the exact per-layer pruned counts (integers: units are weights, or hidden units with ``granularity="hidden_unit"``),
the bit-widths if any, and the package versions. :func:`rescore` scores such counts again, one-shot, on validation
and test, through the env's public seams (``score_counts`` and ``pruned_model``). ``prune-rnn validate`` uses both.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from prune_env.hashing import model_hash

#: Version of the ``replay`` record's layout; bump when a field changes meaning.
REPLAY_FORMAT = 1
#: The env options a replay rebuilds the env with (everything in ``PruneRNNEnv.config`` that changes a score).
ENV_KEYS = ("target_sparsity", "mode", "granularity", "criterion", "max_sparsity", "quantize", "finetune_steps",
            "precision", "reconstruct")


def package_versions() -> dict[str, str | None]:
    """Python, torch, numpy, gymnasium and prune_env versions (what a re-score may depend on)."""
    import gymnasium

    from prune_env.version import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "gymnasium": gymnasium.__version__, "prune_env": __version__}


def task_identity(task: Any, spec: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """How to rebuild ``task``: the spec as given (preset, corpus directory, zoo name or ``module:function``), its
    seed, and from ``task.metadata`` the preset, config, seed and the code versions its weights depend on."""
    from prune_env.tasks.cache import TASK_CODE_VERSION

    md = task.metadata if isinstance(getattr(task, "metadata", None), Mapping) else {}
    out = {"spec": spec, "seed": seed, "name": task.name, "preset": md.get("preset"), "config": md.get("config"),
           "metadata_seed": md.get("seed"), "task_code_version": TASK_CODE_VERSION,
           "trained_with_torch": md.get("trained_with_torch")}
    if isinstance(spec, str) and spec.startswith("zoo-"):
        from prune_env.tasks.zoo import ZOO_VERSION

        out["zoo_version"] = ZOO_VERSION
    return out


def replay_record(env: Any, counts: np.ndarray, bits: np.ndarray | None = None, *, task_spec: str | None = None,
                  task_seed: int | None = None, dense_hash: str | None = None) -> dict[str, Any]:
    """The ``replay`` record of one result: enough to rebuild ``env`` and re-score ``counts`` (and ``bits``).

    :param env: the :class:`~prune_env.PruneRNNEnv` the result came from.
    :param counts: pruned units per layer, in ``env.layer_names`` order.
    :param bits: quantize mode: bit-width per layer (``None`` otherwise).
    :param task_spec: the task as the user named it (``--task``); ``None`` for a task object passed in code.
    :param task_seed: the seed the task was built with (``--task-seed``).
    :param dense_hash: :func:`model_hash` of ``env.task.model``, if already computed (else computed here).
    """
    counts = np.asarray(counts, dtype=np.int64)
    cfg = env.config
    return {
        "format": REPLAY_FORMAT,
        "task": task_identity(env.task, task_spec, task_seed),
        "dense_hash": dense_hash or model_hash(env.task.model),
        **{k: cfg[k] for k in ENV_KEYS},
        "device": str(env.device),
        "calibration": env.operator["calibration"],  # the data-aware operators' training inputs (digest), or None
        "units": dict(zip(env.layer_names, (int(n) for n in env.numels))),
        "pruned": dict(zip(env.layer_names, (int(c) for c in counts))),
        "bits": None if bits is None else dict(zip(env.layer_names, (int(b) for b in bits))),
        "versions": package_versions(),
    }


def counts_of(replay: Mapping[str, Any], layer_names: list[str]) -> np.ndarray:
    """The pruned counts of a ``replay`` record in ``layer_names`` order.

    :raises ValueError: if the record's layers are not exactly ``layer_names``.
    """
    pruned = replay["pruned"]
    if sorted(pruned) != sorted(layer_names):
        raise ValueError(f"the replay's layers {sorted(pruned)} are not the model's {sorted(layer_names)}")
    return np.array([int(pruned[n]) for n in layer_names], dtype=np.int64)


def rescore(env: Any, counts: np.ndarray, bits: np.ndarray | dict[str, int] | None = None) -> tuple[float, float]:
    """Score ``counts`` (and ``bits``) again, one-shot: ``(val, test)``.

    Validation as the search saw it (``env.score_counts``: the env's device and precision); test as ``prune-rnn``
    reports it (``task.test`` of ``env.pruned_model``: fp32, on the task model's device). ``test`` is NaN for a task
    without ``test``.
    """
    from prune_env.task import split_score

    counts = np.asarray(counts, dtype=np.int64)
    names = env.layer_names
    if isinstance(bits, Mapping):
        bits = np.array([int(bits.get(n, 32)) for n in names], dtype=np.int64)
    val = env.score_counts(counts, bits if env.quantize else None)[0]
    allocation = {n: float(c / m) for n, c, m in zip(names, counts, env.numels)}  # counts_for gives back `counts`
    bit_map = None if bits is None or not env.quantize else dict(zip(names, (int(b) for b in bits)))
    task = env.task
    test = split_score(task.test(env.pruned_model(allocation, bit_map)), "test")[0] if task.test is not None \
        else float("nan")
    return float(val), float(test)


__all__ = ["ENV_KEYS", "REPLAY_FORMAT", "counts_of", "model_hash", "package_versions", "replay_record", "rescore",
           "task_identity"]
