"""Why joint-mode REINFORCE centres its mean and has no MLP: an ablation on the synthetic learning task.

The task is the one of ``tests/test_agents.py``: a real ``PruneRNNEnv`` whose score is ``1 - 4 * mean((s - s*)^2)``
over the per-layer sparsities, optimum 1.0 at a known lopsided allocation; uniform pruning scores about 0.48.
Each variant trains for 300 evaluations per seed; we report the score of the trained policy's deterministic
allocation (not the best sample, which even a non-learner finds by chance).

A variant may set any field of ``agents.searchers.reinforce.Args`` and any knob of the private ``agents.searchers.reinforce._Ablation``
(``advantage``, ``mirrored``, ``std_learning_rate``, ``joint_hidden``, ``center``): the variants that showed no gain
are kept out of ``Args`` and reachable only from here and ``benchmarks/bench_reinforce_tuning.py``.

    python benchmarks/bench_reinforce_ablation.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "bench_reinforce_ablation"
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


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_agents import synthetic_env

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
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    meta = {"command": "python benchmarks/bench_reinforce_ablation.py", "git_commit": commit,
            "machine": {"node": platform.node(), "cpus": os.cpu_count()}, "torch": torch.__version__,
            "budget": BUDGET, "seeds": list(SEEDS), "uniform_score": agents.search("uniform", env, 1).val_score}
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / "results.json.tmp"
    tmp.write_text(json.dumps({"meta": meta, "summary": summary, "runs": rows}, indent=2) + "\n")
    os.replace(tmp, OUT / "results.json")
    lines = ["| variant | median policy score | worst seed |", "|---|---|---|"]
    lines += [f"| {k} | {v['median_policy_score']:.3f} | {v['min_policy_score']:.3f} |" for k, v in summary.items()]
    md = "\n".join([f"REINFORCE ablation, synthetic task, {BUDGET} evaluations, seeds {list(SEEDS)} "
                    f"(optimum 1.0, uniform {meta['uniform_score']:.3f}); `{meta['command']}` at {commit[:8]}", "",
                    *lines]) + "\n"
    tmp = OUT / "results.md.tmp"
    tmp.write_text(md)
    os.replace(tmp, OUT / "results.md")
    print(md)


if __name__ == "__main__":
    main()
