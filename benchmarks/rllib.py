"""RLlib PPO (agent ``rllib-ppo``, 2 env runners on a local Ray instance) against global magnitude pruning on a preset.

    OMP_NUM_THREADS=1 nice python -m benchmarks rllib_digits       # digits at 0.9, cap 1000, seeds 0 1 2

Needs the Ray extra (``pip install -e ".[ray]"``). For each seed: one ``rllib-ppo`` search with the evaluation cap,
then the test score of its allocation; ``global`` (one evaluation, seed-free) is the baseline. Every scoring of a
pruned model (a call of ``task.evaluate`` on a model with zeros, in whichever process: the runners rebuild the task
from ``benchmarks.rllib:counted_task``) is appended to a log, so the evaluations are counted at the task, across
processes, whatever the agent reports. Writes ``results.json`` and ``results.md`` under ``--out`` (default
``benchmarks/results/rllib_<task>``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from functools import partial
from pathlib import Path

from benchmarks._meta import RESULTS, ROOT, default_out, provenance, run_meta, write_results

#: The filed agent table whose ppo, reinforce and random rows the report quotes.
FILED = RESULTS / "agents_digits" / "results.csv"


def counted_task(log: str, preset: str = "digits", **kwargs):
    """``benchmarks.rllib:counted_task``: the preset (cached model) whose validation scorer logs each pruned scoring."""
    from prune_env import RNNTask
    from prune_env.tasks import make_task

    t = make_task(preset, **kwargs)
    return RNNTask(t.model, evaluate=partial(_counted, inner=t.evaluate, log=log), test=t.test, loss=t.loss,
                   name=t.name, metadata=t.metadata, train_loss=t.train_loss)


def _counted(model, inner, log: str):
    out = inner(model)
    if any(bool((p == 0).any()) for p in model.parameters()):  # the dense model (scored at each env build) has none
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
    return out


def _scorings(log: Path) -> int:
    return len(log.read_text().split()) if log.exists() else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="digits", help="a preset")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--max-evals", type=int, default=1000, help="the evaluation cap")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runners", type=int, default=2, help="RLlib env runners")
    p.add_argument("--options", default="{}", help="further rllib-ppo options, as JSON")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results/rllib_<task>)")
    args = p.parse_args(argv)
    # The runners rebuild the task from `benchmarks.rllib:counted_task`: this checkout on their path.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    # A local Ray instance on 127.0.0.1 only (read when ray is first imported; Linux nodes otherwise listen on the
    # network address).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import torch

    torch.set_num_threads(1)
    meta = run_meta()
    import agents
    from prune_env import PruneRNNEnv
    from prune_env.task import split_score

    log = Path(tempfile.mkdtemp()) / "scorings.log"
    env = PruneRNNEnv("benchmarks.rllib:counted_task", target_sparsity=args.sparsity, device="cpu",
                      task_kwargs={"log": str(log), "preset": args.task, "progress": False})
    task = env.task

    def test_score(alloc: dict[str, float]) -> float:
        return split_score(task.test(env.pruned_model(alloc)), "test")[0]

    dense_test = split_score(task.test(task.model), "test")[0]
    options = json.loads(args.options)
    g = agents.search("global", env, 1, seed=0)
    base = {"val": g.val_score, "test": test_score(g.allocation), "evals": g.evals, "scorings": _scorings(log)}
    rows = []
    for seed in args.seeds:
        before = _scorings(log)
        t0 = time.perf_counter()
        r = agents.search("rllib-ppo", env, args.max_evals, seed=seed, num_env_runners=args.runners, **options)
        wall = time.perf_counter() - t0
        scorings = _scorings(log) - before
        beat = next((i + 1 for i, h in enumerate(r.history) if h > base["val"]), None)
        rows.append({"seed": seed, "val": r.val_score, "test": test_score(r.allocation), "evals": r.evals,
                     "scorings": scorings, "iterations": r.extras.get("iterations"), "evals_to_beat_global": beat,
                     "search_wall_s": round(wall, 1), "search_s_inside": round(r.wall_time, 1),
                     "allocation": r.allocation})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "allocation"}), flush=True)
    tests = [r["test"] for r in rows]
    mean = sum(tests) / len(tests)
    std = (sum((t - mean) ** 2 for t in tests) / len(tests)) ** 0.5
    result = {"meta": meta, "task": args.task, "target_sparsity": args.sparsity, "max_evals": args.max_evals,
              "num_env_runners": args.runners, "options": options, "dense_val": env.dense_score,
              "dense_test": dense_test, "global": base, "rllib_ppo": rows,
              "test_mean": mean, "test_std": std, "beats_global_every_seed": all(t > base["test"] for t in tests)}
    md = [f"# rllib-ppo vs global magnitude: `{args.task}` at {args.sparsity}", "", provenance(meta), "",
          f"Agent `rllib-ppo` (RLlib {_ray_version()} PPO, new API stack, {args.runners} env runners on a local Ray "
          f"instance, options {options or 'default'}), evaluation cap {args.max_evals}; `global` is one evaluation. "
          "Scorings are counted at the task, in whichever process scored (the runners rebuild the task from "
          "`benchmarks.rllib:counted_task`). Test scores are reported only; the search sees validation.", "",
          f"Dense model: val {env.dense_score:.4f}, test {dense_test:.4f}.", "",
          "| agent | seed | test | val | evals | scorings counted | evals to beat global (val) | PPO iterations | "
          "search s |", "|---|---|---|---|---|---|---|---|---|",
          f"| global | - | {base['test']:.4f} | {base['val']:.4f} | {base['evals']} | {base['scorings']} | - | - | - |"]
    for r in rows:
        md.append(f"| rllib-ppo | {r['seed']} | {r['test']:.4f} | {r['val']:.4f} | {r['evals']} | {r['scorings']} | "
                  f"{r['evals_to_beat_global']} | {r['iterations']} | {r['search_wall_s']} |")
    md += ["", f"rllib-ppo test over seeds {args.seeds}: **{mean:.4f} ± {std:.4f}** (population std) vs global "
           f"{base['test']:.4f}; beats global on every seed: **{result['beats_global_every_seed']}**.",
           "", "Search s includes starting Ray and its runner processes (each rebuilds the env). With more than one "
           "runner the order in which episodes reach the ledger depends on timing, so a rerun can differ slightly; "
           "the evaluation cap is exact either way.", ""]
    others = _filed_rows(args.task, args.sparsity, args.max_evals)
    if others:
        result["filed_comparison"] = others
        md += ["Filed results of the in-process agents at the same target and cap "
               f"(`{FILED.relative_to(ROOT)}`, another commit and run):", "",
               "| agent | test (mean ± std) | seeds |", "|---|---|---|"]
        md += [f"| {a} | {m:.4f} ± {sd:.4f} | {n} |" for a, (m, sd, n) in others.items()]
        md.append("")
    write_results(args.out or default_out(f"rllib_{args.task}"), result, "\n".join(md))
    print("\n".join(md))
    return 0


def _filed_rows(task: str, target: float, max_evals: int) -> dict[str, tuple[float, float, int]]:
    """Mean and population std of the test scores of the filed ``ppo``, ``reinforce`` and ``random`` rows."""
    import csv

    if not FILED.exists():
        return {}
    out = {}
    with FILED.open() as f:
        rows = list(csv.DictReader(f))
    for agent in ("ppo", "reinforce", "random"):
        tests = [float(r["test_score"]) for r in rows if r["agent"] == agent and r["task"] == task
                 and float(r["target_sparsity"]) == target
                 and int(r.get("max_evals") or r.get("budget")) == max_evals]
        if tests:
            m = sum(tests) / len(tests)
            out[agent] = (m, (sum((t - m) ** 2 for t in tests) / len(tests)) ** 0.5, len(tests))
    return out


def _ray_version() -> str:
    import ray

    return ray.__version__


if __name__ == "__main__":
    raise SystemExit(main())
