"""Kill ``prune-rnn bench`` with SIGKILL at random moments, resume it each time, and compare the final table with an
uninterrupted run (issue 13's resume target).

    python benchmarks/resume_kill.py --kills 5 --seed 0

Checks: the resumed run's rows equal the uninterrupted run's (scores, allocations, histories), and every cell that
was on disk before a kill is unchanged after the resume (its recorded wall time included, so a recomputed cell
would show). Writes ``benchmarks/results/resume_kill.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _meta import ROOT, provenance, run_meta  # noqa: E402

BENCH = ["bench", "--task", "digits", "--sparsity", "0.8", "0.9", "--agents", "uniform", "lamp", "erk", "random",
         "reinforce", "--budget", "150", "--seeds", "0", "1", "--no-progress"]
KEYS = ("agent", "target_sparsity", "seed", "val_score", "test_score", "allocation", "history")


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "agents.cli.main", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def rows(run: Path) -> list[dict]:
    path = run / "results.json"
    return json.loads(path.read_text())["runs"] if path.exists() else []


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-delay", type=float, default=8.0, help="seconds; each kill comes uniformly in [0.5, this]")
    args = p.parse_args()
    meta = run_meta()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="resume-kill-"))
    t0 = time.perf_counter()
    ref = cli(*BENCH, "--out", str(work / "ref"))
    assert ref.wait() == 0, ref.stderr.read()
    reference = rows(next((work / "ref").iterdir()))
    uninterrupted_s = time.perf_counter() - t0

    events = []
    proc = cli(*BENCH, "--out", str(work / "killed"))
    run = None
    for k in range(args.kills):
        delay = rng.uniform(0.5, args.max_delay)
        time.sleep(delay)
        if proc.poll() is not None:
            events.append({"kill": k, "delay_s": round(delay, 2), "note": "finished before the kill"})
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        run = run or next((work / "killed").iterdir())
        before = rows(run)
        events.append({"kill": k, "delay_s": round(delay, 2), "cells_on_disk": len(before)})
        proc = cli(*BENCH, "--resume", str(run))
        events[-1]["_before"] = before
    assert proc.wait() == 0, proc.stderr.read()
    run = run or next((work / "killed").iterdir())
    final = rows(run)
    same_table = [[r[k] for k in KEYS] for r in final] == [[r[k] for k in KEYS] for r in reference]
    kept = all(all(r in final for r in e.pop("_before", [])) for e in events)
    result = {"meta": meta, "bench": BENCH, "cells": len(reference), "uninterrupted_s": round(uninterrupted_s, 1),
              "kills": events, "same_table": same_table, "finished_cells_never_recomputed": kept}
    out = ROOT / "benchmarks" / "results"
    for name, text in (("resume_kill.json", json.dumps(result, indent=2) + "\n"), ("resume_kill.md", "\n".join([
            "# resume_kill: SIGKILL a bench at random moments, resume, compare", "", provenance(meta), "",
            f"`prune-rnn {' '.join(BENCH)}`: {len(reference)} cells, {uninterrupted_s:.0f} s uninterrupted.", "",
            "| kill | after (s) | cells on disk |", "|---|---|---|",
            *[f"| {e['kill']} | {e['delay_s']} | {e.get('cells_on_disk', e.get('note'))} |" for e in events], "",
            f"- final table equals the uninterrupted run's (scores, allocations, histories): **{same_table}**",
            f"- every cell on disk before a kill is unchanged after the resume (wall time included): **{kept}**",
            ""]))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)
    print(json.dumps({k: v for k, v in result.items() if k != "meta"}, indent=1))
    return 0 if same_table and kept else 1


if __name__ == "__main__":
    sys.exit(main())
