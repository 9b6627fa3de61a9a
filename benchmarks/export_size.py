"""Exported file size vs the dense ``torch.save(state_dict)`` at 90% unstructured sparsity against the size targets.

Targets: <= 0.15x with float32 values, <= 0.06x with 8-bit values. The 90% allocation is uniform (every prunable
weight tensor 90% sparse, magnitude criterion), the same allocation an env with ``target_sparsity=0.9`` gives for a
centred action. Also checks that the loaded file scores what the env scored (validation) and reports test scores.

Run: ``python -m benchmarks export_size`` (``python -m benchmarks.export_size --tasks digits pydoc-char``).
Writes ``results.json`` and ``results.md`` under ``--out`` (default ``benchmarks/results/export_size``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import prune_env
from benchmarks._meta import default_out, provenance, run_meta, write_results
from prune_env import export, load
from prune_env.compression.size import model_size
from prune_env.task import split_score
from prune_env.tasks import make_task

VARIANTS = [("float32", None, "linear"), ("8-bit linear", 8, "linear"), ("8-bit k-means", 8, "kmeans"),
            ("4-bit linear", 4, "linear"), ("4-bit k-means", 4, "kmeans")]


def measure(task_name: str, sparsity: float) -> dict:
    task = make_task(task_name, progress=False)
    env = prune_env.PruneRNNEnv(task, target_sparsity=sparsity, device="cpu")
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_for(dict.fromkeys(env.layer_names, sparsity)))
    pruned = env.pruned_model()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dense_path = Path(tmp) / "dense.pt"
        torch.save(task.model.state_dict(), dense_path)
        dense = dense_path.stat().st_size
        for label, bits, method in VARIANTS:
            path = Path(tmp) / "m.prnn"
            size = export(pruned, path, bits=bits, method=method)
            loaded = load(path)
            val, _ = split_score(task.evaluate(loaded))
            test, _ = split_score(task.test(loaded)) if task.test else (float("nan"), {})
            payload = model_size(loaded, bits, method).total_bytes
            rows.append({"variant": label, "bits": bits, "method": method, "bytes": size, "payload_bytes": payload,
                         "ratio": size / dense, "val_score": val, "test_score": test})
    dense_test, _ = split_score(task.test(task.model)) if task.test else (float("nan"), {})
    return {"task": task_name, "sparsity": info["overall_sparsity"], "dense_bytes": dense,
            "dense_val": env.dense_score, "dense_test": dense_test, "env_val_score": info["score"],
            "loaded_float32_matches_env": rows[0]["val_score"] == info["score"], "variants": rows}


def to_markdown(result: dict) -> str:
    lines = ["# Exported size at 90% unstructured sparsity", "", provenance(result["meta"]), "",
             "Targets: float32 <= 0.15x, 8-bit <= 0.06x of the dense `torch.save(state_dict)` file.", ""]
    for r in result["tasks"]:
        lines += [f"## {r['task']} (sparsity {r['sparsity']:.3f}, dense file {r['dense_bytes']} B, dense val "
                  f"{r['dense_val']:.4f}, dense test {r['dense_test']:.4f}; loaded float32 scores what the env "
                  f"scored: {r['loaded_float32_matches_env']})", "",
                  "| variant | file bytes | x dense | val score | test score |", "|---|---:|---:|---:|---:|"]
        for v in r["variants"]:
            lines.append(f"| {v['variant']} | {v['bytes']} | {v['ratio']:.4f} | {v['val_score']:.4f} | "
                         f"{v['test_score']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["digits", "pydoc-char"])
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--out", default=default_out("export_size"), help="results folder")
    args = parser.parse_args(argv)
    meta = run_meta()
    torch.manual_seed(0)
    result = {"meta": meta, "tasks": [measure(t, args.sparsity) for t in args.tasks]}
    write_results(args.out, result, to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
