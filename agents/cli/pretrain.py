"""``prune-rnn pretrain``: a layer-wise policy pretrained on a zoo of models (REINFORCE, joint mode) and selected
on validation models (:mod:`agents.policies.layerwise`)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.cli.common import (
    CLIError,
    add_operator_args,
    check_device,
    check_seed,
    check_sparsity,
    end_meta,
    one_line,
    plain,
    resolve_cli_task,
    start_meta,
)


def add_parser(sub: Any) -> None:
    """Register ``pretrain`` on the ``prune-rnn`` subparsers."""
    pt = sub.add_parser("pretrain", help="pretrain a layer-wise policy on a zoo of models (REINFORCE, joint mode)")
    pt.add_argument("--zoo", nargs="+", default=["train"], metavar="[VERSION:]SPLIT",
                    help="zoo splits to train on, e.g. train or v2:train (default version v1; see prune_env.tasks.zoo)")
    pt.add_argument("--validation", nargs="+", default=["validation"], metavar="[VERSION:]SPLIT",
                    help="zoo splits to select the policy on, e.g. validation, or v1:train v1:validation for a "
                    "larger (less noisy) selection set")
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
    pt.add_argument("--pool", action="store_true", help="a pooled policy: each layer's departure also reads the mean "
                    "and maximum of every layer's encoding (Deep Sets), so it can depend on the model's other layers")
    pt.add_argument("--seed", type=int, default=0, help="seeds the policy, its sampling and the draws")
    pt.add_argument("--out", default="policy.pt", help="where to write the selected policy (atomically)")
    pt.add_argument("--tensorboard", default=None, metavar="DIR", help="TensorBoard log directory")
    pt.add_argument("--checkpoint", default=None, metavar="PATH", help="resume from this file if it exists, and "
                    "rewrite it after every round (a killed run loses at most one round; the result is the same)")
    pt.add_argument("--device", default="cpu", help="device of the envs' model copies")
    pt.add_argument("--observation-format", type=int, default=3, choices=(3, 4),
                    help="the zoo observation the policy reads (4 adds the calibration-aware layer features)")
    add_operator_args(pt)
    pt.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    pt.set_defaults(func=cmd_pretrain)


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Pretrain a layer-wise policy on a zoo and save the one that does best zero-shot on the validation tasks."""
    from agents.core.results import console, warn_if_dirty
    from agents.policies.layerwise import PretrainArgs, pretrain_selected, save
    from prune_env import PruneRNNZooEnv

    meta = start_meta(args)
    low, high = (check_sparsity(t, "--targets") for t in args.targets)
    if low > high:
        raise CLIError(f"--targets: LOW must not exceed HIGH, got {low} {high}")
    selection_targets = [check_sparsity(t, "--selection-targets") for t in args.selection_targets]
    for name in ("episodes", "rounds", "batch_size", "hidden", "group_size"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for flag, value in (("--learning-rate", args.learning_rate), ("--init-std", args.init_std)):
        if not value > 0:
            raise CLIError(f"{flag} must be > 0, got {value}")
    if not 0 <= args.ema_decay < 1:
        raise CLIError(f"--ema-decay must be in [0, 1), got {args.ema_decay}")
    seed = check_seed(args.seed)
    check_device(args.device)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise CLIError(f"--out: directory not found: {out.parent}")
    progress = not args.no_progress
    train = zoo_tasks(args.tasks, args.zoo, "--zoo", progress)
    val = zoo_tasks(args.val_tasks, args.validation, "--validation", progress)
    t_start = time.perf_counter()
    operator = {"criterion": args.criterion, "reconstruct": None if args.reconstruct == "none" else args.reconstruct}
    try:
        zoo = PruneRNNZooEnv(train, target_sparsity=(low, high), device=args.device,
                             observation_format=args.observation_format, **operator)
    except ValueError as e:  # e.g. a data-aware criterion on a model whose task has no calibration inputs
        raise CLIError(f"--criterion/--reconstruct: {one_line(e)}") from None
    warn_if_dirty(meta)
    writer = None
    if args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(args.tensorboard)
    opts = PretrainArgs(episodes=args.episodes, batch_size=args.batch_size, learning_rate=args.learning_rate,
                        hidden=args.hidden, seed=seed, group_size=args.group_size, init_std=args.init_std,
                        ema_decay=args.ema_decay, pool=args.pool)
    try:
        policy, log = pretrain_selected(zoo, val, opts, rounds=args.rounds, progress=progress, writer=writer,
                                        checkpoint=args.checkpoint, selection_metric=args.selection_metric,
                                        selection_targets=selection_targets)
    except ValueError as e:  # a bad --checkpoint path, or a checkpoint of another run (CheckpointError)
        raise CLIError(f"--checkpoint: {e}") from None
    if writer is not None:
        writer.close()
    meta = end_meta(meta, t_start, train_tasks=[t.name for t in train], validation_tasks=[t.name for t in val],
                     targets=[low, high], options=dict(opts.__dict__), rounds=args.rounds, log=log,
                     selection={"metric": args.selection_metric, "targets": selection_targets},
                     observation_format=args.observation_format, operator=operator,
                     **policy.meta)
    save(policy, out, plain(meta))
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


def zoo_tasks(specs: Sequence[str] | None, splits: str | Sequence[str], flag: str, progress: bool) -> list[Any]:
    """Tasks from explicit specs, or every available model of the zoo splits (each ``SPLIT`` of zoo-v1, or
    ``VERSION:SPLIT``), in the order given, each model once."""
    if specs:
        return [resolve_cli_task(s, 0, progress) for s in specs]
    try:
        from prune_env.tasks.zoo import make_zoo_task, zoo_names
    except ImportError:
        raise CLIError(f"{flag}: this version has no model zoo; pass the models with --tasks/--val-tasks") from None
    names: list[str] = []
    for split in [splits] if isinstance(splits, str) else splits:
        version, _, name = split.rpartition(":")
        try:
            found = zoo_names(name, available_only=True, version=version or "v1")
        except ValueError as e:
            raise CLIError(f"{flag}: {one_line(e)}") from None
        if not found:
            raise CLIError(f"{flag}: the zoo split {split!r} has no available model")
        names += [n for n in found if n not in names]
    return [make_zoo_task(n, progress=progress) for n in names]


__all__ = ["add_parser", "cmd_pretrain", "zoo_tasks"]
