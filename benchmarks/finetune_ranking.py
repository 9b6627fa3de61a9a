"""Does the ranking of allocations before fine-tuning predict the ranking after it?

Draws ``--allocations`` random allocations that all meet the same budget, scores each pruned model on validation,
fine-tunes it for ``--steps`` Adam steps with its masks fixed (fresh training batches from the task's
``train_loss``), scores it again, and reports the Spearman and Kendall rank correlations of the validation scores
before vs after. Also reports dense -> pruned -> fine-tuned test scores of the uniform allocation and of the
allocation ranked best before fine-tuning. Distiller's AMC notebooks found that the pre-fine-tuning ranking often
does not survive fine-tuning on CNNs; this measures it for RNNs.

Run: ``python -m benchmarks finetune_ranking_digits`` (``python -m benchmarks.finetune_ranking --task digits
--granularity unstructured --sparsity 0.9``). Writes ``results.json`` and ``results.md`` under ``--out`` (default
``benchmarks/results/finetune_ranking_<task>``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

import prune_env
from benchmarks._meta import default_out, provenance, run_meta, write_results
from prune_env.compression.export import masks as weight_masks
from prune_env.compression.finetune import finetune
from prune_env.task import split_score
from prune_env.tasks import make_task


def _fine_tuned(env, task, steps: int, lr: float, seed: int) -> tuple[float, float, float, float]:
    """(val, test) before and after fine-tuning the last episode's model."""
    model = env.pruned_model()
    before = split_score(task.evaluate(model))[0], split_score(task.test(model))[0]
    if env.granularity == "hidden_unit":
        masks = {n: torch.ones_like(p) for n, p in model.named_parameters()}  # already physically small
    else:
        masks = weight_masks(model)
    finetune(model, task, steps, masks, torch.Generator().manual_seed(seed), lr=lr)
    return (*before, split_score(task.evaluate(model))[0], split_score(task.test(model))[0])


def run(task_name: str, granularity: str, sparsity: float, n: int, steps: int, lr: float) -> dict:
    task = make_task(task_name, progress=False)
    env = prune_env.PruneRNNEnv(task, granularity=granularity, target_sparsity=sparsity, device="cpu")
    rng = np.random.default_rng(0)
    actions = [np.zeros(env.action_space.shape, np.float32)]  # the uniform allocation first
    actions += [rng.uniform(-1, 1, env.action_space.shape).astype(np.float32) for _ in range(n - 1)]
    rows = []
    t0 = time.perf_counter()
    for i, action in enumerate(actions):
        env.reset(seed=i)
        _, _, _, _, info = env.step(action)
        val_b, test_b, val_a, test_a = _fine_tuned(env, task, steps, lr, seed=i)
        assert val_b == info["score"]
        rows.append({"allocation": env.allocation, "val_before": val_b, "test_before": test_b, "val_after": val_a,
                     "test_after": test_a})
    vb, va = [r["val_before"] for r in rows], [r["val_after"] for r in rows]
    tb, ta = [r["test_before"] for r in rows], [r["test_after"] for r in rows]
    best = int(np.argmax(vb))
    return {"task": task_name, "granularity": granularity, "sparsity": sparsity, "allocations": n,
            "finetune_steps": steps, "lr": lr, "seconds": time.perf_counter() - t0,
            "dense_val": env.dense_score, "dense_test": split_score(task.test(task.model))[0],
            "spearman_val": float(spearmanr(vb, va).statistic), "kendall_val": float(kendalltau(vb, va).statistic),
            "spearman_test": float(spearmanr(tb, ta).statistic),
            "best_before_rank_after": int(sorted(range(n), key=lambda j: -va[j]).index(best)) + 1,
            "uniform": rows[0], "best_before": rows[best], "rows": rows}


def to_markdown(result: dict) -> str:
    lines = ["# Allocation ranking before vs after fine-tuning", "", provenance(result["meta"]), ""]
    for r in result["runs"]:
        lines += [f"## {r['task']}, {r['granularity']}, sparsity {r['sparsity']}: {r['allocations']} random "
                  f"allocations, {r['finetune_steps']} Adam steps (lr {r['lr']}) each, {r['seconds']:.0f} s", "",
                  f"- Spearman (validation, before vs after): **{r['spearman_val']:.3f}**; Kendall "
                  f"{r['kendall_val']:.3f}; Spearman on test {r['spearman_test']:.3f}.",
                  f"- The allocation ranked best before fine-tuning ranks {r['best_before_rank_after']} of "
                  f"{r['allocations']} after it.", "",
                  "| model | test score |", "|---|---:|",
                  f"| dense | {r['dense_test']:.4f} |",
                  f"| uniform, pruned | {r['uniform']['test_before']:.4f} |",
                  f"| uniform, fine-tuned | {r['uniform']['test_after']:.4f} |",
                  f"| best-before, pruned | {r['best_before']['test_before']:.4f} |",
                  f"| best-before, fine-tuned | {r['best_before']['test_after']:.4f} |", "",
                  "| # | val before | val after | test before | test after |", "|---:|---:|---:|---:|---:|"]
        for i, row in enumerate(r["rows"]):
            lines.append(f"| {i} | {row['val_before']:.4f} | {row['val_after']:.4f} | {row['test_before']:.4f} | "
                         f"{row['test_after']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--granularity", nargs="+", default=["unstructured"])
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.9])
    parser.add_argument("--allocations", type=int, default=12)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results/finetune_ranking_"
                        "<task>)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    meta = run_meta()
    if len(args.sparsity) != len(args.granularity):
        args.sparsity = args.sparsity * len(args.granularity)
    runs = [run(args.task, g, s, args.allocations, args.steps, args.lr)
            for g, s in zip(args.granularity, args.sparsity)]
    result = {"meta": meta, "runs": runs}
    write_results(args.out or default_out(f"finetune_ranking_{args.task}"), result, to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
