"""Compare two ``prune-rnn bench`` results files row by row: same cells, same scores, allocations and histories.

    python -m benchmarks.compare_runs BASELINE/results.json NEW/results.json --out report.md

Used to show that a refactor moved nothing: run the same configuration at the old commit (e.g. in a
``git worktree``) and at the new one on the same machine and compare. Exits 1 if any row differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prune_env.io import atomic_write

KEYS = ("val_score", "test_score", "allocation", "history", "evals", "achieved_sparsity", "nonzero_params")


def compare(baseline: dict, new: dict) -> tuple[list[str], int]:
    """Markdown lines and the number of differing rows."""
    old = {(r["agent"], r["target_sparsity"], r["seed"]): r for r in baseline["runs"]}
    lines = ["| agent | target | seed | val (baseline -> new) | test (baseline -> new) | identical |",
             "|---|---|---|---|---|---|"]
    differing = 0
    cells = set()
    for r in new["runs"]:
        key = (r["agent"], r["target_sparsity"], r["seed"])
        cells.add(key)
        b = old.get(key)
        same = b is not None and all(r.get(k) == b.get(k) for k in KEYS)
        differing += not same
        val = "missing" if b is None else f"{b['val_score']:.6f} -> {r['val_score']:.6f}"
        test = "missing" if b is None else f"{b['test_score']:.6f} -> {r['test_score']:.6f}"
        lines.append(f"| {key[0]} | {key[1]:g} | {key[2]} | {val} | {test} | {'yes' if same else '**no**'} |")
    missing = sorted(set(old) - cells)
    differing += len(missing)
    lines += [f"| {a} | {t:g} | {s} | only in the baseline | | **no** |" for a, t, s in missing]
    return lines, differing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("baseline")
    p.add_argument("new")
    p.add_argument("--out", help="write the Markdown report here (atomically)")
    args = p.parse_args(argv)
    baseline, new = (json.loads(Path(f).read_text()) for f in (args.baseline, args.new))
    lines, differing = compare(baseline, new)
    bm, nm = baseline["meta"], new["meta"]
    head = [f"# {Path(args.new).parent.name}: row-by-row comparison with a baseline run", "",
            f"`python -m benchmarks.compare_runs {args.baseline} {args.new}`", "",
            f"- baseline: commit {bm.get('git_commit')}, `{bm.get('command')}`",
            f"- new: commit {nm.get('git_commit')}{' (dirty)' if nm.get('git_dirty') else ''}, `{nm.get('command')}`",
            f"- compared per (agent, target, seed): {', '.join(KEYS)}",
            f"- **{len(new['runs'])} rows, {differing} differing**", ""]
    text = "\n".join(head + lines) + "\n"
    if args.out:
        atomic_write(args.out, text)
    print(text)
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
