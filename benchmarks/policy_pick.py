"""The ``pick`` agent (candidate allocations ranked by training loss, the lowest scored once) on selection and
validation models, every candidate also scored on validation to show what the ranking got right; then the decision,
on zoo-v2 validation only, whether ``pick`` beats the shipped policy's zero-shot allocation and LAMP.

- **Selection** (``--selection-splits``, default every zoo-v1 model; zoo-v2 validation and test splits refused):
  per (model, target), every candidate's training loss and validation score. Reported for several candidate sets,
  so the set ``pick`` uses by default is chosen here, not on the decision split.
- **Decide** on zoo-v2's validation models at ``--decision-targets``: ``pick`` with its default candidates against
  the shipped policy's zero-shot allocation (``policy:0``, one of the candidates) and LAMP, same operator.
  ``decision.json`` is written before the report; no test split is read.
- **Refinement** (``--refine`` budgets): pick's choice refined by
  :func:`~agents.policies.pick.refine` with each budget of prunings on selection; the budget with the best
  selection mean (or none) is then tried on the decision split, where it ships only with a higher mean than ``pick``
  and at least as many cells ahead of the cell's best rule. ``--refine-from-lamp`` also refines LAMP's allocation
  with the same budgets: the same search without any policy, to tell the policies' share from the search's.

    python -m benchmarks.policy_pick --operator obs:obs
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._meta import default_out, operator_kwargs, provenance, run_meta, write_results
from benchmarks.pretrain_format4 import decision_tasks, selectable, selection_set, selection_tasks
from prune_env.io import atomic_write

NAME = "policy_pick"
RULES = ("uniform", "global", "lamp", "erk", "obd")


def cells(tasks: list[Any], targets: list[float], operator: dict[str, Any], batches: int,
          refine_budgets: tuple[int, ...] = (), from_lamp: bool = False) -> list[dict[str, Any]]:
    """Per (model, target): each default candidate's training loss and validation score, ``pick``'s choice, and
    for each budget of ``refine_budgets`` the choice refined with that many prunings (``refine-<budget>``); with
    ``from_lamp`` also LAMP's allocation refined the same way (``lamp+refine-<budget>``: no policy at all)."""
    from agents.core.cap import submit
    from agents.policies.pick import candidates, rank, refine, rule_allocation
    from agents.registry import get_spec
    from prune_env import PruneRNNEnv
    from prune_env.pruning.fisher import has_loss

    rows = []
    for task in tasks:
        for t in targets:
            env = PruneRNNEnv(task, target_sparsity=t, **operator)
            t0 = time.perf_counter()
            allocations = candidates(env)
            chosen, losses = rank(env, allocations, batches)
            pick_s = time.perf_counter() - t0
            scores: dict[str, float] = {}
            # record key -> (score key, start); pick's refinements are recorded under their budget alone
            runs = {str(b): (f"refine-{b}", chosen) for b in (refine_budgets if losses else ())}
            if from_lamp:
                runs.update({f"lamp+{b}": (f"lamp+refine-{b}", "lamp") for b in (refine_budgets if losses else ())})
            refined, records = {}, {}
            for key, (_, start) in runs.items():
                t0 = time.perf_counter()
                refined[key], records[key] = refine(env, allocations[start], int(key.removeprefix("lamp+")), batches,
                                                    losses[start])
                records[key]["s"] = time.perf_counter() - t0
            for r in RULES:  # the rules pick could not rank (a task without a loss), for reference
                if r not in allocations and (has_loss(task) or not get_spec(r).needs_loss):
                    allocations[r] = rule_allocation(env, r)
            for name, allocation in allocations.items():
                env.reset(seed=0)
                scores[name] = float(submit(env, allocation)[1]["score"])
            for key, (name, start) in runs.items():  # an undone refinement scores as its start
                env.reset(seed=0)
                scores[name] = (float(submit(env, refined[key])[1]["score"]) if records[key]["kept"]
                                else scores[start])
            rows.append({"model": task.name, "target": t, "chosen": chosen, "losses": losses, "scores": scores,
                         "pick_s": pick_s, "refine": records})
    return rows


def _lower(row: dict[str, Any], budget: str) -> str:
    """Of pick's refinement and LAMP's with ``budget``, the score key of the one whose result has the lower loss on
    the ranking's batches (pick's on a tie), as :func:`agents.policies.pick.run` chooses between them."""
    from agents.policies.pick import result_loss

    lamp = result_loss(row["refine"][f"lamp+{budget}"]) < result_loss(row["refine"][budget])
    return f"lamp+refine-{budget}" if lamp else f"refine-{budget}"


def _best_rule(row: dict[str, Any]) -> float:
    return max(row["scores"][k] for k in RULES if k in row["scores"])


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean validation score and pairs ahead of the pair's best rule, for ``pick`` over several candidate sets,
    each candidate alone, and the best rule in hindsight. Rows without losses (no training loss) are left out."""
    rows = [r for r in rows if r["losses"]]
    if not rows:
        return {}
    def policies(row: dict[str, Any]) -> list[str]:
        return [k for k in row["losses"] if k.startswith("policy:")]

    sets = {"pick: rules": lambda r: [k for k in RULES if k in r["losses"]],
            "pick: policy:0 + rules": lambda r: ["policy:0", *(k for k in RULES if k in r["losses"])],
            "pick: policies": policies, "pick: policies + rules (default)": lambda r: list(r["losses"])}
    out = {}

    def record(name: str, picked: list[float]) -> None:
        best = [_best_rule(r) for r in rows]
        out[name] = {"mean": float(np.mean(picked)), "ahead": int(sum(p > b for p, b in zip(picked, best))),
                     "pairs": len(rows)}

    for name, keys_of in sets.items():
        record(name, [r["scores"][min(keys_of(r), key=lambda k: (r["losses"][k], keys_of(r).index(k)))]
                      for r in rows])
    for k in sorted({k for r in rows for k in r["scores"] if k.startswith("refine-")}, key=lambda k: int(k[7:])):
        record(f"pick + {k}", [r["scores"][k] for r in rows])
    for k in sorted({k for r in rows for k in r["scores"] if k.startswith("lamp+refine-")}, key=lambda k: int(k[12:])):
        record(f"lamp + {k[5:]} (no policy)", [r["scores"][k] for r in rows])
        if all(k[5:] in r["scores"] for r in rows):  # both refined: the one with the lower loss, as pick's default
            record(f"pick + {k[5:]} from its choice and from LAMP, the lower loss",
                   [r["scores"][_lower(r, k[12:])] for r in rows])
    for k in rows[0]["losses"]:
        if all(k in r["scores"] for r in rows):
            record(k, [r["scores"][k] for r in rows])
    record("best rule in hindsight", [_best_rule(r) for r in rows])
    return out


def _choose_budget(selection_summary: dict[str, dict[str, float]], budgets: tuple[int, ...]) -> int:
    """The refinement budget with the highest mean selection score, 0 (no refinement) unless one beats ``pick``
    itself; ties go to the smaller budget."""
    best, best_mean = 0, selection_summary.get("pick: policies + rules (default)", {}).get("mean", float("-inf"))
    for b in budgets:
        mean = selection_summary.get(f"pick + refine-{b}", {}).get("mean", float("-inf"))
        if mean > best_mean:
            best, best_mean = b, mean
    return best


def _refine_decision(decision_summary: dict[str, dict[str, float]], budget: int) -> dict[str, Any]:
    """Whether the budget chosen on selection beats ``pick`` on the decision split: a higher mean and at least as
    many cells ahead of the cell's best rule."""
    pick = decision_summary["pick: policies + rules (default)"]
    if not budget:
        return {"budget": 0, "ships": False, "pick": pick["mean"], "pick_ahead": pick["ahead"]}
    refined = decision_summary[f"pick + refine-{budget}"]
    return {"budget": budget, "pick": pick["mean"], "refined": refined["mean"], "pick_ahead": pick["ahead"],
            "refined_ahead": refined["ahead"],
            "ships": bool(refined["mean"] > pick["mean"] and refined["ahead"] >= pick["ahead"])}


def markdown(result: dict[str, Any]) -> str:
    a, d = result["args"], result["decision"]
    lines = [f"# The pick agent, operator `{a['operator']}`", "", provenance(result["meta"]), "",
             f"Selection: {len(result['select'])} models of {selection_set(a)} at {a['selection_targets']}. "
             f"Decision: {len(result['decide'])} zoo-v2 validation models at {a['decision_targets']}. Losses on "
             f"{a['batches']} training batches. Validation scores; no test split was read.", ""]
    for title, key in (("Selection", "selection_summary"), ("Decision split (zoo-v2 validation)", "decision_summary")):
        lines += [f"## {title}", "", "| candidates | mean score | pairs ahead of the pair's best rule |",
                  "|---|---|---|"]
        for name, s in result[key].items():
            lines.append(f"| {name} | {s['mean']:.4f} | {s['ahead']} / {s['pairs']} |")
        lines.append("")
    lines += [f"**Decision** (every zoo-v2 validation cell, {d['cells']}): pick {d['pick']:.4f}, the shipped policy "
              f"zero-shot {d['policy']:.4f}, LAMP {d['lamp']:.4f}; pick ahead of the shipped policy on "
              f"{d['share_ahead_of_policy']:.2f} of the cells. **Beats both: {'yes' if d['ships'] else 'no'}.** "
              f"Mean time to rank the candidates: {d['pick_s']:.1f} s per cell.", "",
              ]
    if "refine" in d:
        r = d["refine"]
        lines += [f"**Refinement** (budgets {a['refine']} on selection): selection chose "
                  + (f"{r['budget']} prunings; on the decision split pick + refine-{r['budget']} {r['refined']:.4f} "
                     f"({r['refined_ahead']} cells ahead of the best rule) against pick {r['pick']:.4f} "
                     f"({r['pick_ahead']}). " if r["budget"] else "no refinement. ")
                  + f"**Refinement ships: {'yes' if r['ships'] else 'no'}.**", ""]
    refined = f"refine-{d['refine']['budget']}" if d.get("refine", {}).get("budget") else None
    lines += ["| model | target | chosen | pick | " + (f"pick + {refined} | " if refined else "")
              + "policy:0 | lamp | best rule |", "|---|---|---|---|---|---|---|" + ("---|" if refined else "")]
    for r in result["decision_cells"]:
        s = r["scores"]
        lines.append(f"| {r['model']} | {r['target']} | {r['chosen']} | {s[r['chosen']]:.4f} | "
                     + (f"{s[refined]:.4f} | " if refined and refined in s else ("- | " if refined else ""))
                     + f"{s['policy:0']:.4f} | {s.get('lamp', float('nan')):.4f} | {_best_rule(r):.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--operator", default="obs:obs", help="criterion:reconstruct of every env")
    p.add_argument("--selection-splits", nargs="+", default=["v1:train", "v1:validation"], type=selectable,
                   metavar="VERSION:SPLIT")
    p.add_argument("--selection-targets", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument("--decision-targets", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument("--batches", type=int, default=8, help="training batches each loss averages")
    p.add_argument("--refine", type=int, nargs="*", default=[], metavar="PRUNINGS",
                   help="also refine pick's choice with these budgets of prunings; selection chooses one (or none), "
                        "the decision split says whether it beats pick")
    p.add_argument("--refine-from-lamp", action="store_true",
                   help="also refine LAMP's allocation with each budget (an ablation: the search without the policies)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if any(b < 1 for b in args.refine):
        p.error(f"--refine budgets must be >= 1, got {args.refine}")
    out = Path(args.out or default_out(NAME))
    out.mkdir(parents=True, exist_ok=True)
    meta = run_meta(argv)
    operator = operator_kwargs(args.operator)
    select = selection_tasks(args.selection_splits)
    decide_tasks = decision_tasks()
    budgets = tuple(sorted(set(args.refine)))
    selection = cells(select, args.selection_targets, operator, args.batches, budgets, args.refine_from_lamp)
    selection_summary = summary(selection)
    chosen_budget = _choose_budget(selection_summary, budgets)
    decision_cells = cells(decide_tasks, args.decision_targets, operator, args.batches,
                           (chosen_budget,) if chosen_budget else (), args.refine_from_lamp)
    picked = [r["scores"][r["chosen"]] for r in decision_cells]
    mean = {k: float(np.mean([r["scores"][k] for r in decision_cells])) for k in ("policy:0", "lamp")}
    decision = {"cells": len(decision_cells), "pick": float(np.mean(picked)), "policy": mean["policy:0"],
                "lamp": mean["lamp"], "pick_s": float(np.mean([r["pick_s"] for r in decision_cells])),
                "share_ahead_of_policy": float(np.mean([p > r["scores"]["policy:0"]
                                                        for p, r in zip(picked, decision_cells)])),
                "test_read": False}
    decision["ships"] = bool(decision["pick"] > decision["policy"] and decision["pick"] > decision["lamp"])
    if budgets:
        decision["refine"] = _refine_decision(summary(decision_cells), chosen_budget)
    atomic_write(out / "decision.json", json.dumps({"operator": args.operator, **decision}, indent=1))
    result = {"meta": meta, "args": vars(args), "select": [t.name for t in select],
              "decide": [t.name for t in decide_tasks], "selection": selection, "decision_cells": decision_cells,
              "selection_summary": selection_summary, "decision_summary": summary(decision_cells),
              "decision": decision}
    write_results(out, result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
