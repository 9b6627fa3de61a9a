"""How much faster do two processes finish two equal jobs than one process doing them in turn, on this machine?

The ceiling on any parallel backend (Ray tasks, Tune trials, SubprocVecEnv) here: if two 1-thread processes run
side by side no faster than one after the other, no scheduler can make ``bench --backend ray`` beat the local
backend. Each job is a fixed number of 1-thread forward passes of an LSTM (the digits-sized workload of the env's
evaluations: batch 360, 8 steps, hidden 64) or a pure-Python loop (no memory traffic); the two modes alternate per
round, in one parent process that starts the workers (``multiprocessing``, spawn).

    python -m benchmarks parallel_scaling
    python -m benchmarks.parallel_scaling [--rounds 3] [--work 4.0] [--out DIR]

Speedup = wall(two jobs in turn) / wall(two jobs side by side); 2.0 is perfect scaling on 2 cores, 1.0 none.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time

from benchmarks._meta import default_out, provenance, run_meta, write_results


def _lstm_job(reps: int) -> float:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(64, 64, batch_first=True)
    x = torch.randn(360, 8, 64)
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(reps):
            lstm(x)
    return time.perf_counter() - t0


def _python_job(reps: int) -> float:
    t0 = time.perf_counter()
    acc = 0
    for i in range(reps):
        acc = (acc * 31 + i) % 1000003
    return time.perf_counter() - t0


JOBS = {"lstm": _lstm_job, "python": _python_job}


def _calibrate(kind: str, seconds: float) -> int:
    reps = 10 if kind == "lstm" else 100_000
    while True:
        t = JOBS[kind](reps)
        if t > 0.25:
            return max(1, int(reps * seconds / t))
        reps *= 4


def _run(pool, kind: str, reps: int, parallel: bool) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    if parallel:
        times = pool.map(JOBS[kind], [reps, reps])
    else:
        times = [pool.apply(JOBS[kind], (reps,)) for _ in range(2)]
    return time.perf_counter() - t0, times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--work", type=float, default=4.0, help="seconds of one job when it runs alone")
    p.add_argument("--out", default=default_out("parallel_scaling"), help="results folder")
    args = p.parse_args(argv)
    meta = run_meta()
    rows = []
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(_python_job, [10, 10])  # start both workers before timing
        for kind in JOBS:
            reps = pool.apply(_calibrate, (kind, args.work))
            for r in range(args.rounds):
                order = (False, True) if r % 2 == 0 else (True, False)
                for parallel in order:
                    wall, times = _run(pool, kind, reps, parallel)
                    rows.append({"job": kind, "round": r, "mode": "side by side" if parallel else "in turn",
                                 "wall_s": round(wall, 3), "job_s": [round(t, 3) for t in times], "reps": reps})
                    print(f"{kind:6s} round {r} {rows[-1]['mode']:12s} {wall:6.2f} s (jobs {rows[-1]['job_s']})",
                          flush=True)
    summary = {}
    for kind in JOBS:
        seq = [x["wall_s"] for x in rows if x["job"] == kind and x["mode"] == "in turn"]
        par = [x["wall_s"] for x in rows if x["job"] == kind and x["mode"] == "side by side"]
        summary[kind] = {"in_turn_median_s": statistics.median(seq), "side_by_side_median_s": statistics.median(par),
                         "speedup": round(statistics.median(seq) / statistics.median(par), 3)}
    result = {"meta": meta, "args": vars(args), "rows": rows, "summary": summary}
    lines = ["# Two jobs in turn vs side by side on this machine", "", provenance(meta), "",
             "Each job: 1 thread, about " + f"{args.work:g} s alone; two equal jobs run one after the other, then in "
             "two processes at once (the order alternates per round). Speedup = in turn / side by side (2.0: "
             "perfect on 2 cores).", "", "| job | in turn, median s | side by side, median s | speedup |",
             "|---|---:|---:|---:|"]
    for kind, s in summary.items():
        lines.append(f"| {kind} | {s['in_turn_median_s']:.2f} | {s['side_by_side_median_s']:.2f} | "
                     f"{s['speedup']:.2f} |")
    lines += ["", "| job | round | mode | wall s | per job s |", "|---|---|---|---:|---|"]
    lines += [f"| {x['job']} | {x['round']} | {x['mode']} | {x['wall_s']:.2f} | {x['job_s']} |" for x in rows]
    write_results(args.out, result, "\n".join(lines) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
