"""``prune-rnn bench``: every agent at every target sparsity and seed on one task; the table, the results files and
the plots of a fresh run directory (or of the run ``--resume`` finishes).

Cells (target, agent, seed) are run in table order and ``results.json``/``results.csv`` are rewritten atomically
after each one, so a bench killed part-way keeps every finished cell; ``--resume RUN_DIR`` runs only the missing
ones (see :mod:`agents.cli.resume`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from agents.cli.bench_args import BENCH_AGENTS, DETERMINISTIC, add_bench_arguments, bench_cells, recorded
from agents.cli.common import (
    BATCHING_AGENTS,
    CLIError,
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


def add_parser(sub: Any) -> None:
    """Register ``bench`` on the ``prune-rnn`` subparsers."""
    b = sub.add_parser("bench", help="compare agents on one task at several target sparsities")
    add_bench_arguments(b)
    b.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run every agent at every sparsity and seed; print the table and write the results."""
    from tqdm.auto import tqdm

    from agents.cli import resume as R
    from agents.cli.ray_backend import check_backend, run_cells
    from agents.core.results import (
        plot_allocations,
        plot_pareto,
        print_summary,
        summarize,
        warn_if_dirty,
        write_results,
    )

    meta = start_meta(args)
    old_meta, old_rows, typed, left_out = None, [], {}, []
    if args.resume:  # the run's own arguments, unless typed again (and then they must agree)
        old_meta, old_rows = R.read_results(args.resume)
        typed = R.typed_args(args.argv[1:])
        try:
            rec = R.recorded_args(old_meta)
        except ValueError as e:
            raise CLIError(f"--resume: {args.resume}: {e}") from None
        if rec is None:
            raise CLIError(f"--resume: {args.resume} records no bench arguments (meta.args or a prune-rnn bench "
                           "meta.command); it cannot be resumed")
        left_out = R.merge_args(args, rec, typed, args.drop)
        R.check_trusted_task(args.task, typed)
    elif args.drop:
        raise CLIError("--drop needs --resume")
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
    cells = bench_cells(sparsities, names, seeds)
    operator = {"criterion": getattr(args, "criterion", "magnitude"), "reconstruct": getattr(args, "reconstruct", None)}
    envs = {sparsities[0]: make_env(task, sparsities[0], args.mode, args.device, args.precision, **operator)}
    fingerprint = R.run_fingerprint(task, envs[sparsities[0]], args, options)
    cached = task.metadata.get("model_hash") if isinstance(task.metadata, dict) else None
    if cached is not None and cached != fingerprint["dense_hash"]:
        raise CLIError(f"the dense model of {task.name!r} is not the one its cache entry recorded (hash {cached[:19]}"
                       f"... recorded, {fingerprint['dense_hash'][:19]}... now)")
    finished: dict[tuple, dict[str, Any]] = {}
    if args.resume:
        if "fingerprint" in old_meta:
            diff = R.fingerprint_differences(R.with_env_defaults(old_meta["fingerprint"]), fingerprint)
            if diff:
                raise CLIError(f"--resume: {args.resume} is another run: {'; '.join(diff[:3])}"
                               + (f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""))
        R.check_rows(old_rows, task, envs[sparsities[0]], args)
        finished = R.finished_cells(old_rows, cells, left_out, args.resume)
        out = Path(args.resume)
        meta = _resumed_meta(old_meta, meta, len(finished))
    else:
        out = new_run_dir(args.out)
    warn_if_dirty(meta)
    meta.update(task=task.name, task_metadata=plain(task.metadata), args=recorded(args), fingerprint=fingerprint)
    t_start = time.perf_counter()
    wall_before = meta.pop("wall_time_s", 0.0) if args.resume else 0.0

    def save(done: list[dict[str, Any]], complete: bool = False) -> None:
        m = end_meta(meta, t_start, complete=complete)
        m["wall_time_s"] = round(m["wall_time_s"] + (wall_before if isinstance(wall_before, (int, float)) else 0), 2)
        write_results(out, m, done, summarize(done))

    bar = tqdm(total=len(cells), initial=sum(c in finished for c in cells), desc="bench", disable=not progress)
    if args.backend == "ray":  # every missing cell as a Ray task, written as it finishes; the loop only collects
        finished = run_cells(args, cells, finished, options, out, bar, save)
    rows: list[dict[str, Any]] = []
    for i, (target, name, seed) in enumerate(cells):  # rows in this order, resumed or not: the same tables
        if (target, name, seed) in finished:
            rows.append(finished[(target, name, seed)])
            continue
        bar.set_postfix_str(f"{name} @ {target:g} seed {seed}")
        if target not in envs:
            envs[target] = make_env(task, target, args.mode, args.device, args.precision, **operator)
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


def _resumed_meta(old: dict[str, Any], now: dict[str, Any], finished: int) -> dict[str, Any]:
    """The run's own metadata (its command, start, commit, machine), with this resumption appended to ``resumes``."""
    keep = ("command", "started", "git_commit", "git_dirty", "machine", "torch", "python")
    entry = {**{k: now.get(k) for k in keep}, "finished_before": finished}
    return {**old, "resumes": [*(old.get("resumes") or []), entry], "resumed_with": finished}


__all__ = ["BENCH_AGENTS", "DETERMINISTIC", "add_parser", "bench_cells", "cmd_bench"]
