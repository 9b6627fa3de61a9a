"""An ensemble of pretrained layer-wise policies, and the decision, on validation models only, whether it may ship.

- **Build** :func:`agents.policies.layerwise.ensemble` of ``--members`` (saved policies, e.g. one recipe pretrained
  from several seeds): its layer departures from LAMP are the mean of theirs.
- **Decide** on zoo-v2's validation models (never used in training or in any member's selection): the ensemble's
  zero-shot allocation, the incumbent's (``--incumbent``, the shipped default) and LAMP's at ``--decision-targets``,
  side by side in one process, with ``--operator`` and each of ``--also-operators``. The ensemble qualifies to ship only
  if its mean validation score with ``--operator`` beats both LAMP's and the incumbent's. ``decision.json`` is written
  before the report; no test split is read, and this script never replaces the shipped policy.

    python -m benchmarks.policy_ensemble --members A/policy.pt B/policy.pt --incumbent agents/data/default_policy.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks._meta import default_out, operator_kwargs, provenance, run_meta, write_results
from benchmarks.pretrain_format4 import decide, decision_tasks
from prune_env.io import atomic_write

NAME = "policy_ensemble"


def against(ensemble: dict[str, Any], incumbent: dict[str, Any]) -> dict[str, Any]:
    """Two :func:`~benchmarks.pretrain_format4.decide` results on the same cells, side by side: the ensemble ships
    only if it beats LAMP and the incumbent on the mean validation score."""
    pairs = list(zip(ensemble["cells"], incumbent["cells"]))
    if not pairs or len(ensemble["cells"]) != len(incumbent["cells"]) \
            or any((e["model"], e["target"]) != (i["model"], i["target"]) for e, i in pairs):
        raise ValueError("the ensemble and the incumbent must be decided on the same cells")
    ahead = sum(e["policy_score"] > i["policy_score"] for e, i in pairs) / len(pairs)
    ships = ensemble["beats_lamp"] and ensemble["mean"]["policy_score"] > incumbent["mean"]["policy_score"]
    return {"ensemble": ensemble, "incumbent": incumbent, "share_ahead_of_incumbent": ahead, "ships": bool(ships)}


def markdown(result: dict[str, Any]) -> str:
    a = result["args"]
    lines = [f"# Ensemble of {len(a['members'])} layer-wise policies, decided on zoo-v2 validation", "",
             provenance(result["meta"]), "",
             f"Members: {', '.join(f'`{m}`' for m in a['members'])}. Incumbent: `{a['incumbent']}`. Decision: "
             f"{len(result['decide'])} zoo-v2 validation models at {a['decision_targets']}. No test split was read.",
             "", "## Decision (zoo-v2 validation)", ""]
    for op, d in result["decisions"].items():
        e, i = d["ensemble"]["mean"], d["incumbent"]["mean"]
        role = "the condition to ship" if op == a["operator"] else "for information"
        lines.append(f"- `{op}` ({role}): ensemble {e['policy_score']:.4f}, incumbent {i['policy_score']:.4f}, LAMP "
                     f"{e['lamp_score']:.4f}; ensemble ahead of LAMP on {d['ensemble']['share_ahead']:.2f} of the "
                     f"cells and of the incumbent on {d['share_ahead_of_incumbent']:.2f}; beats both: "
                     f"**{'yes' if d['ships'] else 'no'}**.")
    ops = list(result["decisions"])
    lines += ["", "| model | target | " + " | ".join(f"ensemble `{o}` | incumbent `{o}` | LAMP `{o}`" for o in ops)
              + " |", "|---|---|" + "---|---|---|" * len(ops)]
    first = result["decisions"][ops[0]]["ensemble"]["cells"]
    for k, c in enumerate(first):
        row = []
        for o in ops:
            d = result["decisions"][o]
            e, i = d["ensemble"]["cells"][k], d["incumbent"]["cells"][k]
            row.append(f"{e['policy_score']:.4f} | {i['policy_score']:.4f} | {e['lamp_score']:.4f}")
        lines.append(f"| {c['model']} | {c['target']} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from agents.policies.layerwise import ensemble, load, save

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", nargs="+", required=True, help="saved layer-wise policies")
    p.add_argument("--incumbent", default="agents/data/default_policy.pt", help="the policy to beat")
    p.add_argument("--operator", default="obs:obs", help="criterion:reconstruct of the decision")
    p.add_argument("--also-operators", nargs="*", default=["magnitude:none"], help="decided for information only")
    p.add_argument("--decision-targets", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if len(args.members) < 2:
        p.error("--members needs at least two policies")
    out = Path(args.out or default_out(NAME))
    out.mkdir(parents=True, exist_ok=True)
    meta = run_meta(argv)
    policy = ensemble([load(m) for m in args.members])
    incumbent = load(args.incumbent)
    save(policy, out / "policy.pt", {"command": meta["command"], "commit": meta["git_commit"],
                                     "members": list(args.members), "member_meta": policy.meta["members"]})
    tasks = decision_tasks()
    decisions = {}
    for op in [args.operator, *[o for o in args.also_operators if o != args.operator]]:
        kw = operator_kwargs(op)
        decisions[op] = against(decide(policy, tasks, args.decision_targets, kw),
                                decide(incumbent, tasks, args.decision_targets, kw))
    chosen = decisions[args.operator]
    atomic_write(out / "decision.json", json.dumps({
        "operator": args.operator, "ships": chosen["ships"], "ensemble": chosen["ensemble"]["mean"],
        "incumbent": chosen["incumbent"]["mean"], "test_read": False}, indent=1))
    result = {"meta": meta, "args": vars(args), "decide": [t.name for t in tasks], "decisions": decisions}
    write_results(out, result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
