"""Built-in tasks: trained recurrent networks ready to prune.

``make_task("digits")`` returns an :class:`~prune_env.task.RNNTask` whose dense model was trained on first use and
cached (see :mod:`prune_env.tasks.cache`); later calls load it in a fraction of a second. All presets are
structured tasks (``eval_batch`` + ``metric``) and fully determined by their seed and config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..task import RNNTask

#: Preset name -> one-line description.
PRESETS: dict[str, str] = {
    "digits": "sklearn 8x8 digits read row by row; 2x64 LSTM classifier; accuracy ~0.97; trains in seconds (CI)",
    "pydoc-char": "CPython help-topics text (~465k chars); 2x256 char LSTM LM; next-char accuracy ~0.67; ~2.5 min CPU",
    "corpus": "your PTB/WikiText-style dir (path=...); word- or char-level LSTM LM; next-token accuracy",
}


def _builder(name: str) -> Callable[..., RNNTask]:
    # Imported lazily so `import prune_env.tasks` stays cheap (no sklearn import until digits is built).
    if name == "digits":
        from .digits import make
    elif name == "pydoc-char":
        from .pydoc_char import make
    else:
        from .corpus import make
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
        raise ValueError(f"make_task: unknown preset `name` {name!r}; expected one of {sorted(PRESETS)}")
    from ._common import check_seed

    return _builder(name)(seed=check_seed(seed), retrain=retrain, progress=progress, **config)


def resolve_task(task_or_name: RNNTask | str, **kwargs: Any) -> RNNTask:
    """Return an :class:`RNNTask` unchanged, or build the preset a string names.

    :param task_or_name: an ``RNNTask`` or a key of :data:`PRESETS`.
    :param kwargs: passed to :func:`make_task` when a name is given (``seed``, ``progress``, config knobs);
        ignored for a ready ``RNNTask``, so callers can pass their defaults unconditionally.
    :raises ValueError: for an unknown preset name.
    :raises TypeError: for anything else.
    """
    if isinstance(task_or_name, RNNTask):
        return task_or_name
    if isinstance(task_or_name, str):
        if task_or_name not in PRESETS:
            raise ValueError(f"resolve_task: unknown preset `task_or_name` {task_or_name!r}; expected an "
                             f"RNNTask or one of {sorted(PRESETS)}")
        return make_task(task_or_name, **kwargs)
    raise TypeError(f"resolve_task: `task_or_name` must be an RNNTask or a preset name ({sorted(PRESETS)}), got "
                    f"{type(task_or_name).__name__}")


__all__ = ["PRESETS", "make_task", "resolve_task"]
