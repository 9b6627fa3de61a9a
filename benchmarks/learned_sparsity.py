"""Sparsity learned while training (ISS group Lasso, L1, movement) vs magnitude, at equal fine-tuning steps.

Studies on one task (default ``pydoc-char``), every cell a :func:`prune_env.compression.gradual.gradual_prune` run
with the same steps, learning rate, seed and batches, its best validation checkpoint after the ramp, scored on the
test split:

- ``units``: each recurrent layer loses ``--unit-targets`` of its hidden units. ``magnitude`` is
  ``--granularity hidden_unit`` without a regularizer (the env's unit order, ranked on the dense model); ``iss``
  adds the group Lasso over the ISS groups (Wen et al., 2018) at each of ``--gl-strengths``; ``group-norm`` is the
  same run with a vanishing penalty (strength 1e-9: units ranked by their current group norms, no shrinkage), which
  separates the penalty from the ranking.
- ``unstructured``: ``--target`` of the prunable weights with the LAMP and the ERK allocation: ``magnitude``
  (current ``|w|``), ``movement`` (Sanh et al., 2020) and ``l1`` at each of ``--l1-strengths``.
- ``timing``: wall seconds per training step with and without each penalty (``--timing-steps`` steps, all in the
  ramp, the configurations interleaved ``--timing-reps`` times in one process; the median is reported).

Each cell reports the test score (and perplexity), validation score, parameters (total and nonzero), bytes of the
:func:`prune_env.compression.export.export` file, CPU latency (median of ``--latency-reps`` forward passes on 64
validation sequences, 1 thread, pruned and dense alternately) and wall seconds per training step. Finished cells go
to ``cells.jsonl`` as they end (a rerun with the same ``--out`` skips them); ``results.md`` / ``results.json``
summarise::

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/learned_sparsity.py --steps 200 --seed 0
    python benchmarks/learned_sparsity.py --task digits --steps 20 --out /tmp/ls   # a quick check
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from agents.core.results import append_jsonl, provenance, run_meta, write_json, write_text  # noqa: E402

STUDIES = ("units", "unstructured", "timing")


def _params(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    return {"total": total, "nonzero": nonzero}


def _bytes(model: nn.Module) -> int:
    from prune_env.compression.export import export

    with tempfile.TemporaryDirectory() as tmp:
        return int(export(model.cpu(), Path(tmp) / "m.prnn"))


@torch.no_grad()
def _latency(task: Any, model: nn.Module, reps: int) -> dict[str, float]:
    """Median CPU ms of one forward pass on 64 validation sequences, the pruned and the dense model alternately."""
    x = task.eval_batch[0][:64]
    models = {"pruned": model.cpu().eval(), "dense": task.model.cpu().eval()}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for m in models.values():
            m(x)
        times: dict[str, list[float]] = {k: [] for k in models}
        for _ in range(reps):
            for k, m in models.items():
                t0 = time.perf_counter()
                m(x)
                times[k].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    return {"latency_ms": med["pruned"], "dense_latency_ms": med["dense"],
            "latency_ratio": med["pruned"] / med["dense"]}


def _hidden_sizes(model: nn.Module) -> list[int]:
    return [m.hidden_size for m in model.modules() if isinstance(m, nn.RNNBase) for _ in range(m.num_layers)]


def _cell(env: Any, allocation: dict[str, float], args: argparse.Namespace, **kw: Any) -> dict[str, Any]:
    """One gradual pruning run and its measurements."""
    from prune_env.compression.gradual import gradual_prune
    from prune_env.task import split_score

    t0 = time.perf_counter()
    r = gradual_prune(env, allocation, steps=args.steps, lr=args.lr, seed=args.seed, select=args.select, **kw)
    wall = time.perf_counter() - t0
    task = env.task
    test, extras = split_score(task.test(r.model), "test")
    row = {"val_score": r.score, "test_score": test, **{f"test_{k}": v for k, v in extras.items()},
           "params": _params(r.model), "bytes": _bytes(r.model), **_latency(task, r.model, args.latency_reps),
           "best_step": r.step, "end": r.end, "seconds_per_step": r.info["train_seconds"] / max(args.steps, 1),
           "wall_s": round(wall, 1), "counts": r.counts, "hidden_sizes": _hidden_sizes(r.model),
           "git_commit": args.commit, "command": args.command}
    for k in ("pruned_by_penalty", "zero_at_end", "kept_units"):
        if r.info.get(k) is not None:
            row[k] = r.info[k]
    return row


def _done(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    return {c["key"]: c for c in (json.loads(line) for line in path.read_text().splitlines() if line.strip())}


def _units(args, task, cells, path) -> None:
    from prune_env import PruneRNNEnv

    env = PruneRNNEnv(task, target_sparsity=max(args.unit_targets), granularity="hidden_unit", device="cpu")
    for target in args.unit_targets:
        allocation = dict.fromkeys(env.layer_names, target)
        runs = [("magnitude", {})] + [(f"iss {g:g}" + _scope_name(scope) + _removal_name(removal, args), {
            "regularizer": "group_lasso", "regularizer_strength": g, **_scope_kw(scope),
            **_removal_kw(removal, args)})
            for removal in args.removals for scope in args.scopes for g in args.gl_strengths]
        runs.append(("group-norm", {"regularizer": "group_lasso", "regularizer_strength": 1e-9}))
        for method, kw in runs:
            if method.split()[0] not in args.unit_methods:
                continue
            key = f"units/{target}/{method}"
            if key in cells:
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {key}", flush=True)
            cell = {"key": key, "study": "units", "target": target, "allocation": "uniform units", "method": method,
                    **kw, **_cell(env, allocation, args, **kw)}
            append_jsonl(path, cell)
            cells[key] = cell


def _scope_name(scope: str) -> str:
    return "" if scope == "all" else f" {scope}"


def _scope_kw(scope: str) -> dict[str, str]:
    return {} if scope == "all" else {"regularizer_scope": scope}


def _removal_name(removal: str, args: argparse.Namespace) -> str:
    if removal == "schedule" and args.gl_schedule == "ramp":
        return ""
    return f" {args.gl_schedule}" + ("" if removal == "schedule" else " zeroed-only")


def _removal_kw(removal: str, args: argparse.Namespace) -> dict[str, str]:
    """ISS runs: ``removal`` and the strength's schedule, as :func:`gradual_prune` takes them (defaults left out)."""
    return {**({} if removal == "schedule" else {"removal": removal}),
            **({} if args.gl_schedule == "ramp" else {"regularizer_schedule": args.gl_schedule})}


def _unstructured(args, task, cells, path) -> None:
    import agents as A
    from prune_env import PruneRNNEnv

    env = PruneRNNEnv(task, target_sparsity=args.target, device="cpu")
    for rule in args.allocations:
        allocation = dict(A.search(rule, env, 1, seed=args.seed).allocation)
        runs = [("magnitude", {"criterion": "magnitude"}), ("movement", {"criterion": "movement"})]
        runs += [(f"l1 {g:g}" + _scope_name(scope), {"regularizer": "l1", "regularizer_strength": g,
                                                     **_scope_kw(scope)})
                 for scope in args.scopes for g in args.l1_strengths]
        for method, kw in runs:
            key = f"unstructured/{args.target}/{rule}/{method}"
            if key in cells:
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {key}", flush=True)
            cell = {"key": key, "study": "unstructured", "target": args.target, "allocation": rule, "method": method,
                    **kw, **_cell(env, allocation, args, **kw)}
            append_jsonl(path, cell)
            cells[key] = cell


def _timing(args, task, cells, path) -> None:
    import agents as A
    from prune_env import PruneRNNEnv
    from prune_env.compression.gradual import gradual_prune

    key = f"timing/{args.timing_steps}x{args.timing_reps}"
    if key in cells:
        return
    print(f"[{time.strftime('%H:%M:%S')}] {key}", flush=True)
    units = PruneRNNEnv(task, target_sparsity=0.5, granularity="hidden_unit", device="cpu")
    weights = PruneRNNEnv(task, target_sparsity=args.target, device="cpu")
    a_units = dict.fromkeys(units.layer_names, 0.5)
    a_weights = dict(A.search("lamp", weights, 1, seed=args.seed).allocation)
    configs = {"units/magnitude": (units, a_units, {}),
               "units/iss": (units, a_units, {"regularizer": "group_lasso",
                                              "regularizer_strength": args.gl_strengths[-1]}),
               "unstructured/magnitude": (weights, a_weights, {"criterion": "magnitude"}),
               "unstructured/l1": (weights, a_weights, {"regularizer": "l1",
                                                        "regularizer_strength": args.l1_strengths[-1]}),
               "unstructured/movement": (weights, a_weights, {"criterion": "movement"})}
    per_step: dict[str, list[float]] = {k: [] for k in configs}
    n = args.timing_steps
    for _ in range(args.timing_reps):
        for name, (env, alloc, kw) in configs.items():
            r = gradual_prune(env, alloc, steps=n, end=n, eval_every=n, lr=args.lr, seed=args.seed, **kw)
            per_step[name].append(r.info["train_seconds"] / n)
    med = {k: statistics.median(v) for k, v in per_step.items()}
    cell = {"key": key, "study": "timing", "steps": n, "reps": args.timing_reps, "seconds_per_step": per_step,
            "median_seconds_per_step": med,
            "ratio": {"iss / magnitude units": med["units/iss"] / med["units/magnitude"],
                      "l1 / magnitude": med["unstructured/l1"] / med["unstructured/magnitude"],
                      "movement / magnitude": med["unstructured/movement"] / med["unstructured/magnitude"]}}
    append_jsonl(path, cell)
    cells[key] = cell


def _fmt(x: Any, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def _penalty(c: dict[str, Any]) -> str:
    """What the penalty removed (units per direction, or weights), summed over layers."""
    if "regularizer" not in c or c.get("regularizer_strength", 1) < 1e-6:
        return "-"
    share = c.get("pruned_by_penalty")
    return "not recorded" if share is None else f"{sum(share.values()):,} of {sum(c['counts'].values()):,}"


def _markdown(runs: list[dict[str, Any]], args: argparse.Namespace, dense: dict[str, Any],
              cells: dict[str, Any]) -> str:
    lines = ["# Sparsity learned while training vs magnitude, at equal fine-tuning steps", "",
             "Invocations (each cell records its command and commit in `cells.jsonl`):", ""]
    lines += [f"- {provenance(m)}" for m in runs]
    lines += ["",
             f"Task `{args.task}` (dense: test {_fmt(dense['test_score'])}, test perplexity "
             f"{_fmt(dense.get('test_perplexity'), '.2f')}, {dense['params']['total']:,} parameters, "
             f"{dense['bytes']:,} bytes exported). Every run: {args.steps} Adam steps at lr {args.lr:g} (cubic ramp "
             f"over the first half, then recovery), seed {args.seed}, the best validation checkpoint "
             f"({args.select}) after the ramp; scores on the test split. Penalty strengths (the number after `iss` / "
             "`l1`) grow linearly over the ramp (`constant`: held); `zeroed-only`: during the ramp a unit leaves "
             "only once the penalty has zeroed its whole group (removal='penalty', Wen et al.'s ISS), the rest at "
             "its end; `candidates`: the penalty applies only to the final count of lowest "
             "magnitudes (group norms) at each step; `group-norm` ranks units by their current group norm with a "
             "vanishing penalty (1e-9). `by the penalty`: units (per direction) or weights that were exactly zero "
             "when a pruning step removed them, of the final count (the rest: the lowest magnitudes the cubic "
             f"schedule took). Latency: median of {args.latency_reps} "
             "forward passes on 64 validation sequences, 1 thread, pruned and dense alternately (ratio to dense).", ""]
    head = ("| {} | method | test score | test ppl | val score | params (nonzero) | bytes | CPU ms (x dense) | "
            "s/step | {} |")
    units = [c for c in cells.values() if c["study"] == "units"]
    if units:
        lines += ["## Hidden units (uniform fraction of each layer's units)", "",
                  head.format("units removed", "hidden units kept per layer | by the penalty"), "|---" * 11 + "|"]
        for c in sorted(units, key=lambda c: (c["target"], c["method"])):
            lines.append(_row(c, f"{c['target']:.0%}", " / ".join(map(str, c["hidden_sizes"])) + " | " + _penalty(c)))
        lines.append("")
    weights = [c for c in cells.values() if c["study"] == "unstructured"]
    if weights:
        lines += ["## Unstructured", "", head.format("target, allocation", "by the penalty"), "|---" * 10 + "|"]
        for c in sorted(weights, key=lambda c: (c["allocation"], c["method"])):
            lines.append(_row(c, f"{c['target']:.0%} {c['allocation']}", _penalty(c)))
        lines.append("")
    for c in cells.values():
        if c["study"] == "timing":
            lines += [f"## Wall time per training step ({c['steps']} steps, all in the ramp, {c['reps']} interleaved "
                      "repetitions, median)", "", "| configuration | s/step |", "|---|---|"]
            lines += [f"| {k} | {v:.3f} |" for k, v in c["median_seconds_per_step"].items()]
            lines += [""] + [f"- {k}: {v:.2f}x" for k, v in c["ratio"].items()] + [""]
    return "\n".join(lines)


def _row(c: dict[str, Any], first: str, last: str) -> str:
    return (f"| {first} | {c['method']} | {_fmt(c['test_score'])} | {_fmt(c.get('test_perplexity'), '.2f')} | "
            f"{_fmt(c['val_score'])} | {c['params']['total']:,} ({c['params']['nonzero']:,}) | {c['bytes']:,} | "
            f"{c['latency_ms']:.1f} ({c['latency_ratio']:.2f}) | {c['seconds_per_step']:.3f} | {last} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="pydoc-char")
    p.add_argument("--studies", nargs="+", default=list(STUDIES), choices=STUDIES)
    p.add_argument("--steps", type=int, default=200, help="fine-tuning steps of every run (the ramp: the first half)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--select", default="score", choices=("score", "nll"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unit-targets", type=float, nargs="+", default=[0.5, 0.75])
    p.add_argument("--unit-methods", nargs="+", default=["magnitude", "iss", "group-norm"],
                   choices=("magnitude", "iss", "group-norm"))
    p.add_argument("--target", type=float, default=0.9, help="unstructured target sparsity")
    p.add_argument("--allocations", nargs="+", default=["lamp", "erk"])
    p.add_argument("--gl-strengths", type=float, nargs="+", default=[0.2, 0.5], help="group-Lasso strengths (ISS)")
    p.add_argument("--removals", nargs="+", default=["schedule"], choices=("schedule", "penalty"),
                   help="ISS runs: units leave by the cubic schedule, or only once the penalty zeroed them")
    p.add_argument("--gl-schedule", default="ramp", choices=("ramp", "constant"), help="ISS strength over the ramp")
    p.add_argument("--l1-strengths", type=float, nargs="+", default=[0.5], help="L1 strengths (the timing study "
                   "uses the last of each)")
    p.add_argument("--scopes", nargs="+", default=["all"], choices=("all", "candidates"),
                   help="penalty scopes of the iss and l1 runs")
    p.add_argument("--timing-steps", type=int, default=10)
    p.add_argument("--timing-reps", type=int, default=3)
    p.add_argument("--latency-reps", type=int, default=20)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "learned_sparsity"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    words = ["python", "benchmarks/learned_sparsity.py", *(sys.argv[1:] if argv is None else argv)]
    meta = run_meta(words, ROOT, prog="learned_sparsity")
    args.commit, args.command = meta["git_commit"], meta["command"]
    from prune_env.task import split_score
    from prune_env.tasks import resolve_task

    task = resolve_task(args.task, seed=0, progress=False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cells.jsonl"
    cells = _done(path)
    runs_path = out / "runs.jsonl"
    if not runs_path.exists() and (out / "results.json").exists():  # a folder from before runs.jsonl
        append_jsonl(runs_path, json.loads((out / "results.json").read_text())["meta"])
    append_jsonl(runs_path, meta)
    test, extras = split_score(task.test(task.model), "test")
    dense = {"test_score": test, **{f"test_{k}": v for k, v in extras.items()}, "params": _params(task.model),
             "bytes": _bytes(task.model)}
    t0 = time.perf_counter()
    for study in args.studies:
        {"units": _units, "unstructured": _unstructured, "timing": _timing}[study](args, task, cells, path)
    meta["wall_time_s"] = round(time.perf_counter() - t0, 1)
    write_json(out / "results.json", {"meta": meta, "settings": vars(args), "dense": dense,
                                      "cells": list(cells.values())})
    runs = [json.loads(line) for line in runs_path.read_text().splitlines() if line.strip()]
    runs[-1] = meta
    write_text(out / "results.md", _markdown(runs, args, dense, cells) + "\n")
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
