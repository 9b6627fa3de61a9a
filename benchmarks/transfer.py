"""Does a layer-wise policy transfer to models it never trained on? One harness, three reports:

- ``test``: for each unseen model and target, test scores (the searches only see validation) of
  the one-evaluation rules (uniform, global, gradient, LAMP, ERK, OBD from training batches), Distiller's sensitivity
  scan (up to 100), the policy zero-shot (1 evaluation) and few-shot (30 and 100 evaluations: REINFORCE from its
  allocation), REINFORCE from scratch and random search at 100 and 1000 evaluations; stochastic methods over
  ``--seeds``. Every finished cell is appended to ``cells.jsonl`` at once (a killed run resumes with ``--resume``,
  recomputing nothing), then ``results.md``, ``results.json`` (means, the transfer targets checked) and
  ``sample_efficiency.png`` are written.
- ``rewards``: the zero-shot reward ``1 + (score - dense) / |dense|`` of each policy and rule per target, on the
  *validation* splits only, clipped to [0, 1] as pretraining's ``reward`` selection does
  (:func:`agents.policies.layerwise.zero_shot_score`) and raw, and the mean raw validation score (the ``score``
  criterion): the evidence a policy may be chosen on.
- ``allocations``: the per-layer sparsity each rule, policy (zero-shot) and random search with ``--budget``
  evaluations applies (after the env's budget projection) and its validation score: where search finds its gains.

::

    python -m benchmarks transfer                  # test, the shipped policy, every unseen model (hours)
    python -m benchmarks.transfer test --smoke --out /tmp/transfer-smoke      # tiny models, seconds
    python -m benchmarks.transfer rewards --policy shipped=agents/data/default_policy.pt --out /tmp/rewards
    python -m benchmarks.transfer allocations --models zoo-v1/gru-char-email-2x128 --policy v4=POLICY --out DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from agents.core.results import append_jsonl, save_figure
from benchmarks._meta import ROOT, default_out, named_policies, operator_kwargs, provenance, run_meta, write_results

RULES = ("uniform", "global", "gradient", "lamp", "erk", "obd")
#: method -> (agent, budget, stochastic)
METHODS = {**{r: (r, 1, False) for r in RULES},
           "zero-shot": ("policy", 1, False), "few-shot-30": ("policy", 30, True),
           # the shipped committee and the rules ranked by training loss, the lowest scored once (no refinement)
           "pick": ("pick", 1, False),
           # the same, the lowest then refined on the training loss, scored once
           "pick-refine": ("pick", 1, False),
           # pick's default: the lowest and LAMP's allocation refined, the refinement with the lower loss scored once
           "pick-refine2": ("pick", 1, False),
           # an ablation: LAMP's allocation refined the same way, no policy at all
           "lamp-refine": ("pick", 1, False),
           "few-shot-100": ("policy", 100, True),
           # few-shot whose first rival is pick's choice with pick's defaults (then LAMP, ERK, global, OBD as usual)
           "few-shot-100-pick": ("policy", 100, True),
           # Distiller's per-layer scan (deterministic): a 10-point scan of every layer and a sweep, within 100 evals
           "sensitivity": ("sensitivity", 100, False),
           "reinforce-100": ("reinforce", 100, True), "reinforce-1000": ("reinforce", 1000, True),
           "random-100": ("random", 100, True), "random-1000": ("random", 1000, True)}

#: The one-evaluation transfer methods, held to the zero-shot targets.
ONE_EVALUATION = ("zero-shot", "pick", "pick-refine", "pick-refine2", "lamp-refine")


def resolve_models(specs: list[str]) -> list[Any]:
    """Tasks for ``--models``: ``zoo:<split>`` (zoo-v1) or ``zoo:<version>:<split>`` (``zoo:v2:test``) expands to
    the available models of that zoo split."""
    from prune_env.tasks import resolve_task

    tasks = []
    for spec in specs:
        if spec.startswith("zoo:"):
            from prune_env.tasks.zoo import make_zoo_task, zoo_names

            version, _, split = spec[4:].rpartition(":")
            names = zoo_names(split, available_only=True, version=version or "v1")
            tasks += [make_zoo_task(n, progress=False) for n in names]
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


def run_cell(task: Any, target: float, method: str, seed: int, policy: Any, vector_envs: int,
             operator: str = "magnitude:none") -> dict[str, Any]:
    """One (model, target, method, seed) search with ``operator`` and its single test scoring."""
    import agents
    from prune_env import PruneRNNEnv
    from prune_env.task import split_score

    agent, budget, _ = METHODS[method]
    env = PruneRNNEnv(task, target_sparsity=target, device="cpu", **operator_kwargs(operator))
    kw = {"policy": policy} if agent == "policy" else {}
    if method == "pick":
        kw["refine_prunings"] = 0
    if method == "pick-refine":
        kw["refine_from"] = ("chosen",)
    if method == "lamp-refine":
        kw.update(policies=[], rules=("lamp",))
    if method.endswith("-pick"):
        from agents.policies.policy import default_rivals

        kw["rivals"] = ("pick", *default_rivals(env))
    batches = agent in ("random", "reinforce") or (agent == "policy" and budget > 1)
    res = agents.search(agent, env, budget, seed=seed, vector_envs=vector_envs if batches else 0, **kw)
    test = split_score(task.test(env.pruned_model(res.allocation)), "test")[0]
    return {"model": task.name, "target": target, "method": method, "seed": seed, "evals": res.evals,
            "val": res.val_score, "dense_val": env.dense_score, "test": test,
            "dense_test": task.metadata.get("dense_test"), "history": pack(res.history),
            "wall_s": round(res.wall_time, 2), "operator": operator}


def summarize(cells: list[dict[str, Any]]) -> tuple[list[str], dict[str, float]]:
    """Markdown tables (per model and target, then the mean over models) and the mean test score per method."""
    by, models, targets = _by_pair(cells)
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


#: The rules the transfer targets compare with (the field's free one-shot rules).
TARGET_RULES = ("uniform", "global", "lamp", "erk", "obd")
#: The searches with 1000 evaluations the zero-shot target measures the gap to.
SEARCHES_1000 = ("random-1000", "reinforce-1000")


def checks(by: dict[tuple[str, float, str], list[float]]) -> list[str]:
    """The transfer targets, each stated with its numbers (means over the model-target pairs that have every method
    the target names; per-pair means over seeds)."""
    pairs = sorted({(m, t) for m, t, _ in by})

    def mean(method: str, keep: list[tuple[str, float]]) -> float:
        return float(np.mean([np.mean(by[(m, t, method)]) for m, t in keep]))

    def having(*methods: str) -> list[tuple[str, float]]:
        return [(m, t) for m, t in pairs if all((m, t, x) in by for x in methods)]

    out: list[str] = []
    rules = [r for r in TARGET_RULES if len(having(r)) == len(pairs)]
    if not rules or not pairs:
        return out
    means = {r: mean(r, pairs) for r in rules}
    best_rule = max(means, key=means.__getitem__)
    for one in ONE_EVALUATION:
        if one not in {x for _, _, x in by}:
            continue
        keep = having(one, best_rule)
        z, b = mean(one, keep), mean(best_rule, keep)
        out.append(f"- {one} {z:.3f} vs the best rule on the mean ({best_rule}) {b:.3f}, never below it: "
                   f"{'met' if z >= b else 'NOT met'}")
        ahead = sum(float(np.mean(by[(m, t, one)])) > max(float(np.mean(by[(m, t, r)])) for r in rules)
                    for m, t in keep)
        out.append(f"- {one} ahead of each pair's own best rule on {ahead} of {len(keep)} pairs (target: at least "
                   f"two thirds): {'met' if 3 * ahead >= 2 * len(keep) else 'NOT met'}")
        keep = having(one, best_rule, *SEARCHES_1000)
        if keep:
            z, b = mean(one, keep), mean(best_rule, keep)
            search = max(SEARCHES_1000, key=lambda x: mean(x, keep))
            top = mean(search, keep)
            gap = top - b
            if gap <= 0.01:
                out.append(f"- the best 1000-evaluation search ({search}) {top:.3f} is within 0.01 of {best_rule} "
                           f"{b:.3f} on {len(keep)} pairs: the allocation has little left to gain")
            else:
                out.append(f"- {one} closes {(z - b) / gap:.0%} of the gap from {best_rule} {b:.3f} to {search} "
                           f"{top:.3f} on {len(keep)} pairs (target: at least half): "
                           f"{'met' if z - b >= gap / 2 else 'NOT met'}")
    for few in ("few-shot-100", "few-shot-100-pick"):
        keep = having(few, "random-1000", *rules)
        if keep:
            f = mean(few, keep)
            ref = max(mean("random-1000", keep), *(mean(r, keep) for r in rules))
            out.append(f"- {few} {f:.3f} vs max(random-1000, best rule) {ref:.3f} on {len(keep)} pairs: "
                       f"{'met' if f >= ref else 'NOT met'}")
        keep = having(few, "reinforce-100")
        if keep:
            f, r100 = mean(few, keep), mean("reinforce-100", keep)
            out.append(f"- {few} {f:.3f} vs reinforce-100 {r100:.3f} + 0.03 on {len(keep)} pairs: "
                       f"{'met' if f >= r100 + 0.03 else 'NOT met'}")
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
    save_figure(fig, path)


def cmd_test(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The ``test`` report: run the missing cells, then the tables, the targets and the plot."""
    from agents.policies.layerwise import LayerwisePolicy, load

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        if str(ROOT / "tests") not in sys.path:  # the tiny models of the test suite
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
    ops = {c.get("operator", "magnitude:none") for c in cells}
    if args.summarize_only and len(ops) == 1:
        args.operator = ops.pop()  # the report says what its cells ran with
    other = sorted({c.get("operator", "magnitude:none") for c in cells} - {args.operator})
    if other:  # one operator per folder: a table never mixes them
        p.error(f"--operator {args.operator}: {store} holds cells of operator {', '.join(other)}")
    done = {(c["model"], c["target"], c["method"], c["seed"]) for c in cells}
    for task in models:
        for target in args.targets:
            for method in args.methods:
                for seed in (args.seeds if METHODS[method][2] else args.seeds[:1]):
                    if (task.name, target, method, seed) in done:
                        continue
                    cell = run_cell(task, target, method, seed, policy, args.vector_envs, args.operator)
                    cell["commit"] = meta["git_commit"]  # a resumed directory can span several commits
                    append_jsonl(store, cell)  # one line per finished cell: a kill loses at most one cell
                    cells.append(cell)
                    print(f"{task.name} {target:g} {method} seed {seed}: test {cell['test']:.4f}", flush=True)
    kept = out / "policy.pt"  # the record of what was evaluated
    if policy is not None and args.policy and not args.smoke and Path(args.policy).resolve() != kept.resolve():
        shutil.copyfile(args.policy, kept)
    lines, avg = summarize(cells)
    by, models, pair_targets = _by_pair(cells)
    targets = checks(by)
    text = "\n".join(["# Transfer of a pretrained layer-wise policy (test scores)", "", provenance(meta), "",
                      f"operator `{args.operator}`; "
                      f"policy: {args.policy or ('untrained (smoke)' if args.smoke else 'not given')}; "
                      f"seeds in the cells: {sorted({c['seed'] for c in cells})}", "", _commits(cells), "",
                      *lines, "", "Targets:", "", *targets,
                      *pretraining(args.policy if args.policy and Path(args.policy).is_file() else None)]) + "\n"
    if args.summarize_only:  # this run computed no cell: its wall time says nothing of the benchmark's
        meta["wall_time_s"] = None
    oracle = hindsight_rule(by, models, pair_targets)
    result = {"meta": meta, "policy": args.policy, "operator": args.operator, "cells": len(cells), "mean_test": avg,
              "hindsight_rule": None if oracle is None else {"rules": oracle[0], "mean_test": oracle[1]},
              "targets": targets, "search_s_sum": round(sum(c.get("wall_s", 0.0) for c in cells), 1)}
    write_results(out, result, text)
    plot(cells, out / "sample_efficiency.png")
    print(text)
    return 0


def pretraining(path: str | None) -> list[str]:
    """Markdown: how the policy at ``path`` was pretrained and selected, from the record it carries
    (:attr:`agents.policies.layerwise.LayerwisePolicy.meta`); nothing for a policy without one."""
    if path is None:
        return []
    from agents.core.results import provenance as prov
    from agents.policies.layerwise import load

    m = load(path).meta or {}
    if not m.get("log"):
        return []
    sel = m.get("selection") or {}
    val = m.get("validation_zero_shot", float("nan"))
    lines = ["", "## The policy: pretraining and selection (validation only)", "", prov(m) + (
             f" Wall time {m['wall_time_s']:.0f} s." if isinstance(m.get("wall_time_s"), (int, float)) else ""), "",
             f"{len(m.get('train_tasks', []))} training models, {len(m.get('validation_tasks', []))} validation "
             f"models; selection criterion `{sel.get('metric')}` at targets {sel.get('targets')}; selected after "
             f"{m.get('selected_after_episodes')} episodes (validation {val:.4f}). Episode 0 is the untrained policy, "
             "which is LAMP.", "",
             "| episodes | validation | train reward |", "|---|---|---|"]
    for row in m["log"]:
        mark = " (**selected**)" if row["episodes"] == m.get("selected_after_episodes") else ""
        reward = row.get("train_reward")
        lines.append(f"| {row['episodes']} | {row['validation']:.4f}{mark} | "
                     f"{'-' if reward is None else f'{reward:.4f}'} |")
    return lines


def _by_pair(cells: list[dict[str, Any]]) -> tuple[dict[tuple[str, float, str], list[float]], list[str], list[float]]:
    by: dict[tuple[str, float, str], list[float]] = {}
    for c in cells:
        by.setdefault((c["model"], c["target"], c["method"]), []).append(c["test"])
    return by, sorted({c["model"] for c in cells}), sorted({c["target"] for c in cells})


# ------------------------------------------------------------------------------------------------ rewards
def rewards(task: Any, target: float, rules: list[str], policies: dict[str, Any]) -> dict[str, float]:
    """Method -> validation reward of its one allocation on ``task`` at ``target``, and ``"method:score"`` -> its
    raw validation score."""
    import agents
    from prune_env import PruneRNNEnv

    env = PruneRNNEnv(task, target_sparsity=target, device="cpu")
    out = {}
    for rule in rules:  # the reward of the rule's one-evaluation search, from its validation score
        res = agents.search(rule, env, 1)
        out[rule] = 1.0 + (res.val_score - env.dense_score) / (abs(env.dense_score) or 1.0)
        out[f"{rule}:score"] = float(res.val_score)
    for name, policy in policies.items():
        env.reset(seed=0)
        _, reward, _, _, info = env.step(policy.allocation_action(env))
        out[name], out[f"{name}:score"] = float(reward), float(info["score"])
    return out


def cmd_rewards(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The ``rewards`` report (validation only)."""
    policies = named_policies(p, args.policy)
    meta = run_meta()
    models = resolve_models(args.models)
    methods = [*args.rules, *policies]
    rows = []
    for task in models:
        for target in args.targets:
            r = rewards(task, target, args.rules, policies)
            rows.append({"model": task.name, "target": target, **r})
            print(task.name, target, {k: round(v, 4) for k, v in r.items() if ":" not in k}, flush=True)
    lines = ["| target | " + " | ".join(f"{m} (clipped)" for m in methods) + " | "
             + " | ".join(f"{m} (raw)" for m in methods) + " |", "|---|" + "---|" * (2 * len(methods))]
    for target in [*args.targets, None]:
        sel = [r for r in rows if target is None or r["target"] == target]
        clipped = [np.mean([np.clip(r[m], 0.0, 1.0) for r in sel]) for m in methods]
        raw = [np.mean([r[m] for r in sel]) for m in methods]
        label = "all" if target is None else f"{target:g}"
        lines.append(f"| {label} | " + " | ".join(f"{v:.4f}" for v in clipped) + " | "
                     + " | ".join(f"{v:.4f}" for v in raw) + " |")
    scores = ["| target | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for target in [*args.targets, None]:
        sel = [r for r in rows if target is None or r["target"] == target]
        scores.append(f"| {'all' if target is None else f'{target:g}'} | "
                      + " | ".join(f"{np.mean([r[f'{m}:score'] for r in sel]):.4f}" for m in methods) + " |")
    per_model = ["| model | target | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    per_model += [f"| {r['model']} | {r['target']:g} | " + " | ".join(f"{r[m]:.3f}" for m in methods) + " |"
                  for r in rows]
    text = "\n".join(["# Zero-shot validation reward per target (validation splits only)", "", provenance(meta), "",
                      "policies: " + ", ".join(args.policy), "",
                      "Mean over the models of the reward `1 + (score - dense) / |dense|` on the validation split, "
                      "clipped to [0, 1] as in pretraining's `reward` selection, and raw:", "", *lines, "",
                      "Mean raw validation score (each model's own units; pretraining's `score` selection averages "
                      "it over the targets it is given):", "", *scores, "",
                      "Per model (raw reward):", "", *per_model]) + "\n"
    write_results(args.out, {"meta": meta, "rows": rows}, text)
    print(text)
    return 0


# ------------------------------------------------------------------------------------------------ allocations
def allocations(task: Any, target: float, rules: list[str], policies: dict[str, Any], budget: int, seed: int
                ) -> list[dict[str, Any]]:
    """One row per method: its validation score and the sparsity it applied to each layer."""
    import agents
    from prune_env import PruneRNNEnv

    env = PruneRNNEnv(task, target_sparsity=target, device="cpu")
    runs = [(rule, agents.search(rule, env, 1, seed=seed)) for rule in rules]
    runs += [(name, agents.search("policy", env, 1, seed=seed, policy=p)) for name, p in policies.items()]
    runs.append((f"random-{budget}", agents.search("random", env, budget, seed=seed)))
    return [{"model": task.name, "target": target, "method": m, "val": r.val_score, "allocation": r.allocation}
            for m, r in runs]


def cmd_allocations(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The ``allocations`` report (validation only)."""
    policies = named_policies(p, args.policy)
    meta = run_meta()
    rows, lines = [], []
    for task in resolve_models(args.models):
        for target in args.targets:
            group = allocations(task, target, args.rules, policies, args.budget, args.seed)
            rows += group
            layers = list(group[0]["allocation"])
            lines += [f"**{task.name} at {target:g}**", "",
                      "| method | validation score | " + " | ".join(f"`{n}`" for n in layers) + " |",
                      "|---|---|" + "---|" * len(layers)]
            lines += [f"| {r['method']} | {r['val']:.4f} | " + " | ".join(f"{r['allocation'][n]:.2f}" for n in layers)
                      + " |" for r in group]
            lines.append("")
            print("\n".join(lines[-len(group) - 4:]), flush=True)
    text = "\n".join(["# Per-layer allocations of the rules, the policies and random search (validation)", "",
                      provenance(meta), "",
                      f"policies: {', '.join(args.policy) or 'none'}; random search: {args.budget} evaluations, "
                      f"seed {args.seed}", "", *lines])
    write_results(args.out, {"meta": meta, "rows": rows}, text)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="report", required=True)
    t = sub.add_parser("test", help="test scores of every method on unseen models (cells.jsonl, results.md)")
    t.add_argument("--policy", help="a saved layer-wise policy (agents.policies.layerwise.save)")
    t.add_argument("--models", nargs="+", default=["zoo:validation", "pydoc-char", "custom-gru"])
    t.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.9])
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    t.add_argument("--vector-envs", type=int, default=8)
    t.add_argument("--operator", default="magnitude:none", help="criterion:reconstruct of every method's env")
    t.add_argument("--out", default=default_out("transfer"), help="results folder")
    t.add_argument("--resume", action="store_true", help="keep the finished cells of --out/cells.jsonl")
    t.add_argument("--summarize-only", action="store_true", help="rewrite the report and the plot from --out's "
                   "cells.jsonl, computing no cell (implies --resume)")
    t.add_argument("--smoke", action="store_true", help="tiny models and budgets cut to 1/10: a quick check")
    r = sub.add_parser("rewards", help="zero-shot validation reward per target of policies and rules")
    r.add_argument("--policy", action="append", default=[], metavar="NAME=PATH", help="a saved layer-wise policy")
    r.add_argument("--models", nargs="+", default=["zoo:validation"])
    r.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8, 0.9])
    r.add_argument("--rules", nargs="+", default=["lamp", "erk"])
    r.add_argument("--out", default=default_out("zero_shot_by_target"), help="results folder")
    a = sub.add_parser("allocations", help="per-layer allocations of rules, policies and random search")
    a.add_argument("--models", nargs="+", required=True, help="task names, or zoo:<split>")
    a.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.9])
    a.add_argument("--rules", nargs="+", default=["lamp", "erk", "global", "obd"])
    a.add_argument("--policy", action="append", default=[], metavar="NAME=PATH", help="a saved layer-wise policy")
    a.add_argument("--budget", type=int, default=300, help="random search's evaluations")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", default=default_out("allocations_vs_search"), help="results folder")
    args = p.parse_args(argv)
    return {"test": cmd_test, "rewards": cmd_rewards, "allocations": cmd_allocations}[args.report](p, args)


if __name__ == "__main__":
    sys.exit(main())
