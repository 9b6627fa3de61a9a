"""Pretrain a candidate default policy with ``prune-rnn pretrain`` and decide, on validation models only, whether it
may ship.

- **Train** with ``prune-rnn pretrain`` on every model of ``--train-splits`` (default zoo-v2's training models),
  observation format ``--observation-format``, operator ``--operator`` (``criterion:reconstruct``), targets drawn
  from ``--target-range``; each round's policy is scored on the models of ``--selection-splits`` (default zoo-v1's
  validation models) with its mean action at ``--selection-targets`` (the same models and targets every round: common
  random numbers), and the best is kept.
- **Decide** on zoo-v2's validation models (never used in training or selection): the selected policy's zero-shot
  allocation against LAMP's at ``--decision-targets``, with the training operator and with each of
  ``--also-operators``. The candidate qualifies to ship only if its mean validation score beats LAMP's with the
  training operator. ``decision.json`` is written before anything else; no test split is read, and this script never
  replaces the shipped policy (copying ``policy.pt`` to ``agents/data/default_policy.pt`` is a reviewed change).

    nice -n 10 env OMP_NUM_THREADS=1 python -m benchmarks policy_ship
    python -m benchmarks.policy_ship --operator obs:obs --episodes 4096 --rounds 16 --out DIR
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks._meta import default_out, operator_kwargs, provenance, run_meta, write_results
from benchmarks.pretrain_format4 import add_pretraining_args, decide, decision_tasks, selectable, selection_set, splits
from prune_env.io import atomic_write

NAME = "policy_ship"


def pretrain_argv(args: argparse.Namespace, out: Path) -> list[str]:
    """The ``prune-rnn pretrain`` words of this run."""
    op = operator_kwargs(args.operator)
    return ["pretrain", "--zoo", *args.train_splits, "--validation", *args.selection_splits,
            "--observation-format", str(args.observation_format), "--criterion", op["criterion"],
            "--reconstruct", op["reconstruct"] or "none", "--targets", *map(str, args.target_range),
            "--episodes", str(args.episodes), "--rounds", str(args.rounds), "--batch-size", str(args.batch_size),
            "--group-size", str(args.group_size), "--learning-rate", str(args.learning_rate),
            "--selection-metric", "score", "--selection-targets", *map(str, args.selection_targets),
            "--ema-decay", str(args.ema_decay), "--seed", str(args.seed), "--checkpoint", str(out / "ckpt.pt"),
            "--out", str(out / "policy.pt"), "--no-progress", *(["--pool"] if args.pool else [])]


def markdown(result: dict[str, Any]) -> str:
    a = result["args"]
    lines = [f"# Candidate default policy: observation format {a['observation_format']}, operator `{a['operator']}`",
             "", provenance(result["meta"]), "",
             f"`prune-rnn {' '.join(result['pretrain_argv'])}`", "",
             f"Train: {len(result['train'])} models of {splits(a.get('train_splits', ['v2:train']))}, "
             f"{a['episodes']} episodes in {a['rounds']} rounds. "
             f"Selection: mean zero-shot validation score on {len(result['select'])} models of {selection_set(a)} at "
             f"{a['selection_targets']}. Decision: {len(result['decide'])} zoo-v2 validation models at "
             f"{a['decision_targets']}. Pretraining wall time {result['pretrain_s']:.0f} s. No test split was read.",
             "", f"## Selection log ({selection_set(a)}, mean score)", "", "| episodes | validation | train reward |",
             "|---|---|---|"]
    for r in result["log"]:
        lines.append(f"| {r['episodes']} | {r['validation']:.4f} | {r.get('train_reward', float('nan')):.4f} |")
    lines += ["", f"Selected after {result['selected_after']} episodes.", "",
              "## Decision (zoo-v2 validation, not used for training or selection)", ""]
    for op, d in result["decisions"].items():
        m = d["mean"]
        role = "training operator, the condition to ship" if op == a["operator"] else "for information"
        lines.append(f"- `{op}` ({role}): policy {m['policy_score']:.4f}, LAMP {m['lamp_score']:.4f} "
                     f"(reward clipped to [0, 1]: {m['policy_reward']:.4f} vs {m['lamp_reward']:.4f}); policy ahead on "
                     f"{d['share_ahead']:.2f} of the cells; beats LAMP: **{'yes' if d['beats_lamp'] else 'no'}**.")
    ops = list(result["decisions"])
    lines += ["", "| model | target | " + " | ".join(f"policy `{o}` | LAMP `{o}`" for o in ops) + " |",
              "|---|---|" + "---|---|" * len(ops)]
    for i, c in enumerate(result["decisions"][ops[0]]["cells"]):
        cells = [result["decisions"][o]["cells"][i] for o in ops]
        lines.append(f"| {c['model']} | {c['target']} | "
                     + " | ".join(f"{x['policy_score']:.4f} | {x['lamp_score']:.4f}" for x in cells) + " |")
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    """This script's arguments; the training and the selection splits never share a split."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pretraining_args(p, operator="obs:obs", episodes=4096, rounds=16)
    p.add_argument("--also-operators", nargs="*", default=["magnitude:none"], help="decided for information only")
    p.add_argument("--train-splits", nargs="+", default=["v2:train"], type=selectable, metavar="VERSION:SPLIT",
                   help="zoo splits to train on (never the decision's nor a test split)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if set(args.train_splits) & set(args.selection_splits):
        p.error("--train-splits and --selection-splits share a split: select on models the policy does not train on")
    return args


def main(argv: list[str] | None = None) -> None:
    from agents.cli.main import main as cli
    from agents.policies.layerwise import load

    args = parse(argv)
    out = Path(args.out or default_out(NAME))
    out.mkdir(parents=True, exist_ok=True)
    meta = run_meta(argv)
    words = pretrain_argv(args, out)
    t0 = time.perf_counter()
    code = cli(words)
    if code != 0:
        raise SystemExit(f"prune-rnn pretrain exited with {code}")
    pretrain_s = time.perf_counter() - t0
    policy = load(out / "policy.pt")
    decide_tasks = decision_tasks()
    decisions = {op: decide(policy, decide_tasks, args.decision_targets, operator_kwargs(op))
                 for op in [args.operator, *[o for o in args.also_operators if o != args.operator]]}
    chosen = decisions[args.operator]
    atomic_write(out / "decision.json", json.dumps({"operator": args.operator, "beats_lamp": chosen["beats_lamp"],
                                                    "mean": chosen["mean"], "test_read": False}, indent=1))
    result = {"meta": meta, "args": vars(args), "pretrain_argv": words, "train": policy.meta["train_tasks"],
              "select": policy.meta["validation_tasks"], "decide": [t.name for t in decide_tasks],
              "log": policy.meta["log"], "selected_after": policy.meta["selected_after_episodes"],
              "decisions": decisions, "pretrain_s": pretrain_s}
    write_results(out, result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
