"""Zero-shot reward of layer-wise policies against the one-shot rules, per target, on validation splits only.

For every model of ``--models`` and every target, each method proposes one allocation, the env projects it onto the
budget and scores it on the model's *validation* split: the reward ``1 + (score - dense) / |dense|``. The table
gives, per target, the mean over the models of that reward clipped to [0, 1] (pretraining's ``reward`` selection
criterion, :func:`agents.policies.layerwise.zero_shot_score`) and unclipped, and the mean raw validation score in each
model's own units (the ``score`` criterion, what the transfer benchmark averages on the test splits). No test split
is read: this is the evidence a policy may be chosen on.

    python benchmarks/zero_shot_by_target.py --policy v1=benchmarks/results/transfer/policy.pt \\
        --policy v2=agents/data/default_policy.pt --out benchmarks/results/zero_shot_by_target
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _meta import ROOT, named_policies, provenance, run_meta  # noqa: E402


def rewards(task, target: float, rules: list[str], policies: dict) -> dict[str, float]:
    """Method -> validation reward of its one allocation on ``task`` at ``target``, and ``"method:score"`` -> its
    raw validation score."""
    import agents
    from prune_env import PruneRNNEnv

    env = PruneRNNEnv(task, target_sparsity=target, device="cpu")
    out = {}
    for rule in rules:  # the reward of the rule's one-evaluation search, from its validation score
        res = agents.search(rule, env, 1)
        out[rule] = 1.0 + (res.val_score - env.dense_score) / (abs(env.dense_score) or 1.0)
        out[f"{rule}:score"] = float(res.val_score)
    for name, policy in policies.items():
        env.reset(seed=0)
        _, reward, _, _, info = env.step(policy.allocation_action(env))
        out[name], out[f"{name}:score"] = float(reward), float(info["score"])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", action="append", default=[], metavar="NAME=PATH", help="a saved layer-wise policy")
    p.add_argument("--models", nargs="+", default=["zoo:validation"])
    p.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8, 0.9])
    p.add_argument("--rules", nargs="+", default=["lamp", "erk"])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "zero_shot_by_target"))
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from bench_transfer import resolve_models

    from agents.core.results import write_json, write_text

    policies = named_policies(p, args.policy)
    meta = run_meta()
    models = resolve_models(args.models)
    methods = [*args.rules, *policies]
    rows = []
    for task in models:
        for target in args.targets:
            r = rewards(task, target, args.rules, policies)
            rows.append({"model": task.name, "target": target, **r})
            print(task.name, target, {k: round(v, 4) for k, v in r.items() if ":" not in k}, flush=True)
    lines = ["| target | " + " | ".join(f"{m} (clipped)" for m in methods) + " | "
             + " | ".join(f"{m} (raw)" for m in methods) + " |", "|---|" + "---|" * (2 * len(methods))]
    for target in [*args.targets, None]:
        sel = [r for r in rows if target is None or r["target"] == target]
        clipped = [np.mean([np.clip(r[m], 0.0, 1.0) for r in sel]) for m in methods]
        raw = [np.mean([r[m] for r in sel]) for m in methods]
        label = "all" if target is None else f"{target:g}"
        lines.append(f"| {label} | " + " | ".join(f"{v:.4f}" for v in clipped) + " | "
                     + " | ".join(f"{v:.4f}" for v in raw) + " |")
    scores = ["| target | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for target in [*args.targets, None]:
        sel = [r for r in rows if target is None or r["target"] == target]
        scores.append(f"| {'all' if target is None else f'{target:g}'} | "
                      + " | ".join(f"{np.mean([r[f'{m}:score'] for r in sel]):.4f}" for m in methods) + " |")
    per_model = ["| model | target | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    per_model += [f"| {r['model']} | {r['target']:g} | " + " | ".join(f"{r[m]:.3f}" for m in methods) + " |"
                  for r in rows]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(["# Zero-shot validation reward per target (validation splits only)", "", provenance(meta), "",
                      "policies: " + ", ".join(args.policy), "",
                      "Mean over the models of the reward `1 + (score - dense) / |dense|` on the validation split, "
                      "clipped to [0, 1] as in pretraining's `reward` selection, and raw:", "", *lines, "",
                      "Mean raw validation score (each model's own units; pretraining's `score` selection averages "
                      "it over the targets it is given):", "", *scores, "",
                      "Per model (raw reward):", "", *per_model]) + "\n"
    write_text(out / "results.md", text)
    write_json(out / "rows.json", {"meta": meta, "rows": rows})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
