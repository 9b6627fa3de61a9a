"""SIGKILL a long REINFORCE search at random moments, resume it from its checkpoint each time, and compare with the
uninterrupted run (issue 13's target for single searches).

    nice python benchmarks/resume_reinforce.py --budget 1000 --kills 3 --seed 0

Each search runs in its own process (``--worker``) on the ``digits`` preset at 0.9, agent seed 0, one torch
thread. Every scoring of a pruned model (a call of ``task.evaluate`` after the env is built) is appended to a log,
so the evaluations are counted at the env, across processes, whatever the agent reports. Runs:

1. ``reference``: uninterrupted, no checkpoint;
2. ``checkpointed``: uninterrupted with ``checkpoint=`` (the cost of writing checkpoints, and that it changes nothing);
3. ``killed``: with ``checkpoint=``, SIGKILLed when its progress (the evaluations its checkpoint held at its start
   plus the scorings it has done) reaches a point drawn uniformly (``--seed``) from the k-th of ``--kills`` equal
   slices of the cap, then resumed by the same command; the last resume runs to the end.

Checks: the killed run's result (best score, allocation, best-so-far history, evaluations, policy) equals the
reference's; each resumed process scores exactly ``budget - (evaluations in the checkpoint it started from)``;
in all, the scorings are the cap plus the ones redone after a kill (those after the last checkpoint). Writes
``benchmarks/results/resume_reinforce.{json,md}``.
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

TASK, TARGET, SEED = "digits", 0.9, 0
KEYS = ("val_score", "allocation", "history", "evals", "policy")


# ------------------------------------------------------------------------------------------------ worker
def worker(args: argparse.Namespace) -> int:
    """One search process: build the env, count scorings into ``--log``, run, write the result to ``--out``."""
    import torch

    torch.set_num_threads(1)
    import agents
    import prune_env

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
    res = agents.search("reinforce", env, args.budget, seed=SEED, **kw)
    out = {"val_score": res.val_score, "allocation": res.allocation, "history": res.history, "evals": res.evals,
           "policy": {k: v.tolist() for k, v in res.policy.state_dict().items()},
           "resumed_at": res.extras.get("resumed_at", 0), "wall_s": round(time.perf_counter() - t0, 2)}
    tmp = f"{args.out}.tmp"
    Path(tmp).write_text(json.dumps(out))
    os.replace(tmp, args.out)
    return 0


# ------------------------------------------------------------------------------------------------ driver
def launch(budget: int, log: Path, out: Path, checkpoint: Path | None = None, every: int = 100) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--worker", "--budget", str(budget), "--log", str(log), "--out", str(out)]
    if checkpoint is not None:
        cmd += ["--checkpoint", str(checkpoint), "--every", str(every)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def in_checkpoint(path: Path) -> int:
    from agents.core.checkpoint import read_checkpoint

    return int(read_checkpoint(str(path))["evals"]) if path.exists() else 0


def run_to_end(budget: int, work: Path, name: str, checkpoint: Path | None = None, every: int = 100) -> dict:
    log, out = work / f"{name}.log", work / f"{name}.json"
    t0 = time.perf_counter()
    proc = launch(budget, log, out, checkpoint, every)
    if proc.wait() != 0:
        raise RuntimeError(f"{name} failed: {proc.stderr.read()}")
    return {**json.loads(out.read_text()), "scorings": lines(log), "process_s": round(time.perf_counter() - t0, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=int, default=1000)
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--every", type=int, default=100, help="checkpoint_every")
    p.add_argument("--seed", type=int, default=0, help="seeds the kill points")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--log", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    import torch

    torch.set_num_threads(1)
    meta = run_meta()
    work = Path(tempfile.mkdtemp(prefix="resume-reinforce-"))
    budget, rng = args.budget, random.Random(args.seed)
    ref = run_to_end(budget, work, "reference")
    chk = run_to_end(budget, work, "checkpointed", work / "checkpointed.ckpt", args.every)

    ck = work / "killed.ckpt"
    slice_ = budget / args.kills
    points = [int(rng.uniform(k * slice_ + 1, (k + 1) * slice_ - 1)) for k in range(args.kills)]
    events, t0 = [], time.perf_counter()
    for i, point in enumerate([*points, None]):
        start = in_checkpoint(ck)
        log, out = work / f"killed-{i}.log", work / f"killed-{i}.json"
        proc = launch(budget, log, out, ck, args.every)
        if point is None:
            if proc.wait() != 0:
                raise RuntimeError(f"final resume failed: {proc.stderr.read()}")
            final = json.loads(out.read_text())
            events.append({"process": i, "started_at": start, "killed_at": None, "scorings": lines(log),
                           "expected_scorings": budget - start, "checkpoint_after": in_checkpoint(ck)})
            break
        while proc.poll() is None and start + lines(log) < point:
            time.sleep(0.01)
        if proc.poll() is not None:
            raise RuntimeError(f"process {i} ended before its kill point {point}: {proc.stderr.read()}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done = lines(log)
        after = in_checkpoint(ck)
        events.append({"process": i, "started_at": start, "kill_point": point, "killed_at": start + done,
                       "scorings": done, "checkpoint_after": after, "redone_later": start + done - after})
    killed_s = time.perf_counter() - t0

    total = sum(e["scorings"] for e in events)
    redone = sum(e.get("redone_later", 0) for e in events)
    same = {k: final[k] == ref[k] for k in KEYS}
    checks = {
        "reference scored exactly the cap": ref["scorings"] == ref["evals"] == budget,
        "checkpointed run equals the reference": all(chk[k] == ref[k] for k in KEYS) and chk["scorings"] == budget,
        "killed run's result equals the reference (score, allocation, history, evals, policy)": all(same.values()),
        "every resume scored exactly budget - evaluations in its checkpoint":
            events[-1]["scorings"] == events[-1]["expected_scorings"]
            and all(e["started_at"] + e["scorings"] >= e["checkpoint_after"] for e in events[:-1]),
        "scorings in all == cap + redone after kills": total == budget + redone,
        "the result records exactly the cap": final["evals"] == len(final["history"]) == budget,
    }
    result = {"meta": meta, "task": TASK, "target_sparsity": TARGET, "agent": "reinforce", "seed": SEED,
              "budget": budget, "checkpoint_every": args.every, "kill_seed": args.seed, "kill_points": points,
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
          f"`{TASK}` at {TARGET}, REINFORCE, seed {SEED}, evaluation cap {budget}, `checkpoint_every={args.every}`, "
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
    out_dir = ROOT / "benchmarks" / "results"
    for name, text in (("resume_reinforce.json", json.dumps(result, indent=2) + "\n"),
                       ("resume_reinforce.md", "\n".join(md))):
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out_dir / name)
    print(json.dumps({k: v for k, v in result.items() if k != "meta"}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
