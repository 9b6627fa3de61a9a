"""A short pretraining of the layer-wise policy on observation format 4 with a data-aware operator, and the
ship-or-not decision against LAMP on validation models, recorded before any test number exists.

- **Train** on the zoo-v2 training models already in ``--train-cache`` (nothing is trained here), in a
  :class:`~prune_env.PruneRNNZooEnv` with ``observation_format=4`` (or ``--observation-format 3``, the control) and
  the operator ``--operator`` (``criterion:reconstruct``).
- **Select** with :func:`~agents.policies.layerwise.pretrain_selected` on zoo-v1's validation models (the same
  models and targets every round, the policy's mean action: common random numbers), with the same operator.
- **Decide** on zoo-v2's validation models (not used for selection): the selected policy's zero-shot allocation
  against LAMP's, same operator, at ``--decision-targets`` (every model of that split must be built). The policy
  qualifies to be shipped only if its mean validation score beats LAMP's there; ``decision.json`` is written before
  anything else, no test split is read, and the shipped default policy is never replaced here.

    nice -n 10 env OMP_NUM_THREADS=1 PRUNE_RNN_PTB=/work/shared/data/ptb python -m benchmarks.pretrain_format4 \\
        --train-cache /work/cache --select-cache /tmp/prc_cache --decide-cache /work/cache
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._meta import default_out, operator_kwargs, provenance, run_meta, write_results
from prune_env.io import atomic_write

NAME = "pretrain_format4"


def built(split: str, version: str, cache: str | None, names: list[str] | None = None) -> list[Any]:
    """The tasks of a zoo split (or ``names``) already in ``cache`` (read only; models not built are skipped)."""
    from prune_env.tasks.cache import CacheMissError, no_training
    from prune_env.tasks.zoo import make_zoo_task, zoo_names

    if cache is not None:
        os.environ["PRUNE_RNN_CACHE"] = cache
    tasks = []
    for name in names or zoo_names(split, version=version):
        try:
            with no_training():
                tasks.append(make_zoo_task(name, progress=False))
        except (CacheMissError, ValueError) as e:
            print(f"skip {name}: {type(e).__name__}", flush=True)
    return tasks


def version_split(split: str) -> tuple[str, str]:
    """``VERSION:SPLIT`` (or ``SPLIT`` of zoo-v1) as (version, split)."""
    version, _, name = split.rpartition(":")
    return version or "v1", name


def selectable(split: str) -> str:
    """A zoo split a selection may read: never the decision's (zoo-v2 validation) nor a test split."""
    version, name = version_split(split)
    if name == "test" or (version == "v2" and name == "validation"):
        raise argparse.ArgumentTypeError(f"{split!r} is held out from selection (the decision's or a test split)")
    return split


def add_pretraining_args(p: argparse.ArgumentParser, operator: str, episodes: int, rounds: int) -> None:
    """The options of a pretraining and its decision, shared by the pretraining benchmarks (defaults given)."""
    p.add_argument("--operator", default=operator, help="criterion:reconstruct of training, selection, decision")
    p.add_argument("--observation-format", type=int, default=4, choices=(3, 4))
    p.add_argument("--episodes", type=int, default=episodes)
    p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--target-range", type=float, nargs=2, default=[0.5, 0.95])
    p.add_argument("--selection-targets", type=float, nargs="+", default=[0.7, 0.8, 0.9])
    p.add_argument("--selection-splits", nargs="+", default=["v1:validation"], metavar="VERSION:SPLIT", type=selectable,
                   help="zoo splits to select on (never zoo-v2 validation, the decision's, nor a test split)")
    p.add_argument("--decision-targets", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument("--ema-decay", type=float, default=0.0, help="above 0, select the moving average of the weights")
    p.add_argument("--pool", action="store_true", help="a pooled (Deep Sets) policy: each layer also reads the others")
    p.add_argument("--seed", type=int, default=0)


def decision_tasks() -> list[Any]:
    """Every zoo-v2 validation model, the decision's fixed split.

    :raises SystemExit: naming the models not built (a decision on part of the split is refused).
    """
    from prune_env.tasks.zoo import zoo_names

    tasks = built("validation", "v2", None)
    missing = sorted(set(zoo_names("validation", version="v2")) - {t.name for t in tasks})
    if missing:
        raise SystemExit(f"the decision needs every zoo-v2 validation model; not built: {', '.join(missing)}")
    return tasks


def selection_tasks(names: list[str]) -> list[Any]:
    """The built models of the selection splits ``names`` (``VERSION:SPLIT``), in order."""
    return [t for version, name in map(version_split, names) for t in built(name, version, None)]


def splits(names: list[str]) -> str:
    """Zoo splits (``VERSION:SPLIT``) in words."""
    return " + ".join(f"zoo-{s.replace(':', ' ')}" for s in names)


def selection_set(args: dict[str, Any]) -> str:
    """The selection splits of a run's arguments, in words (runs before the option selected on zoo-v1 validation)."""
    return splits(args.get("selection_splits", ["v1:validation"]))


def decide(policy, tasks: list[Any], targets: list[float], operator: dict[str, Any]) -> dict[str, Any]:
    """Zero-shot policy against LAMP (the untrained policy, whose action is LAMP's) per (model, target)."""
    from agents.policies.layerwise import LayerwisePolicy, zero_shot_score

    lamp = LayerwisePolicy(policy.hidden, columns=policy.columns)
    cells = []
    for task in tasks:
        for t in targets:
            row = {"model": task.name, "target": t}
            for name, p in (("policy", policy), ("lamp", lamp)):
                row[f"{name}_score"] = zero_shot_score(p, [task], (t,), "score", **operator)
                row[f"{name}_reward"] = zero_shot_score(p, [task], (t,), "reward", **operator)
            cells.append(row)
    mean = {k: float(np.mean([c[k] for c in cells])) for k in ("policy_score", "lamp_score", "policy_reward",
                                                              "lamp_reward")}
    wins = float(np.mean([c["policy_score"] > c["lamp_score"] for c in cells]))
    beats = mean["policy_score"] > mean["lamp_score"]
    return {"cells": cells, "mean": mean, "share_ahead": wins, "beats_lamp": bool(beats)}


def markdown(result: dict[str, Any]) -> str:
    a, d = result["args"], result["decision"]
    lines = [f"# Pretraining on observation format {a['observation_format']}, operator `{a['operator']}`", "",
             provenance(result["meta"]), "",
             f"Train: {len(result['train'])} zoo-v2 training models; {a['episodes']} episodes in {a['rounds']} rounds "
             f"(batch {a['batch_size']}, group {a['group_size']}, lr {a['learning_rate']}), targets "
             f"{a['target_range']}. Selection: mean zero-shot validation score on {len(result['select'])} models of "
             f"{selection_set(a)} at {a['selection_targets']}. Decision: {len(result['decide'])} zoo-v2 validation "
             f"models at {a['decision_targets']}, same operator. Wall time {result['wall_s']:.0f} s. No test split "
             "was read.", "", f"## Selection log ({selection_set(a)}, mean score)", "",
             "| episodes | validation | train reward |", "|---|---|---|"]
    for r in result["log"]:
        lines.append(f"| {r['episodes']} | {r['validation']:.4f} | {r.get('train_reward', float('nan')):.4f} |")
    m = d["mean"]
    lines += ["", f"Selected after {result['selected_after']} episodes.", "",
              "## Decision (zoo-v2 validation, not used for selection)", "",
              f"Mean validation score: policy {m['policy_score']:.4f}, LAMP {m['lamp_score']:.4f}; mean reward "
              f"(clipped to [0, 1]): policy {m['policy_reward']:.4f}, LAMP {m['lamp_reward']:.4f}; policy ahead on "
              f"{d['share_ahead']:.2f} of the cells. **Beats LAMP on validation (the condition to ship): "
              f"{'yes' if d['beats_lamp'] else 'no'}.** The shipped default policy is not replaced by this script.", "",
              "| model | target | policy score | LAMP score |", "|---|---|---|---|"]
    for c in d["cells"]:
        lines.append(f"| {c['model']} | {c['target']} | {c['policy_score']:.4f} | {c['lamp_score']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from agents.policies.layerwise import PretrainArgs, pretrain_selected, save
    from prune_env import PruneRNNZooEnv

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-cache", default=None, help="model cache to read (default: the current one)")
    p.add_argument("--select-cache", default=None, help="model cache to read (default: the current one)")
    p.add_argument("--decide-cache", default=None, help="model cache to read (default: the current one)")
    add_pretraining_args(p, operator="magnitude:obs", episodes=768, rounds=6)
    p.add_argument("--limit", type=int, default=None, help="at most this many models per list (a smoke test)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    out = Path(args.out or default_out(f"{NAME}_f{args.observation_format}"))
    out.mkdir(parents=True, exist_ok=True)
    meta = run_meta(argv)
    operator = operator_kwargs(args.operator)
    t0 = time.perf_counter()
    listed = out / "train.json"  # a resumed run trains on the models the first one found built
    names = json.loads(listed.read_text()) if listed.exists() else None
    train = built("train", "v2", args.train_cache, names)[:args.limit]
    if names is not None and [t.name for t in train] != names:
        p.error(f"--train-cache: {listed} names models that are not all built there")
    atomic_write(listed, json.dumps([t.name for t in train]))
    select = []
    for version, name in map(version_split, args.selection_splits):
        select += built(name, version, args.select_cache)
    select = select[:args.limit]
    for flag, tasks in (("--train-cache", train), ("--select-cache", select)):
        if not tasks:
            p.error(f"{flag}: no model of its zoo split is built there")
    zoo = PruneRNNZooEnv(train, target_sparsity=tuple(args.target_range), observation_format=args.observation_format,
                         device="cpu", **operator)
    opts = PretrainArgs(episodes=args.episodes, batch_size=args.batch_size, learning_rate=args.learning_rate,
                        group_size=args.group_size, ema_decay=args.ema_decay, seed=args.seed,
                        pool=args.pool)
    policy, log = pretrain_selected(zoo, select, opts, rounds=args.rounds, progress=False,
                                    checkpoint=out / "ckpt.pt", selection_metric="score",
                                    selection_targets=args.selection_targets)
    from prune_env.tasks.zoo import zoo_names

    decide_tasks = built("validation", "v2", args.decide_cache)[:args.limit]  # read after training: built by then
    missing = sorted(set(zoo_names("validation", version="v2")[:args.limit]) - {t.name for t in decide_tasks})
    if missing:  # the decision is on the whole split, fixed in advance
        p.error(f"--decide-cache: the decision needs every zoo-v2 validation model; not built: {', '.join(missing)}")
    decision = decide(policy, decide_tasks, args.decision_targets, operator)
    result = {"meta": meta, "args": vars(args), "train": [t.name for t in train], "select": [t.name for t in select],
              "decide": [t.name for t in decide_tasks], "log": log,
              "selected_after": policy.meta["selected_after_episodes"], "decision": decision,
              "wall_s": time.perf_counter() - t0}
    atomic_write(out / "decision.json", json.dumps({"beats_lamp": decision["beats_lamp"], "mean": decision["mean"],
                                                    "share_ahead": decision["share_ahead"],
                                                    "test_read": False}, indent=1))
    save(policy, out / "policy.pt", {**meta, "log": log, "train_tasks": result["train"],
                                     "validation_tasks": result["select"], "decision": decision["mean"]})
    write_results(out, result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
