"""``prune-rnn``: benchmark pruning agents, train one, evaluate a saved allocation or policy, list the tasks.

Every run writes to a fresh ``<out>/<time>/`` directory (never an earlier run's), files written atomically, with the
run's metadata taken when it starts (:func:`agents.core.results.run_meta`: commit, uncommitted changes, start time,
machine). A bad argument (unknown task or agent, sparsity outside [0, 1), missing corpus directory, unknown device,
...) prints one line on stderr and exits with code 2. Run it as ``prune-rnn`` or ``python -m agents.cli.main``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from agents.core.results import (
    _jsonable,
    console,
    plot_allocations,
    plot_pareto,
    print_summary,
    run_meta,
    summarize,
    warn_if_dirty,
    write_json,
    write_results,
)

#: Agents ``bench`` runs by default (``policy`` needs a Python object, so it is API-only).
BENCH_AGENTS = ("uniform", "global", "gradient", "lamp", "erk", "random", "sensitivity", "reinforce", "ppo")
#: Agents that ignore the seed: ``bench`` runs them once (the first seed), since more seeds would repeat them.
DETERMINISTIC = ("uniform", "global", "gradient", "lamp", "erk", "obd", "sensitivity")
#: Agents whose trained policy ``train`` saves, with the file name.
POLICY_FILES = {"ppo": "policy.zip", "reinforce": "policy.pt"}


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise CLIError(message)


# ------------------------------------------------------------------------------------------------ entry
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``prune-rnn`` command line; returns the exit code.

    :param argv: arguments without the program name; default ``sys.argv[1:]``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise CLIError("choose a command (see prune-rnn --help)")
        args.argv = argv
        return args.func(args)
    except (CLIError, ValueError, FileNotFoundError) as e:
        print(f"prune-rnn: error: {_one_line(e)}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``prune-rnn``."""
    p = _Parser(prog="prune-rnn", description="Learn how to prune recurrent networks: benchmark agents, train "
                                              "one, evaluate the result.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    b = sub.add_parser("bench", help="compare agents on one task at several target sparsities")
    _task_args(b)
    b.add_argument("--sparsity", type=float, nargs="+", default=[0.8, 0.9], help="target overall sparsities")
    b.add_argument("--agents", nargs="+", default=list(BENCH_AGENTS), help="agents to compare")
    b.add_argument("--budget", type=int, default=100, help="evaluations per agent, run and sparsity (hard cap)")
    b.add_argument("--seeds", type=int, nargs="+", default=[0], help="agent seeds; scores are mean +- std")
    b.add_argument("--resume", metavar="RUN_DIR", help="finish the bench of RUN_DIR (same arguments): run only the "
                   "cells its results.json lacks")
    b.add_argument("--backend", default="local", choices=("local", "ray"), help="run the cells in this process "
                   "(local) or each as a Ray task (ray: needs the ray extra); the same table")
    b.add_argument("--address", default=None, help="with --backend ray: the Ray cluster to join (auto, HOST:6379); "
                   "default a local Ray instance")
    _run_args(b)
    b.set_defaults(func=cmd_bench)

    t = sub.add_parser("train", help="run one agent; save its best allocation (and policy)")
    _task_args(t)
    t.add_argument("--sparsity", type=float, required=True, help="target overall sparsity")
    t.add_argument("--agent", default="reinforce", help="agent name")
    t.add_argument("--budget", type=int, default=300, help="evaluations (hard cap)")
    t.add_argument("--seed", type=int, default=0, help="agent seed")
    _run_args(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="apply a saved allocation or policy; report test score and size")
    _task_args(e)
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--allocation", help="allocation.json written by train/bench, or a {layer: sparsity} JSON")
    src.add_argument("--policy", help="policy.zip (ppo) or policy.pt (reinforce) written by train")
    e.add_argument("--sparsity", type=float, help="target sparsity the policy acts under (with --policy)")
    e.add_argument("--algo", default=None, help="SB3 algorithm of a .zip policy (default: from train's meta)")
    e.add_argument("--mode", default="joint", choices=("joint", "sequential"))
    e.add_argument("--device", default="cpu")
    e.add_argument("--finetune-steps", type=int, default=0, metavar="N",
                   help="fine-tune the pruned model for N Adam steps, masks fixed, before scoring (seed 0)")
    e.set_defaults(func=cmd_evaluate)

    pt = sub.add_parser("pretrain", help="pretrain a layer-wise policy on a zoo of models (REINFORCE, joint mode)")
    pt.add_argument("--zoo", default="train", help="zoo split to train on (see prune_env.tasks.zoo)")
    pt.add_argument("--validation", default="validation", help="zoo split to select the policy on")
    pt.add_argument("--tasks", nargs="+", metavar="TASK", help="train on these tasks instead of a zoo split "
                    "(presets, corpus directories, module:function)")
    pt.add_argument("--val-tasks", nargs="+", metavar="TASK", help="select on these tasks instead of a zoo split")
    pt.add_argument("--targets", type=float, nargs=2, default=[0.5, 0.95], metavar=("LOW", "HIGH"),
                    help="each episode's target sparsity is drawn uniformly from [LOW, HIGH]")
    pt.add_argument("--episodes", type=int, default=2000, help="training episodes (evaluations) in all")
    pt.add_argument("--rounds", type=int, default=10, help="validation checks (model selection) during training")
    pt.add_argument("--selection-metric", choices=("reward", "score"), default="reward",
                    help="model selection: mean zero-shot reward clipped to [0, 1] (reward), or mean raw validation "
                    "score in each task's units (score, what the transfer benchmark averages on test)")
    pt.add_argument("--selection-targets", type=float, nargs="+", default=[0.5, 0.7, 0.9], metavar="T",
                    help="target sparsities the selection criterion averages over")
    pt.add_argument("--batch-size", type=int, default=16, help="episodes per update")
    pt.add_argument("--learning-rate", type=float, default=3e-3, help="Adam step size")
    pt.add_argument("--group-size", type=int, default=1, metavar="G", help="allocations per drawn (model, target); "
                    "above 1 each is compared with the others of its group (leave-one-out baseline)")
    pt.add_argument("--hidden", type=int, default=64, help="width of the policy's hidden layers")
    pt.add_argument("--init-std", type=float, default=0.3, help="the policy's starting standard deviation, in "
                    "action units (wider explores allocations farther from LAMP's)")
    pt.add_argument("--ema-decay", type=float, default=0.0, metavar="D", help="above 0, select (and save) an "
                    "exponential moving average of the policy's weights, decay D per update, instead of the raw ones")
    pt.add_argument("--seed", type=int, default=0, help="seeds the policy, its sampling and the draws")
    pt.add_argument("--out", default="policy.pt", help="where to write the selected policy (atomically)")
    pt.add_argument("--tensorboard", default=None, metavar="DIR", help="TensorBoard log directory")
    pt.add_argument("--checkpoint", default=None, metavar="PATH", help="resume from this file if it exists, and "
                    "rewrite it after every round (a killed run loses at most one round; the result is the same)")
    pt.add_argument("--device", default="cpu", help="device of the envs' model copies")
    pt.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    pt.set_defaults(func=cmd_pretrain)

    c = sub.add_parser("compress", help="search, prune gradually while fine-tuning, quantize, export, report")
    _task_args(c)
    c.add_argument("--sparsity", type=float, required=True, help="target overall sparsity of the prunable weights")
    c.add_argument("--agent", default=None, help="allocation agent (default: lamp; uniform for --granularity "
                   "hidden_unit)")
    c.add_argument("--budget", type=int, default=None, help="the agent's evaluations (default 1 for one-shot rules, "
                   "else 100)")
    c.add_argument("--steps", type=int, default=800, help="fine-tuning steps; the pruning ramp takes the first half "
                   "(800: pydoc-char in about 13 min on a 2-core CPU)")
    c.add_argument("--bits", type=int, default=None, help="bits per weight value (quantization-aware fine-tuning, "
                   "then export at this width); default float32")
    c.add_argument("--granularity", default="unstructured", choices=("unstructured", "hidden_unit"))
    c.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate of the fine-tuning")
    c.add_argument("--lr-schedule", default="constant", choices=("constant", "cosine"),
                   help="constant, or cosine decay to 0 after the pruning ramp")
    c.add_argument("--select", default="score", choices=("score", "nll"), help="fine-tuning checkpoint to keep: best "
                   "validation score, or lowest validation NLL (language models judged by perplexity)")
    c.add_argument("--method", default="linear", choices=("linear", "kmeans"), help="quantization method")
    c.add_argument("--seed", type=int, default=0, help="seeds the agent and the fine-tuning batches")
    c.add_argument("--device", default="cpu", help="where to search and fine-tune")
    c.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="agent option, e.g. learning_rate=0.1 (repeatable)")
    c.add_argument("--out", required=True, help="run directory (rerunning with it resumes after the last finished "
                   "stage)")
    c.add_argument("--no-progress", action="store_true", help="hide progress bars")
    c.set_defaults(func=cmd_compress)

    v = sub.add_parser("validate", help="re-score every row of a bench/train run directory; exit 1 on a mismatch")
    v.add_argument("run_dir", metavar="RUN_DIR", help="a run directory holding results.json (or result.json)")
    v.add_argument("--tolerance", type=float, default=1e-6, help="largest |filed - re-scored| val and test score")
    v.add_argument("--device", default="cpu", help="where to re-score (default cpu, whatever the run used)")
    v.set_defaults(func=_cmd_validate)

    ls = sub.add_parser("tasks", help="list the built-in tasks")
    ls.set_defaults(func=cmd_tasks)
    return p


def _task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="digits",
                   help="preset name, corpus directory, or module:function returning an RNNTask")
    p.add_argument("--task-seed", type=int, default=0, help="seed of the preset's trained model")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", default="joint", choices=("joint", "sequential"), help="env mode")
    p.add_argument("--option", action="append", default=[], metavar="AGENT.KEY=VALUE",
                   help="agent option, e.g. reinforce.learning_rate=0.1 (repeatable)")
    p.add_argument("--out", default="runs", help="parent directory of the run directory")
    p.add_argument("--device", default="cpu", help="device of the env's model copy")
    p.add_argument("--vector-envs", type=int, default=0, metavar="K",
                   help="score K candidates per batched pass (random, reinforce, ppo); same budget")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="scoring precision during the search (bf16: autocast; test scores are always fp32)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


# --------------------------------------------------------------------------------------------- commands
def cmd_tasks(args: argparse.Namespace) -> int:
    """Print the presets."""
    from rich.table import Table

    from prune_env.tasks import PRESETS

    table = Table(title="prune-rnn tasks")
    table.add_column("name")
    table.add_column("description")
    for name, desc in PRESETS.items():
        table.add_row(name, desc)
    table.add_row("<dir>", "a corpus directory (train/valid/test .txt), same as corpus with path=<dir>")
    table.add_row("<module:function>", "your own factory returning an RNNTask")
    console().print(table)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run every agent at every sparsity and seed; print the table and write the results."""
    import agents as A
    from agents.cli.ray_backend import check_backend, run_cells

    meta = _start_meta(args)
    sparsities = [_check_sparsity(s) for s in args.sparsity]
    names = _check_agents(args.agents)
    A.check_budget(args.budget)
    seeds = [_check_seed(s) for s in args.seeds]
    options = _parse_options(args.option, names)
    _check_device(args.device)
    check_backend(args)
    progress = not args.no_progress
    task = resolve_cli_task(args.task, args.task_seed, progress)
    if "gradient" in names and task.loss is None:
        raise CLIError(f"agent 'gradient' needs gradients, but task {task.name!r} has no `loss`; drop it from --agents")
    out, finished = _resume_dir(args.resume, task.name, args.budget) if args.resume else (new_run_dir(args.out), {})
    warn_if_dirty(meta)
    meta.update(task=task.name, task_metadata=_jsonable(task.metadata))
    if args.resume:
        meta["resumed_with"] = len(finished)
    t_start = time.perf_counter()

    rows = []
    from tqdm.auto import tqdm

    cells = [(target, name, seed) for target in sparsities for name in names
             for seed in (seeds[:1] if name in DETERMINISTIC else seeds)]
    bar = tqdm(total=len(cells), initial=sum(c in finished for c in cells), desc="bench", disable=not progress)
    if args.backend == "ray":  # every missing cell as a Ray task, written as it finishes; the loop only collects
        finished = run_cells(args, cells, finished, options, out, bar, lambda done: write_results(
            out, _end_meta(meta, t_start, complete=False), done, summarize(done)))
    envs: dict[float, Any] = {}
    for i, (target, name, seed) in enumerate(cells):  # rows in this order, resumed or not: the same tables
        if (target, name, seed) in finished:
            rows.append(finished[(target, name, seed)])
            continue
        bar.set_postfix_str(f"{name} @ {target:g} seed {seed}")
        if target not in envs:
            envs[target] = _make_env(task, target, args)
        env = envs[target]
        kw = dict(options.get(name, {}))
        if name in ("reinforce", "ppo"):
            kw.setdefault("tensorboard_log", str(out / "tensorboard" / f"{name}-{target:g}-s{seed}"))
        rows.append(_run_one(env, task, name, target, seed, args.budget, kw, args.vector_envs,
                             spec=(args.task, args.task_seed)))
        # Rewritten (atomically) after every cell, so a bench killed part-way keeps every cell it finished (the
        # resumed ones still ahead included).
        done = rows + [finished[c] for c in cells[i + 1:] if c in finished]
        write_results(out, _end_meta(meta, t_start, complete=False), done, summarize(done))
        bar.update(1)
    bar.close()
    summary = summarize(rows)
    write_results(out, _end_meta(meta, t_start, complete=True), rows, summary)
    plot_pareto(out / "pareto.png", rows, summary)
    plot_allocations(out / "allocation.png", summary)
    print_summary(summary, title=f"{task.name}: budget {args.budget} evaluations, seeds {seeds}")
    print(f"results: {out}")
    return 0


def _resume_dir(run_dir: str, task_name: str, budget: int) -> tuple[Path, dict[tuple, dict[str, Any]]]:
    """The run directory to finish and its finished cells, keyed by (target, agent, seed)."""
    out = Path(run_dir)
    path = out / "results.json"
    if not path.is_file():
        raise CLIError(f"--resume: no results.json in {run_dir} (nothing to resume)")
    try:
        data = json.loads(path.read_text())
        runs = data["runs"]
    except (ValueError, KeyError, TypeError) as e:
        raise CLIError(f"--resume: {path} is not a bench results file ({e})") from None
    for r in runs:
        if r.get("task") != task_name or r.get("budget") != budget:
            raise CLIError(f"--resume: {run_dir} holds a bench of task {r.get('task')!r} with budget "
                           f"{r.get('budget')}, not {task_name!r} with {budget}; pass the same arguments")
    return out, {(r["target_sparsity"], r["agent"], r["seed"]): r for r in runs}


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Pretrain a layer-wise policy on a zoo and save the one that does best zero-shot on the validation tasks."""
    from agents.policies.layerwise import PretrainArgs, pretrain_selected, save
    from prune_env import PruneRNNZooEnv

    meta = _start_meta(args)
    low, high = (_check_sparsity(t, "--targets") for t in args.targets)
    if low > high:
        raise CLIError(f"--targets: LOW must not exceed HIGH, got {low} {high}")
    selection_targets = [_check_sparsity(t, "--selection-targets") for t in args.selection_targets]
    for name in ("episodes", "rounds", "batch_size", "hidden", "group_size"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for flag, value in (("--learning-rate", args.learning_rate), ("--init-std", args.init_std)):
        if not value > 0:
            raise CLIError(f"{flag} must be > 0, got {value}")
    if not 0 <= args.ema_decay < 1:
        raise CLIError(f"--ema-decay must be in [0, 1), got {args.ema_decay}")
    seed = _check_seed(args.seed)
    _check_device(args.device)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise CLIError(f"--out: directory not found: {out.parent}")
    progress = not args.no_progress
    train = _zoo_tasks(args.tasks, args.zoo, "--zoo", progress)
    val = _zoo_tasks(args.val_tasks, args.validation, "--validation", progress)
    warn_if_dirty(meta)
    writer = None
    if args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(args.tensorboard)
    t_start = time.perf_counter()
    zoo = PruneRNNZooEnv(train, target_sparsity=(low, high), device=args.device)
    opts = PretrainArgs(episodes=args.episodes, batch_size=args.batch_size, learning_rate=args.learning_rate,
                        hidden=args.hidden, seed=seed, group_size=args.group_size, init_std=args.init_std,
                        ema_decay=args.ema_decay)
    try:
        policy, log = pretrain_selected(zoo, val, opts, rounds=args.rounds, progress=progress, writer=writer,
                                        checkpoint=args.checkpoint, selection_metric=args.selection_metric,
                                        selection_targets=selection_targets)
    except ValueError as e:  # a bad --checkpoint path, or a checkpoint of another run (CheckpointError)
        raise CLIError(f"--checkpoint: {e}") from None
    if writer is not None:
        writer.close()
    meta = _end_meta(meta, t_start, train_tasks=[t.name for t in train], validation_tasks=[t.name for t in val],
                     targets=[low, high], options=dict(opts.__dict__), rounds=args.rounds, log=log,
                     selection={"metric": args.selection_metric, "targets": selection_targets},
                     **policy.meta)
    save(policy, out, _jsonable(meta))
    from rich.table import Table

    table = Table(title=f"pretrain: {len(train)} models, validation on {len(val)}")
    for col in ("episodes", f"validation zero-shot {args.selection_metric}", "train reward"):
        table.add_column(col)
    for row in log:
        table.add_row(str(row["episodes"]), f"{row['validation']:.4f}",
                      f"{row['train_reward']:.4f}" if "train_reward" in row else "-")
    console().print(table)
    print(f"selected after {policy.meta['selected_after_episodes']} episodes; policy: {out}")
    return 0


def _zoo_tasks(specs: Sequence[str] | None, split: str, flag: str, progress: bool) -> list[Any]:
    """Tasks from explicit specs, or every available model of a zoo split."""
    if specs:
        return [resolve_cli_task(s, 0, progress) for s in specs]
    try:
        from prune_env.tasks.zoo import make_zoo_task, zoo_names
    except ImportError:
        raise CLIError(f"{flag}: this version has no model zoo; pass the models with --tasks/--val-tasks") from None
    try:
        names = zoo_names(split, available_only=True)
    except ValueError as e:
        raise CLIError(f"{flag}: {_one_line(e)}") from None
    if not names:
        raise CLIError(f"{flag}: the zoo split {split!r} has no available model")
    return [make_zoo_task(n, progress=progress) for n in names]


def cmd_train(args: argparse.Namespace) -> int:
    """Run one agent; save the allocation, the result and (for learning agents) the policy."""
    import agents as A

    meta = _start_meta(args)
    target = _check_sparsity(args.sparsity)
    (name,) = _check_agents([args.agent])
    A.check_budget(args.budget)
    seed = _check_seed(args.seed)
    kw = _parse_options(args.option, [name]).get(name, {})
    _check_device(args.device)
    task = resolve_cli_task(args.task, args.task_seed, not args.no_progress)
    out = new_run_dir(args.out)
    warn_if_dirty(meta)
    meta.update(task=task.name, task_metadata=_jsonable(task.metadata), agent=name,
                algo=kw.get("algo", "PPO") if name == "ppo" else None, mode=args.mode)
    t_start = time.perf_counter()
    env = _make_env(task, target, args)
    if name in POLICY_FILES:
        kw.setdefault("save_path", str(out / POLICY_FILES[name]))
        kw.setdefault("tensorboard_log", str(out / "tensorboard"))
    if name == "ppo":
        kw.setdefault("progress_bar", not args.no_progress)
    row = _run_one(env, task, name, target, seed, args.budget, kw, args.vector_envs, spec=(args.task, args.task_seed))
    meta = _end_meta(meta, t_start)
    write_json(out / "allocation.json", {"task": task.name, "target_sparsity": target,
                                         "allocation": row["allocation"]})
    write_json(out / "result.json", {"meta": meta, "result": row})
    print_summary(summarize([row]), title=f"{task.name}: {name}, budget {args.budget}")
    print(f"results: {out}")
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    """search -> gradual pruning with fine-tuning (quantization-aware with --bits) -> export -> report."""
    from agents.cli.compress import compress

    target = _check_sparsity(args.sparsity)
    _check_device(args.device)
    seed = _check_seed(args.seed)
    if args.agent is not None:
        _check_agents([args.agent])
    options = _parse_options([f"agent.{o}" for o in args.option], ["agent"]).get("agent", {})
    task = resolve_cli_task(args.task, args.task_seed, not args.no_progress)
    report = compress(task, target, args.out, agent=args.agent, budget=args.budget, seed=seed, steps=args.steps,
                      bits=args.bits, granularity=args.granularity, lr=args.lr, lr_schedule=args.lr_schedule,
                      select=args.select, method=args.method,
                      device=args.device, agent_options=options, progress=not args.no_progress,
                      log=lambda msg: print(msg, flush=True), command=["prune-rnn", *args.argv])
    final, dense = report["rows"]["final"], report["rows"]["dense"]
    print(f"test score {final.get('test_score', float('nan')):.4f} (dense {dense.get('test_score', float('nan')):.4f}),"
          f" {final['bytes']} bytes ({final['bytes_ratio']:.3f}x dense); report: {Path(args.out) / 'report.md'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a saved allocation (or a saved policy's allocation) on validation and test."""
    from rich.table import Table

    from prune_env import PruneRNNEnv
    from prune_env.task import split_score

    if args.finetune_steps < 0:
        raise CLIError(f"--finetune-steps must be >= 0, got {args.finetune_steps}")
    _check_device(args.device)
    task = resolve_cli_task(args.task, args.task_seed, True)
    if args.allocation:
        allocation = _read_allocation(args.allocation)
        env = PruneRNNEnv(task, mode=args.mode, device=args.device)
    else:
        if args.sparsity is None:
            raise CLIError("--policy needs --sparsity, the target the policy acts under")
        env = PruneRNNEnv(task, target_sparsity=_check_sparsity(args.sparsity), mode=args.mode, device=args.device)
        allocation = _policy_allocation(env, args.policy, args.algo)
    model = env.pruned_model(allocation)
    if args.finetune_steps:
        import torch

        from prune_env.compression.export import masks
        from prune_env.compression.finetune import finetune

        finetune(model, task, args.finetune_steps, masks(model), torch.Generator().manual_seed(0))
    counts = env.counts_for(allocation)
    val = split_score(task.evaluate(model))[0]
    test = split_score(task.test(model), "test")[0] if task.test is not None else float("nan")
    from prune_env.compression.size import size_bytes

    table = Table(title=f"{task.name}: evaluate")
    for col in ("test score", "val score", "dense test", "sparsity", "nonzero params", "size bytes (fp32)"):
        table.add_column(col, justify="right")
    dense_test = split_score(task.test(task.model), "test")[0] if task.test is not None else float("nan")
    table.add_row(f"{test:.4f}", f"{val:.4f}", f"{dense_test:.4f}", f"{counts.sum() / env.numels.sum():.4f}",
                  f"{env.total_params - int(counts.sum())}",
                  f"{size_bytes(model)}")
    console().print(table)
    return 0


# ----------------------------------------------------------------------------------------------- pieces
def _run_one(env: Any, task: Any, name: str, target: float, seed: int, budget: int, kwargs: dict[str, Any],
             vector_envs: int = 0, spec: tuple[str, int] | None = None) -> dict[str, Any]:
    """One search plus its single test scoring, as a result row; ``spec`` (``--task``, ``--task-seed``) goes into
    the row's ``replay`` record (:func:`prune_env.replay.replay_record`), which ``prune-rnn validate`` re-scores."""
    import agents as A
    from prune_env.replay import replay_record
    from prune_env.task import split_score

    if vector_envs < 0:
        raise CLIError(f"--vector-envs must be >= 0, got {vector_envs}")
    batches = name in ("random", "reinforce", "ppo")
    res = A.search(name, env, budget, seed=seed, vector_envs=vector_envs if batches else 0, **kwargs)
    counts = env.counts_for(res.allocation)
    model = env.pruned_model(res.allocation)
    test = split_score(task.test(model), "test")[0] if task.test is not None else float("nan")
    return {"task": task.name, "agent": name, "target_sparsity": target, "seed": seed, "budget": budget,
            "val_score": res.val_score, "test_score": test, "dense_val": env.dense_score, "precision": env.precision,
            "mode": env.mode, "device": str(env.device),
            "achieved_sparsity": float(counts.sum() / env.numels.sum()),
            "nonzero_params": int(env.total_params - counts.sum()), "evals": res.evals,
            "wall_time_s": round(res.wall_time, 3), "allocation": res.allocation, "history": res.history,
            "replay": replay_record(env, counts, task_spec=spec and spec[0], task_seed=spec and spec[1])}


def _make_env(task: Any, target: float, args: argparse.Namespace) -> Any:
    from prune_env import PruneRNNEnv

    return PruneRNNEnv(task, target_sparsity=target, mode=args.mode, device=args.device, precision=args.precision)


def resolve_cli_task(spec: str, seed: int, progress: bool) -> Any:
    """An :class:`RNNTask` from a preset name, a corpus directory or ``module:function``.

    :param spec: what the user typed after ``--task``.
    :param seed: the preset's model seed.
    :param progress: show training progress for presets.
    :raises CLIError: for an unknown task or a missing directory.
    """
    from prune_env.tasks import PRESETS, TaskError, resolve_task

    if spec == "corpus":
        raise CLIError("--task corpus needs the corpus directory: pass --task <dir>")
    is_factory = ":" in spec and os.sep not in spec and spec not in PRESETS and not os.path.isdir(spec)
    if is_factory and os.getcwd() not in sys.path:  # like `python -m`: the user's modules are found from where they
        sys.path.insert(0, os.getcwd())             # stand
    try:
        return resolve_task(spec, **({} if is_factory else {"seed": seed, "progress": progress}))
    except TaskError as e:
        raise CLIError(f"--task: {_one_line(e)}") from None


def new_run_dir(parent: str) -> Path:
    """A new ``<parent>/<YYYYmmdd-HHMMSS>[-n]`` directory that no earlier run used."""
    root = Path(parent)
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = root / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise CLIError(f"could not create a new run directory under {root}")


def _start_meta(args: argparse.Namespace) -> dict[str, Any]:
    """The run's metadata, taken as it starts (before the task is loaded); the dirty-tree warning comes later,
    once the arguments passed, so that a bad argument still prints one line."""
    return run_meta(["prune-rnn", *args.argv], warn=False, gpu=str(args.device).startswith("cuda"))


def _end_meta(meta: dict[str, Any], t_start: float, **extra: Any) -> dict[str, Any]:
    """``meta`` plus the seconds since ``t_start`` (the searches, task loading excluded)."""
    return {**meta, "wall_time_s": round(time.perf_counter() - t_start, 2), **extra}


def _check_device(device: str) -> str:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise CLIError(f"--device: unknown device {device!r}; expected e.g. cpu, cuda or cuda:1") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return device


def _check_sparsity(s: float, flag: str = "--sparsity") -> float:
    if not isinstance(s, (int, float)) or not 0 <= s < 1:
        raise CLIError(f"{flag} must be in [0, 1), got {s}")
    return float(s)


def _check_agents(names: Sequence[str]) -> list[str]:
    import agents as A

    valid = [n for n in A.AGENTS if n != "policy"]
    for n in names:
        if n not in valid:
            raise CLIError(f"unknown agent {n!r}; expected one of {valid}")
    if len(set(names)) != len(names):
        raise CLIError(f"--agents lists an agent twice: {list(names)}")
    return list(names)


def _check_seed(s: int) -> int:
    if s < 0:
        raise CLIError(f"seeds must be non-negative ints, got {s}")
    return s


def _parse_options(items: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["reinforce.learning_rate=0.1"]`` -> ``{"reinforce": {"learning_rate": 0.1}}`` (values as Python literals)."""
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


def _read_allocation(path: str) -> dict[str, float]:
    if not os.path.isfile(path):
        raise CLIError(f"--allocation: file not found: {path}")
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise CLIError(f"--allocation: {path} is not JSON ({e})") from None
    alloc = data.get("allocation", data) if isinstance(data, dict) else None
    if not isinstance(alloc, dict):
        raise CLIError(f"--allocation: {path} holds no {{layer: sparsity}} mapping")
    return {str(k): float(v) for k, v in alloc.items()}


def _policy_allocation(env: Any, path: str, algo: str | None) -> dict[str, float]:
    from agents.policies.policy import play

    if not os.path.isfile(path):
        raise CLIError(f"--policy: file not found: {path}")
    if path.endswith(".zip"):
        from agents.searchers import ppo
        if algo is None:
            meta = Path(path).with_name("result.json")
            algo = json.loads(meta.read_text())["meta"].get("algo") if meta.is_file() else None
        policy = ppo.load(path, algo or "PPO", env)
    else:
        from agents.searchers import reinforce
        policy = reinforce.load(path)
    play(env, policy)
    return env.allocation


def _cmd_validate(args: argparse.Namespace) -> int:
    """``prune-rnn validate RUN_DIR``: see :mod:`agents.cli.validate`."""
    from agents.cli.validate import cmd_validate

    return cmd_validate(args)


# ----------------------------------------------------------------------------------------------- helpers
def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
