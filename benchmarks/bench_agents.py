"""The agents benchmark: runs ``prune-rnn bench`` configurations and files their results under
``benchmarks/results/bench_agents/<config>/`` (results.json with command, commit, machine, torch version and wall
time; results.csv; pareto.png; allocation.png).

    python benchmarks/bench_agents.py digits-main      # the README's main job
    python benchmarks/bench_agents.py pydoc-0.9 pydoc-0.8 gru digits

Each configuration is one CLI call, so a configuration that finishes is filed even if a later one is stopped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _meta import provenance  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "bench_agents"
ALL = ["uniform", "global", "gradient", "lamp", "erk", "random", "sensitivity", "reinforce", "ppo"]
#: The slow task runs the one-evaluation baselines, then the RL agent, first: a stopped run keeps the headline.
ONESHOT = ["uniform", "global", "gradient", "lamp", "erk"]
PYDOC_ORDER = ["uniform", "global", "gradient", "lamp", "erk", "reinforce", "random", "ppo", "sensitivity"]

CONFIGS: dict[str, list[str]] = {
    "digits-main": ["--task", "digits", "--sparsity", "0.8", "0.9", "--agents", "uniform", "global", "random",
                    "reinforce", "ppo", "--budget", "100", "--seeds", "0"],
    "digits": ["--task", "digits", "--sparsity", "0.8", "0.9", "--agents", *ALL, "--budget", "200",
               "--seeds", "0", "1", "2"],
    "pydoc-0.9": ["--task", "pydoc-char", "--sparsity", "0.9", "--agents", *PYDOC_ORDER, "--budget", "1000",
                  "--seeds", "0",
                  "--vector-envs", "8"],
    "pydoc-0.8": ["--task", "pydoc-char", "--sparsity", "0.8", "--agents", *PYDOC_ORDER, "--budget", "1000",
                  "--seeds", "0",
                  "--vector-envs", "8"],
    "pydoc-0.9-short": ["--task", "pydoc-char", "--sparsity", "0.9", "--agents", "uniform", "global", "gradient",
                        "reinforce", "random", "--budget", "200", "--seeds", "0"],
    "pydoc-0.8-short": ["--task", "pydoc-char", "--sparsity", "0.8", "--agents", "uniform", "global", "gradient",
                        "reinforce", "random", "--budget", "200", "--seeds", "0"],
    "pydoc-oracle-0.9": ["--task", "pydoc-char", "--sparsity", "0.9", "--agents", "random", "--budget", "10000",
                         "--seeds", "0"],
    "digits-oracle": ["--task", "digits", "--sparsity", "0.8", "0.9", "--agents", "random", "--budget", "1000",
                      "--seeds", "0"],
    # Session 2, REINFORCE with init_mean="mid": every agent, three seeds, the budget (GRU: 200).
    "digits-final": ["--task", "digits", "--sparsity", "0.9", "0.8", "--agents", *ALL, "--budget", "1000",
                     "--seeds", "0", "1", "2", "--vector-envs", "8"],
    # Session 4: digits-final rerun after the redesign (pruning kinds, shared analysis): nothing may move.
    "digits-redesign": ["--task", "digits", "--sparsity", "0.9", "0.8", "--agents", *ALL, "--budget", "1000",
                        "--seeds", "0", "1", "2", "--vector-envs", "8"],
    "pydoc-final": ["--task", "pydoc-char", "--sparsity", "0.9", "0.8", "--agents", *ALL, "--budget",
                    "1000", "--seeds", "0", "1", "2", "--vector-envs", "8"],
    "gru-final": ["--task", "benchmarks.gru_task:make", "--sparsity", "0.9", "0.8", "--agents", *ALL,
                  "--budget", "200", "--seeds", "0", "1", "2", "--vector-envs", "8"],
    "gru-final-1000": ["--task", "benchmarks.gru_task:make", "--sparsity", "0.9", "0.8", "--agents", *ALL,
                       "--budget", "1000", "--seeds", "0", "1", "2", "--vector-envs", "8"],
    # Session 4: the one-evaluation rules, LAMP and ERK included, on the three filed tasks (the other agents' rows of
    # *-final are unchanged by the redesign: see digits-redesign/compare_ded3698.md).
    "digits-oneshot": ["--task", "digits", "--sparsity", "0.9", "0.8", "--agents", *ONESHOT, "--budget", "1000",
                       "--seeds", "0"],
    "pydoc-oneshot": ["--task", "pydoc-char", "--sparsity", "0.9", "0.8", "--agents", *ONESHOT, "--budget",
                      "1000", "--seeds", "0"],
    "gru-oneshot": ["--task", "benchmarks.gru_task:make", "--sparsity", "0.9", "0.8", "--agents", *ONESHOT,
                    "--budget", "1000", "--seeds", "0"],
    "digits-oracle-10000": ["--task", "digits", "--sparsity", "0.9", "0.8", "--agents", "random", "--budget",
                            "10000", "--seeds", "0", "--vector-envs", "8"],
    # Session 3: the same search with bf16 autocast rewards (test scores stay fp32), against pydoc-final.
    "pydoc-bf16": ["--task", "pydoc-char", "--sparsity", "0.9", "0.8", "--agents", "global", "random", "reinforce",
                   "--budget", "1000", "--seeds", "0", "1", "2", "--vector-envs", "8", "--precision", "bf16"],
    "gru": ["--task", "benchmarks.gru_task:make", "--sparsity", "0.8", "0.9", "--agents", *ALL, "--budget", "200",
            "--seeds", "0", "1", "2", "--vector-envs", "8"],
}


def run(name: str, out: Path) -> Path:
    """Run configuration ``name`` through the CLI and copy its files to ``RESULTS/name``.

    :param name: a key of :data:`CONFIGS`.
    :param out: parent of the CLI's run directory.
    """
    from agents.cli.main import main

    parent = out / f"{name}-{os.getpid()}"  # a parent of our own: other runs may share `out`
    code = main(["bench", *CONFIGS[name], "--out", str(parent), "--no-progress"])
    if code != 0:
        raise SystemExit(f"bench {name} failed with exit code {code}")
    (run_dir,) = list(parent.iterdir())
    dest = RESULTS / name
    tmp = RESULTS / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in ("results.json", "results.csv", "pareto.png", "allocation.png"):
        shutil.copy2(run_dir / f, tmp / f)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    write_markdown(dest)
    return dest


def write_markdown(dest: Path) -> None:
    """``results.md``: the summary table of ``dest/results.json`` under the provenance of the run that produced it
    (marked **uncommitted changes** if it started from a dirty tree)."""
    import json

    data = json.loads((dest / "results.json").read_text())
    meta = data["meta"]
    lines = [provenance(meta) + f" Wall time {meta['wall_time_s']:.0f} s"
             + ("." if meta.get("complete", True) else ", **incomplete: stopped part-way**."), "",
             "| sparsity | agent | test (mean ± std) | val | evals | evals to beat global | wall s |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(data["summary"], key=lambda r: (r["target_sparsity"], -r["test_mean"])):
        beat = "-" if r["evals_to_beat_global"] is None else f"{r['evals_to_beat_global']:.0f}"
        lines.append(f"| {r['target_sparsity']:g} | {r['agent']} | {r['test_mean']:.4f} ± {r['test_std']:.4f} | "
                     f"{r['val_mean']:.4f} | {r['evals']:.0f} | {beat} | {r['wall_time_s']:.1f} |")
    tmp = dest / "results.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, dest / "results.md")


def _cached(preset: str) -> bool:
    from prune_env.tasks.cache import cache_dir

    return any(cache_dir().glob(f"{preset}-*.pt"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", help=f"any of {sorted(CONFIGS)}")
    parser.add_argument("--markdown", action="store_true", help="only rewrite results.md of the filed configs")
    parser.add_argument("--out", default=str(ROOT / "runs"), help="where the CLI writes its run directories")
    args = parser.parse_args()
    unknown = sorted(set(args.configs) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {sorted(CONFIGS)}")
    sys.path.insert(0, str(ROOT))
    if args.markdown:
        for d in sorted(p for p in RESULTS.iterdir() if (p / "results.json").is_file()):
            write_markdown(d)
    for name in args.configs:
        if name.startswith("pydoc") and not _cached("pydoc-char"):
            print(f"== {name}: the pydoc-char model is trained first (cached afterwards)", flush=True)
        print(f"== {name}: prune-rnn bench {' '.join(CONFIGS[name])}", flush=True)
        print(f"filed under {run(name, Path(args.out))}", flush=True)
