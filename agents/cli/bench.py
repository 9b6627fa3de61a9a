"""``prune-rnn bench``: every agent at every target sparsity and seed on one task; the table, the results files and
the plots of a fresh run directory (or of the run ``--resume`` finishes).

Cells (target, agent, seed) are run in table order and ``results.json``/``results.csv`` are rewritten atomically
after each one, so a bench killed part-way keeps every finished cell; ``--resume RUN_DIR`` runs only the missing
ones (see :mod:`agents.cli.resume`).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from agents.cli.common import (
    BATCHING_AGENTS,
    CLIError,
    add_max_evals_arg,
    add_run_args,
    add_task_args,
    check_agents,
    check_device,
    check_seed,
    check_sparsity,
    end_meta,
    make_env,
    new_run_dir,
    parse_options,
    plain,
    resolve_cli_task,
    run_one,
    start_meta,
)

#: Agents ``bench`` runs by default (``policy`` needs a Python object, so it is API-only).
BENCH_AGENTS = ("uniform", "global", "gradient", "lamp", "erk", "random", "sensitivity", "reinforce", "ppo")
#: Agents that ignore the seed: ``bench`` runs them once (the first seed), since more seeds would repeat them.
DETERMINISTIC = ("uniform", "global", "gradient", "lamp", "erk", "obd", "sensitivity")


def add_parser(sub: Any) -> None:
    """Register ``bench`` on the ``prune-rnn`` subparsers."""
    b = sub.add_parser("bench", help="compare agents on one task at several target sparsities")
    add_task_args(b)
    b.add_argument("--sparsity", type=float, nargs="+", default=[0.8, 0.9], help="target overall sparsities")
    b.add_argument("--agents", nargs="+", default=list(BENCH_AGENTS), help="agents to compare")
    add_max_evals_arg(b, 100, "evaluations per agent, run and sparsity (hard cap)")
    b.add_argument("--seeds", type=int, nargs="+", default=[0], help="agent seeds; scores are mean +- std")
    b.add_argument("--resume", metavar="RUN_DIR", help="finish the bench of RUN_DIR (same arguments): run only the "
                   "cells its results.json lacks")
    b.add_argument("--backend", default="local", choices=("local", "ray"), help="run the cells in this process "
                   "(local) or each as a Ray task (ray: needs the ray extra); the same table")
    b.add_argument("--address", default=None, help="with --backend ray: the Ray cluster to join (auto, HOST:6379); "
                   "default a local Ray instance")
    add_run_args(b)
    b.set_defaults(func=cmd_bench)


def bench_cells(sparsities: list[float], names: list[str], seeds: list[int]) -> list[tuple[float, str, int]]:
    """The (target, agent, seed) cells of a bench in table order (deterministic agents: the first seed only)."""
    return [(target, name, seed) for target in sparsities for name in names
            for seed in (seeds[:1] if name in DETERMINISTIC else seeds)]


def cmd_bench(args: argparse.Namespace) -> int:
    """Run every agent at every sparsity and seed; print the table and write the results."""
    from tqdm.auto import tqdm

    from agents.cli.ray_backend import check_backend, run_cells
    from agents.cli.resume import resume_dir
    from agents.core.results import (
        plot_allocations,
        plot_pareto,
        print_summary,
        summarize,
        warn_if_dirty,
        write_results,
    )

    meta = start_meta(args)
    sparsities = [check_sparsity(s) for s in args.sparsity]
    names = check_agents(args.agents)
    seeds = [check_seed(s) for s in args.seeds]
    options = parse_options(args.option, names)
    check_device(args.device)
    check_backend(args)
    if args.vector_envs < 0:
        raise CLIError(f"--vector-envs must be >= 0, got {args.vector_envs}")
    progress = not args.no_progress
    task = resolve_cli_task(args.task, args.task_seed, progress)
    if "gradient" in names and task.loss is None:
        raise CLIError(f"agent 'gradient' needs gradients, but task {task.name!r} has no `loss`; drop it from --agents")
    out, finished = resume_dir(args.resume, task.name, args.max_evals) if args.resume \
        else (new_run_dir(args.out), {})
    warn_if_dirty(meta)
    meta.update(task=task.name, task_metadata=plain(task.metadata))
    if args.resume:
        meta["resumed_with"] = len(finished)
    t_start = time.perf_counter()

    def save(done: list[dict[str, Any]], complete: bool = False) -> None:
        write_results(out, end_meta(meta, t_start, complete=complete), done, summarize(done))

    cells = bench_cells(sparsities, names, seeds)
    bar = tqdm(total=len(cells), initial=sum(c in finished for c in cells), desc="bench", disable=not progress)
    if args.backend == "ray":  # every missing cell as a Ray task, written as it finishes; the loop only collects
        finished = run_cells(args, cells, finished, options, out, bar, save)
    rows: list[dict[str, Any]] = []
    envs: dict[float, Any] = {}
    for i, (target, name, seed) in enumerate(cells):  # rows in this order, resumed or not: the same tables
        if (target, name, seed) in finished:
            rows.append(finished[(target, name, seed)])
            continue
        bar.set_postfix_str(f"{name} @ {target:g} seed {seed}")
        if target not in envs:
            envs[target] = make_env(task, target, args.mode, args.device, args.precision)
        kw = dict(options.get(name, {}))
        if name in ("reinforce", "ppo"):
            kw.setdefault("tensorboard_log", str(out / "tensorboard" / f"{name}-{target:g}-s{seed}"))
        rows.append(run_one(envs[target], task, name, target, seed, args.max_evals, kw,
                            args.vector_envs if name in BATCHING_AGENTS else 0, spec=(args.task, args.task_seed)))
        # Rewritten (atomically) after every cell, so a bench killed part-way keeps every cell it finished (the
        # resumed ones still ahead included).
        save(rows + [finished[c] for c in cells[i + 1:] if c in finished])
        bar.update(1)
    bar.close()
    summary = summarize(rows)
    save(rows, complete=True)
    plot_pareto(out / "pareto.png", rows, summary)
    plot_allocations(out / "allocation.png", summary)
    print_summary(summary, title=f"{task.name}: max {args.max_evals} evaluations, seeds {seeds}")
    print(f"results: {out}")
    return 0


__all__ = ["BENCH_AGENTS", "DETERMINISTIC", "add_parser", "bench_cells", "cmd_bench"]
