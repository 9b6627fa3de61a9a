"""How far a pretrained layer-wise policy should depart from LAMP: its departures scaled by a factor chosen on
selection models, then the decision, on validation models only, whether the scaled policy may ship.

- **Select** the factor among ``--scales`` (0 is LAMP, 1 the policy as trained) by the mean zero-shot score on the
  models of ``--selection-splits`` at ``--selection-targets`` (default: every zoo-v1 model; zoo-v2 validation, the
  decision's split, and every test split are refused).
- **Decide** on zoo-v2's validation models at ``--decision-targets``: the scaled policy against the policy as trained
  (``--policy``, the incumbent) and LAMP, with ``--operator``. The scaled policy qualifies to ship only if its mean
  validation score beats both. ``decision.json`` is written before the report; no test split is read, and this
  script never replaces a shipped policy.

Each (model, target) builds one env and one observation; every factor is scored on that env from the same reset, so
the factors are compared on common random numbers.

    python -m benchmarks.policy_scale --policy agents/data/policy_v6_magnitude.pt --operator magnitude:none
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._meta import default_out, operator_kwargs, provenance, run_meta, write_results
from benchmarks.pretrain_format4 import decision_tasks, selectable, selection_set, selection_tasks
from prune_env.io import atomic_write

NAME = "policy_scale"


def score_scales(policy: Any, tasks: list[Any], targets: list[float], scales: list[float],
                 operator: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (model, target): the validation score and clipped reward of ``policy`` scaled by each factor."""
    from agents.policies.layerwise import scaled
    from prune_env import PruneRNNEnv
    from prune_env.envs.zoo import observation

    policies = {s: scaled(policy, s) for s in scales}
    rows = []
    for task in tasks:
        for t in targets:
            env = PruneRNNEnv(task, target_sparsity=t, **operator)
            env.reset(seed=0)
            obs = observation(env, joint=True, observation_format=policy.observation_format)
            row: dict[str, Any] = {"model": task.name, "target": t, "score": {}, "reward": {}}
            for s, p in policies.items():
                env.reset(seed=0)
                _, reward, _, _, info = env.step(p.act(obs))
                row["score"][str(s)] = float(info["score"])
                row["reward"][str(s)] = float(np.clip(reward, 0.0, 1.0))
            rows.append(row)
    return rows


def means(rows: list[dict[str, Any]], key: str = "score") -> dict[str, float]:
    """The mean of each factor's ``key`` over the rows."""
    return {s: float(np.mean([r[key][s] for r in rows])) for s in rows[0][key]}


def markdown(result: dict[str, Any]) -> str:
    a, d = result["args"], result["decision"]
    lines = [f"# Departure scale of `{a['policy']}`, operator `{a['operator']}`", "", provenance(result["meta"]), "",
             f"Selection: mean zero-shot validation score on {len(result['select'])} models of {selection_set(a)} at "
             f"{a['selection_targets']}. Decision: {len(result['decide'])} zoo-v2 validation models at "
             f"{a['decision_targets']}. No test split was read.", "", "| factor | selection score | selection reward "
             "(clipped) | decision score | decision reward (clipped) |", "|---|---|---|---|---|"]
    sel, sel_r = means(result["selection"]), means(result["selection"], "reward")
    dec, dec_r = means(result["decision_cells"]), means(result["decision_cells"], "reward")
    for s in sel:
        lines.append(f"| {s} | {sel[s]:.4f} | {sel_r[s]:.4f} | {dec.get(s, float('nan')):.4f} | "
                     f"{dec_r.get(s, float('nan')):.4f} |")
    lines += ["", f"Chosen on selection: factor **{d['chosen']}** (0 is LAMP, 1 the policy as trained). On zoo-v2 "
              f"validation: scaled {d['scaled']:.4f}, as trained {d['incumbent']:.4f}, LAMP {d['lamp']:.4f}; scaled "
              f"ahead of the policy as trained on {d['share_ahead_of_incumbent']:.2f} of the cells. **Beats both (the "
              f"condition to ship): {'yes' if d['ships'] else 'no'}.**", "",
              "| model | target | " + " | ".join(f"x{s}" for s in dec) + " |", "|---|---|" + "---|" * len(dec)]
    for c in result["decision_cells"]:
        lines.append(f"| {c['model']} | {c['target']} | " + " | ".join(f"{c['score'][s]:.4f}" for s in dec) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from agents.policies.layerwise import load, save, scaled

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", required=True, help="a saved layer-wise policy (the incumbent)")
    p.add_argument("--operator", default="obs:obs", help="criterion:reconstruct of selection and decision")
    p.add_argument("--scales", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.25, 1.5, 2.0])
    p.add_argument("--selection-splits", nargs="+", default=["v1:train", "v1:validation"], type=selectable,
                   metavar="VERSION:SPLIT", help="zoo splits to choose the factor on")
    p.add_argument("--selection-targets", type=float, nargs="+", default=[0.7, 0.8, 0.9])
    p.add_argument("--decision-targets", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if any(s < 0 for s in args.scales):
        p.error("--scales: factors must be >= 0")
    scales = sorted({0.0, 1.0, *args.scales})
    out = Path(args.out or default_out(NAME))
    out.mkdir(parents=True, exist_ok=True)
    meta = run_meta(argv)
    policy = load(args.policy)
    operator = operator_kwargs(args.operator)
    select = selection_tasks(args.selection_splits)
    decide_tasks = decision_tasks()
    selection = score_scales(policy, select, args.selection_targets, scales, operator)
    sel = means(selection)
    chosen = max(scales, key=lambda s: (sel[str(s)], s == 1.0))  # a tie keeps the policy as trained
    cells = score_scales(policy, decide_tasks, args.decision_targets, scales, operator)
    dec = means(cells)
    c, one = str(chosen), "1.0"
    decision = {"chosen": chosen, "scaled": dec[c], "incumbent": dec[one], "lamp": dec["0.0"],
                "share_ahead_of_incumbent": float(np.mean([r["score"][c] > r["score"][one] for r in cells])),
                "ships": bool(chosen != 1.0 and dec[c] > dec[one] and dec[c] > dec["0.0"]), "test_read": False}
    atomic_write(out / "decision.json", json.dumps({"operator": args.operator, **decision}, indent=1))
    save(scaled(policy, chosen), out / "policy.pt", {**getattr(policy, "meta", {}), "command": meta["command"],
                                                     "commit": meta["git_commit"], "scaled_from": args.policy})
    result = {"meta": meta, "args": {**vars(args), "scales": scales}, "select": [t.name for t in select],
              "decide": [t.name for t in decide_tasks], "selection": selection, "decision_cells": cells,
              "decision": decision}
    write_results(out, result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
