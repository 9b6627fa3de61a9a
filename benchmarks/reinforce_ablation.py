"""Why joint-mode REINFORCE centres its mean and has no MLP: an ablation on the synthetic learning task.

The task is the one of ``tests/agent_helpers.py``: a real ``PruneRNNEnv`` whose score is ``1 - 4 * mean((s - s*)^2)``
over the per-layer sparsities, optimum 1.0 at a known lopsided allocation; uniform pruning scores about 0.48.
Each variant trains for 300 evaluations per seed; we report the score of the trained policy's deterministic
allocation (not the best sample, which even a non-learner finds by chance).

A variant may set any field of ``agents.searchers.reinforce.Args`` and any knob of the private
``agents.searchers.reinforce._Ablation`` (``advantage``, ``mirrored``, ``std_learning_rate``, ``joint_hidden``,
``center``): the variants that showed no gain are kept out of ``Args`` and reachable only from here and
``benchmarks/reinforce_tuning.py``.

    python -m benchmarks reinforce_ablation
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from benchmarks._meta import ROOT, default_out, provenance, run_meta, write_results

VARIANTS = {
    "centred, no MLP (default)": {},
    "not centred, no MLP": {"center": False},
    "centred, MLP 64": {"joint_hidden": 64},
    "not centred, MLP 64": {"center": False, "joint_hidden": 64},
}
SEEDS = (0, 1, 2)
BUDGET = 300


def run_variant(env, options: dict, seed: int) -> dict:
    """One REINFORCE run of ``BUDGET`` evaluations: the trained policy's score, the best sample, the wall time.

    :param env: the synthetic env.
    :param options: ``Args`` fields and ``_Ablation`` knobs.
    :param seed: the agent's seed.
    """
    import agents
    from agents.policies.policy import play
    from agents.searchers.reinforce import search_options

    t0 = time.perf_counter()
    res = agents.search("reinforce", env, BUDGET, seed=seed, **search_options(options))
    return {"policy_score": play(env, res.policy)[1]["score"], "best_sample": res.val_score,
            "wall_s": round(time.perf_counter() - t0, 2)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=default_out("reinforce_ablation"), help="results folder")
    args = p.parse_args(argv)
    meta = run_meta()
    if str(ROOT / "tests") not in sys.path:  # the synthetic task of the agent tests
        sys.path.insert(0, str(ROOT / "tests"))
    from agent_helpers import synthetic_env

    import agents

    env = synthetic_env()
    rows = []
    for name, kw in VARIANTS.items():
        for seed in SEEDS:
            rows.append({"variant": name, "seed": seed, **run_variant(env, kw, seed)})
            print(rows[-1], flush=True)
    summary = {}
    for name in VARIANTS:
        scores = [r["policy_score"] for r in rows if r["variant"] == name]
        summary[name] = {"median_policy_score": float(np.median(scores)), "min_policy_score": float(min(scores))}
    meta.update({"budget": BUDGET, "seeds": list(SEEDS), "uniform_score": agents.search("uniform", env, 1).val_score})
    lines = ["| variant | median policy score | worst seed |", "|---|---|---|"]
    lines += [f"| {k} | {v['median_policy_score']:.3f} | {v['min_policy_score']:.3f} |" for k, v in summary.items()]
    md = "\n".join(["# REINFORCE ablation on the synthetic task", "", provenance(meta), "",
                    f"{BUDGET} evaluations, seeds {list(SEEDS)} (optimum 1.0, uniform {meta['uniform_score']:.3f}).",
                    "", *lines]) + "\n"
    write_results(args.out, {"meta": meta, "summary": summary, "runs": rows}, md)
    print(md)


if __name__ == "__main__":
    main()
