"""bf16 autocast vs float32 scoring: how far the scores move, whether the ranking of candidates survives, and the
speed-up: how far bf16 rewards may be trusted before using them.

For each task and target sparsity it plays the same ``--candidates`` random joint actions in two budget-mode envs,
``precision="fp32"`` and ``precision="bf16"``, and compares their validation scores:

- absolute deviation (median, max) and the deviation relative to the spread of the fp32 scores;
- Spearman rank correlation of the two score lists;
- regret: how much lower (in fp32) the candidate bf16 ranks best is than the fp32 best.

Then it times the floor (``task.evaluate`` of the dense model) at both precisions, side by side and interleaved,
and reports the median of the per-repetition ratios.

Run: ``python -m benchmarks precision`` (``python -m benchmarks.precision --tasks digits gru pydoc-char``).
Writes ``results.json`` and ``results.md`` under ``--out`` (default ``benchmarks/results/precision``).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings

import numpy as np
import torch

import prune_env
from benchmarks._meta import default_out, provenance, run_meta, write_results
from benchmarks.env_speed import load_task


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for v in np.unique(x):
            r[x == v] = r[x == v].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def compare(task, target: float, candidates: int, device: str, seed: int) -> dict:
    envs = {p: prune_env.PruneRNNEnv(task, target_sparsity=target, precision=p, device=device)
            for p in ("fp32", "bf16")}
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (candidates, envs["fp32"].num_layers)).astype(np.float32)
    scores = {}
    for p, env in envs.items():
        env.reset(seed=seed)
        out = []
        for a in actions:
            env.reset()
            out.append(env.step(a)[4]["score"])
        scores[p] = np.array(out)
    f, b = scores["fp32"], scores["bf16"]
    dev = np.abs(b - f)
    spread = float(f.max() - f.min())
    return {"target": target, "candidates": candidates,
            "dense_fp32": envs["fp32"].dense_score, "dense_bf16": envs["bf16"].dense_score,
            "abs_dev_median": float(np.median(dev)), "abs_dev_max": float(dev.max()),
            "max_dev_over_spread": float(dev.max() / spread) if spread else float("nan"),
            "spearman": spearman(f, b), "best_same": bool(np.argmax(f) == np.argmax(b)),
            "regret": float(f.max() - f[np.argmax(b)])}


def floor_speed(task, reps: int, device: str) -> dict:
    model = copy.deepcopy(task.model).to(device).eval().requires_grad_(False)

    def run(dtype):
        if dtype is None:
            return task.evaluate(model)
        with torch.autocast(torch.device(device).type, dtype=dtype):
            return task.evaluate(model)

    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(reps + 1):
        for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            run(dtype)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if r:  # the first repetition warms up
                times[name].append(time.perf_counter() - t0)
    f, b = np.array(times["fp32"]), np.array(times["bf16"])
    return {"fp32_ms": 1e3 * float(np.median(f)), "bf16_ms": 1e3 * float(np.median(b)),
            "speedup_median_ratio": float(np.median(f / b)), "reps": reps}


def to_markdown(result: dict) -> str:
    lines = ["# precision: bf16 autocast vs fp32 scores", "",
             f"{provenance(result['meta'])} Device {result['device']}.", "",
             "| task | target | candidates | median abs dev | max abs dev | max dev / fp32 spread | Spearman | "
             "same best | regret (fp32) |", "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for t in result["tasks"]:
        for c in t["compare"]:
            lines.append(f"| {t['task']} | {c['target']} | {c['candidates']} | {c['abs_dev_median']:.2e} | "
                         f"{c['abs_dev_max']:.2e} | {c['max_dev_over_spread']:.3f} | {c['spearman']:.4f} | "
                         f"{'yes' if c['best_same'] else 'no'} | {c['regret']:.2e} |")
    lines += ["", "Floor (`task.evaluate` of the dense model), medians of interleaved repetitions:", "",
              "| task | fp32 ms | bf16 ms | bf16 speed-up |", "|---|---:|---:|---:|"]
    for t in result["tasks"]:
        s = t["floor"]
        lines.append(f"| {t['task']} | {s['fp32_ms']:.2f} | {s['bf16_ms']:.2f} | {s['speedup_median_ratio']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["digits", "gru", "pydoc-char"],
                        help="presets and/or 'gru' (the random-weight GRU task of env_speed.py)")
    parser.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.8, 0.9], help="target sparsities")
    parser.add_argument("--candidates", type=int, default=40, help="random allocations per target")
    parser.add_argument("--reps", type=int, default=10, help="timed repetitions of the floor")
    parser.add_argument("--device", default="cpu", help="'cpu' or 'cuda'")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=default_out("precision"), help="results folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    result = {"meta": run_meta(), "device": args.device, "tasks": []}
    for name in args.tasks:
        task = load_task(name)
        row = {"task": name, "compare": [compare(task, t, args.candidates, args.device, args.seed)
                                         for t in args.targets],
               "floor": floor_speed(task, args.reps, args.device)}
        print(json.dumps(row), flush=True)
        result["tasks"].append(row)
    write_results(args.out, result, to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
