"""What every ``prune-rnn`` command shares: the one-line error, the parser, the argument checks, the task named on
the command line, the env and the single bench cell.

A user error is a :class:`CLIError` (or a ``ValueError``): ``prune-rnn`` prints it as one line on stderr and exits
with code 2. Nothing here writes a file except :func:`new_run_dir`, which creates an empty run directory.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

#: Agents whose searches batch candidates (``--vector-envs``).
BATCHING_AGENTS = ("random", "reinforce", "ppo")


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


class CLIParser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`CLIError` (one line, no usage dump)."""

    def error(self, message: str):
        raise CLIError(message)


def one_line(e: BaseException) -> str:
    """``e``'s message on one line (its type name when it has none)."""
    return " ".join(str(e).split()) or type(e).__name__


def warn(message: str) -> None:
    """One ``prune-rnn: warning: ...`` line on stderr."""
    print(f"prune-rnn: warning: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- arguments
def add_task_args(p: argparse.ArgumentParser) -> None:
    """``--task`` and ``--task-seed``."""
    p.add_argument("--task", default="digits",
                   help="preset name, zoo model, corpus directory, or module:function returning an RNNTask (a "
                   "module:function is imported, with the current directory on sys.path, as `python -m` does)")
    p.add_argument("--task-seed", type=int, default=0, help="seed of the preset's trained model")


def add_max_evals_arg(p: argparse.ArgumentParser, default: int | None, help: str) -> None:
    """``--max-evals`` (the evaluation cap), and ``--budget``, its deprecated name (a one-line warning)."""
    p.add_argument("--max-evals", type=int, default=None, metavar="N", help=f"{help} (default {default})"
                   if default is not None else help)
    p.add_argument("--budget", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(max_evals_default=default)


def finish_max_evals(args: argparse.Namespace, warn_deprecated: bool = True) -> None:
    """Fold the deprecated ``--budget`` into ``args.max_evals`` (warning once), then apply the default.

    :raises CLIError: when both are given with different values, or the value is below 1.
    """
    if not hasattr(args, "max_evals_default"):
        return
    if args.budget is not None:
        if args.max_evals is not None and args.max_evals != args.budget:
            raise CLIError(f"--budget {args.budget} and --max-evals {args.max_evals} disagree; pass --max-evals only")
        if warn_deprecated:
            warn("--budget is deprecated and will be removed in the next release; use --max-evals")
        args.max_evals = args.budget
    if args.max_evals is None:
        args.max_evals = args.max_evals_default
    if args.max_evals is not None and args.max_evals < 1:
        raise CLIError(f"--max-evals must be >= 1, got {args.max_evals}")


def add_run_args(p: argparse.ArgumentParser) -> None:
    """The env and output options of ``bench`` and ``train``."""
    p.add_argument("--mode", default="joint", choices=("joint", "sequential"), help="env mode")
    p.add_argument("--option", action="append", default=[], metavar="AGENT.KEY=VALUE",
                   help="agent option, e.g. reinforce.learning_rate=0.1 (repeatable)")
    p.add_argument("--out", default="runs", help="parent directory of the run directory")
    p.add_argument("--device", default="cpu", help="device of the env's model copy")
    p.add_argument("--vector-envs", type=int, default=0, metavar="K",
                   help="score K candidates per batched pass (random, reinforce, ppo); same evaluation cap")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="scoring precision during the search (bf16: autocast; test scores are always fp32)")
    add_operator_args(p)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_operator_args(p: argparse.ArgumentParser) -> None:
    """``--criterion`` and ``--reconstruct``: the env's operator (how a layer is pruned)."""
    p.add_argument("--criterion", default="magnitude", choices=("magnitude", "gradient", "saliency", "wanda", "obs"),
                   help="which weights of a layer go (wanda, obs: from the task's calibration inputs)")
    p.add_argument("--reconstruct", default="none", choices=("none", "obs"),
                   help="obs: re-fit each pruned layer's kept weights by least squares on the calibration inputs")


# ------------------------------------------------------------------------------------------------ checks
def check_device(device: str) -> str:
    """:raises CLIError: for a device torch does not know, or CUDA where there is none."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise CLIError(f"--device: unknown device {device!r}; expected e.g. cpu, cuda or cuda:1") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return device


def check_sparsity(s: float, flag: str = "--sparsity") -> float:
    """:raises CLIError: unless ``s`` is in [0, 1)."""
    if not isinstance(s, (int, float)) or not 0 <= s < 1:
        raise CLIError(f"{flag} must be in [0, 1), got {s}")
    return float(s)


def check_agents(names: Sequence[str], flag: str = "--agents") -> list[str]:
    """:raises CLIError: for an unknown agent (``policy`` needs a Python object: API only) or one listed twice."""
    import agents as A

    valid = [n for n in A.AGENTS if n != "policy"]
    for n in names:
        if n not in valid:
            raise CLIError(f"unknown agent {n!r}; expected one of {valid}")
    if len(set(names)) != len(names):
        raise CLIError(f"{flag} lists an agent twice: {list(names)}")
    return list(names)


def check_seed(s: int) -> int:
    """:raises CLIError: for a negative seed."""
    if s < 0:
        raise CLIError(f"seeds must be non-negative ints, got {s}")
    return s


def check_out_parent(path: str, flag: str = "--out") -> Path:
    """``path`` as a directory that exists or can be created and written to.

    :raises CLIError: when it names a file, or cannot be created or written.
    """
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise CLIError(f"{flag}: {path} is a file, not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"{flag}: cannot create {path} ({one_line(e)})") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise CLIError(f"{flag}: {path} is not writable")
    return root


def parse_options(items: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["reinforce.learning_rate=0.1"]`` -> ``{"reinforce": {"learning_rate": 0.1}}`` (values as Python literals,
    read with :func:`ast.literal_eval`: data only, nothing is called)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        agent, dot, opt = key.partition(".")
        if not (eq and dot and agent and opt):
            raise CLIError(f"--option must look like AGENT.KEY=VALUE, got {item!r}")
        if agent not in names:
            raise CLIError(f"--option {item!r} names agent {agent!r}, which is not being run ({list(names)})")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        out.setdefault(agent, {})[opt] = value
    return out


# -------------------------------------------------------------------------------------------------- tasks
def is_factory_spec(spec: str) -> bool:
    """Whether ``spec`` names code (``module:function``) rather than a preset, a zoo model, an alias of
    :data:`prune_env.tasks.SPEC_ALIASES` (installed code) or a directory."""
    from prune_env.tasks import PRESETS, SPEC_ALIASES

    return ":" in spec and os.sep not in spec and spec not in PRESETS and spec not in SPEC_ALIASES \
        and not spec.startswith("zoo-") and not os.path.isdir(spec)


def resolve_cli_task(spec: str, seed: int, progress: bool, *, add_cwd: bool = True) -> Any:
    """An :class:`RNNTask` from what the user typed after ``--task``: a preset name, a zoo model, a corpus directory
    or ``module:function``.

    A ``module:function`` is code the user names, so it is imported; with ``add_cwd`` the current directory is put
    on ``sys.path`` first, as ``python -m`` does. Only ever call this with a spec the user typed, never one read from
    a file (see :mod:`agents.cli.tasks`).

    :param spec: what the user typed after ``--task``.
    :param seed: the preset's model seed.
    :param progress: show training progress for presets.
    :param add_cwd: put the current directory on ``sys.path`` for a ``module:function``.
    :raises CLIError: for an unknown task or a missing directory.
    """
    from prune_env.tasks import TaskError, resolve_task

    if spec == "corpus":
        raise CLIError("--task corpus needs the corpus directory: pass --task <dir>")
    factory = is_factory_spec(spec)
    if factory and add_cwd and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return resolve_task(spec, **({} if factory else {"seed": seed, "progress": progress}))
    except TaskError as e:
        raise CLIError(f"--task: {one_line(e)}") from None


# -------------------------------------------------------------------------------------------------- runs
def new_run_dir(parent: str) -> Path:
    """A new ``<parent>/<YYYYmmdd-HHMMSS>[-n]`` directory that no earlier run used.

    :raises CLIError: when ``parent`` is a file or cannot be written.
    """
    root = check_out_parent(parent)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = root / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise CLIError(f"--out: cannot create a run directory under {root} ({one_line(e)})") from None
    raise CLIError(f"could not create a new run directory under {root}")


def start_meta(args: argparse.Namespace) -> dict[str, Any]:
    """The run's metadata, taken as it starts (before the task is loaded); the dirty-tree warning comes later, once
    the arguments passed, so that a bad argument still prints one line."""
    from agents.core.results import run_meta

    return run_meta(["prune-rnn", *args.argv], warn=False, gpu=str(args.device).startswith("cuda"))


def end_meta(meta: dict[str, Any], t_start: float, **extra: Any) -> dict[str, Any]:
    """``meta`` plus the seconds since ``t_start`` (the searches, task loading excluded)."""
    return {**meta, "wall_time_s": round(time.perf_counter() - t_start, 2), **extra}


def make_env(task: Any, target: float, mode: str, device: str, precision: str, criterion: str = "magnitude",
             reconstruct: str | None = None) -> Any:
    """The env of one bench cell (or a train run)."""
    from prune_env import PruneRNNEnv

    return PruneRNNEnv(task, target_sparsity=target, mode=mode, device=device, precision=precision,
                       criterion=criterion, reconstruct=reconstruct)


def run_one(env: Any, task: Any, name: str, target: float, seed: int, max_evals: int, kwargs: dict[str, Any],
            vector_envs: int = 0, spec: tuple[str, int] | None = None) -> dict[str, Any]:
    """One search plus its single test scoring, as a result row; ``spec`` (``--task``, ``--task-seed``) goes into
    the row's ``replay`` record (:func:`prune_env.replay.replay_record`), which ``prune-rnn validate`` re-scores."""
    import agents as A
    from prune_env.pruning.coverage import removed_matrix_weights
    from prune_env.replay import replay_record
    from prune_env.task import split_score

    if vector_envs < 0:
        raise CLIError(f"--vector-envs must be >= 0, got {vector_envs}")
    batches = name in BATCHING_AGENTS
    res = A.search(name, env, max_evals, seed=seed, vector_envs=vector_envs if batches else 0, **kwargs)
    counts = env.counts_for(res.allocation)
    model = env.pruned_model(res.allocation)
    test = split_score(task.test(model), "test")[0] if task.test is not None else float("nan")
    return {"task": task.name, "agent": name, "target_sparsity": target, "seed": seed, "max_evals": max_evals,
            "val_score": res.val_score, "test_score": test, "dense_val": env.dense_score, "precision": env.precision,
            "mode": env.mode, "device": str(env.device), "criterion": env.criterion, "reconstruct": env.reconstruct,
            "achieved_sparsity": float(counts.sum() / env.numels.sum()),
            "model_sparsity": env.coverage.model_sparsity(removed_matrix_weights(env.kind, counts)),
            "nonzero_params": int(env.total_params - counts.sum()), "evals": res.evals,
            "wall_time_s": round(res.wall_time, 3), "allocation": res.allocation, "history": res.history,
            "replay": replay_record(env, counts, task_spec=spec and spec[0], task_seed=spec and spec[1])}


def plain(x: Any) -> Any:
    """``x`` as plain JSON values: dicts with string keys, lists, str, int, float, bool, ``None`` (NumPy scalars as
    Python numbers, non-finite floats as ``None``, anything else as its ``str``)."""
    import math

    import numpy as np

    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, str) or x is None:
        return x
    return str(x)


def row_max_evals(row: dict[str, Any]) -> Any:
    """A row's evaluation cap (``max_evals``; ``budget`` in rows of earlier releases)."""
    return row.get("max_evals", row.get("budget"))


__all__ = ["BATCHING_AGENTS", "CLIError", "CLIParser", "add_max_evals_arg", "add_run_args", "add_task_args",
           "check_agents", "check_device", "check_out_parent", "check_seed", "check_sparsity", "end_meta",
           "finish_max_evals", "is_factory_spec", "make_env", "new_run_dir", "one_line", "parse_options",
           "plain", "resolve_cli_task", "row_max_evals", "run_one", "start_meta", "warn"]
