"""Checking the presets' configs and seeds, and folding training facts into a task's metadata."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prune_env.checks import check_int, check_number

#: Config values that must be positive integers / positive floats when a preset declares them.
_POSITIVE_INTS = {"hidden", "layers", "emb", "steps", "seq_len", "batch", "epochs", "eval_tokens",
                  "loss_tokens", "loss_samples", "max_train_tokens", "max_vocab", "test_tokens"}
_POSITIVE_FLOATS = {"lr"}


def check_config(preset: str, defaults: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``config`` over ``defaults`` after checking the keys and the obvious value ranges.

    :param preset: preset name, for error messages.
    :param defaults: every valid key with its default.
    :param config: the user's overrides.
    :raises ValueError: on an unknown key (listing the valid ones) or an out-of-range value.
    """
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(f"make_task({preset!r}): unknown config key(s) {unknown}; valid keys are "
                         f"{sorted(defaults)}")
    cfg = {**defaults, **config}
    for k, v in cfg.items():
        try:
            if k in _POSITIVE_INTS and not (v is None and defaults[k] is None):
                cfg[k] = check_int(k, v, 1)  # numpy ints hash and serialise like Python ints
            if k in _POSITIVE_FLOATS:
                cfg[k] = check_number(k, v, 0.0, low_open=True)
        except ValueError as e:
            none = " (or None)" if defaults.get(k) is None else ""
            raise ValueError(f"make_task({preset!r}): config {e}{none}") from None
    for k in ("val_frac", "test_frac"):
        if k in cfg:
            try:
                check_number(k, cfg[k], 0.0, 0.5, low_open=True, high_open=True)
            except ValueError as e:
                raise ValueError(f"make_task({preset!r}): config {e} (a fraction)") from None
    return cfg


def check_seed(seed: Any) -> int:
    """:raises ValueError: unless ``seed`` is a non-negative int."""
    try:
        return check_int("seed", seed, 0)
    except ValueError as e:
        raise ValueError(f"make_task: {e}") from None


def finish_metadata(metadata: dict[str, Any], info: Mapping[str, Any], from_cache: bool) -> dict[str, Any]:
    """Fold the training-time facts stored with the weights into a task's ``metadata``."""
    val, test = info.get("dense_val", {}), info.get("dense_test", {})
    metadata.update({
        "dense_val": val.get("score"), "dense_test": test.get("score"),
        "dense_val_metrics": dict(val), "dense_test_metrics": dict(test),
        "train_time_s": info.get("train_time_s"), "trained_with_torch": info.get("torch"),
        "from_cache": from_cache, "cache_path": info.get("cache_path"), "model_hash": info.get("model_hash"),
    })
    return metadata
