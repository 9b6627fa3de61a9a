"""``python -m prune_env.tasks.zoo build|list``: train (or load) the zoo and print a table of its dense scores.

::

    python -m prune_env.tasks.zoo build --split all --seed 0
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from prune_env.io import atomic_write
from prune_env.tasks.zoo.catalogue import ZOOS, ZooDataUnavailable, available, lookup, zoo_names
from prune_env.tasks.zoo.factories import make_zoo_task


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m prune_env.tasks.zoo", description="Build (train and cache) the model zoo.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    b = sub.add_parser("build", help="train every model of a split (cached ones load) and print a table")
    b.add_argument("--split", default="all", choices=["train", "validation", "test", "all"])
    b.add_argument("--zoo", default="v1", choices=sorted(ZOOS), help="which zoo (default v1)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--names", nargs="+", default=None, help="only these zoo names")
    b.add_argument("--retrain", action="store_true", help="ignore cached models")
    b.add_argument("--out", default=None, help="also write the table as Markdown to this file (atomically)")
    ls = sub.add_parser("list", help="print the zoo's specs")
    ls.add_argument("--split", default="all", choices=["train", "validation", "test", "all"])
    ls.add_argument("--zoo", default="v1", choices=sorted(ZOOS), help="which zoo (default v1)")
    return p


def _provenance(argv: Sequence[str]) -> str:
    import platform
    import subprocess

    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                "prune_env"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", ""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"`python -m prune_env.tasks.zoo {' '.join(argv)}` at {commit}"
            f"{' (uncommitted changes to prune_env/)' if dirty else ''} on {platform.machine()} "
            f"{os.cpu_count()} CPUs ({platform.processor() or platform.platform()}), torch {torch.__version__}, "
            f"Python {platform.python_version()}, models trained on 1 torch thread, 1-min load "
            f"{load:.1f} at start, {time.strftime('%Y-%m-%d %H:%M:%S')}.")


def _short(name: str) -> str:
    return name.split("/", 1)[-1]


def _fmt(x: Any) -> str:
    return "-" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x))


#: The build flags a model ``LOW`` when its dense test score is not well above chance: a ``skill`` (share of the
#: best constant predictor's test loss removed) under this, or a test accuracy under chance + :data:`MIN_MARGIN`.
MIN_SKILL = 0.1
MIN_MARGIN = 0.05
#: The build flags a model ``SLOW`` when its training took longer than this many seconds.
MAX_TRAIN_S = 60.0


def well_above_chance(metadata: dict[str, Any]) -> bool:
    """The zoo's bar for a dense model: ``skill >= MIN_SKILL`` and, for accuracy, ``chance + MIN_MARGIN``."""
    md = metadata
    margin = MIN_MARGIN if md["chance_loss_name"] == "nll" else 0.0
    return md["skill"] >= MIN_SKILL and md["dense_test"] >= md["chance_test"] + margin


def build(names: Sequence[str], *, seed: int = 0, retrain: bool = False) -> list[dict[str, Any]]:
    """Build ``names`` (tqdm over models); returns one row per model (missing data: a row with ``error``)."""
    from tqdm.auto import tqdm

    rows = []
    bar = tqdm(names, desc="zoo", unit="model")
    for name in bar:
        bar.set_postfix_str(_short(name))
        try:
            task = make_zoo_task(name, seed=seed, retrain=retrain, progress=False)
        except ZooDataUnavailable as e:
            rows.append({"name": name, "split": lookup(name).split, "error": str(e)})
            continue
        md = task.metadata
        rows.append({"name": name, "split": md["split"], "kind": md["kind"], "params": md["params"],
                     "metric": md["config"].get("metric", "accuracy") if md["kind"] != "regress" else "-mse",
                     "dense_val": md["dense_val"], "dense_test": md["dense_test"], "chance_test": md["chance_test"],
                     "loss_name": md["chance_loss_name"], "test_loss": md["dense_test_loss"],
                     "chance_loss": md["chance_test_loss"], "skill": md["skill"], "ok": well_above_chance(md),
                     "train_s": md["train_time_s"], "cached": md["from_cache"]})
    bar.close()
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The build rows as a Markdown table."""
    lines = ["| name | split | kind | params | metric | dense val | dense test | chance test | test loss | "
             "chance loss | skill | train s | cached |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {_short(r['name'])} | {r['split']} | not built: {r['error']} "
                         "|||||||||||")
            continue
        low = "" if r["ok"] else " LOW"
        slow = " SLOW" if (r["train_s"] or 0) > MAX_TRAIN_S else ""
        lines.append(f"| {_short(r['name'])} | {r['split']} | {r['kind']} | {r['params']:,} | "
                     f"{r['metric']} | {r['dense_val']:.4f} | {r['dense_test']:.4f} | {r['chance_test']:.4f} | "
                     f"{r['loss_name']} {r['test_loss']:.3f} | {r['chance_loss']:.3f} | {r['skill']:.2f}{low} | "
                     f"{r['train_s']:.1f}{slow} | {'yes' if r['cached'] else 'no'} |")
    return "\n".join(lines)


LEGEND = ("chance test: the test score of always predicting the most frequent training class/token (accuracy) or "
          "the training mean (-mse). test loss / chance loss: test NLL (or MSE) of the model / of the best constant "
          "predictor (training frequencies, add-one smoothed; or the training mean). skill = 1 - test loss / chance "
          f"loss (R^2 for regression). LOW: skill < {MIN_SKILL} or accuracy < chance + {MIN_MARGIN}. SLOW: training "
          f"over {MAX_TRAIN_S:.0f} s. train s: training time recorded when the model was trained (also for cached "
          "models).")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m prune_env.tasks.zoo build|list``; returns the exit code (2 on bad input, one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
        if args.command == "list":
            for name in zoo_names(None if args.split == "all" else args.split, version=args.zoo):
                s = lookup(name)
                print(f"{name}  {s.split}  {s.kind}  data={s.data}  steps={s.steps}  "
                      f"{'available' if available(name) else 'data missing'}")
            return 0
        if args.seed < 0:
            raise _UsageError(f"--seed must be >= 0, got {args.seed}")
        names = zoo_names(None if args.split == "all" else args.split, version=args.zoo)
        if args.names:
            unknown = [n for n in args.names if n not in ZOOS[args.zoo]]
            if unknown:
                raise _UsageError(f"unknown zoo name(s) {unknown}; see `python -m prune_env.tasks.zoo list`")
            names = [n for n in names if n in args.names]
        header = _provenance(argv)
        rows = build(names, seed=args.seed, retrain=args.retrain)
    except _UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = table(rows)
    print(text)
    built = [r for r in rows if "error" not in r]
    total = sum(r["train_s"] or 0 for r in built)
    summary = (f"{len(built)} of {len(rows)} models built; total training time {total:.0f} s; "
               f"{sum(not r['ok'] for r in built)} LOW, "
               f"{sum((r['train_s'] or 0) > MAX_TRAIN_S for r in built)} SLOW.")
    print(summary)
    if args.out:
        atomic_write(Path(args.out), f"# Model zoo build ({args.zoo})\n\n{header}\n\n{text}\n\n{summary}\n\n"
                      f"{LEGEND}\n")
    return 0
