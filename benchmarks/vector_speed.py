"""Candidates scored per second: K sequential ``PruneRNNEnv`` episodes vs one ``PruneRNNVectorEnv`` step.

Side by side in one process, repetitions interleaved, joint mode (every step ends K episodes):

- ``sequential``: one ``PruneRNNEnv`` runs K episodes (reset + step) one after the other, as K envs would;
- ``batched``: ``PruneRNNVectorEnv(task, K, batched=True, autoreset_mode="SameStep")`` takes one step;
- ``auto``: the vector env with ``batched=None``, which keeps whichever path its probe found faster.

Targets: on CPU the vector env (auto) is never slower per candidate than sequential; on a GPU, batched scores at
least 10x more candidates per second than sequential at K=64 for ``pydoc-char``. ``--sweep`` adds the scaling of the
per-candidate cost with hidden size, sequence length and K on a random-weight GRU language model (``gru``, timing
only; see :func:`benchmarks.env_speed.gru_task`), and a plot.

Run: ``python -m benchmarks vector_speed`` (``python -m benchmarks.vector_speed --tasks digits gru --ks 1 4 16
--sweep``; GPU: ``--device cuda --tasks pydoc-char --ks 1 16 64``). Writes ``results.json``, ``results.md`` and,
with ``--sweep``, ``scaling.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import prune_env
from benchmarks._meta import default_out, provenance, run_meta, write_results
from benchmarks.env_speed import gru_task, load_task
from prune_env.io import atomic_write_with


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(task, ks: list[int], reps: int, device: str, seed: int = 0, precision: str = "fp32") -> list[dict]:
    """Per-candidate seconds of the three paths at each K (medians over interleaved repetitions)."""
    dev = torch.device(device)
    single = prune_env.PruneRNNEnv(task, target_sparsity=0.5, device=dev, precision=precision)
    rows = []
    for k in ks:
        vec = prune_env.PruneRNNVectorEnv(task, k, batched=True, autoreset_mode="SameStep", target_sparsity=0.5,
                                          device=dev, precision=precision)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            auto = prune_env.PruneRNNVectorEnv(task, k, autoreset_mode="SameStep", target_sparsity=0.5, device=dev,
                                               precision=precision)
        rng = np.random.default_rng(seed)
        vec.reset(seed=seed)
        auto.reset(seed=seed)
        times: dict[str, list[float]] = {"sequential": [], "batched": [], "auto": []}
        def sequential(actions: np.ndarray) -> None:
            for a in actions:
                single.reset()
                single.step(a)

        paths = [("sequential", sequential), ("batched", vec.step), ("auto", auto.step)]
        for r in range(reps + 1):  # one warm-up repetition
            actions = rng.uniform(-1, 1, vec.action_space.shape).astype(np.float32)
            sample = {}
            # Rotate the order each repetition: a path must not always run right after the batched pass's
            # large allocations (or always first).
            for name, run in paths[r % 3:] + paths[:r % 3]:
                _sync(dev)
                t0 = time.perf_counter()
                run(actions)
                _sync(dev)
                sample[name] = time.perf_counter() - t0
            if r:
                for name, v in sample.items():
                    times[name].append(v / k)
        med = {name: float(np.median(v)) for name, v in times.items()}
        seq = np.array(times["sequential"])
        rows.append({"K": k, "ms_per_candidate": {n: 1e3 * v for n, v in med.items()},
                     "candidates_per_s": {n: 1.0 / v for n, v in med.items()},
                     "speedup_batched": float(np.median(seq / np.array(times["batched"]))),
                     "speedup_auto": float(np.median(seq / np.array(times["auto"]))),
                     "auto_path": auto.eval_path, "auto_reason": auto.eval_path_reason,
                     "candidates_per_pass": vec.scorer.max_batch})
        print(json.dumps({"task": task.name, **rows[-1]}), flush=True)
    return rows


def sweep(ks: list[int], reps: int, device: str) -> list[dict]:
    """Per-candidate cost of sequential vs batched scoring as hidden size, sequence length and K grow."""
    out = []
    for hidden, seq_len in [(32, 64), (128, 64), (256, 64), (128, 16), (128, 128)]:
        task = gru_task(hidden=hidden, seq_len=seq_len)
        for row in measure(task, ks, reps, device):
            out.append({"hidden": hidden, "seq_len": seq_len, **row})
    return out


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, fixed, label in ((axes[0], "hidden", ("seq_len", 64), "hidden units (T=64)"),
                                  (axes[1], "seq_len", ("hidden", 128), "sequence length (H=128)")):
        sel = [r for r in rows if r[fixed[0]] == fixed[1]]
        for value in sorted({r[key] for r in sel}):
            pts = sorted((r["K"], r["ms_per_candidate"]) for r in sel if r[key] == value)
            ks = [p[0] for p in pts]
            line, = ax.plot(ks, [p[1]["batched"] for p in pts], "o-", label=f"{key}={value} batched")
            ax.plot(ks, [p[1]["sequential"] for p in pts], "x--", color=line.get_color(),
                    label=f"{key}={value} sequential")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("K (candidates per pass)")
        ax.set_ylabel("ms per candidate")
        ax.set_title(label)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_with(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def to_markdown(result: dict) -> str:
    where = f"{result['device']}, {result.get('precision', 'fp32')}"
    lines = ["# vector_speed", "", f"{provenance(result['meta'])} Device and precision: {where}.", "",
             "| task | K | sequential ms/cand | batched ms/cand | batched speedup | auto path | auto speedup |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for name, rows in result["tasks"].items():
        for r in rows:
            ms = r["ms_per_candidate"]
            lines.append(f"| {name} | {r['K']} | {ms['sequential']:.2f} | {ms['batched']:.2f} | "
                         f"{r['speedup_batched']:.2f}x | {r['auto_path']} | {r['speedup_auto']:.2f}x |")
    if result.get("sweep"):
        lines += ["", "Scaling (custom GRU, batch 32):", "", "| hidden | T | K | sequential ms/cand | batched ms/cand "
                  "| batched speedup |", "|---:|---:|---:|---:|---:|---:|"]
        for r in result["sweep"]:
            ms = r["ms_per_candidate"]
            lines.append(f"| {r['hidden']} | {r['seq_len']} | {r['K']} | {ms['sequential']:.2f} | "
                         f"{ms['batched']:.2f} | {r['speedup_batched']:.2f}x |")
    lines += ["", "Speedups are medians of per-repetition ratios (sequential time / path time, interleaved)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="*", default=["digits", "gru"], help="presets and/or 'gru'")
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 4, 16], help="numbers of candidates K")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per K")
    parser.add_argument("--device", default="cpu", help="'cpu' or 'cuda'")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--sweep", action="store_true", help="also sweep hidden size and sequence length (GRU)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="the envs' scoring precision")
    parser.add_argument("--out", default=default_out("vector_speed"), help="results folder")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("vector_speed: --device cuda but CUDA is not available", file=sys.stderr)
        raise SystemExit(2)
    torch.set_num_threads(args.threads)
    result = {"meta": run_meta(), "device": args.device, "precision": args.precision, "tasks": {}}
    for name in args.tasks:
        result["tasks"][name] = measure(load_task(name), args.ks, args.reps, args.device, precision=args.precision)
    out = Path(args.out)
    if args.sweep:
        result["sweep"] = sweep(args.ks, args.reps, args.device)
        plot(result["sweep"], out / "scaling.png", f"per-candidate cost, {args.device}, {args.threads} thread(s)")
    write_results(out, result, to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
