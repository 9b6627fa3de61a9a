"""SIGKILL a run at random moments, resume it each time, and compare with the uninterrupted run. Two subjects:

- ``bench``: ``prune-rnn bench`` (several agents, targets and seeds), resumed with ``--resume RUN_DIR``. Checks: the
  resumed run's rows equal the uninterrupted run's (scores, allocations, histories), and every cell that was on disk
  before a kill is unchanged after the resume (its recorded wall time included, so a recomputed cell would show).
- ``search``: one long REINFORCE search (``digits`` at 0.9, agent seed 0, one torch thread, each search in its own
  process), resumed from its checkpoint. Every scoring of a pruned model (a call of ``task.evaluate`` after the env
  is built) is appended to a log, so the evaluations are counted at the env, across processes, whatever the agent
  reports. Runs: ``reference`` (uninterrupted, no checkpoint); ``checkpointed`` (uninterrupted with
  ``checkpoint=``: the cost of writing checkpoints, and that it changes nothing); ``killed`` (with ``checkpoint=``,
  SIGKILLed when its progress, the evaluations its checkpoint held at its start plus the scorings it has done,
  reaches a point drawn uniformly with ``--seed`` from the k-th of ``--kills`` equal slices of the cap, then resumed
  by the same command; the last resume runs to the end). Checks: the killed run's result (best score, allocation,
  best-so-far history, evaluations, policy) equals the reference's; each resumed process scores exactly
  ``max_evals - (evaluations in the checkpoint it started from)``; in all, the scorings are the cap plus the ones
  redone after a kill (those after the last checkpoint).

::

    python -m benchmarks resume_kill          # bench: 5 kills, seed 0
    python -m benchmarks resume_reinforce     # search: cap 1000, 3 kills, seed 0
    python -m benchmarks.resume bench --kills 5 --seed 0 --out DIR
    python -m benchmarks.resume search --max-evals 1000 --kills 3 --seed 0 --out DIR

Each writes ``results.json`` and ``results.md`` under ``--out``; the exit code is 1 if a check fails.
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

from benchmarks._meta import ROOT, default_out, provenance, run_meta, write_results

KEYS_BENCH = ("agent", "target_sparsity", "seed", "val_score", "test_score", "allocation", "history")
TASK, TARGET, SEED = "digits", 0.9, 0
KEYS_SEARCH = ("val_score", "allocation", "history", "evals", "policy")


def _popen(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


# ------------------------------------------------------------------------------------------------ bench
def bench_argv() -> list[str]:
    """The bench that is killed: five agents, two targets, two seeds on ``digits``."""
    from benchmarks.runner import max_evals_flag

    return ["bench", "--task", "digits", "--sparsity", "0.8", "0.9", "--agents", "uniform", "lamp", "erk", "random",
            "reinforce", max_evals_flag(), "150", "--seeds", "0", "1", "--no-progress"]


def _cli(*args: str) -> subprocess.Popen:
    return _popen([sys.executable, "-m", "agents.cli", *args])


def _rows(run: Path) -> list[dict]:
    path = run / "results.json"
    return json.loads(path.read_text())["runs"] if path.exists() else []


def cmd_bench(args: argparse.Namespace) -> int:
    bench = bench_argv()
    meta = run_meta()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="resume-kill-"))
    t0 = time.perf_counter()
    ref = _cli(*bench, "--out", str(work / "ref"))
    assert ref.wait() == 0, ref.stderr.read()
    reference = _rows(next((work / "ref").iterdir()))
    uninterrupted_s = time.perf_counter() - t0

    events = []
    proc = _cli(*bench, "--out", str(work / "killed"))
    run = None
    for k in range(args.kills):
        delay = rng.uniform(0.5, args.max_delay)
        time.sleep(delay)
        if proc.poll() is not None:
            events.append({"kill": k, "delay_s": round(delay, 2), "note": "finished before the kill"})
            break
        _kill(proc)
        run = run or next((work / "killed").iterdir())
        before = _rows(run)
        events.append({"kill": k, "delay_s": round(delay, 2), "cells_on_disk": len(before)})
        proc = _cli(*bench, "--resume", str(run))
        events[-1]["_before"] = before
    assert proc.wait() == 0, proc.stderr.read()
    run = run or next((work / "killed").iterdir())
    final = _rows(run)
    same_table = [[r[k] for k in KEYS_BENCH] for r in final] == [[r[k] for k in KEYS_BENCH] for r in reference]
    kept = all(all(r in final for r in e.pop("_before", [])) for e in events)
    result = {"meta": meta, "bench": bench, "cells": len(reference), "uninterrupted_s": round(uninterrupted_s, 1),
              "kills": events, "same_table": same_table, "finished_cells_never_recomputed": kept}
    md = ["# resume_kill: SIGKILL a bench at random moments, resume, compare", "", provenance(meta), "",
          f"`prune-rnn {' '.join(bench)}`: {len(reference)} cells, {uninterrupted_s:.0f} s uninterrupted.", "",
          "| kill | after (s) | cells on disk |", "|---|---|---|",
          *[f"| {e['kill']} | {e['delay_s']} | {e.get('cells_on_disk', e.get('note'))} |" for e in events], "",
          f"- final table equals the uninterrupted run's (scores, allocations, histories): **{same_table}**",
          f"- every cell on disk before a kill is unchanged after the resume (wall time included): **{kept}**", ""]
    write_results(args.out, result, "\n".join(md))
    print(json.dumps({k: v for k, v in result.items() if k != "meta"}, indent=1))
    return 0 if same_table and kept else 1


# ------------------------------------------------------------------------------------------------ search
def cmd_worker(args: argparse.Namespace) -> int:
    """One search process: build the env, count scorings into ``--log``, run, write the result to ``--out``."""
    import torch

    torch.set_num_threads(1)
    import agents
    import prune_env
    from prune_env.io import atomic_write

    env = prune_env.PruneRNNEnv(TASK, target_sparsity=TARGET, device="cpu", task_kwargs={"progress": False})
    evaluate = env.task.evaluate
    log = open(args.log, "a", buffering=1)  # noqa: SIM115 (open for the process's life; SIGKILL closes it)

    def counted(model):
        out = evaluate(model)
        log.write("1\n")  # a finished scoring, flushed per line: a kill loses at most the one in progress
        return out

    env.task.evaluate = counted
    kw = {"checkpoint": args.checkpoint, "checkpoint_every": args.every} if args.checkpoint else {}
    t0 = time.perf_counter()
    res = agents.search("reinforce", env, args.max_evals, seed=SEED, **kw)
    out = {"val_score": res.val_score, "allocation": res.allocation, "history": res.history, "evals": res.evals,
           "policy": {k: v.tolist() for k, v in res.policy.state_dict().items()},
           "resumed_at": res.extras.get("resumed_at", 0), "wall_s": round(time.perf_counter() - t0, 2)}
    atomic_write(args.out, json.dumps(out))
    return 0


def _launch(max_evals: int, log: Path, out: Path, checkpoint: Path | None = None, every: int = 100
            ) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "benchmarks.resume", "worker", "--max-evals", str(max_evals), "--log", str(log),
           "--out", str(out)]
    if checkpoint is not None:
        cmd += ["--checkpoint", str(checkpoint), "--every", str(every)]
    return _popen(cmd)


def _lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def _in_checkpoint(path: Path) -> int:
    from agents.core.checkpoint import read_checkpoint

    return int(read_checkpoint(str(path))["evals"]) if path.exists() else 0


def _run_to_end(max_evals: int, work: Path, name: str, checkpoint: Path | None = None, every: int = 100) -> dict:
    log, out = work / f"{name}.log", work / f"{name}.json"
    t0 = time.perf_counter()
    proc = _launch(max_evals, log, out, checkpoint, every)
    if proc.wait() != 0:
        raise RuntimeError(f"{name} failed: {proc.stderr.read()}")
    return {**json.loads(out.read_text()), "scorings": _lines(log), "process_s": round(time.perf_counter() - t0, 1)}


def cmd_search(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)
    meta = run_meta()
    work = Path(tempfile.mkdtemp(prefix="resume-reinforce-"))
    cap, rng = args.max_evals, random.Random(args.seed)
    ref = _run_to_end(cap, work, "reference")
    chk = _run_to_end(cap, work, "checkpointed", work / "checkpointed.ckpt", args.every)

    ck = work / "killed.ckpt"
    slice_ = cap / args.kills
    points = [int(rng.uniform(k * slice_ + 1, (k + 1) * slice_ - 1)) for k in range(args.kills)]
    events, t0 = [], time.perf_counter()
    for i, point in enumerate([*points, None]):
        start = _in_checkpoint(ck)
        log, out = work / f"killed-{i}.log", work / f"killed-{i}.json"
        proc = _launch(cap, log, out, ck, args.every)
        if point is None:
            if proc.wait() != 0:
                raise RuntimeError(f"final resume failed: {proc.stderr.read()}")
            final = json.loads(out.read_text())
            events.append({"process": i, "started_at": start, "killed_at": None, "scorings": _lines(log),
                           "expected_scorings": cap - start, "checkpoint_after": _in_checkpoint(ck)})
            break
        while proc.poll() is None and start + _lines(log) < point:
            time.sleep(0.01)
        if proc.poll() is not None:
            raise RuntimeError(f"process {i} ended before its kill point {point}: {proc.stderr.read()}")
        _kill(proc)
        done = _lines(log)
        after = _in_checkpoint(ck)
        events.append({"process": i, "started_at": start, "kill_point": point, "killed_at": start + done,
                       "scorings": done, "checkpoint_after": after, "redone_later": start + done - after})
    killed_s = time.perf_counter() - t0

    total = sum(e["scorings"] for e in events)
    redone = sum(e.get("redone_later", 0) for e in events)
    same = {k: final[k] == ref[k] for k in KEYS_SEARCH}
    checks = {
        "reference scored exactly the cap": ref["scorings"] == ref["evals"] == cap,
        "checkpointed run equals the reference": all(chk[k] == ref[k] for k in KEYS_SEARCH) and chk["scorings"] == cap,
        "killed run's result equals the reference (score, allocation, history, evals, policy)": all(same.values()),
        "every resume scored exactly the cap - evaluations in its checkpoint":
            events[-1]["scorings"] == events[-1]["expected_scorings"]
            and all(e["started_at"] + e["scorings"] >= e["checkpoint_after"] for e in events[:-1]),
        "scorings in all == cap + redone after kills": total == cap + redone,
        "the result records exactly the cap": final["evals"] == len(final["history"]) == cap,
    }
    result = {"meta": meta, "task": TASK, "target_sparsity": TARGET, "agent": "reinforce", "seed": SEED,
              "max_evals": cap, "checkpoint_every": args.every, "kill_seed": args.seed, "kill_points": points,
              "reference": {"val_score": ref["val_score"], "scorings": ref["scorings"], "search_s": ref["wall_s"]},
              "checkpointed": {"val_score": chk["val_score"], "scorings": chk["scorings"], "search_s": chk["wall_s"]},
              "killed": {"events": events, "scorings_in_all": total, "redone": redone, "val_score": final["val_score"],
                         "wall_s_all_processes": round(killed_s, 1), "equal_fields": same},
              "checks": checks}
    ok = all(checks.values())
    rows = [f"| {e['process']} | {e['started_at']} | {e.get('kill_point', '-')} | "
            f"{e['killed_at'] if e['killed_at'] is not None else 'ran to the end'} | {e['scorings']} | "
            f"{e['checkpoint_after']} | {e.get('redone_later', '-')} |" for e in events]
    md = ["# resume_reinforce: SIGKILL a REINFORCE search, resume it from its checkpoint, compare", "",
          provenance(meta), "",
          f"`{TASK}` at {TARGET}, REINFORCE, seed {SEED}, evaluation cap {cap}, `checkpoint_every={args.every}`, "
          f"kill points drawn with seed {args.seed}. Scorings are counted at the env (calls of `task.evaluate`), "
          "across processes.", "",
          "| run | best val score | scorings | search s |", "|---|---|---|---|",
          f"| uninterrupted, no checkpoint | {ref['val_score']:.4f} | {ref['scorings']} | {ref['wall_s']} |",
          f"| uninterrupted, checkpointed | {chk['val_score']:.4f} | {chk['scorings']} | {chk['wall_s']} |",
          f"| killed {args.kills}x and resumed | {final['val_score']:.4f} | {total} | {killed_s:.1f} (all "
          "processes, start-up included) |", "",
          "Killed run, process by process (progress = evaluations recorded in the checkpoint it started from + its "
          "scorings):", "",
          "| process | started at | kill point | killed at | scorings | checkpoint after | redone later |",
          "|---|---|---|---|---|---|---|", *rows, "",
          *[f"- {name}: **{v}**" for name, v in checks.items()], "",
          f"Evaluations after a process's last checkpoint are lost with it and redone by the next ({redone} in all "
          f"here; at most `checkpoint_every + batch_size - 1` = {args.every + 7} per kill); the result records "
          "exactly the cap.", ""]
    write_results(args.out, result, "\n".join(md))
    print(json.dumps({k: v for k, v in result.items() if k != "meta"}, indent=1))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="subject", required=True)
    b = sub.add_parser("bench", help="kill and resume prune-rnn bench")
    b.add_argument("--kills", type=int, default=5)
    b.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    b.add_argument("--max-delay", type=float, default=8.0, help="seconds; each kill comes uniformly in [0.5, this]")
    b.add_argument("--out", default=default_out("resume_kill"), help="results folder")
    s = sub.add_parser("search", help="kill and resume one REINFORCE search from its checkpoint")
    s.add_argument("--max-evals", type=int, default=1000)
    s.add_argument("--kills", type=int, default=3)
    s.add_argument("--every", type=int, default=100, help="checkpoint_every")
    s.add_argument("--seed", type=int, default=0, help="seeds the kill points")
    s.add_argument("--out", default=default_out("resume_reinforce"), help="results folder")
    w = sub.add_parser("worker")  # one search process of `search`
    w.add_argument("--max-evals", type=int, required=True)
    w.add_argument("--every", type=int, default=100)
    w.add_argument("--log", required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--checkpoint")
    args = p.parse_args(argv)
    return {"bench": cmd_bench, "search": cmd_search, "worker": cmd_worker}[args.subject](args)


if __name__ == "__main__":
    sys.exit(main())
