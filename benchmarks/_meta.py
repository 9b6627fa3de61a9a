"""Run metadata and result files for the benchmark scripts: one implementation, the CLI's (:mod:`agents.core.results`).

Every script calls :func:`run_meta` when it starts (after setting its torch threads, which it records) and files its
results with :func:`write_results`, whose Markdown opens with :func:`provenance` (a run from a dirty tree is marked
**uncommitted changes**)::

    from benchmarks._meta import provenance, run_meta, write_results

    result = {"meta": run_meta(), ...}
    ...
    write_results(out, result, "\\n".join(["# title", "", provenance(result["meta"]), ...]))
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

from agents.core.results import DIRTY_NOTE, is_dirty, provenance, write_json, write_text
from agents.core.results import run_meta as _run_meta
from benchmarks import RESULTS, ROOT

__all__ = ["DIRTY_NOTE", "RESULTS", "ROOT", "command_line", "default_out", "is_dirty", "load_task", "named_policies",
           "operator_kwargs", "provenance", "run_meta", "write_results"]

_STARTED: list[float] = []


def command_line(argv: list[str] | None = None) -> list[str]:
    """The words that rerun this process from the repository root: ``python -m benchmarks.<module> ARGS`` for a
    script of this package (``sys.argv[0]`` is its file under ``python -m``), else ``python ARGV``."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]) if argv else Path("python")
    try:
        rel = script.resolve().relative_to(ROOT)
    except (OSError, ValueError):
        rel = None
    if rel is not None and rel.suffix == ".py" and rel.parts[0] == "benchmarks":
        module = ".".join(rel.with_suffix("").parts)
        return ["python", "-m", module, *argv[1:]]
    return ["python", *argv]


def run_meta(argv: list[str] | None = None) -> dict[str, Any]:
    """Command, commit, dirty flag (warned on stderr), start time, machine (with the GPU, if any), versions.

    :param argv: the script and its arguments; default ``sys.argv``.
    """
    _STARTED[:] = [time.perf_counter()]
    words = command_line(argv)
    prog = words[2] if words[1:2] == ["-m"] and len(words) > 2 else Path(words[-1]).name
    return _run_meta(shlex.join(words), ROOT, prog=prog, gpu=True)


def write_results(out: str | Path, result: dict[str, Any], markdown: str, stem: str = "results") -> Path:
    """File ``result`` as ``<out>/<stem>.json`` and ``markdown`` as ``<out>/<stem>.md``, each atomically.

    The wall time since :func:`run_meta` is recorded as ``meta.wall_time_s`` unless the result already holds one.

    :returns: the folder ``out``.
    """
    out = Path(out)
    meta = result.get("meta")
    if isinstance(meta, dict) and "wall_time_s" not in meta and _STARTED:
        meta["wall_time_s"] = round(time.perf_counter() - _STARTED[0], 1)
    write_json(out / f"{stem}.json", result)
    write_text(out / f"{stem}.md", markdown if markdown.endswith("\n") else markdown + "\n")
    return out


def default_out(name: str) -> str:
    """The results folder of benchmark ``name``, relative to the repository root when it lies inside it."""
    return str((RESULTS / name).relative_to(ROOT))


def load_task(spec: str, seed: int = 0) -> Any:
    """The task a benchmark names: a preset, zoo model, corpus directory or alias (seeded, no progress bar), or a
    ``module:function`` factory of the user's (called without arguments, as the CLI does)."""
    from prune_env.tasks import SPEC_ALIASES, resolve_task

    if ":" in spec and spec not in SPEC_ALIASES and not Path(spec).is_dir():
        return resolve_task(spec)
    return resolve_task(spec, seed=seed, progress=False)


def named_policies(parser: Any, specs: list[str]) -> dict[str, Any]:
    """``--policy NAME=PATH`` options -> name -> loaded layer-wise policy; a malformed option is a parser error."""
    from agents.policies.layerwise import load

    policies = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            parser.error(f"--policy: expected NAME=PATH, got {spec!r}")
        policies[name] = load(path)
    return policies


def operator_kwargs(text: str) -> dict[str, Any]:
    """``"criterion:reconstruct"`` as env arguments (``none`` or nothing after the colon: no reconstruction)."""
    criterion, _, rec = text.partition(":")
    return {"criterion": criterion, "reconstruct": None if rec in ("", "none") else rec}
