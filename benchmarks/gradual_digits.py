"""Gradual pruning with fine-tuning vs one-shot (and one-shot + fine-tuning) on a preset, same allocation.

    python -m benchmarks gradual_digits
    python -m benchmarks.gradual_digits --task digits --sparsity 0.9 --steps 300 --lrs 1e-3 1e-2

Writes ``results.json`` and ``results.md`` under ``--out`` (default ``benchmarks/results/gradual_digits``) with
validation and test scores (test reported only).
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch

from benchmarks._meta import default_out, provenance, run_meta, write_results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="digits")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 1e-2])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=default_out("gradual_digits"), help="results folder")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    meta = run_meta()
    import prune_env
    from prune_env.compression.export import masks
    from prune_env.compression.finetune import finetune
    from prune_env.compression.gradual import gradual_prune
    from prune_env.task import split_score

    env = prune_env.PruneRNNEnv(args.task, target_sparsity=args.sparsity, device="cpu",
                                task_kwargs={"progress": False})
    task = env.task
    alloc = dict.fromkeys(env.layer_names, args.sparsity)

    def scores(model) -> dict[str, float]:
        return {"val": split_score(task.evaluate(model))[0], "test": split_score(task.test(model), "test")[0]}

    rows = [{"method": "dense", **scores(task.model)}]
    one = env.pruned_model(alloc)
    rows.append({"method": "one-shot", **scores(one)})
    for lr in args.lrs:
        ft = copy.deepcopy(one)
        finetune(ft, task, args.steps, masks(ft), torch.Generator().manual_seed(args.seed), lr=lr)
        rows.append({"method": f"one-shot + {args.steps} fine-tuning steps, lr {lr:g}", **scores(ft)})
        r = gradual_prune(env, alloc, steps=args.steps, lr=lr, eval_every=25, seed=args.seed)
        rows.append({"method": f"gradual (cubic ramp to step {r.end}), {args.steps} steps, lr {lr:g}",
                     **scores(r.model), "best_step": r.step})
    result = {"meta": meta, "task": args.task, "sparsity": args.sparsity, "allocation": "uniform", "rows": rows}
    md = ["# Gradual pruning vs one-shot", "", provenance(meta), "",
          f"`{args.task}`, uniform {args.sparsity:.0%} unstructured, magnitude; same seed and batches for every "
          "fine-tuning run (Adam, gradual: gradient clipping 1.0). The best checkpoint is chosen on validation after "
          "the ramp; test is reported only.", "", "| method | val | test |", "|---|---|---|",
          *[f"| {r['method']} | {r['val']:.4f} | {r['test']:.4f} |" for r in rows], ""]
    write_results(args.out, result, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
