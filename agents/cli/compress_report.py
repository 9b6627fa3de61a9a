"""The report of ``prune-rnn compress``: dense, one-shot and compressed models side by side (``report.md``,
``report.png``), every number recomputed from the models and files it names, never read from a stage's record."""

from __future__ import annotations

import copy
import io
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class ReportError(ValueError):
    """The files a report names do not hold what the run compressed."""


def scores(task: Any, model: nn.Module) -> dict[str, Any]:
    """Validation and test score (plus perplexity / other extras) of ``model``."""
    from prune_env.task import split_score

    val, val_extra = split_score(task.evaluate(model))
    row: dict[str, Any] = {"val_score": val}
    if task.test is not None:
        test, test_extra = split_score(task.test(model), "test")
        row["test_score"] = test
        row.update({f"test_{k}": v for k, v in test_extra.items()})
    row.update({f"val_{k}": v for k, v in val_extra.items()})
    return row


def build_report(task: Any, env: Any, out: Path, settings: dict[str, Any], search: dict[str, Any],
                 finetune: dict[str, Any], model_file: str, reps: int, oneshot: nn.Module | None = None,
                 weights_only: bool = False) -> dict[str, Any]:
    """The report, every number recomputed from what it names: the dense model, the one-shot model of the search's
    allocation (``oneshot``, default ``env.pruned_model(allocation)``: scored now, not read from ``search.json``)
    and the exported file (loaded back, scored, its bytes read from the disk).

    :raises ReportError: when the exported file is less sparse than the one-shot model of the allocation (not the
        model this run compressed).
    """
    from prune_env.compression.export import export, load

    dense = task.model
    oneshot = env.pruned_model(search["allocation"]) if oneshot is None else oneshot
    if weights_only:  # the tensors only, loaded into a copy of the user's model (never the model itself)
        final = load(out / model_file, model=copy.deepcopy(dense))
    else:
        final = load(out / model_file, classes=classes_of(dense))
    want, got = sparsity(oneshot, dense), sparsity(final, dense)
    if got < want - 1e-9:
        raise ReportError(f"{model_file} is at sparsity {got:.4f}, below the {want:.4f} of the run's allocation "
                          f"(target {settings['target_sparsity']}): it is not the model this run compressed")
    with tempfile.TemporaryDirectory() as tmp:
        oneshot_bytes = export(oneshot, Path(tmp) / "oneshot.prnn", weights_only=weights_only)
    buf = io.BytesIO()
    torch.save(dense.state_dict(), buf)
    dense_bytes = len(buf.getvalue())
    times = latency(task, {"dense": dense, "final": final}, reps)
    rows = {
        "dense": {**scores(task, dense), "bytes": dense_bytes, "params": params(dense), "sparsity": 0.0,
                  "latency_ms": times.get("dense")},
        "one_shot": {**scores(task, oneshot), "bytes": oneshot_bytes, "params": params(oneshot),
                     "sparsity": want, "latency_ms": None},
        "final": {**scores(task, final), "bytes": (out / model_file).stat().st_size, "params": params(final),
                  "sparsity": got, "latency_ms": times.get("final")},
    }
    from prune_env.pruning.coverage import whole_model_sparsity

    for r, m in zip(rows.values(), (dense, oneshot, final)):
        r["model_sparsity"] = whole_model_sparsity(m, dense)  # every matrix, pruned or not
        r["bytes_ratio"] = r["bytes"] / dense_bytes
        r["latency_ratio"] = None if r["latency_ms"] is None or times.get("dense") is None else \
            r["latency_ms"] / times["dense"]
    load_hint = ("prune_env.load(path, model=YourModel(...)): the file holds the tensors only (weights-only export)"
                 if weights_only else "prune_env.load(path, classes=[" + ", ".join(
                     c.__qualname__ for c in classes_of(dense) if not c.__module__.startswith("torch.")) + "])")
    return {"settings": settings, "task": task.name, "rows": rows, "allocation": search["allocation"],
            "load": load_hint,
            "search": {k: search.get(k) for k in ("agent", "max_evals", "evals", "wall_time_s")},
            "finetune": {k: finetune.get(k) for k in ("steps", "from", "masks_kept", "best_step", "end", "val_score",
                                                      "wall_time_s")},
            "operator": operator_record(settings, search),
            "latency": {"input": times.get("input"), "reps": reps, "threads": torch.get_num_threads()},
            "hidden_units": {n: [int(m - k), int(m)] for n, m, k in zip(env.layer_names, env.numels,
                                                                        search["counts"])}
            if env.granularity == "hidden_unit" else None}


#: compress's operator settings and their defaults.
OPERATOR_DEFAULTS = {"operator": "magnitude", "reconstruct": None, "sequential": False, "finetune_from": "dense"}


def operator_record(settings: dict[str, Any], search: dict[str, Any]) -> dict[str, Any]:
    """The run's operator settings (a default where the settings omit it), the defaults, and the search env's
    operator record (its calibration digest included)."""
    return {**{k: settings.get(k, v) for k, v in OPERATOR_DEFAULTS.items()}, "defaults": dict(OPERATOR_DEFAULTS),
            "env": search.get("operator")}


def operator_line(op: dict[str, Any]) -> str:
    """One sentence on the operator and where fine-tuning started, saying which settings are the defaults."""
    rec = {None: "no reconstruction", "obs": "OBS least-squares reconstruction (SparseGPT)"}.get(op["reconstruct"],
                                                                                               op["reconstruct"])
    seq = ", layer after layer on the pruned model's inputs" if op["sequential"] else ""
    start = {"dense": "pruned gradually from the dense model while fine-tuning",
             "oneshot": "fine-tuned from the one-shot model with its masks fixed"}[op["finetune_from"]]
    changed = [k for k, v in OPERATOR_DEFAULTS.items() if op[k] != v]
    which = "the defaults" if not changed else "defaults: magnitude, no reconstruction, gradual from the dense model"
    return f"Operator: `{op['operator']}` ranking, {rec}{seq}; {start} ({which})."


def classes_of(model: nn.Module) -> list[type]:
    """The module classes ``model`` is built of: those :func:`~prune_env.compression.export.load` may rebuild."""
    return sorted({type(m) for m in model.modules()}, key=lambda c: c.__qualname__)


def params(model: nn.Module) -> dict[str, int]:
    """Total and non-zero parameter and buffer entries (shared tensors counted once)."""
    seen, total, nonzero = set(), 0, 0
    for p in list(model.parameters()) + list(model.buffers()):
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        nonzero += int(torch.count_nonzero(p))
    return {"total": total, "nonzero": nonzero}


def sparsity(model: nn.Module, dense: nn.Module) -> float:
    """Zero (or removed, for ``hidden_unit``) prunable weights over the dense model's prunable weights."""
    from prune_env.pruning.layers import find_prunable_layers, get_param

    kept = sum(int(torch.count_nonzero(get_param(model, la))) for la in find_prunable_layers(model))
    return 1.0 - kept / sum(la.numel for la in find_prunable_layers(dense))


@torch.no_grad()
def latency(task: Any, models: dict[str, nn.Module], reps: int) -> dict[str, Any]:
    """Median CPU milliseconds of one forward pass on (up to 64 sequences of) the validation batch, the models
    timed alternately in one process so that machine noise hits both alike."""
    if task.eval_batch is None:
        return {}
    x = task.eval_batch[0][:64]
    cpu = {k: m.cpu().eval() for k, m in models.items()}
    for m in cpu.values():  # warm-up
        m(x)
    times: dict[str, list[float]] = {k: [] for k in cpu}
    for _ in range(reps):
        for k, m in cpu.items():
            t0 = time.perf_counter()
            m(x)
            times[k].append(time.perf_counter() - t0)
    return {**{k: 1e3 * statistics.median(v) for k, v in times.items()}, "input": list(x.shape)}


def fmt(x: Any, spec: str = ".4f") -> str:
    """``x`` formatted, ``-`` for a missing or NaN value."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def write_report(out: Path, report: dict[str, Any]) -> None:
    """``report.md``: the three models side by side, the allocation and the provenance."""
    from agents.core.results import provenance, write_text

    s, rows = report["settings"], report["rows"]
    ppl = any("test_perplexity" in r for r in rows.values())
    head = ["model", "test score"] + (["test ppl"] if ppl else []) + \
        ["val score", "sparsity", "model sparsity", "bytes on disk", "x dense", "nonzero params", "CPU latency ms",
         "x dense"]
    width = f"{s['bits']}-bit" if s["bits"] else "float32"
    lines = [f"# Compressed {report['task']}", "",
             f"Target sparsity {s['target_sparsity']}, {s['granularity']}, "
             f"{width} values; allocation by `{s['agent']}` "
             f"({report['search']['evals']} evaluation(s)); {s['steps']} fine-tuning steps"
             f"{', cosine learning-rate decay after the ramp' if s.get('lr_schedule') == 'cosine' else ''} "
             f"(best validation {'NLL ' if s.get('select') == 'nll' else ''}checkpoint at step "
             f"{report['finetune']['best_step']}).", "",
             *([operator_line(report["operator"]), ""] if report.get("operator") else []),
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    names = {"dense": "dense", "one_shot": "one-shot (no fine-tuning, float32)", "final": "compressed (exported file)"}
    for key, r in rows.items():
        cells = [names[key], fmt(r.get("test_score"))] + ([fmt(r.get("test_perplexity"), ".2f")] if ppl else []) + \
            [fmt(r["val_score"]), fmt(r["sparsity"], ".3f"), fmt(r.get("model_sparsity"), ".3f"), str(r["bytes"]),
             fmt(r["bytes_ratio"], ".3f"), str(r["params"]["nonzero"]), fmt(r["latency_ms"], ".2f"),
             fmt(r["latency_ratio"], ".3f")]
        lines.append("| " + " | ".join(cells) + " |")
    lat = report["latency"]
    lines += ["", "Bytes on disk: dense is `torch.save(state_dict)`; the others are `prune_env.compression.export` "
              "files. "
              f"Latency: median of {lat['reps']} forward passes on a {'x'.join(map(str, lat['input'] or []))} "
              f"validation batch, {lat['threads']} thread(s), dense and compressed timed alternately (unstructured "
              "sparsity keeps dense kernels, so only `hidden_unit` is faster). The compressed row is scored from "
              "the exported file loaded back with `prune_env.load`. Sparsity is over the prunable weights, model "
              "sparsity over every weight matrix of the model.", "",
              "Per-layer sparsity: " + ", ".join(f"`{k}` {v:.3f}" for k, v in report["allocation"].items()), "",
              *([f"Load the file with `{report['load']}`.", ""] if report.get("load") else []),
              *([("Hidden units kept per layer (of): " + ", ".join(f"`{k}` {a} ({b})" for k, (a, b) in
                 report["hidden_units"].items())), ""] if report.get("hidden_units") else []),
              *([f"Learned sparsity: {s.get('regularizer') or ''} {s.get('criterion') or ''}".rstrip(), ""]
                if s.get("regularizer") or s.get("criterion") else []),
              provenance(report["meta"], threads=False), ""]
    write_text(out / "report.md", "\n".join(lines))


def plot(out: Path, report: dict[str, Any], finetune: dict[str, Any]) -> None:
    """``report.png``: the fine-tuning curve, and bytes on disk per model (a convenience: no plot without
    matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are a convenience
        return
    from agents.core.results import save_figure

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    if finetune["curve"]:
        steps, vals = zip(*finetune["curve"])
        a.plot(steps, vals, marker="o", label="validation score")
    a.axhline(report["rows"]["dense"]["val_score"], color="gray", ls="--", label="dense")
    a.axvline(finetune["end"], color="k", ls=":", label="end of pruning ramp")
    a.set_xlabel("fine-tuning step")
    a.set_title("gradual pruning")
    a.legend(fontsize=8)
    keys = list(report["rows"])
    b.bar(keys, [report["rows"][k]["bytes_ratio"] for k in keys], color=["gray", "tab:orange", "tab:green"])
    for i, k in enumerate(keys):
        b.text(i, report["rows"][k]["bytes_ratio"], fmt(report["rows"][k].get("test_score"), ".3f"),
               ha="center", va="bottom", fontsize=8)
    b.set_ylabel("bytes on disk / dense")
    b.set_title("size (labels: test score)")
    fig.tight_layout()
    save_figure(fig, out / "report.png")


__all__ = ["OPERATOR_DEFAULTS", "ReportError", "build_report", "classes_of", "fmt", "latency", "operator_line",
           "operator_record", "params", "plot", "scores", "sparsity", "write_report"]


def subsample(values: list[float], n: int) -> list[list[float]]:
    """At most ``n`` evenly spaced ``[step, value]`` pairs of a curve (steps counted from 1), for the report."""
    if not values:
        return []
    idx = np.unique(np.linspace(0, len(values) - 1, min(n, len(values))).round().astype(int))
    return [[int(i) + 1, float(values[i])] for i in idx]
