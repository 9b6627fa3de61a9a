"""Memory soak: 10,000 env steps must grow the process's RSS by less than 5% (no leak).

Runs ``--steps`` joint-mode steps (each a full episode: reset, step, score) of a ``PruneRNNEnv`` and then of a
``PruneRNNVectorEnv`` (K candidates per step, counted as K steps), sampling the resident set size every
``--every`` steps after a warm-up. Growth is measured from the first sample after the warm-up to the last.

Each sample is taken twice: the raw RSS, then the RSS after glibc's ``malloc_trim(0)`` has returned the heap's free
pages to the OS (``prune_env.envs.batched.trim_heap``; a no-op off glibc). Leaked memory is still allocated, so it
shows in both; heap fragmentation between the vector env's periodic trims (batched passes free large, differently
sized activations) shows only in the raw numbers, as a bounded band rather than a trend. The target is judged on
the trimmed RSS; the raw band and slope are reported next to it.

Run: ``python -m benchmarks memory_soak`` (``python -m benchmarks.memory_soak --task digits --steps 10000``).
Writes ``results.json`` and ``results.md`` under ``--out`` (default ``benchmarks/results/memory_soak``).
"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np
import psutil
import torch

import prune_env
from benchmarks._meta import default_out, provenance, run_meta, write_results
from benchmarks.env_speed import load_task
from prune_env.envs.batched import trim_heap

TARGET_GROWTH = 0.05


def soak(env, steps: int, every: int, warmup: int, per_step: int, seed: int = 0) -> dict:
    """Step ``env`` until ``steps`` candidates were scored; RSS samples in MiB."""
    proc = psutil.Process()
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    raw, trimmed, done = [], [], 0
    while done < steps + warmup:
        action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        out = env.step(action)
        if isinstance(env, prune_env.PruneRNNEnv) and out[2]:
            env.reset()
        done += per_step
        if done >= warmup and (done - warmup) % every < per_step:
            raw.append(proc.memory_info().rss / 2**20)
            trim_heap()
            trimmed.append(proc.memory_info().rss / 2**20)
    # A leak grows steadily; the allocator's warm-up is a step then a plateau. The least-squares slope tells them
    # apart, so it is reported next to the first-to-last growth the target is stated in.
    x = np.arange(len(raw)) * every / 1000.0

    def slope(samples: list[float]) -> float:
        return float(np.polyfit(x, samples, 1)[0]) if len(samples) > 1 else 0.0

    growth = trimmed[-1] / trimmed[0] - 1.0
    return {"steps": steps, "warmup": warmup, "rss_mib": [round(s, 1) for s in raw],
            "rss_trimmed_mib": [round(s, 1) for s in trimmed], "growth": growth,
            "raw_growth": raw[-1] / raw[0] - 1.0, "slope_mib_per_1000_steps": slope(trimmed),
            "raw_slope_mib_per_1000_steps": slope(raw), "meets_target": bool(growth < TARGET_GROWTH)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="digits", help="preset name or 'gru'")
    parser.add_argument("--steps", type=int, default=10_000, help="scored candidates per env")
    parser.add_argument("--every", type=int, default=1000, help="RSS sample interval (steps)")
    parser.add_argument("--warmup", type=int, default=500, help="steps before the first sample (single env)")
    parser.add_argument("--vector-warmup", type=int, default=100,
                        help="vector-env steps (of num_envs candidates each) before the first sample: batched "
                             "passes allocate larger, more varied buffers, so the allocator takes longer to settle")
    parser.add_argument("--num-envs", type=int, default=16, help="K of the vector env")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default=default_out("memory_soak"), help="results folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    meta = run_meta()
    task = load_task(args.task)
    single = prune_env.PruneRNNEnv(task, target_sparsity=0.5, device="cpu")
    result = {"meta": meta, "task": args.task, "target_growth": TARGET_GROWTH,
              "single": soak(single, args.steps, args.every, args.warmup, 1)}
    print(json.dumps({"single": result["single"]["growth"]}), flush=True)
    vec = prune_env.PruneRNNVectorEnv(task, args.num_envs, target_sparsity=0.5, device="cpu",
                                      autoreset_mode="SameStep", batched=True)
    result["vector"] = soak(vec, args.steps, args.every, args.vector_warmup * args.num_envs, args.num_envs)
    result["vector"]["num_envs"] = args.num_envs
    print(json.dumps({"vector": result["vector"]["growth"]}), flush=True)
    md = ["# memory_soak", "", provenance(result["meta"]), "",
          "| env | steps | warm-up | trimmed RSS first -> last (MiB) | growth | slope (MiB / 1000) | < 5% | "
          "raw RSS first -> last (min-max) | raw growth | raw slope |",
          "|---|---:|---:|---|---:|---:|---|---|---:|---:|"]
    for name in ("single", "vector"):
        r = result[name]
        raw = r["rss_mib"]
        md.append(f"| {name} | {r['steps']} | {r['warmup']} | {r['rss_trimmed_mib'][0]} -> "
                  f"{r['rss_trimmed_mib'][-1]} | {100 * r['growth']:.2f}% | {r['slope_mib_per_1000_steps']:+.2f} | "
                  f"{'yes' if r['meets_target'] else 'NO'} | {raw[0]} -> {raw[-1]} ({min(raw)}-{max(raw)}) | "
                  f"{100 * r['raw_growth']:.2f}% | {r['raw_slope_mib_per_1000_steps']:+.2f} |")
    md += ["", "Trimmed: after `malloc_trim(0)` returned the heap's free pages (a leak stays allocated and shows "
           "there); raw: as sampled, including heap fragmentation between the vector env's periodic trims."]
    write_results(args.out, result, "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
