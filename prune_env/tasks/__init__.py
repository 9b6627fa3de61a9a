"""Built-in tasks: trained recurrent networks ready to prune.

``make_task("digits")`` returns an :class:`~prune_env.task.RNNTask` whose dense model was trained on first use and
cached (see :mod:`prune_env.tasks.cache`); later calls load it in a fraction of a second. All presets are
structured tasks (``eval_batch`` + ``metric``) and fully determined by their seed and config.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from prune_env.task import RNNTask, TaskError

#: Preset name -> one-line description.
PRESETS: dict[str, str] = {
    "digits": "sklearn 8x8 digits read row by row; 2x64 LSTM classifier; accuracy ~0.97; trains in seconds (CI)",
    "pydoc-char": "CPython help-topics text (~465k chars); 2x256 char LSTM LM; next-char accuracy ~0.67; ~2.5 min CPU",
    "corpus": "your PTB/WikiText-style dir (path=...); word- or char-level LSTM LM; next-token accuracy",
    "custom-gru": "digits read column by column; Linear-biGRU(64)-mean-Linear classifier; accuracy ~0.97; seconds",
}

#: Task specs that results files recorded for factories since moved into the package -> (preset, config). A spec
#: found here is rebuilt from the installed preset: nothing named by a file is imported. ``$PRUNE_RNN_PTB`` stands
#: for the PTB directory (the ``path`` of the corpus preset), read when the spec is resolved.
SPEC_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "benchmarks.gru_task:make": ("custom-gru", {}),
    "benchmarks.ptb_task:make": ("corpus", {"path": "$PRUNE_RNN_PTB", "steps": 6000}),
}


def _builder(name: str) -> Callable[..., RNNTask]:
    # Imported lazily so `import prune_env.tasks` stays cheap (no sklearn import until digits is built).
    if name == "digits":
        from prune_env.tasks.digits import make
    elif name == "pydoc-char":
        from prune_env.tasks.pydoc_char import make
    elif name == "custom-gru":
        from prune_env.tasks.custom_gru import make
    else:
        from prune_env.tasks.corpus import make
    return make


def make_task(name: str, *, seed: int = 0, retrain: bool = False, progress: bool = True,
              **config: Any) -> RNNTask:
    """Build a built-in task, training its dense model on first use and caching it.

    :param name: a key of :data:`PRESETS`.
    :param seed: seeds the model initialisation and training (and the ``digits`` split); the same seed gives the
        same weights (bitwise on CPU with the same torch version).
    :param retrain: ignore the cached model, train afresh and overwrite the cache entry.
    :param progress: show a tqdm bar while training.
    :param config: preset-specific knobs (sizes, steps, ...); see the preset module's ``DEFAULTS``. ``corpus``
        needs ``path=``.
    :returns: a structured :class:`RNNTask` in eval mode, with training facts in ``metadata`` (``config``,
        ``splits``, ``dense_val``, ``dense_test``, ``train_time_s``, ``from_cache``, ...).
    :raises ValueError: for an unknown preset, unknown config key or bad value, naming the argument.
    """
    if not isinstance(name, str) or name not in PRESETS:
        raise TaskError(f"make_task: unknown preset `name` {name!r}; expected one of {sorted(PRESETS)}")
    from prune_env.tasks.config import check_seed

    return _builder(name)(seed=check_seed(seed), retrain=retrain, progress=progress, **config)


def resolve_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """What a task spec stored in a results file names, found among the installed tasks without importing anything.

    :param spec: a preset name, a zoo model name (``zoo-...``), a key of :data:`SPEC_ALIASES` or a corpus directory.
    :returns: ``(name, kwargs)`` such that ``resolve_task(name, **kwargs)`` rebuilds the task (add ``seed=``).
    :raises TaskError: for a spec that names no installed task (e.g. a ``module:function`` factory of the user's,
        which is rebuilt only when the user names it again), or an alias whose data directory is not set.
    """
    if not isinstance(spec, str):
        raise TaskError(f"`spec` must be a task spec string, got {type(spec).__name__}")
    if spec in SPEC_ALIASES:
        preset, config = SPEC_ALIASES[spec]
        config = dict(config)
        if config.get("path") == "$PRUNE_RNN_PTB":
            path = os.environ.get("PRUNE_RNN_PTB")
            if not path:
                raise TaskError(f"task {spec!r} is the corpus preset on PTB: set PRUNE_RNN_PTB to the PTB directory")
            config["path"] = path
        return preset, config
    if (spec in PRESETS and spec != "corpus") or spec.startswith("zoo-"):
        return spec, {}
    if os.path.isdir(spec):
        return "corpus", {"path": spec}
    raise TaskError(f"task {spec!r} is not an installed preset, zoo model or alias ({sorted(SPEC_ALIASES)}); a "
                    "module:function factory is rebuilt only when named on the command line")


def resolve_task(spec: RNNTask | str, **kwargs: Any) -> RNNTask:
    """The one way to turn what a user names into an :class:`RNNTask` (the env, its registered ids and the CLI use it).

    :param spec: an ``RNNTask`` (returned unchanged); a key of :data:`PRESETS`; a corpus directory (the ``corpus``
        preset with ``path=spec``); a key of :data:`SPEC_ALIASES` (its installed preset, nothing imported); or
        ``"module:function"``, a factory returning an ``RNNTask`` (the module must be importable).
    :param kwargs: for a preset or directory, :func:`make_task`'s keyword arguments (``seed``, ``progress``, config
        knobs); for a factory, its keyword arguments. Not allowed with a ready ``RNNTask``.
    :raises TaskError: (a ``ValueError``) for anything that does not name a task, saying what was expected.
    """
    if isinstance(spec, RNNTask):
        if kwargs:
            raise TaskError(f"task keyword arguments {sorted(kwargs)} only apply to a preset name, a corpus directory "
                            "or a module:function factory, not to an RNNTask")
        return spec
    if not isinstance(spec, str):
        raise TaskError(f"`task` must be an RNNTask or a preset name ({sorted(PRESETS)}), a corpus directory or "
                        f"module:function, got {type(spec).__name__}")
    if spec in SPEC_ALIASES:  # a factory since moved into the package: its preset, nothing imported
        name, config = resolve_spec(spec)
        return make_task(name, **{**config, **kwargs})
    if spec.startswith("zoo-"):  # a model of the zoo, e.g. "zoo-v1/gru-char-email-2x128" (TaskError if unknown)
        from prune_env.tasks.zoo import make_zoo_task

        return make_zoo_task(spec, **kwargs)
    if spec == "corpus" and "path" not in kwargs:
        raise TaskError("the corpus preset needs the corpus directory: pass the directory itself as the task")
    if spec in PRESETS:
        return make_task(spec, **kwargs)
    if os.path.isdir(spec):
        return make_task("corpus", path=spec, **kwargs)
    if ":" in spec and os.sep not in spec:
        module, _, func = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as e:
            raise TaskError(f"task {spec!r}: cannot import it ({type(e).__name__}: {e})") from None
        if not callable(factory):
            raise TaskError(f"task {spec!r} is a {type(factory).__name__}, not a factory function")
        task = factory(**kwargs)
        if not isinstance(task, RNNTask):
            raise TaskError(f"task {spec!r} returned {type(task).__name__}, expected an RNNTask")
        return task
    if os.sep in spec or spec.startswith("."):
        raise TaskError(f"corpus directory not found: {spec}")
    raise TaskError(f"unknown task {spec!r}; expected one of {sorted(p for p in PRESETS if p != 'corpus')}, a corpus "
                    "directory, or module:function")


def __getattr__(name: str) -> Any:
    # The zoo's names load on first use, so `python -m prune_env.tasks.zoo` does not find its module pre-imported.
    if name in ("ZOO", "ZOO_VERSION", "make_zoo_task", "zoo_names"):
        from prune_env.tasks import zoo

        return getattr(zoo, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PRESETS", "SPEC_ALIASES", "ZOO", "ZOO_VERSION", "TaskError", "make_task", "make_zoo_task", "resolve_spec",
           "resolve_task", "zoo_names"]
