"""Which operator ``prune-rnn compress`` should use by default: magnitude pruning gradually from the dense model, or
OBS ranking + OBS reconstruction (SparseGPT) fine-tuned from the one-shot model, at equal and at half the steps.

Each arm is one :func:`agents.cli.compress.compress` run (LAMP allocation, ``--bits``, ``--lr``, seed ``--seed``) on
``--task`` at ``--target``:

- ``a``: today's default: ``operator="magnitude"``, no reconstruction, ``finetune_from="dense"``, ``--steps`` steps;
- ``b``: ``operator="obs"``, ``reconstruct="obs"``, ``finetune_from="oneshot"``, ``--steps`` steps;
- ``c``: as ``b`` with half the steps;
- ``d`` (optional): as ``b`` with ``operator="wanda"``;
- ``e`` (optional): as ``a`` with half the steps (the equal-steps control of ``c``).

The decision uses validation scores only, and is written before any test score is read: compress's operator
defaults become those of ``b`` when ``b``'s final validation score (the exported model, loaded back) is above
``a``'s, else they stay ``a``'s (``d`` and ``e`` inform, they do not decide). ``c`` answers whether half the
steps reach what ``a`` reaches, ``e`` what the gradual ramp reaches with those steps. Test scores,
bytes of the exported file and wall times (whole run, fine-tuning stage) follow. A killed run resumes: each arm's
compress directory under ``--work`` resumes after its last finished stage::

    nice -n 5 env OMP_NUM_THREADS=1 python -m benchmarks.compress_operators --steps 800
    python -m benchmarks.compress_operators --task digits --target 0.8 --steps 10 --out /tmp/co --work /tmp/co-runs
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks._meta import default_out, load_task, provenance, run_meta, write_results  # noqa: E402

NAME = "compress_operators"
#: arm -> (what it is, compress keyword arguments, fraction of --steps)
ARMS: dict[str, tuple[str, dict[str, Any], float]] = {
    "a": ("magnitude, gradual from dense", {"operator": "magnitude", "reconstruct": None, "finetune_from": "dense"},
          1.0),
    "b": ("obs + reconstruct, from one-shot", {"operator": "obs", "reconstruct": "obs", "finetune_from": "oneshot"},
          1.0),
    "c": ("obs + reconstruct, from one-shot, half steps",
          {"operator": "obs", "reconstruct": "obs", "finetune_from": "oneshot"}, 0.5),
    "d": ("wanda + reconstruct, from one-shot", {"operator": "wanda", "reconstruct": "obs", "finetune_from": "oneshot"},
          1.0),
    "e": ("magnitude, gradual from dense, half steps",
          {"operator": "magnitude", "reconstruct": None, "finetune_from": "dense"}, 0.5),
}


def run_arm(task: Any, arm: str, args: argparse.Namespace) -> dict[str, Any]:
    """One compress run; its report's rows and timings."""
    from agents.cli.compress import compress

    what, kwargs, frac = ARMS[arm]
    steps = int(round(args.steps * frac))
    work = Path(args.work) / f"{arm}-{steps}"
    report = compress(task, args.target, work, steps=steps, bits=args.bits, lr=args.lr, seed=args.seed,
                      latency_reps=args.latency_reps, log=lambda m: print(f"[{arm}] {m}", flush=True),
                      command=["python", "-m", "benchmarks.compress_operators"], **kwargs)
    finetune = json.loads((work / "finetune.json").read_text())
    out = Path(args.out) / arm
    out.mkdir(parents=True, exist_ok=True)
    for f in ("report.md", "report.json"):
        shutil.copyfile(work / f, out / f)
    rows = report["rows"]
    return {"arm": arm, "what": what, "settings": {**kwargs, "steps": steps}, "dir": str(work),
            "one_shot": {k: rows["one_shot"].get(k) for k in ("val_score", "test_score", "test_perplexity")},
            "final": {k: rows["final"].get(k) for k in ("val_score", "test_score", "test_perplexity", "sparsity",
                                                         "bytes")},
            "best_step": finetune["best_step"], "masks_kept": finetune.get("masks_kept"),
            "finetune_wall_s": finetune["wall_time_s"], "train_seconds": finetune["info"].get("train_seconds"),
            "run_wall_s": report["wall_time_s"], "dense": {k: rows["dense"].get(k) for k in ("val_score",
                                                                                               "test_score")}}


def decide(cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The defaults by the validation rule (no test score is read here)."""
    a, b = cells["a"]["final"]["val_score"], cells["b"]["final"]["val_score"]
    winner = "b" if b > a else "a"
    return {"rule": "b's operator settings become the defaults when b's final validation score is above a's",
            "val_a": a, "val_b": b, "val_gap_b_minus_a": b - a, "winner": winner,
            "defaults": {k: v for k, v in ARMS[winner][1].items()}}


def markdown(result: dict[str, Any]) -> str:
    cells, d, s = result["cells"], result["decision"], result["settings"]
    lines = ["# compress: operator and fine-tuning start", "", provenance(result["meta"]), "",
             f"{s['task']} at {s['target']} sparsity, {s['bits']}-bit, LAMP allocation, lr {s['lr']}, "
             f"seed {s['seed']}; "
             f"N = {s['steps']} fine-tuning steps. Each arm is one `compress` run; scores of the exported file loaded "
             "back.", "", "## Decision (validation only)", "",
             f"Rule: {d['rule']}. Final validation: a {d['val_a']:.4f}, b {d['val_b']:.4f} "
             f"(b - a = {d['val_gap_b_minus_a']:+.4f}): the defaults are arm {d['winner']}'s "
             f"({', '.join(f'{k}={v}' for k, v in d['defaults'].items())}).", "", "## All arms", "",
             "| arm | operator | steps | one-shot val | one-shot test | final val | final test | test ppl | "
             "sparsity | bytes | best step | fine-tune s | run s |", "|" + "---|" * 13]
    for c in cells.values():
        st = c["settings"]
        op = f"{st['operator']}" + (f" + {st['reconstruct']}" if st["reconstruct"] else "") + \
            f", from {st['finetune_from']}"
        f, o = c["final"], c["one_shot"]
        lines.append(f"| {c['arm']} | {op} | {st['steps']} | {o['val_score']:.4f} | {o['test_score']:.4f} | "
                     f"{f['val_score']:.4f} | {f['test_score']:.4f} | {f.get('test_perplexity') or float('nan'):.2f} | "
                     f"{f['sparsity']:.4f} | {f['bytes']} | {c['best_step']} | {c['finetune_wall_s']:.0f} | "
                     f"{c['run_wall_s']:.0f} |")
    dense = next(iter(cells.values()))["dense"]
    lines += ["", f"Dense: validation {dense['val_score']:.4f}, test {dense['test_score']:.4f}. "
              "Wall times are of a shared machine (other jobs running), one thread; the fine-tuning stage "
              "includes its validation passes."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="pydoc-char")
    p.add_argument("--target", type=float, default=0.9)
    p.add_argument("--bits", type=int, default=8)
    p.add_argument("--steps", type=int, default=800, help="N: fine-tuning steps of arms a, b, d (c: N/2)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arms", nargs="+", default=["a", "b", "c"], choices=sorted(ARMS))
    p.add_argument("--latency-reps", type=int, default=5)
    p.add_argument("--work", default=str(ROOT / "runs" / NAME), help="compress run directories (models; resumable)")
    p.add_argument("--out", default=default_out(NAME))
    args = p.parse_args(argv)
    if not {"a", "b"} <= set(args.arms):
        p.error("--arms must include a and b (the decision compares them)")
    import torch

    torch.set_num_threads(1)
    meta = run_meta()
    task = load_task(args.task)
    cells = {arm: run_arm(task, arm, args) for arm in args.arms}
    result = {"meta": meta, "settings": {k: getattr(args, k) for k in ("task", "target", "bits", "steps", "lr",
                                                                       "seed", "arms")},
              "decision": decide(cells), "cells": cells}
    write_results(args.out, result, markdown(result))
    print((Path(args.out) / "results.md").read_text())


if __name__ == "__main__":
    main()
