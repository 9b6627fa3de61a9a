"""What a run leaves behind: its metadata (taken when the run starts), the statistics over seeds, the files.

Used by ``prune-rnn`` (:mod:`agents.cli.main`) and, for the metadata, by every script in ``benchmarks/`` (through
``benchmarks/_meta.py``), so that all filed results describe their provenance the same way:

- :func:`run_meta` records the command, the git commit, whether ``prune_env/``, ``agents/`` or ``benchmarks/``
  held uncommitted changes (``git_dirty``), the start time and the machine. Call it when the run *starts*: the
  code that ran is the code checked out then, not when the results are written. A dirty tree prints a warning on
  stderr, and :func:`provenance` (the line a Markdown result opens with) marks it **uncommitted changes**.
- :func:`summarize` turns result rows into one row per (agent, target): mean and standard deviation over seeds
  (population std, ``ddof=0``) and the evaluations needed to beat global magnitude.
- ``write_*`` and :func:`save_figure` write through a temporary file and a rename: never a half-written file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from prune_env.io import atomic_write, atomic_write_with

#: The git checkout this package sits in; ``None`` where it is not one (an installed wheel, even inside some other
#: repository, records no commit rather than that repository's).
REPO: Path | None = Path(__file__).resolve().parents[2]
if not (REPO / ".git").exists():
    REPO = None
#: Where code that changes results lives, relative to the repository root: a change here makes a run dirty.
CODE_PATHS = ("prune_env", "agents", "benchmarks")
#: Filed results are outputs, not code: rewriting one does not make the next run dirty.
NOT_CODE = ("benchmarks/results",)
#: The note a Markdown result carries when its run started from a dirty tree.
DIRTY_NOTE = "**uncommitted changes**"


# ------------------------------------------------------------------------------------------------ run meta
def git_state(root: str | Path | None = REPO, paths: Sequence[str] = CODE_PATHS,
              exclude: Sequence[str] = NOT_CODE) -> tuple[str | None, bool | None]:
    """The commit checked out at ``root`` and whether ``paths`` hold uncommitted changes.

    Dirty means ``git status --porcelain`` lists something under ``paths`` (relative to the repository root,
    wherever ``root`` is inside it): modified, staged, deleted or untracked files, ignored ones excepted.

    :param root: a directory inside the repository.
    :param paths: pathspecs relative to the repository root.
    :param exclude: pathspecs under ``paths`` that do not count.
    :returns: ``(commit, dirty)``; ``(None, None)`` where ``root`` is not in a git checkout or git is missing.
    """
    if root is None:
        return None, None
    try:
        top = _git(root, "rev-parse", "--show-toplevel")
        commit = _git(top, "rev-parse", "HEAD")
        status = _git(top, "status", "--porcelain", "--", *paths, *(f":(exclude){p}" for p in exclude))
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, bool(status)


def _git(cwd: str | Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30,
                          check=True).stdout.strip()


def cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what :func:`platform.processor` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info(gpu: bool = False) -> dict[str, Any]:
    """Host, platform, CPU model, core count, torch threads and the 1-minute load average, now.

    :param gpu: also name the CUDA device where there is one (this initialises CUDA in this process).
    """
    import torch

    info: dict[str, Any] = {"node": platform.node(), "platform": platform.platform(), "cpu": cpu_model(),
                            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if hasattr(os, "getloadavg"):
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    if gpu and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def run_meta(command: str | Sequence[str], root: str | Path | None = REPO, *, warn: bool = True,
             prog: str = "prune-rnn", gpu: bool = False) -> dict[str, Any]:
    """The provenance of a run, taken when it starts: command, commit, dirty flag, start time, machine, versions.

    :param command: the command line (a string, or its words).
    :param root: a directory inside the repository whose commit the run uses.
    :param warn: print :func:`warn_if_dirty`'s warning now (else call it when the run is under way).
    :param prog: names the warning's sender.
    :param gpu: also name the CUDA device (see :func:`machine_info`).
    :returns: ``command``, ``git_commit`` (``None`` outside a checkout), ``git_dirty`` (``True`` if
        ``prune_env/``, ``agents/`` or ``benchmarks/`` held uncommitted changes; ``None`` outside a checkout),
        ``started`` (ISO 8601, local time with offset), ``machine``, ``python``, ``torch``.
    """
    import torch

    commit, dirty = git_state(root)
    meta = {"command": command if isinstance(command, str) else shlex.join(command), "git_commit": commit,
            "git_dirty": dirty, "started": datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine_info(gpu), "python": platform.python_version(), "torch": torch.__version__}
    if warn:
        warn_if_dirty(meta, prog)
    return meta


def warn_if_dirty(meta: dict[str, Any], prog: str = "prune-rnn") -> bool:
    """Print a loud warning on stderr if ``meta`` comes from a dirty tree; returns whether it did."""
    if not is_dirty(meta):
        return False
    print(f"{prog}: WARNING: UNCOMMITTED CHANGES in {', '.join(p + '/' for p in CODE_PATHS)} (git status "
          f"--porcelain): these results do not come from commit {str(meta.get('git_commit'))[:10]} alone; they are "
          'recorded with "git_dirty": true. Commit first to file them.', file=sys.stderr, flush=True)
    return True


def is_dirty(meta: dict[str, Any]) -> bool:
    """Whether ``meta`` records a dirty tree (also the ``-dirty``/``+dirty`` commit suffix of older results)."""
    return bool(meta.get("git_dirty")) or str(meta.get("git_commit") or "").endswith(("-dirty", "+dirty"))


def provenance(meta: dict[str, Any], threads: bool = True) -> str:
    """One Markdown line: the command, the commit (with :data:`DIRTY_NOTE` if dirty), start time, machine.

    Reads the metadata of :func:`run_meta` and, as far as they go, the older formats of filed results.

    :param threads: name torch's thread count at the start (``False`` where the run sets its own per part).
    """
    commit = str(meta.get("git_commit") or "unknown").removesuffix("-dirty").removesuffix("+dirty")
    parts = [f"`{meta.get('command', '?')}` at commit {commit[:10]}"
             + (f" with {DIRTY_NOTE} (results not reproducible from the commit alone)" if is_dirty(meta) else "")]
    if "git_dirty" in meta:  # run_meta's format: taken at the start
        parts.append(f"started {meta.get('started')}")
    elif meta.get("started") or meta.get("date"):  # older formats took the time when the results were written
        parts.append(f"recorded {meta.get('started') or meta.get('date')}")
    m = meta.get("machine")
    if isinstance(m, dict):
        where = f"{m.get('cpu') or 'CPU'} x {m.get('cpus', '?')} ({m.get('platform', '?')})"
        if m.get("gpu"):
            where += f", {m['gpu']}"
        parts.append(where)
        threads = m.get("torch_threads", meta.get("torch_threads")) if threads else None
        parts.append(f"torch {meta.get('torch', '?')}" + (f", {threads} thread(s)" if threads else ""))
        load = m.get("load_average_1m", meta.get("load_average_1m_at_start"))
        if load is not None:
            parts.append(f"1-min load {load:.1f} at start")
    else:
        parts += [str(m), f"torch {meta.get('torch', '?')}"]
    if meta.get("python"):
        parts.append(f"python {meta['python']}")
    return ", ".join(parts) + "."


# ------------------------------------------------------------------------------------------------ statistics
def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (agent, target), in the order the rows first name them.

    ``*_mean``/``*_std`` are the mean and the population standard deviation (``ddof=0``) over the seeds (the
    README's "±"); ``evals_to_beat_global`` is the median over seeds of the first evaluation whose best-so-far
    validation score exceeds global magnitude's (mean) validation score at the same target, ``None`` if some
    seed never did or global magnitude was not run.
    """
    import numpy as np

    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["agent"], r["target_sparsity"]), []).append(r)
    global_val = {t: float(np.mean([r["val_score"] for r in g])) for (a, t), g in groups.items() if a == "global"}
    out = []
    for (agent, target), g in groups.items():
        def stat(key: str, rows_: list[dict[str, Any]] = g) -> tuple[float, float]:
            v = np.array([r[key] for r in rows_], dtype=float)
            return float(v.mean()), float(v.std(ddof=0))

        to_beat = None
        if target in global_val and agent != "global":
            firsts = [next((i + 1 for i, h in enumerate(r["history"]) if h > global_val[target]), None) for r in g]
            hits = [f for f in firsts if f is not None]
            to_beat = float(np.median(hits)) if len(hits) == len(firsts) else None
        mean_alloc = {k: float(np.mean([r["allocation"][k] for r in g])) for k in g[0]["allocation"]}
        out.append({"agent": agent, "target_sparsity": target, "seeds": len(g),
                    "test_mean": stat("test_score")[0], "test_std": stat("test_score")[1],
                    "val_mean": stat("val_score")[0], "val_std": stat("val_score")[1],
                    "achieved_sparsity": stat("achieved_sparsity")[0],
                    **({"model_sparsity": stat("model_sparsity")[0]} if all("model_sparsity" in r for r in g) else {}),
                    "nonzero_params": stat("nonzero_params")[0], "evals": stat("evals")[0],
                    "wall_time_s": stat("wall_time_s")[0], "evals_to_beat_global": to_beat,
                    "allocation": mean_alloc})
    return out


# ------------------------------------------------------------------------------------------------ output
def write_results(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]],
                  summary: list[dict[str, Any]]) -> None:
    """``results.json`` (everything) and ``results.csv`` (one line per run, no history, no replay record)."""
    write_json(out / "results.json", {"meta": meta, "summary": summary, "runs": rows})
    buf = io.StringIO()
    cols = [k for k in rows[0] if k not in ("history", "allocation", "replay")] + ["allocation"]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({**r, "allocation": json.dumps(r["allocation"])})
    write_text(out / "results.csv", buf.getvalue())


def print_summary(summary: list[dict[str, Any]], title: str) -> None:
    """The rich table: one row per agent and sparsity."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("agent", "target", "test (mean ± std)", "val", "sparsity", "nonzero", "evals", "wall s",
                "evals to beat global"):
        table.add_column(col, justify="left" if col == "agent" else "right", no_wrap=col == "agent")
    for s in sorted(summary, key=lambda s: (s["target_sparsity"], -s["test_mean"])):
        beat = "-" if s["evals_to_beat_global"] is None else f"{s['evals_to_beat_global']:.0f}"
        table.add_row(s["agent"], f"{s['target_sparsity']:g}", f"{s['test_mean']:.4f} ± {s['test_std']:.4f}",
                      f"{s['val_mean']:.4f}", f"{s['achieved_sparsity']:.4f}", f"{s['nonzero_params']:.0f}",
                      f"{s['evals']:.0f}", f"{s['wall_time_s']:.1f}", beat)
    console().print(table)


def plot_pareto(path: Path, rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> None:
    """Left: test score vs achieved sparsity per agent (mean ± std over seeds). Right, one panel per target:
    best validation score so far vs evaluations (median over seeds), the sample-efficiency curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    targets = sorted({s["target_sparsity"] for s in summary})
    agents_ = list(dict.fromkeys(s["agent"] for s in summary))
    color = {a: f"C{i % 10}" for i, a in enumerate(agents_)}  # one colour per agent in every panel
    fig, axes = plt.subplots(1, 1 + len(targets), figsize=(5 * (1 + len(targets)), 4), squeeze=False)
    ax = axes[0, 0]
    for a in agents_:
        pts = sorted((s["achieved_sparsity"], s["test_mean"], s["test_std"]) for s in summary if s["agent"] == a)
        xs, ys, es = zip(*pts)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=a, color=color[a])
    ax.set_xlabel("overall sparsity")
    ax.set_ylabel("test score")
    ax.set_title("test score vs sparsity")
    ax.legend(fontsize=8)
    for j, t in enumerate(targets, start=1):
        ax = axes[0, j]
        for a in agents_:
            hs = [np.asarray(r["history"], dtype=float) for r in rows if r["agent"] == a and r["target_sparsity"] == t]
            n = max(len(h) for h in hs)
            padded = np.array([np.pad(h, (0, n - len(h)), mode="edge") for h in hs])
            with warnings.catch_warnings():  # an evaluation where no run has a score yet stays NaN (not drawn)
                warnings.simplefilter("ignore", RuntimeWarning)
                curve = np.nanmedian(padded, axis=0)
            if n == 1:
                ax.axhline(curve[0], linestyle="--", linewidth=1, label=a, color=color[a])
            else:
                ax.plot(np.arange(1, n + 1), curve, label=a, color=color[a])
        ax.set_xscale("log")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("best validation score so far")
        ax.set_title(f"sample efficiency @ {t:g}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def plot_allocations(path: Path, summary: list[dict[str, Any]]) -> None:
    """Per-layer sparsity of each agent's allocation (mean over seeds), one panel per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    targets = sorted({s["target_sparsity"] for s in summary})
    fig, axes = plt.subplots(len(targets), 1, figsize=(10, 3.2 * len(targets)), squeeze=False)
    for ax, t in zip(axes[:, 0], targets):
        group = [s for s in summary if s["target_sparsity"] == t]
        layers = list(group[0]["allocation"])
        width = 0.8 / len(group)
        for k, s in enumerate(group):
            ax.bar(np.arange(len(layers)) + k * width, [s["allocation"][n] for n in layers], width, label=s["agent"])
        ax.set_xticks(np.arange(len(layers)) + 0.4 - width / 2, layers, rotation=20, fontsize=7, ha="right")
        ax.set_ylabel("sparsity")
        ax.set_ylim(0, 1)
        ax.set_title(f"per-layer allocation @ {t:g}")
        ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    save_figure(fig, path)


def console() -> Any:
    """A rich console; wide when writing to a file or pipe, so logs keep one line per table row."""
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=160)


# --------------------------------------------------------------------------------------- atomic writes
def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a temp file and ``os.replace``: never a half-written file."""
    atomic_write(path, text)


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON; NaN and infinities become ``null`` so the file is valid JSON."""
    write_text(path, json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n")


def append_jsonl(path: Path, record: Any) -> None:
    """Append ``record`` as one JSON line and flush it to disk: a run killed later loses nothing already appended,
    and one killed mid-write leaves at most a partial last line."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def save_figure(fig: Any, path: Path) -> None:
    """Write ``fig`` as a PNG atomically, then close it (pyplot keeps every open figure alive)."""
    import matplotlib.pyplot as plt

    try:
        atomic_write_with(path, lambda f: fig.savefig(f, format="png", dpi=120))
    finally:
        plt.close(fig)


def _jsonable(x: Any) -> Any:
    import numpy as np

    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)
