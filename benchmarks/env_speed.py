"""Per-step overhead of ``PruneRNNEnv`` over the physical floor: one forward pass of the model.

Side by side in one process, with the repetitions interleaved (floor, joint, sequential, floor, ...) so that load
from other processes hits all three alike, it times:

- the floor: ``task.evaluate(model)`` on a dense copy of the model;
- ``env.reset()`` + ``env.step()`` in joint mode (one episode);
- ``env.reset()`` + one ``env.step()`` per layer in sequential mode (one episode).

Both envs are in budget mode (``target_sparsity=0.5``) with random actions. It reports medians, the ratio of the
medians and the median of the per-repetition ratios (the most load-robust number), against the targets (joint
<= 1.15x, sequential episode <= 1.25x), and splits the env's own time into its parts (masking, budget projection,
size accounting, observation) to show what dominates the remaining overhead.

Run: ``python -m benchmarks env_speed`` (``python -m benchmarks.env_speed --tasks digits gru pydoc-char``).
Writes ``results.json`` and ``results.md`` under ``--out`` (default ``benchmarks/results/env_speed``).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from collections import defaultdict

import numpy as np
import torch
from torch import nn

import prune_env
from benchmarks._meta import default_out, provenance, run_meta, write_results
from prune_env import RNNTask

TARGETS = {"joint": 1.15, "sequential": 1.25}


class GRULM(nn.Module):
    """The custom task's model: Embedding -> GRU -> Linear over every position."""

    def __init__(self, vocab: int, emb: int, hidden: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb)
        self.rnn = nn.GRU(emb, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.embed(x))[0])


def gru_task(hidden: int = 128, seq_len: int = 64, batch: int = 32, layers: int = 2, vocab: int = 64,
             seed: int = 0) -> RNNTask:
    """A custom structured GRU task with random weights and data (timing only: the scores mean nothing).

    :param hidden: GRU units per layer.
    :param seq_len: time steps per sequence.
    :param batch: sequences in the evaluation batch.
    :param layers: stacked GRU layers.
    :param vocab: token ids.
    :param seed: weights and data.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GRULM(vocab, 32, hidden, layers).eval()
    x = torch.randint(0, vocab, (batch, seq_len), generator=g)
    return RNNTask(model, eval_batch=(x, torch.roll(x, -1, 1)), metric="accuracy", name=f"gru-h{hidden}-t{seq_len}")


def load_task(name: str) -> RNNTask:
    if name == "gru":
        return gru_task()
    from prune_env.tasks import make_task

    return make_task(name, progress=False)


def _timed(fn, sink: list[float]):
    """Wrap ``fn`` so each call's duration is appended to ``sink``."""
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        sink.append(time.perf_counter() - t0)
        return out
    return wrapper


def _instrument(env: prune_env.PruneRNNEnv) -> dict[str, list[float]]:
    """Time the parts of a step: scoring, masking, budget, size accounting, observation."""
    parts: dict[str, list[float]] = defaultdict(list)
    env._evaluate = _timed(env._evaluate, parts["score (forward pass)"])
    env.kind.apply = _timed(env.kind.apply, parts["mask (in place)"])
    env.advance = _timed(env.advance, parts["action -> counts (projection / wall)"])
    env.kind.size_bits = _timed(env.kind.size_bits, parts["size_bytes (info)"])
    env._obs = _timed(env._obs, parts["observation"])
    return parts


def measure(task_name: str, reps: int, seed: int = 0) -> dict:
    task = load_task(task_name)
    envs = {m: prune_env.PruneRNNEnv(task, mode=m, target_sparsity=0.5, device="cpu") for m in TARGETS}
    dense = copy.deepcopy(task.model).cpu().eval()  # a dense copy, in eval mode
    parts = {m: _instrument(env) for m, env in envs.items()}
    rng = np.random.default_rng(seed)
    times: dict[str, list[float]] = {"floor": [], "joint": [], "sequential": []}

    def episode(env: prune_env.PruneRNNEnv) -> None:
        env.reset()
        done = False
        while not done:
            _, _, done, _, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))

    for r in range(reps + 2):  # two warm-up repetitions, then interleaved timing
        sample = {}
        t0 = time.perf_counter()
        task.evaluate(dense)
        sample["floor"] = time.perf_counter() - t0
        for m, env in envs.items():
            t0 = time.perf_counter()
            episode(env)
            sample[m] = time.perf_counter() - t0
        if r >= 2:
            for k, v in sample.items():
                times[k].append(v)
        else:
            for p in parts.values():
                for v in p.values():
                    v.clear()
    floor = np.array(times["floor"])
    out = {"task": task_name, "layers": envs["joint"].num_layers, "prunable_weights": int(envs["joint"].numels.sum()),
           "eval_batch": list(task.eval_batch[0].shape), "reps": reps, "floor_ms": 1e3 * float(np.median(floor))}
    for m in TARGETS:
        t = np.array(times[m])
        per_rep = t / floor
        breakdown = {k: 1e3 * float(np.sum(v)) / reps for k, v in parts[m].items() if v}
        breakdown["other (python, reset, info)"] = 1e3 * float(np.median(t)) - sum(breakdown.values())
        out[m] = {"median_ms": 1e3 * float(np.median(t)), "ratio_of_medians": float(np.median(t) / np.median(floor)),
                  "median_ratio": float(np.median(per_rep)), "ratio_q25_q75": [float(np.quantile(per_rep, 0.25)),
                                                                              float(np.quantile(per_rep, 0.75))],
                  "target": TARGETS[m], "meets_target": bool(np.median(per_rep) <= TARGETS[m]),
                  "per_episode_ms": {k: round(v, 3) for k, v in breakdown.items()}}
    return out


def to_markdown(result: dict) -> str:
    lines = ["# env_speed", "", provenance(result["meta"]),
             "", "| task | floor (ms) | joint (ms) | joint / floor | sequential episode (ms) | seq / floor |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in result["tasks"]:
        j, s = r["joint"], r["sequential"]
        lines.append(f"| {r['task']} | {r['floor_ms']:.2f} | {j['median_ms']:.2f} | {j['median_ratio']:.3f} "
                     f"{'ok' if j['meets_target'] else 'MISS'} | {s['median_ms']:.2f} | {s['median_ratio']:.3f} "
                     f"{'ok' if s['meets_target'] else 'MISS'} |")
    lines += ["", "Ratios are medians of per-repetition ratios (interleaved runs); targets 1.15 (joint) and 1.25 "
              "(sequential episode).", "", "Where an episode's time goes (ms, mean per episode):", ""]
    for r in result["tasks"]:
        for mode in TARGETS:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in r[mode]["per_episode_ms"].items())
            lines.append(f"- {r['task']} {mode}: {parts}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["digits", "gru", "pydoc-char"],
                        help="presets and/or 'gru' (a custom random GRU task built here)")
    parser.add_argument("--reps", type=int, default=30, help="timed repetitions per task")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared box)")
    parser.add_argument("--out", default=default_out("env_speed"), help="results folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    result = {"meta": run_meta(), "tasks": []}
    for name in args.tasks:
        r = measure(name, args.reps)
        print(json.dumps({k: r[k] for k in ("task", "floor_ms")} | {m: r[m]["median_ratio"] for m in TARGETS}),
              flush=True)
        result["tasks"].append(r)
    write_results(args.out, result, to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
