"""The export format side by side with an earlier one: file size and load time of the same pruned model.

The current :func:`prune_env.export` (format 3: ``safetensors`` with a JSON description) and the exporter of an
earlier commit (read with ``git show REV:PATH`` and imported from a temporary file; by default the format-2
exporter, a zlib-compressed JSON header over raw streams) write the same pruned model, at 90% uniform unstructured
sparsity (magnitude) and each bit-width asked for. Each file is then loaded ``--repeats`` times by its own loader,
the two interleaved so that load on the machine affects both alike; the median is reported. The two loaded models
must hold the same tensors. Target: size and load time within 5% of the earlier format.

Run: ``python -m benchmarks export_format`` (``python -m benchmarks.export_format --tasks pydoc-char``; one torch
thread).
Writes ``results.json`` and ``results.md`` under ``--out`` (default ``benchmarks/results/export_format``).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from types import ModuleType

import torch

import prune_env
from benchmarks._meta import ROOT, default_out, provenance, run_meta, write_results
from prune_env import export, load
from prune_env.tasks import make_task

VARIANTS = {"float32": (None, "linear"), "8-bit": (8, "linear"), "4-bit k-means": (4, "kmeans")}


def baseline_module(spec: str) -> ModuleType:
    """The exporter module at ``REV:PATH``, imported from a temporary copy."""
    source = subprocess.run(["git", "show", spec], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "export_baseline.py"
    path.write_text(source)
    module_spec = importlib.util.spec_from_file_location("export_baseline", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _median_ms(times: list[float]) -> float:
    return round(1000 * statistics.median(times), 3)


def measure(task_name: str, sparsity: float, variants: list[str], old: ModuleType, repeats: int) -> dict:
    task = make_task(task_name, progress=False)
    env = prune_env.PruneRNNEnv(task, target_sparsity=sparsity, device="cpu")
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_for(dict.fromkeys(env.layer_names, sparsity)))
    pruned = env.pruned_model()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label in variants:
            bits, method = VARIANTS[label]
            paths = {"old": Path(tmp) / "old.prnn", "new": Path(tmp) / "new.prnn"}
            size = {"old": old.export(pruned, paths["old"], bits=bits, method=method),
                    "new": export(pruned, paths["new"], bits=bits, method=method)}
            loaders = {"old": old.load, "new": load}
            models = {k: loaders[k](paths[k]) for k in paths}
            same = all(torch.equal(a, b) for a, b in zip(models["old"].state_dict().values(),
                                                         models["new"].state_dict().values()))
            times: dict[str, list[float]] = {"old": [], "new": []}
            for i in range(2 * repeats):
                k = ("old", "new")[i % 2] if (i // 2) % 2 == 0 else ("new", "old")[i % 2]  # ABBA order
                start = time.perf_counter()
                loaders[k](paths[k])
                times[k].append(time.perf_counter() - start)
            old_ms, new_ms = _median_ms(times["old"]), _median_ms(times["new"])
            rows.append({"variant": label, "bits": bits, "method": method, "old_bytes": size["old"],
                         "new_bytes": size["new"], "size_ratio": round(size["new"] / size["old"], 4),
                         "old_load_ms": old_ms, "new_load_ms": new_ms, "load_ratio": round(new_ms / old_ms, 4),
                         "same_tensors": same})
    return {"task": task_name, "sparsity": info["overall_sparsity"], "variants": rows}


def to_markdown(result: dict) -> str:
    lines = ["# Export format: size and load time side by side", "", provenance(result["meta"]), "",
             f"Earlier exporter: `{result['baseline']}`. Load time: median of {result['repeats']} loads each, "
             f"interleaved, {result['threads']} torch thread(s). Target: size and load time within 5% of the "
             "earlier format. The load times compare the whole loaders: besides the container, the current one "
             "unpacks packed bits on whole bytes where the earlier one shifted and summed int64 bit planes.", ""]
    for r in result["tasks"]:
        lines += [f"## {r['task']} (sparsity {r['sparsity']:.3f})", "",
                  "| variant | earlier bytes | bytes | x earlier | earlier load ms | load ms | x earlier "
                  "| same tensors |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for v in r["variants"]:
            lines.append(f"| {v['variant']} | {v['old_bytes']} | {v['new_bytes']} | {v['size_ratio']:.4f} | "
                         f"{v['old_load_ms']:.2f} | {v['new_load_ms']:.2f} | {v['load_ratio']:.4f} | "
                         f"{v['same_tensors']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["pydoc-char"])
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--baseline", default="cb6af3c:prune_env/compression/export.py",
                        help="REV:PATH of the earlier exporter module")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--out", default=default_out("export_format"), help="results folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    meta = run_meta()
    torch.manual_seed(0)
    old = baseline_module(args.baseline)
    result = {"meta": meta, "baseline": args.baseline, "repeats": args.repeats, "threads": torch.get_num_threads(),
              "tasks": [measure(t, args.sparsity, args.variants, old, args.repeats) for t in args.tasks]}
    write_results(args.out, result, to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
