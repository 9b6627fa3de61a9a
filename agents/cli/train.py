"""``prune-rnn train``: one agent on one task at one target; the best allocation, the result row and, for learning
agents, the trained policy, in a fresh run directory."""

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

#: Agents whose trained policy ``train`` saves, with the file name.
POLICY_FILES = {"ppo": "policy.zip", "reinforce": "policy.pt"}


def add_parser(sub: Any) -> None:
    """Register ``train`` on the ``prune-rnn`` subparsers."""
    t = sub.add_parser("train", help="run one agent; save its best allocation (and policy)")
    add_task_args(t)
    t.add_argument("--sparsity", type=float, required=True, help="target overall sparsity")
    t.add_argument("--agent", default="reinforce", help="agent name")
    add_max_evals_arg(t, 300, "evaluations (hard cap)")
    t.add_argument("--seed", type=int, default=0, help="agent seed")
    add_run_args(t)
    t.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    """Run one agent; save the allocation, the result and (for learning agents) the policy."""
    from agents.core.results import print_summary, summarize, warn_if_dirty, write_json

    meta = start_meta(args)
    target = check_sparsity(args.sparsity)
    (name,) = check_agents([args.agent])
    seed = check_seed(args.seed)
    kw = parse_options(args.option, [name]).get(name, {})
    check_device(args.device)
    if args.vector_envs < 0:
        raise CLIError(f"--vector-envs must be >= 0, got {args.vector_envs}")
    task = resolve_cli_task(args.task, args.task_seed, not args.no_progress)
    out = new_run_dir(args.out)
    warn_if_dirty(meta)
    meta.update(task=task.name, task_metadata=plain(task.metadata), agent=name,
                algo=kw.get("algo", "PPO") if name == "ppo" else None, mode=args.mode)
    t_start = time.perf_counter()
    env = make_env(task, target, args.mode, args.device, args.precision, args.criterion, args.reconstruct)
    if name in POLICY_FILES:
        kw.setdefault("save_path", str(out / POLICY_FILES[name]))
        kw.setdefault("tensorboard_log", str(out / "tensorboard"))
    if name == "ppo":
        kw.setdefault("progress_bar", not args.no_progress)
    row = run_one(env, task, name, target, seed, args.max_evals, kw,
                  args.vector_envs if name in BATCHING_AGENTS else 0, spec=(args.task, args.task_seed))
    meta = end_meta(meta, t_start)
    write_json(out / "allocation.json", {"task": task.name, "target_sparsity": target,
                                         "allocation": row["allocation"]})
    write_json(out / "result.json", {"meta": meta, "result": row})
    print_summary(summarize([row]), title=f"{task.name}: {name}, max {args.max_evals} evaluations")
    print(f"results: {out}")
    return 0


__all__ = ["POLICY_FILES", "add_parser", "cmd_train"]
