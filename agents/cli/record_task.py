"""The task a results file names, rebuilt without running code the file names.

A results file (a bench's ``results.json``, a train's ``result.json``) records how its task was built: the spec the
user typed (``--task``), its seed and, for the presets, the preset, config and seed that determine the weights. The
file is data, so what it names is only ever matched against what is installed:

- a preset (with its recorded config: knobs of the preset only, never ``retrain``), a zoo model, a corpus directory,
  or an alias of :data:`prune_env.tasks.SPEC_ALIASES` (a factory since moved into the package) is rebuilt from the
  installed code;
- a ``module:function`` factory is imported only when the user names that same spec on the command line
  (``--task module:function``): the user's word, not the file's. The current directory is not put on ``sys.path``
  for it, so a ``.py`` file shipped inside a downloaded run directory is never imported by validating from there.

Unless ``train_missing`` is given, a preset's dense model must already be in the cache: nothing is trained and
nothing is written (:func:`prune_env.tasks.cache.no_training`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

#: ``make_task`` arguments a recorded config may not carry (they are not knobs of the model).
NOT_CONFIG = ("retrain", "seed", "progress", "name")


class RecordTaskError(ValueError):
    """The task a results file names cannot be rebuilt here (one line, exit code 2 from the CLI)."""


def task_plan(spec: Any, seed: Any, preset: Any = None, config: Any = None, metadata_seed: Any = None) -> dict:
    """How to rebuild a recorded task, as plain data: ``{"preset", "config", "seed"}`` for a built-in preset (what
    determines its weights), else ``{"spec", "seed"}``.

    :raises RecordTaskError: for a record naming neither, or with a seed that is not an int.
    """
    from agents.cli.common import is_factory_spec
    from prune_env.tasks import PRESETS

    factory = isinstance(spec, str) and is_factory_spec(spec)
    if isinstance(preset, str) and preset in PRESETS and isinstance(config, dict) and not factory:
        return {"preset": preset, "config": config, "seed": _seed(metadata_seed if metadata_seed is not None
                                                                   else seed)}
    if not isinstance(spec, str) or not spec:
        raise RecordTaskError("a row names no task spec and no preset to rebuild the task from")
    return {"spec": spec, "seed": _seed(seed)}


def plan_key(how: Mapping[str, Any]) -> tuple:
    """A hashable key of a plan (one task per distinct plan)."""
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in how.items()))


def build_recorded_task(how: Mapping[str, Any], *, trusted_spec: str | None = None,
                        train_missing: bool = False) -> Any:
    """The task of a plan from :func:`task_plan`, rebuilt from installed code only.

    :param how: the plan.
    :param trusted_spec: the ``--task`` the user typed: a ``module:function`` plan with exactly this spec is imported
        (from ``sys.path`` as it is; the current directory is not added).
    :param train_missing: allow training (and caching) a preset's dense model that is not in the cache.
    :raises RecordTaskError: for a factory the user did not name, an unknown preset or alias, a config with a key
        that is not a knob, or a dense model missing from the cache without ``train_missing``.
    """
    from agents.cli.common import CLIError, is_factory_spec, one_line, resolve_cli_task
    from prune_env.tasks import TaskError, make_task, resolve_spec, resolve_task
    from prune_env.tasks.cache import no_training

    guard = contextlib.nullcontext() if train_missing else no_training()
    try:
        with guard:
            if "preset" in how:
                config = how["config"]
                bad = sorted(k for k in config if not isinstance(k, str) or k in NOT_CONFIG)
                if bad:
                    raise RecordTaskError(f"the recorded config of preset {how['preset']!r} names {bad}, which are not "
                                          "config knobs; refusing it")
                return make_task(how["preset"], seed=how["seed"], progress=False, **config)
            spec = how["spec"]
            if spec == trusted_spec and is_factory_spec(spec):
                return resolve_cli_task(spec, how["seed"], False, add_cwd=False)
            try:
                name, kwargs = resolve_spec(spec)
            except TaskError as e:
                hint = f"; if you trust it, name it yourself: --task {spec}" if is_factory_spec(spec) else ""
                raise RecordTaskError(f"task {spec!r} is not imported: {one_line(e)}{hint}") from None
            return resolve_task(name, seed=how["seed"], progress=False, **kwargs)
    except RecordTaskError:
        raise
    except (TaskError, CLIError, ValueError, TypeError, OSError) as e:
        more = " (pass --train-missing to train and cache it)" if "not allowed here" in str(e) else ""
        raise RecordTaskError(f"cannot rebuild task {dict(how)}: {one_line(e)}{more}") from None


def _seed(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RecordTaskError(f"a recorded task seed must be a non-negative int, got {value!r}")
    return value


__all__ = ["NOT_CONFIG", "RecordTaskError", "build_recorded_task", "plan_key", "task_plan"]
