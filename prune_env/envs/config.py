"""The env's configuration: defaults, merging (keyword arguments, then an RLlib-style ``config`` dict) and checks."""

from __future__ import annotations

from typing import Any

from prune_env.checks import check_choice, check_int, check_number
from prune_env.compression.quantize import METHODS
from prune_env.devices import PRECISIONS
from prune_env.pruning.analysis import GRANULARITIES
from prune_env.pruning.criteria import CRITERIA
from prune_env.pruning.reconstruction import check_reconstruct

MODES = ("joint", "sequential")

#: Every key of ``PruneRNNEnv.config`` with its default.
DEFAULTS: dict[str, Any] = {
    "task": "digits", "target_sparsity": None, "mode": "joint", "size_penalty": 0.5, "criterion": "magnitude",
    "max_sparsity": 0.98, "device": None, "render_mode": None, "task_kwargs": None, "granularity": "unstructured",
    "quantize": False, "finetune_steps": 0, "precision": "fp32", "reconstruct": None,
    "strict_coverage": False,
}


def env_config(arguments: dict[str, Any], config: dict[str, Any] | None) -> dict[str, Any]:
    """:data:`DEFAULTS`, then the keyword ``arguments``, then ``config`` (whose entries win), checked and normalised
    (``quantize=True`` becomes ``"linear"``, ``False`` ``None``; ``reconstruct`` ``"none"``/``False`` ``None``;
    numbers become floats and ints).

    :raises ValueError: naming the first bad entry and what it expects (``target_sparsity`` is checked by the env,
        which knows the layers).
    """
    cfg = {**DEFAULTS, **arguments}
    unknown = set(config or {}) - set(cfg)
    if unknown:
        raise ValueError(f"`config` has unknown keys {sorted(unknown)}; valid keys: {sorted(cfg)}")
    cfg.update(config or {})
    check_choice("mode", cfg["mode"], MODES)
    check_choice("criterion", cfg["criterion"], CRITERIA)
    check_choice("granularity", cfg["granularity"], GRANULARITIES)
    check_choice("render_mode", cfg["render_mode"], (None, "ansi"))
    check_choice("precision", cfg["precision"], tuple(PRECISIONS))
    cfg["max_sparsity"] = check_number("max_sparsity", cfg["max_sparsity"], 0.0, 1.0, low_open=True)
    cfg["size_penalty"] = check_number("size_penalty", cfg["size_penalty"], 0.0)
    cfg["finetune_steps"] = check_int("finetune_steps", cfg["finetune_steps"], 0)
    cfg["reconstruct"] = check_reconstruct(cfg["reconstruct"])
    if not isinstance(cfg["strict_coverage"], bool):
        raise ValueError(f"`strict_coverage` must be True or False, got {cfg['strict_coverage']!r}")
    q = cfg["quantize"]
    if q not in (False, True, None) and q not in METHODS:
        raise ValueError(f"`quantize` must be False, True (= 'linear') or one of {METHODS}, got {q!r}")
    cfg["quantize"] = "linear" if q is True else (q or None)
    if cfg["quantize"] and cfg["granularity"] != "unstructured":
        raise ValueError("`quantize` needs granularity='unstructured' (bit-widths are chosen per weight tensor)")
    return cfg
