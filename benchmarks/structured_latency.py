"""CPU inference latency of the exported 50%-hidden-unit-pruned model vs the dense model.

Target: <= 0.35x dense on ``pydoc-char``. Both models run the task's validation inputs in the same process,
interleaved (dense, pruned, dense, ...), after warm-up; the ratio of medians is reported. The pruned model is the
file written by :func:`prune_env.compression.export` and read back by :func:`prune_env.load`, i.e. what a user deploys.

Run: ``python -m benchmarks structured_latency`` (``python -m benchmarks.structured_latency --task pydoc-char``).
Writes ``results.json`` and ``results.md`` under ``--out`` (default ``benchmarks/results/structured_latency``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import prune_env
from benchmarks._meta import default_out, provenance, run_meta, write_results
from prune_env import export, load
from prune_env.task import RNNTask, split_score
from prune_env.tasks import make_task


@torch.no_grad()
def _time(model: torch.nn.Module, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    model(x)
    return time.perf_counter() - t0


def _untrained_pydoc_task() -> RNNTask:
    """pydoc-char's architecture with seeded random weights and random inputs: latency only, scores meaningless."""
    from prune_env.tasks.models import CharLM
    from prune_env.tasks.pydoc_char import DEFAULTS, load_text

    vocab = len(set(load_text()))
    torch.manual_seed(0)
    model = CharLM(vocab, DEFAULTS["emb"], DEFAULTS["hidden"], DEFAULTS["layers"]).eval()
    x = torch.randint(0, vocab, (DEFAULTS["eval_tokens"] // DEFAULTS["seq_len"], DEFAULTS["seq_len"]))
    return RNNTask(model, eval_batch=(x, x), metric="accuracy", name="pydoc-char (untrained)")


def measure(task_name: str, fraction: float, batch: int, reps: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    task = _untrained_pydoc_task() if task_name == "pydoc-char-untrained" else make_task(task_name, progress=False)
    env = prune_env.PruneRNNEnv(task, granularity="hidden_unit", device="cpu")
    allocation = dict.fromkeys(env.layer_names, fraction)
    small = env.pruned_model(allocation)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "small.prnn"
        export(small, path)
        deployed = load(path)
    dense = task.model.eval()
    x = task.eval_batch[0][:batch]
    for _ in range(3):
        _time(dense, x), _time(deployed, x)
    t_dense, t_small = [], []
    for _ in range(reps):
        t_dense.append(_time(dense, x))
        t_small.append(_time(deployed, x))
    val = split_score(task.evaluate(deployed))[0]
    test = split_score(task.test(deployed))[0] if task.test else float("nan")
    return {"task": task_name, "unit_fraction_removed": fraction, "input_shape": list(x.shape), "threads": threads,
            "reps": reps, "dense_median_s": statistics.median(t_dense), "pruned_median_s": statistics.median(t_small),
            "ratio": statistics.median(t_small) / statistics.median(t_dense),
            "dense_params": sum(p.numel() for p in dense.parameters()),
            "pruned_params": sum(p.numel() for p in deployed.parameters()),
            "dense_val": env.dense_score, "pruned_val": val,
            "dense_test": split_score(task.test(dense))[0] if task.test else float("nan"), "pruned_test": test,
            "modules": {n: f"{type(m).__name__}(hidden={m.hidden_size})" for n, m in deployed.named_modules()
                        if isinstance(m, torch.nn.RNNBase)}}


def to_markdown(result: dict) -> str:
    lines = ["# CPU latency of a hidden-unit-pruned model (exported, then loaded)", "",
             f"{provenance(result['meta'], threads=False)} Target: pruned <= 0.35x dense.", "",
             "| task | removed units | input | threads | dense median ms | pruned median ms | ratio | params "
             "dense -> pruned | val dense -> pruned | test dense -> pruned |",
             "|---|---:|---|---:|---:|---:|---:|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['task']} | {r['unit_fraction_removed']:.0%} | {'x'.join(map(str, r['input_shape']))} | "
                     f"{r['threads']} | {1e3 * r['dense_median_s']:.2f} | {1e3 * r['pruned_median_s']:.2f} | "
                     f"{r['ratio']:.3f} | {r['dense_params']} -> {r['pruned_params']} | "
                     f"{r['dense_val']:.4f} -> {r['pruned_val']:.4f} | "
                     f"{r['dense_test']:.4f} -> {r['pruned_test']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="pydoc-char",
                        help="a preset, or pydoc-char-untrained (same architecture, random weights: latency only)")
    parser.add_argument("--fraction", type=float, default=0.5, help="fraction of hidden units removed per layer")
    parser.add_argument("--batch", type=int, default=64, help="sequences per forward pass")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="torch threads; more than the idle cores makes timings meaningless")
    parser.add_argument("--out", default=default_out("structured_latency"), help="results folder")
    args = parser.parse_args(argv)
    meta = run_meta()  # the threads of each run are in its row
    runs = [measure(args.task, args.fraction, args.batch, args.reps, t) for t in args.threads]
    result = {"meta": meta, "runs": runs}
    write_results(args.out, result, to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
