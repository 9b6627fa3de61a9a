"""Does the allocation still matter after fine-tuning? Allocations from several agents, each pruned gradually with the
same fine-tuning budget and seeds, scored on test.

    python -m benchmarks finetuned_pydoc
    python -m benchmarks.finetuned --task pydoc-char --targets 0.8 0.9 --seeds 0 1 2 --steps 200 --lr 3e-3 \\
        --out benchmarks/results/finetuned_pydoc

Agents: ``uniform``, ``global``, ``lamp``, ``erk`` (deterministic: one allocation, fine-tuned with each seed),
``reinforce`` (one-shot reward, ``--reinforce-budget`` evaluations, seeded) and ``reinforce-ft`` (the env fine-tunes
each candidate ``--ft-reinforce-steps`` steps before scoring it, ``--ft-reinforce-budget`` evaluations). Every
allocation then goes through :func:`prune_env.compression.gradual.gradual_prune` (``--steps``, Adam ``--lr``, cubic
ramp over the first half, best validation checkpoint). Cells are appended to ``cells.jsonl`` as they finish (a rerun
with the same ``--out`` skips them); ``results.md``/``results.json`` hold the table, the Spearman correlation between
one-shot and fine-tuned test scores, and the best searched allocation's margin over uniform. ``dense`` is the control:
the dense model trained on with the same steps, learning rate and schedule, nothing pruned (``--agents dense`` alone
measures what the extra training gives a model that was not trained to convergence).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from agents.core.results import append_jsonl
from benchmarks._meta import provenance, run_meta
from prune_env.compression.gradual import LR_SCHEDULES, SELECT

RULES = ("uniform", "global", "lamp", "erk")
CONTROL = ("dense",)
SEARCHES = ("reinforce", "reinforce-ft")


def _spearman(a: list[float], b: list[float]) -> float:
    ra, rb = (np.argsort(np.argsort(x)).astype(float) for x in (a, b))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _allocation(task, agent: str, target: float, seed: int, args) -> tuple[dict[str, float], int]:
    import agents
    import prune_env

    if agent == "dense":
        env = prune_env.PruneRNNEnv(task, target_sparsity=target)
        return {name: 0.0 for name in env.layer_names}, 0
    if agent == "reinforce-ft":
        env = prune_env.PruneRNNEnv(task, target_sparsity=target, finetune_steps=args.ft_reinforce_steps)
        res = agents.search("reinforce", env, args.ft_reinforce_budget, seed=seed)
    else:
        env = prune_env.PruneRNNEnv(task, target_sparsity=target)
        budget = args.reinforce_budget if agent == "reinforce" else 1
        res = agents.search(agent, env, budget, seed=seed)
    return res.allocation, res.evals


def _cell(task, agent: str, target: float, seed: int, args, cache: dict) -> dict:
    import prune_env
    from prune_env.compression.gradual import gradual_prune
    from prune_env.task import split_score

    key = (agent, target) if agent in RULES + CONTROL else (agent, target, seed)
    t0 = time.perf_counter()
    if key not in cache:
        cache[key] = _allocation(task, agent, target, seed, args)
    allocation, evals = cache[key]
    t_search = time.perf_counter() - t0
    env = prune_env.PruneRNNEnv(task, target_sparsity=target)
    oneshot = env.pruned_model(allocation)
    one_val = split_score(task.evaluate(oneshot))[0]
    one_test, one_extra = split_score(task.test(oneshot), "test")
    t1 = time.perf_counter()
    result = gradual_prune(env, allocation, steps=args.steps, lr=args.lr, seed=seed,
                           lr_schedule=args.lr_schedule, select=args.select)
    test, extra = split_score(task.test(result.model), "test")
    return {"agent": agent, "target": target, "seed": seed, "evals": evals, "allocation": allocation,
            "oneshot_val": one_val, "oneshot_test": one_test, "oneshot_test_perplexity": one_extra.get("perplexity"),
            "ft_val": result.score, "ft_test": test, "ft_test_perplexity": extra.get("perplexity"),
            "best_step": result.step, "search_s": round(t_search, 2), "finetune_s": round(time.perf_counter() - t1, 2)}


def summarize(cells: list[dict], agents_: list[str], targets: list[float]) -> dict:
    rows, corr, margin = [], {}, {}
    for target in targets:
        at = [c for c in cells if c["target"] == target]
        for agent in agents_:
            cs = [c for c in at if c["agent"] == agent]
            if not cs:
                continue
            rows.append({"target": target, "agent": agent, "n": len(cs),
                         **{k: float(np.mean([c[k] for c in cs])) for k in ("oneshot_test", "ft_test", "ft_val")},
                         "ft_test_std": float(np.std([c["ft_test"] for c in cs])),
                         "ft_test_perplexity": (float(np.mean([c["ft_test_perplexity"] for c in cs]))
                                                if all(c["ft_test_perplexity"] is not None for c in cs) else None)})
        pruned = [c for c in at if c["agent"] not in CONTROL]
        if len(pruned) >= 2:
            corr[target] = _spearman([c["oneshot_test"] for c in pruned], [c["ft_test"] for c in pruned])
        means = {r["agent"]: r["ft_test"] for r in rows if r["target"] == target}
        searched = {a: v for a, v in means.items() if a not in ("uniform", *CONTROL)}
        if "uniform" in means and searched:
            best = max(searched, key=searched.get)
            margin[target] = {"best": best, "margin": searched[best] - means["uniform"]}
    return {"rows": rows, "spearman": corr, "margin_over_uniform": margin}


def to_markdown(result: dict) -> str:
    a = result["args"]
    s = result["summary"]
    ppl = any(r["ft_test_perplexity"] is not None for r in s["rows"])
    searches = (f" reinforce: {a['reinforce_budget']} evaluations, one-shot reward." if "reinforce" in a["agents"]
                else "") + (f" reinforce-ft: {a['ft_reinforce_budget']} evaluations, each candidate fine-tuned "
                            f"{a['ft_reinforce_steps']} steps before scoring." if "reinforce-ft" in a["agents"] else "")
    lines = [f"# Allocations after fine-tuning: {result['task']}", "", provenance(result["meta"]), "",
             f"Every allocation pruned gradually with the same budget: {a['steps']} Adam steps, lr {a['lr']}"
             f"{' (cosine decay after the ramp)' if a.get('lr_schedule') == 'cosine' else ''}, cubic ramp over the "
             f"first half, best validation {'NLL' if a.get('select') == 'nll' else 'score'} checkpoint; seeds "
             f"{a['seeds']} (fine-tuning batches; and the "
             f"search for reinforce).{searches} Dense test score {result['dense_test']:.4f}. Test split; the "
             "searches and the checkpoint selection see validation only.", "",
             "| target | agent | one-shot test | fine-tuned test (mean +- std) |" + (" fine-tuned test ppl |" if ppl
                                                                                    else ""),
             "|---|---|---:|---:|" + ("---:|" if ppl else "")]
    for r in s["rows"]:
        lines.append(f"| {r['target']} | {r['agent']} | {r['oneshot_test']:.4f} | {r['ft_test']:.4f} +- "
                     f"{r['ft_test_std']:.4f} |" + (f" {r['ft_test_perplexity']:.2f} |" if ppl else ""))
    if "dense" in a["agents"]:
        lines += ["", "`dense`: the control, nothing pruned, trained on with the same steps and schedule (its one-shot "
                  "column is the dense model as given)."]
    if not s["spearman"]:
        return "\n".join(lines) + "\n"
    lines += ["", "| target | Spearman (one-shot test vs fine-tuned test, all cells) | best non-uniform after "
              "fine-tuning | its margin over uniform |", "|---|---:|---|---:|"]
    for t in a["targets"]:
        m = s["margin_over_uniform"].get(str(t)) or s["margin_over_uniform"].get(t) or {}
        rho = s["spearman"].get(str(t), s["spearman"].get(t))
        if rho is None:  # the control alone
            continue
        lines.append(f"| {t} | {rho:.2f} | {m.get('best', '-')} | {m.get('margin', float('nan')):+.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="pydoc-char", help="preset, corpus directory or module:function")
    p.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--agents", nargs="+", default=[*RULES, *SEARCHES])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--lr-schedule", default="constant", choices=LR_SCHEDULES)
    p.add_argument("--select", default="score", choices=SELECT, help="fine-tuning checkpoint to keep")
    p.add_argument("--reinforce-budget", type=int, default=300)
    p.add_argument("--ft-reinforce-budget", type=int, default=60)
    p.add_argument("--ft-reinforce-steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    unknown = set(args.agents) - set(RULES) - set(SEARCHES) - set(CONTROL)
    if unknown:
        p.error(f"--agents: unknown {sorted(unknown)}; expected some of {[*RULES, *SEARCHES, *CONTROL]}")
    torch.set_num_threads(args.threads)
    meta = run_meta()
    from agents.core.results import write_json, write_text
    from prune_env.task import split_score
    from prune_env.tasks import resolve_task

    task = resolve_task(args.task)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cells_path = out / "cells.jsonl"
    done = [json.loads(line) for line in cells_path.read_text().splitlines()] if cells_path.exists() else []
    have = {(c["agent"], c["target"], c["seed"]) for c in done}
    cache: dict = {}
    for c in done:
        key = (c["agent"], c["target"]) if c["agent"] in RULES + CONTROL else (c["agent"], c["target"], c["seed"])
        cache[key] = (c["allocation"], c["evals"])
    for target in args.targets:
        for agent in args.agents:
            for seed in args.seeds:
                if (agent, target, seed) in have:
                    continue
                cell = _cell(task, agent, target, seed, args, cache)
                print(f"{agent:13s} target {target} seed {seed}: one-shot test {cell['oneshot_test']:.4f} -> "
                      f"fine-tuned {cell['ft_test']:.4f} ({cell['search_s'] + cell['finetune_s']:.0f} s)", flush=True)
                append_jsonl(cells_path, cell)  # one line per finished cell: a killed run loses one cell at most
                done.append(cell)
    cells = [c for c in done if c["agent"] in args.agents and c["target"] in args.targets and c["seed"] in args.seeds]
    result = {"meta": meta, "task": task.name, "args": vars(args),
              "dense_test": split_score(task.test(task.model), "test")[0],
              "summary": summarize(cells, args.agents, args.targets), "cells": cells}
    write_json(out / "results.json", result)
    md = to_markdown(json.loads(json.dumps(result)))
    write_text(out / "results.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
