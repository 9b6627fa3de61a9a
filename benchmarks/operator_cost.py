"""What the pruning operator costs and what it buys: magnitude against Wanda and OBS reconstruction, side by side.

An operator is the pair (``criterion``, ``reconstruct``) of :class:`~prune_env.PruneRNNEnv`. For each task and
operator this measures, on one CPU thread:

- ``setup``: building the env (the analysis, and for the data-aware operators the calibration capture);
- ``step``: the wall time of ``reset`` + ``step`` with random joint actions at the target (the reconstruction
  cache is shared per analysis, so later steps may hit it; hits and misses are recorded);
- ``rule``: the one-shot rules (LAMP, ERK, uniform), one evaluation each, validation and test scores;
- ``search``: a search agent with ``--max-evals`` evaluations (its wall time, validation and test score), for the
  operators in ``--search-operators``; each starts on a freshly loaded task, so its cache starts cold.

Test scores are reported; the searches and rules select on validation only.

    nice -n 10 env OMP_NUM_THREADS=1 python -m benchmarks.operator_cost --task custom-gru pydoc-char
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch

from benchmarks._meta import default_out, load_task, operator_kwargs, provenance, run_meta, write_results

NAME = "operator_cost"
OPERATORS = ("magnitude:none", "wanda:none", "obs:none", "magnitude:obs", "wanda:obs", "obs:obs")


def _operator(text: str) -> tuple[str, str | None]:
    op = operator_kwargs(text)
    return op["criterion"], op["reconstruct"]


def _env(task: Any, target: float, op: str):
    from prune_env import PruneRNNEnv

    criterion, reconstruct = _operator(op)
    return PruneRNNEnv(task, target_sparsity=target, criterion=criterion, reconstruct=reconstruct, device="cpu")


def _test(task: Any, env: Any, allocation: dict[str, float]) -> float:
    from prune_env.task import split_score

    return split_score(task.test(env.pruned_model(allocation)), "test")[0]


def _cache(env: Any) -> dict[str, int] | None:
    c = getattr(env.kind, "calibrated", None)
    return None if c is None else {"hits": c.hits, "misses": c.misses}


def measure(spec: str, target: float, ops: list[str], steps: int, rules: list[str], agents: list[str],
            search_ops: list[str], max_evals: int) -> list[dict[str, Any]]:
    import agents as A

    rows: list[dict[str, Any]] = []
    for op in ops:
        task = load_task(spec)
        t0 = time.perf_counter()
        env = _env(task, target, op)
        setup = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        times = []
        for i in range(steps):
            env.reset(seed=i)
            action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            t0 = time.perf_counter()
            env.step(action)
            times.append(time.perf_counter() - t0)
        rows.append({"task": spec, "operator": op, "phase": "step", "setup_s": round(setup, 3), "steps": steps,
                     "step_mean_s": round(statistics.fmean(times), 4),
                     "step_median_s": round(statistics.median(times), 4), "cache": _cache(env)})
        print(rows[-1], flush=True)
        for rule in rules:
            res = A.search(rule, env, 1, seed=0)
            rows.append({"task": spec, "operator": op, "phase": "rule", "agent": rule, "evals": res.evals,
                         "val_score": res.val_score, "test_score": _test(task, env, res.allocation)})
            print(rows[-1], flush=True)
    for op in search_ops:
        for agent in agents:
            task = load_task(spec)
            env = _env(task, target, op)
            t0 = time.perf_counter()
            res = A.search(agent, env, max_evals, seed=0)
            wall = time.perf_counter() - t0
            rows.append({"task": spec, "operator": op, "phase": "search", "agent": agent, "max_evals": max_evals,
                         "evals": res.evals, "wall_s": round(wall, 1),
                         "per_eval_s": round(wall / max(res.evals, 1), 4),
                         "val_score": res.val_score, "test_score": _test(task, env, res.allocation),
                         "cache": _cache(env)})
            print(rows[-1], flush=True)
    return rows


def markdown(result: dict[str, Any]) -> str:
    rows, a = result["rows"], result["args"]
    lines = ["# Operator cost and score", "", provenance(result["meta"]), "",
             f"Target sparsity {a['target']}; one CPU thread; test split scores (selection on validation).", "",
             "## Cost per step (reset + step, random joint actions)", "",
             "| task | operator | setup s | step mean s | step median s | cache hits/misses |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r["phase"] == "step":
            c = "-" if r["cache"] is None else f"{r['cache']['hits']}/{r['cache']['misses']}"
            lines.append(f"| {r['task']} | {r['operator']} | {r['setup_s']} | {r['step_mean_s']} | "
                         f"{r['step_median_s']} | {c} |")
    lines += ["", "## One-shot rules (1 evaluation)", "", "| task | operator | rule | val | test |",
              "|---|---|---|---|---|"]
    for r in rows:
        if r["phase"] == "rule":
            lines.append(f"| {r['task']} | {r['operator']} | {r['agent']} | {r['val_score']:.4f} | "
                         f"{r['test_score']:.4f} |")
    lines += ["", f"## Searches ({a['max_evals']} evaluations, seed 0)", "",
              "| task | operator | agent | evals | wall s | s per eval | val | test |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["phase"] == "search":
            lines.append(f"| {r['task']} | {r['operator']} | {r['agent']} | {r['evals']} | {r['wall_s']} | "
                         f"{r['per_eval_s']} | {r['val_score']:.4f} | {r['test_score']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", nargs="+", default=["custom-gru", "pydoc-char"])
    p.add_argument("--target", type=float, default=0.9)
    p.add_argument("--operators", nargs="+", default=list(OPERATORS))
    p.add_argument("--steps", type=int, default=20, help="timed random steps per operator")
    p.add_argument("--rules", nargs="+", default=["lamp", "erk", "uniform"])
    p.add_argument("--agents", nargs="+", default=["random", "reinforce"])
    p.add_argument("--search-operators", nargs="+", default=["magnitude:none", "obs:obs"])
    p.add_argument("--max-evals", type=int, default=1000)
    p.add_argument("--out", default=default_out(NAME))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    result: dict[str, Any] = {"meta": run_meta(), "args": vars(args), "rows": []}
    for spec in args.task:
        result["rows"] += measure(spec, args.target, args.operators, args.steps, args.rules, args.agents,
                                  args.search_operators, args.max_evals)
        write_results(args.out, result, markdown(result))  # after every task: a partial run is filed too
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
