"""``prune-rnn bench --backend ray`` against ``--backend local``: wall time of 4 cells of equal cost, same table.

    nice python -m benchmarks.ray_backend          # digits, random at 0.9, seeds 0-3, 400 evaluations, 2 rounds

Needs the Ray extra (``pip install -e ".[ray]"``). The 4 cells are one ``random`` search each (seeds 0-3, one target,
the same evaluation cap: equal cost). Both backends run in this process, through the CLI's ``main``, round after round
in alternating order (local then ray, ray then local, ...), so a change in the machine's load hits both alike. The
local backend runs the cells one after another with torch's default threads (all CPUs, as a user would run it; set
here with ``--threads``, default ``os.cpu_count()``); the ray backend starts a local Ray instance (counted in its
time), runs each cell as a one-CPU task (``torch.set_num_threads(1)``) and shuts Ray down. Wall time is measured
around the whole command (task loading and Ray start included). The result rows of the two backends must be equal
(scores, allocations, histories). Each round ends with a reference run, not in the ratio: the local backend with 1
torch thread (``local-1t``; ``--no-one-thread-reference`` skips it). Writes ``results.json`` and ``results.md`` under
``--out`` (default ``benchmarks/results/ray_backend``).

The filed runs, cells of ~15 s: ``python -m benchmarks ray_backend`` (``--max-evals 3000``, torch's default threads
for the local backend) and ``python -m benchmarks ray_backend_1thread`` (both backends at 1 torch thread per cell,
``--threads 1 --no-one-thread-reference``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._meta import default_out, provenance, run_meta, write_results

KEYS = ("agent", "target_sparsity", "seed", "val_score", "test_score", "allocation", "history", "evals")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="digits", help="a preset")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--max-evals", type=int, default=400, help="evaluations per cell (400: ~15-20 s per cell locally)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--rounds", type=int, default=2, help="rounds; each runs both backends, the order alternating")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of the local backend")
    p.add_argument("--no-one-thread-reference", dest="one_thread_reference", action="store_false",
                   help="skip the reference run per round: the local backend with 1 torch thread (not in the ratio)")
    p.add_argument("--out", default=default_out("ray_backend"), help="results folder")
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray on 127.0.0.1 only
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import torch

    torch.set_num_threads(args.threads)
    from agents.cli.main import main as cli
    from benchmarks.runner import max_evals_flag

    result = {"meta": run_meta(), "config": {**vars(args), "agent": "random", "cells": len(args.seeds)}, "runs": []}
    base = ["bench", "--task", args.task, "--sparsity", str(args.sparsity), "--agents", "random", max_evals_flag(),
            str(args.max_evals), "--seeds", *map(str, args.seeds), "--no-progress"]
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = ("local", "ray") if r % 2 == 0 else ("ray", "local")
            for backend in (*order, "local-1t") if args.one_thread_reference else order:
                out = Path(tmp) / f"{backend}-{r}"
                torch.set_num_threads(1 if backend == "local-1t" else args.threads)
                t0 = time.perf_counter()
                assert cli([*base, "--backend", backend.split("-")[0], "--out", str(out)]) == 0
                wall = time.perf_counter() - t0
                (run,) = out.iterdir()
                data = json.loads((run / "results.json").read_text())
                rows = [[row[k] for k in KEYS] for row in data["runs"]]
                tables.setdefault(backend, rows)
                result["runs"].append({"round": r, "backend": backend, "wall_s": round(wall, 2),
                                       "bench_wall_s": data["meta"]["wall_time_s"],
                                       "cell_wall_s": [row["wall_time_s"] for row in data["runs"]],
                                       "equal_to_first_local": rows == tables["local"] if "local" in tables
                                       else None})
                print(f"round {r} {backend:5s}: {wall:6.1f} s (cells {[row['wall_time_s'] for row in data['runs']]})",
                      flush=True)
    walls = {b: [x["wall_s"] for x in result["runs"] if x["backend"] == b] for b in ("local", "ray", "local-1t")}
    total = {b: sum(w) for b, w in walls.items()}
    ratios = [ray / loc for loc, ray in zip(walls["local"], walls["ray"], strict=True)]
    result["summary"] = {"local_wall_s": walls["local"], "ray_wall_s": walls["ray"],
                         "ratio_total": round(total["ray"] / total["local"], 3),
                         "ratio_per_round": [round(x, 3) for x in ratios],
                         "ratio_median": round(statistics.median(ratios), 3),
                         "local_1thread_wall_s": walls["local-1t"],
                         "ratio_vs_local_1thread": round(total["ray"] / total["local-1t"], 3) if walls["local-1t"]
                         else None,
                         "tables_equal": tables["ray"] == tables["local"]
                         and all(x["equal_to_first_local"] for x in result["runs"]),
                         "target_ratio": 0.6}
    s = result["summary"]
    cfg = result["config"]
    lines = ["# `bench --backend ray` vs `--backend local`", "", provenance(result["meta"]), "",
             f"Task `{cfg['task']}`, agent `random`, target {cfg['sparsity']}, {cfg['max_evals']} evaluations per "
             f"cell, seeds {cfg['seeds']}: {cfg['cells']} cells of equal cost. Local backend: one process, the cells "
             f"one after another, torch threads {cfg['threads']}"
             f"{' (the default on this machine)' if cfg['threads'] == os.cpu_count() else ''}. Ray "
             "backend: a local Ray instance started and stopped by the command (counted), each cell a 1-CPU task "
             "with 1 torch thread. Wall time of the whole command (task loading included), rounds in alternating "
             "order, one process.", "",
             "| round | backend | wall s | per-cell search s |", "|---|---|---|---|"]
    for x in result["runs"]:
        lines.append(f"| {x['round']} | {x['backend']} | {x['wall_s']:.1f} | "
                     f"{', '.join(f'{c:.1f}' for c in x['cell_wall_s'])} |")
    lines += ["", f"**Ratio ray / local: {s['ratio_total']:.3f}** over all rounds (per round "
              f"{s['ratio_per_round']}; target <= {s['target_ratio']}: "
              f"{'met' if s['ratio_total'] <= s['target_ratio'] else 'NOT met'}). "
              f"Result rows equal (scores, allocations, histories): {s['tables_equal']}.", ""]
    if s["ratio_vs_local_1thread"] is not None:
        lines += [f"Reference, not the target's measure: the local backend with 1 torch thread (`local-1t`, each round "
                  f"last) took {s['local_1thread_wall_s']} s; ray / local-1t = "
                  f"{s['ratio_vs_local_1thread']:.3f} (how much of the gain is one thread per cell rather than two "
                  "cells at once).", ""]
    lines += ["Rerun: `nice python -m benchmarks ray_backend` (with the Ray extra; do not set `OMP_NUM_THREADS`, or "
              "pass `--threads`).", ""]
    write_results(args.out, result, "\n".join(lines))
    print("\n".join(lines))
    return 0 if s["tables_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
