"""``prune-rnn bench --backend ray``: every missing (agent, target, seed) cell of a bench as one Ray task.

Each task (``num_cpus=1``, ``torch.set_num_threads(1)``) rebuilds the task from the CLI spec (``--task``,
``--task-seed``), builds a fresh env as the local backend does (:func:`agents.cli.common.make_env`) and returns the
row of :func:`agents.cli.common.run_one`, so the rows, and the table, equal the local backend's (cells do not depend on
the order they run in: see ``--resume``). The driver gathers the rows as they finish (``ray.wait``) and rewrites the
run's results after each, in cell order, atomically, as the local backend does, so ``--resume`` works for both backends.

**Where Ray runs.** With a Ray already initialized in this process, it is used as it is and left running. With
``--address`` ("auto", "HOST:6379", "ray://HOST:10001") the bench joins that cluster; every node then needs this
package and the task (a preset name, a corpus directory present on every node, or an importable ``module:function``).
Otherwise a local Ray instance is started (all CPUs, no dashboard, ``OMP_NUM_THREADS=1`` and this process's
``sys.path`` and working directory on its workers' ``PYTHONPATH``) and shut down afterwards.

Needs the Ray extra (``pip install -e ".[ray]"``); ray is imported only when ``--backend ray`` is asked for.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_MISSING = '--backend ray needs the ray extra: pip install -e ".[ray]"  (ray[rllib,tune]==2.60.0)'
#: The env arguments of ``bench`` that :func:`agents.cli.common.make_env` takes, sent to every task.
_ENV_ARGS = ("mode", "device", "precision", "criterion", "reconstruct")
#: Tasks built in this worker process, keyed by (spec, task seed): a worker runs many cells of the same task.
_TASKS: dict[tuple[str, int], Any] = {}


def check_backend(args: argparse.Namespace) -> None:
    """Refuse ``--address`` without ``--backend ray``, and ``--backend ray`` without the extra (one-line errors)."""
    from agents.cli.common import CLIError

    if args.backend != "ray":
        if args.address is not None:
            raise CLIError("--address needs --backend ray")
        return
    try:
        import ray  # noqa: F401
    except ImportError:
        raise CLIError(_MISSING) from None


def run_cells(args: argparse.Namespace, cells: Sequence[tuple], finished: dict[tuple, dict[str, Any]],
              options: dict[str, dict[str, Any]], out: Path, bar: Any,
              save: Callable[[list[dict[str, Any]]], None]) -> dict[tuple, dict[str, Any]]:
    """Run every cell of ``cells`` not in ``finished`` as a Ray task; returns ``finished`` plus the new rows.

    :param cells: (target, agent, seed) in table order.
    :param finished: the rows already on disk (``--resume``), keyed by cell.
    :param options: the agents' ``--option`` values.
    :param out: the run directory (the tensorboard logs of reinforce and ppo go under it).
    :param bar: the bench's progress bar, advanced as cells finish.
    :param save: writes a partial results file from the finished rows (in cell order).
    """
    import ray

    from agents.cli.common import CLIError

    done = dict(finished)
    todo = [c for c in cells if c not in done]
    if not todo:
        return done
    started = _init_ray(ray, args.address)
    try:
        remote = ray.remote(num_cpus=1)(_cell)
        env_kw = {k: getattr(args, k) for k in _ENV_ARGS if hasattr(args, k)}
        pending = {}
        for target, name, seed in todo:
            kw = dict(options.get(name, {}))
            if name in ("reinforce", "ppo"):
                logs = Path(out).resolve() / "tensorboard"  # absolute: a worker's directory is not ours
                kw.setdefault("tensorboard_log", str(logs / f"{name}-{target:g}-s{seed}"))
            ref = remote.remote(args.task, args.task_seed, env_kw, name, target, seed, args.max_evals, kw,
                                args.vector_envs)
            pending[ref] = (target, name, seed)
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                cell = pending.pop(ref)
                try:
                    done[cell] = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # the worker's own error, as the local backend raises it
                    cause = getattr(e, "cause", None)
                    if isinstance(cause, (CLIError, ValueError, FileNotFoundError)):
                        raise cause from None
                    raise
                save([done[c] for c in cells if c in done])  # atomically, after every cell: --resume finishes it
                bar.set_postfix_str(f"{cell[1]} @ {cell[0]:g} seed {cell[2]}")
                bar.update(1)
        finally:
            for ref in pending:  # an error or an interrupt: do not leave the other cells running
                ray.cancel(ref, force=True)
    finally:
        if started:
            ray.shutdown()
    return done


def _init_ray(ray: Any, address: str | None) -> bool:
    """Start or join Ray; returns whether this call did (and should shut it down)."""
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address is not None:
        ray.init(address=address, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}}, **quiet)
        return True
    path = os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p)
    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}}, **quiet)
    return True


def _cell(spec: str, task_seed: int, env_kw: dict[str, Any], name: str, target: float, seed: int, max_evals: int,
          kwargs: dict[str, Any], vector_envs: int) -> dict[str, Any]:
    """One bench cell in a Ray worker: the task from its CLI spec, a fresh env, one thread; the row."""
    import torch

    from agents.cli.common import make_env, resolve_cli_task, run_one

    torch.set_num_threads(1)
    key = (spec, task_seed)
    if key not in _TASKS:
        _TASKS[key] = resolve_cli_task(spec, task_seed, progress=False)
    task = _TASKS[key]
    env = make_env(task, target, **env_kw)
    return run_one(env, task, name, target, seed, max_evals, kwargs, vector_envs, spec=(spec, task_seed))
