"""Does a pretrained layer-wise policy transfer? Issue 11's comparison on models the policy never trained on.

For each unseen model and target sparsity, with test scores (the searches only see validation):

- the one-evaluation rules: uniform, global, gradient, LAMP, ERK, OBD (loss-aware, from training batches);
  Distiller's sensitivity scan (up to 100);
- the policy zero-shot (1 evaluation) and few-shot (30 and 100 evaluations: REINFORCE from its allocation);
- REINFORCE from scratch and random search at 100 and 1000 evaluations;

stochastic agents over ``--seeds``. Every finished cell is appended to ``cells.jsonl`` at once (a killed run
resumes with ``--resume``, recomputing nothing), then ``results.md`` (tables, the issue's targets checked) and
``sample_efficiency.png`` are written.

    python benchmarks/bench_transfer.py --policy policy.pt --models zoo:validation pydoc-char \\
        benchmarks.gru_task:make --targets 0.8 0.9 --seeds 0 1 2 --out benchmarks/results/transfer
    python benchmarks/bench_transfer.py --smoke --out /tmp/transfer-smoke      # tiny models, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _meta import ROOT, provenance, run_meta  # noqa: E402

from agents.core.results import append_jsonl  # noqa: E402

RULES = ("uniform", "global", "gradient", "lamp", "erk", "obd")
#: method -> (agent, budget, stochastic)
METHODS = {**{r: (r, 1, False) for r in RULES},
           "zero-shot": ("policy", 1, False), "few-shot-30": ("policy", 30, True),
           "few-shot-100": ("policy", 100, True),
           # Distiller's per-layer scan (deterministic): a 10-point scan of every layer and a sweep, within 100 evals
           "sensitivity": ("sensitivity", 100, False),
           "reinforce-100": ("reinforce", 100, True), "reinforce-1000": ("reinforce", 1000, True),
           "random-100": ("random", 100, True), "random-1000": ("random", 1000, True)}


def resolve_models(specs: list[str]) -> list[Any]:
    """Tasks for ``--models``: ``zoo:<split>`` expands to the available models of that zoo split."""
    from prune_env.tasks import resolve_task

    tasks = []
    for spec in specs:
        if spec.startswith("zoo:"):
            from prune_env.tasks.zoo import make_zoo_task, zoo_names

            tasks += [make_zoo_task(n, progress=False) for n in zoo_names(spec[4:], available_only=True)]
        else:
            tasks.append(resolve_task(spec, **({"progress": False} if ":" not in spec else {})))
    return tasks


def pack(history: list[float]) -> dict[str, Any]:
    """A best-so-far curve stored by its changes only (``[evaluation index, value]`` pairs and the length): a
    1000-evaluation curve changes a few dozen times, so the cells file stays small. Lossless; see :func:`unpack`."""
    changes = [[i, v] for i, v in enumerate(history) if i == 0 or v != history[i - 1]]
    return {"len": len(history), "changes": changes}


def unpack(history: list[float] | dict[str, Any]) -> list[float]:
    """The full curve back from :func:`pack` (a plain list, as older cells hold, is returned as it is)."""
    if isinstance(history, list):
        return history
    out: list[float] = []
    for (i, v), nxt in zip(history["changes"], [*history["changes"][1:], [history["len"], None]]):
        out += [v] * (nxt[0] - i)
    return out


def run_cell(task: Any, target: float, method: str, seed: int, policy: Any, vector_envs: int) -> dict[str, Any]:
    """One (model, target, method, seed) search and its single test scoring."""
    import agents
    from prune_env import PruneRNNEnv
    from prune_env.task import split_score

    agent, budget, _ = METHODS[method]
    env = PruneRNNEnv(task, target_sparsity=target, device="cpu")
    kw = {"policy": policy} if agent == "policy" else {}
    batches = agent in ("random", "reinforce") or (agent == "policy" and budget > 1)
    res = agents.search(agent, env, budget, seed=seed, vector_envs=vector_envs if batches else 0, **kw)
    test = split_score(task.test(env.pruned_model(res.allocation)), "test")[0]
    return {"model": task.name, "target": target, "method": method, "seed": seed, "evals": res.evals,
            "val": res.val_score, "dense_val": env.dense_score, "test": test,
            "dense_test": task.metadata.get("dense_test"), "history": pack(res.history),
            "wall_s": round(res.wall_time, 2)}


def summarize(cells: list[dict[str, Any]]) -> tuple[list[str], dict[str, float]]:
    """Markdown tables (per model and target, then the mean over models) and the issue's checks."""
    by: dict[tuple[str, float, str], list[float]] = {}
    for c in cells:
        by.setdefault((c["model"], c["target"], c["method"]), []).append(c["test"])
    models = sorted({c["model"] for c in cells})
    targets = sorted({c["target"] for c in cells})
    methods = [m for m in METHODS if any(k[2] == m for k in by)]
    lines = ["| model | target | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    mean: dict[str, list[float]] = {m: [] for m in methods}
    for model in models:
        for t in targets:
            row = []
            for m in methods:
                v = by.get((model, t, m))
                row.append("-" if v is None else f"{np.mean(v):.3f}" + (f" ± {np.std(v):.3f}" if len(v) > 1 else ""))
                if v is not None:
                    mean[m].append(float(np.mean(v)))
            lines.append(f"| {model} | {t:g} | " + " | ".join(row) + " |")
    avg = {m: float(np.mean(v)) for m, v in mean.items() if v}
    lines += ["", "Mean test score over the unseen models and targets:", "",
              "| " + " | ".join(avg) + " |", "|" + "---|" * len(avg),
              "| " + " | ".join(f"{v:.3f}" for v in avg.values()) + " |"]
    oracle = hindsight_rule(by, models, targets)
    if oracle is not None:
        rules, value = oracle
        lines += ["", f"The best of the one-shot rules ({', '.join(rules)}) for each model and target, picked with "
                  f"hindsight on the test split (no method can do this; a ceiling for choosing among rules): "
                  f"{value:.3f}."]
    return lines, avg


def hindsight_rule(by: dict[tuple[str, float, str], list[float]], models: list[str], targets: list[float]
                   ) -> tuple[list[str], float] | None:
    """The mean over model-target pairs of the best rule's test score per pair (rules present in every pair)."""
    rules = [r for r in RULES if all((m, t, r) in by for m in models for t in targets)]
    if not rules or not models:
        return None
    best = [max(float(np.mean(by[(m, t, r)])) for r in rules) for m in models for t in targets]
    return rules, float(np.mean(best))


def checks(avg: dict[str, float]) -> list[str]:
    """The issue's targets, each stated with its numbers (means over models and targets)."""
    out = []
    rules = {r: avg[r] for r in RULES if r in avg}
    if not rules:
        return out
    best_rule, best = max(rules.items(), key=lambda kv: kv[1])
    if "zero-shot" in avg:
        z = avg["zero-shot"]
        out.append(f"- zero-shot {z:.3f} vs best rule ({best_rule}) {best:.3f} + 0.03: "
                   f"{'met' if z >= best + 0.03 else 'NOT met'}")
        if "random-1000" in avg and avg["random-1000"] > best:
            gap = avg["random-1000"] - best
            out.append(f"- zero-shot closes {(z - best) / gap:.0%} of the gap to random-1000 ({avg['random-1000']:.3f})"
                       f" (target: at least half): {'met' if z - best >= gap / 2 else 'NOT met'}")
    if "few-shot-100" in avg:
        f = avg["few-shot-100"]
        ref = max(best, avg.get("random-1000", best))
        out.append(f"- few-shot-100 {f:.3f} vs max(random-1000, best rule) {ref:.3f} - 0.01: "
                   f"{'met' if f >= ref - 0.01 else 'NOT met'}")
        if "reinforce-100" in avg:
            out.append(f"- few-shot-100 {f:.3f} vs reinforce-100 {avg['reinforce-100']:.3f} + 0.03: "
                       f"{'met' if f >= avg['reinforce-100'] + 0.03 else 'NOT met'}")
    return out


def _commits(cells: list[dict[str, Any]]) -> str:
    """Which commits the cells were measured at (a directory resumed across commits holds several)."""
    seen: dict[str, list[str]] = {}
    for c in cells:
        methods = seen.setdefault(str(c.get("commit", "unrecorded"))[:10], [])
        if c["method"] not in methods:
            methods.append(c["method"])
    return "Cells measured at: " + "; ".join(f"{k} ({', '.join(v)})" for k, v in seen.items()) + "."


def plot(cells: list[dict[str, Any]], path: Path) -> None:
    """Best-so-far validation score relative to dense, mean over models, targets and seeds, per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for method in METHODS:
        runs = [np.asarray(unpack(c["history"])) / c["dense_val"] for c in cells if c["method"] == method]
        if not runs:
            continue
        n = max(len(r) for r in runs)
        padded = np.array([np.pad(r, (0, n - len(r)), mode="edge") for r in runs])
        x = np.arange(1, n + 1)
        ax.plot(x, padded.mean(0), marker="o" if n == 1 else None, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best validation score / dense (mean)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", help="a saved layer-wise policy (agents.policies.layerwise.save)")
    p.add_argument("--models", nargs="+", default=["zoo:validation", "pydoc-char", "benchmarks.gru_task:make"])
    p.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--vector-envs", type=int, default=8)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "transfer"))
    p.add_argument("--resume", action="store_true", help="keep the finished cells of --out/cells.jsonl")
    p.add_argument("--summarize-only", action="store_true", help="rewrite results.md and the plot from --out's "
                   "cells.jsonl, computing no cell (implies --resume)")
    p.add_argument("--smoke", action="store_true", help="tiny models and budgets cut to 1/10: a quick check")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from agents.policies.layerwise import LayerwisePolicy, load

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny import tiny_task

        models = [tiny_task("gru"), tiny_task("lstm", layers=3)]
        for m in METHODS:
            a, b, s = METHODS[m]
            METHODS[m] = (a, max(1, b // 10), s)
        policy = load(args.policy) if args.policy else LayerwisePolicy(hidden=8)
    elif args.summarize_only:
        models, policy = [], None
    else:
        if not args.policy:
            p.error("--policy is required (or --smoke)")
        models = resolve_models(args.models)
        policy = load(args.policy)
    meta = run_meta()
    store = out / "cells.jsonl"
    if args.summarize_only:
        if not store.exists():
            p.error(f"--summarize-only: no {store}")
        args.resume = True
    cells = [json.loads(line) for line in store.read_text().splitlines()] if args.resume and store.exists() else []
    if not args.resume and store.exists():
        store.unlink()
    done = {(c["model"], c["target"], c["method"], c["seed"]) for c in cells}
    for task in models:
        for target in args.targets:
            for method in args.methods:
                for seed in (args.seeds if METHODS[method][2] else args.seeds[:1]):
                    if (task.name, target, method, seed) in done:
                        continue
                    cell = run_cell(task, target, method, seed, policy, args.vector_envs)
                    cell["commit"] = meta["git_commit"]  # a resumed directory can span several commits
                    append_jsonl(store, cell)  # one line per finished cell: a kill loses at most one cell
                    cells.append(cell)
                    print(f"{task.name} {target:g} {method} seed {seed}: test {cell['test']:.4f}", flush=True)
    lines, avg = summarize(cells)
    text = "\n".join(["# Transfer of a pretrained layer-wise policy (test scores)", "", provenance(meta), "",
                      f"policy: {args.policy or ('untrained (smoke)' if args.smoke else 'not given')}; "
                      f"seeds in the cells: {sorted({c['seed'] for c in cells})}", "", _commits(cells), "",
                      *lines, "",
                      "Targets (issue 11):", "", *checks(avg)]) + "\n"
    tmp = out / "results.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / "results.md")
    plot(cells, out / "sample_efficiency.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
