"""``prune-rnn evaluate``: apply a saved allocation (or a saved policy's allocation) to a task; report the test and
validation scores and the size.

An allocation file is JSON (data only). A policy is read by its agent's loader: ``policy.pt`` of ``reinforce`` with
``torch.load(weights_only=True)`` (tensors and plain values; a pickled object is refused), ``policy.zip`` of ``ppo``
by Stable-Baselines3. Either refusal is a one-line error.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from agents.cli.common import CLIError, add_task_args, check_device, check_sparsity, one_line, resolve_cli_task


def add_parser(sub: Any) -> None:
    """Register ``evaluate`` on the ``prune-rnn`` subparsers."""
    e = sub.add_parser("evaluate", help="apply a saved allocation or policy; report test score and size")
    add_task_args(e)
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


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a saved allocation (or a saved policy's allocation) on validation and test."""
    from rich.table import Table

    from agents.core.results import console
    from prune_env import PruneRNNEnv
    from prune_env.compression.size import size_bytes
    from prune_env.task import split_score

    if args.finetune_steps < 0:
        raise CLIError(f"--finetune-steps must be >= 0, got {args.finetune_steps}")
    check_device(args.device)
    if args.allocation:
        allocation = read_allocation(args.allocation)
    elif args.sparsity is None:
        raise CLIError("--policy needs --sparsity, the target the policy acts under")
    elif not os.path.isfile(args.policy):
        raise CLIError(f"--policy: file not found: {args.policy}")
    task = resolve_cli_task(args.task, args.task_seed, True)
    if args.allocation:
        env = PruneRNNEnv(task, mode=args.mode, device=args.device)
    else:
        env = PruneRNNEnv(task, target_sparsity=check_sparsity(args.sparsity), mode=args.mode, device=args.device)
        allocation = policy_allocation(env, args.policy, args.algo)
    try:
        model = env.pruned_model(allocation)
        counts = env.counts_for(allocation)
    except (ValueError, KeyError) as e:
        raise CLIError(f"--allocation: {one_line(e)}") from None
    if args.finetune_steps:
        import torch

        from prune_env.compression.export import masks
        from prune_env.compression.finetune import finetune

        finetune(model, task, args.finetune_steps, masks(model), torch.Generator().manual_seed(0))
    val = split_score(task.evaluate(model))[0]
    test = split_score(task.test(model), "test")[0] if task.test is not None else float("nan")
    table = Table(title=f"{task.name}: evaluate")
    for col in ("test score", "val score", "dense test", "sparsity", "nonzero params", "size bytes (fp32)"):
        table.add_column(col, justify="right")
    dense_test = split_score(task.test(task.model), "test")[0] if task.test is not None else float("nan")
    table.add_row(f"{test:.4f}", f"{val:.4f}", f"{dense_test:.4f}", f"{counts.sum() / env.numels.sum():.4f}",
                  f"{env.total_params - int(counts.sum())}", f"{size_bytes(model)}")
    console().print(table)
    return 0


def read_allocation(path: str) -> dict[str, float]:
    """The ``{layer: sparsity}`` mapping of an allocation JSON file (``allocation.json`` or a bare mapping).

    :raises CLIError: for a missing or unreadable file, or one without such a mapping.
    """
    if not os.path.isfile(path):
        raise CLIError(f"--allocation: file not found: {path}")
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CLIError(f"--allocation: {path} is not JSON ({one_line(e)})") from None
    alloc = data.get("allocation", data) if isinstance(data, dict) else None
    if not isinstance(alloc, dict):
        raise CLIError(f"--allocation: {path} holds no {{layer: sparsity}} mapping")
    try:
        return {str(k): float(v) for k, v in alloc.items()}
    except (TypeError, ValueError):
        raise CLIError(f"--allocation: {path} holds a sparsity that is not a number") from None


def policy_allocation(env: Any, path: str, algo: str | None) -> dict[str, float]:
    """The allocation the policy saved at ``path`` plays on ``env``.

    :raises CLIError: for a file that is not a policy of ``train`` (a pickled object included).
    """
    from agents.policies.policy import play

    try:
        if path.endswith(".zip"):
            from agents.searchers import ppo

            if algo is None:
                meta = Path(path).with_name("result.json")
                algo = json.loads(meta.read_text())["meta"].get("algo") if meta.is_file() else None
            policy = ppo.load(path, algo or "PPO", env)
        else:
            from agents.searchers import reinforce

            policy = reinforce.load(path)
    except Exception as e:  # a zip or torch file that is not a policy: whatever its loader raised, one line
        raise CLIError(f"--policy: {path} is not a policy written by prune-rnn train ({one_line(e)})") from None
    play(env, policy)
    return env.allocation


__all__ = ["add_parser", "cmd_evaluate", "policy_allocation", "read_allocation"]
