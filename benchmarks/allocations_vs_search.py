"""Where search finds its gains: each method's per-layer allocation and validation score, side by side.

For every model and target, the one-shot rules, the given policies (zero-shot) and random search with ``--budget``
evaluations each pick an allocation; the table lists the sparsity each applied to every layer (after the env's
budget projection) and its validation score. Validation splits only: this is evidence a policy's design may use.

    python benchmarks/allocations_vs_search.py --models zoo-v1/gru-char-email-2x128 \\
        --policy v1=benchmarks/results/transfer/policy.pt --out benchmarks/results/allocations_vs_search
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _meta import ROOT, named_policies, provenance, run_meta  # noqa: E402


def allocations(task, target: float, rules: list[str], policies: dict, budget: int, seed: int) -> list[dict]:
    """One row per method: its validation score and the sparsity it applied to each layer."""
    import agents
    from prune_env import PruneRNNEnv

    env = PruneRNNEnv(task, target_sparsity=target, device="cpu")
    runs = [(rule, agents.search(rule, env, 1, seed=seed)) for rule in rules]
    runs += [(name, agents.search("policy", env, 1, seed=seed, policy=p)) for name, p in policies.items()]
    runs.append((f"random-{budget}", agents.search("random", env, budget, seed=seed)))
    return [{"model": task.name, "target": target, "method": m, "val": r.val_score, "allocation": r.allocation}
            for m, r in runs]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", required=True, help="task names, or zoo:<split>")
    p.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument("--rules", nargs="+", default=["lamp", "erk", "global", "obd"])
    p.add_argument("--policy", action="append", default=[], metavar="NAME=PATH", help="a saved layer-wise policy")
    p.add_argument("--budget", type=int, default=300, help="random search's evaluations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "allocations_vs_search"))
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from bench_transfer import resolve_models

    from agents.core.results import write_json, write_text

    policies = named_policies(p, args.policy)
    meta = run_meta()
    rows, lines = [], []
    for task in resolve_models(args.models):
        for target in args.targets:
            group = allocations(task, target, args.rules, policies, args.budget, args.seed)
            rows += group
            layers = list(group[0]["allocation"])
            lines += [f"**{task.name} at {target:g}**", "",
                      "| method | validation score | " + " | ".join(f"`{n}`" for n in layers) + " |",
                      "|---|---|" + "---|" * len(layers)]
            lines += [f"| {r['method']} | {r['val']:.4f} | " + " | ".join(f"{r['allocation'][n]:.2f}" for n in layers)
                      + " |" for r in group]
            lines.append("")
            print("\n".join(lines[-len(group) - 4:]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(["# Per-layer allocations of the rules, the policies and random search (validation)", "",
                      provenance(meta), "",
                      f"policies: {', '.join(args.policy) or 'none'}; random search: {args.budget} evaluations, "
                      f"seed {args.seed}", "", *lines])
    write_text(out / "results.md", text)
    write_json(out / "rows.json", {"meta": meta, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
