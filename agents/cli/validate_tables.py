"""What a reader of a bench sees, recomputed from its rows: ``prune-rnn validate`` fails on any difference.

The rows of ``results.json`` are the record; everything else a reader looks at is derived from them and checked here:

- every row: ``len(history) == evals``, ``evals`` within the row's evaluation cap, the last best-so-far score equal
  to the row's validation score, and no (target, agent, seed) cell twice;
- the ``summary`` table (:func:`agents.core.results.summarize` of the rows): the same (agent, target) groups, each
  with the same seeds count, means, standard deviations and mean allocation;
- ``results.csv``: one line per row, each cell equal to the row's value;
- the row count: a run marked complete holds exactly the cells its arguments name (targets x agents x seeds, the
  deterministic agents once), none missing and none extra.

Each problem names the cell (``summary (random @ 0.5)``, ``results.csv line 3 (lamp @ 0.9, seed 0)``, ...).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: How far a recomputed number may be from the filed one (JSON keeps floats exactly; this absorbs the last bit).
REL = 1e-9


def check_tables(run_dir: str | Path, data: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every difference between what ``run_dir`` shows and what its rows give (see the module docstring)."""
    problems = _row_problems(rows)
    if isinstance(data, Mapping) and "runs" in data:  # a bench (a train's result.json has one row, no table)
        problems += _summary_problems(data.get("summary"), rows)
        problems += _csv_problems(Path(run_dir) / "results.csv", rows)
        problems += _count_problems(data.get("meta"), rows)
    return problems


def cell_label(row: Mapping[str, Any]) -> str:
    """``lamp @ 0.9, seed 0``."""
    t = row.get("target_sparsity")
    return f"{row.get('agent')} @ {t:g}, seed {row.get('seed')}" if _is_num(t) else \
        f"{row.get('agent')}, seed {row.get('seed')}"


# ------------------------------------------------------------------------------------------------ rows
def _row_problems(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    from agents.cli.common import row_max_evals

    out, seen = [], {}
    for i, r in enumerate(rows):
        where = f"row {i} ({cell_label(r)})"
        cell = (json.dumps(r.get("target_sparsity")), str(r.get("agent")), json.dumps(r.get("seed")))
        if cell in seen:
            out.append(f"{where}: the same cell as row {seen[cell]}")
        seen.setdefault(cell, i)
        history, evals, cap = r.get("history"), r.get("evals"), row_max_evals(r)
        if history is None and evals is None:
            continue
        if not isinstance(history, list) or not _is_int(evals):
            out.append(f"{where}: 'history' must be a list and 'evals' an int")
            continue
        if len(history) != evals:
            out.append(f"{where}: evals {evals} but {len(history)} history entries")
        if _is_int(cap) and evals > cap:
            out.append(f"{where}: evals {evals} exceed the evaluation cap {cap}")
        if history and _is_num(history[-1]) and not _same(history[-1], r.get("val_score")):
            out.append(f"{where}: the last best-so-far score {history[-1]!r} is not the row's val_score "
                       f"{r.get('val_score')!r}")
    return out


# --------------------------------------------------------------------------------------------- summary
def _summary_problems(filed: Any, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    from agents.core.results import summarize

    if filed is None:
        return ["summary: results.json has no summary table"]
    if not isinstance(filed, list) or not all(isinstance(s, Mapping) for s in filed):
        return ["summary: not a list of table rows"]
    try:
        now = summarize([_in_memory(r) for r in rows])
    except (KeyError, TypeError, ValueError) as e:
        return [f"summary: cannot be recomputed from the rows ({type(e).__name__}: {e})"]
    by_now = {(s["agent"], _key(s["target_sparsity"])): s for s in now}
    by_filed = {(s.get("agent") if isinstance(s.get("agent"), str) else _short(s.get("agent")),
                 _key(s.get("target_sparsity"))): s for s in filed}
    out = []
    if len(by_filed) != len(filed):
        out.append("summary: an (agent, target) group is listed twice")
    for key in by_filed.keys() - by_now.keys():
        out.append(f"summary ({key[0]} @ {key[1]}): no row of the run has this agent and target")
    for key in by_now.keys() - by_filed.keys():
        out.append(f"summary ({key[0]} @ {key[1]}): missing, though the rows have it")
    for key in by_now.keys() & by_filed.keys():
        a, b = by_filed[key], by_now[key]
        for field in sorted(set(a) & set(b)):
            if not _equal(a[field], b[field]):
                out.append(f"summary ({key[0]} @ {key[1]}): {field} {_short(a[field])} filed, {_short(b[field])} "
                           "from the rows")
    return out


def _in_memory(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` as the bench held it: NaN where the JSON has ``null`` in the history (no feasible score yet)."""
    out = dict(row)
    if isinstance(out.get("history"), list):
        out["history"] = [math.nan if h is None else h for h in out["history"]]
    return out


# ------------------------------------------------------------------------------------------------- csv
def _csv_problems(path: Path, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    if not path.is_file():
        return ["results.csv: missing"]
    try:
        lines = list(csv.DictReader(io.StringIO(path.read_text())))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        return [f"results.csv: unreadable ({type(e).__name__}: {e})"]
    out = []
    if len(lines) != len(rows):
        out.append(f"results.csv: {len(lines)} lines, but results.json has {len(rows)} rows")
    for i, (line, row) in enumerate(zip(lines, rows)):
        for col, text in line.items():
            if col is None or col not in row:
                out.append(f"results.csv line {i + 1} ({cell_label(row)}): column {col!r} is not a field of the row")
                break
            if not _cell_equal(text, row[col]):
                out.append(f"results.csv line {i + 1} ({cell_label(row)}): {col} {text!r}, the row says "
                           f"{_short(row[col])}")
    return out


def _cell_equal(text: Any, value: Any) -> bool:
    """Whether a CSV cell shows ``value`` (as :func:`agents.core.results.write_results` writes it)."""
    if not isinstance(text, str):
        return False
    if value is None:  # NaN in the CSV, null in the JSON
        return text in ("", "nan", "None")
    if isinstance(value, bool):
        return text == str(value)
    if _is_num(value):
        try:
            return _same(float(text), value)
        except ValueError:
            return False
    if isinstance(value, (dict, list)):
        try:
            return _equal(json.loads(text), value)
        except ValueError:
            return False
    return text == str(value)


# ----------------------------------------------------------------------------------------------- count
def _count_problems(meta: Any, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """A run marked complete holds exactly the cells of its arguments."""
    from agents.cli.resume import recorded_args

    if not isinstance(meta, Mapping) or meta.get("complete") is not True:
        return []
    try:
        args = recorded_args(meta)
    except ValueError:
        return []  # no arguments on record (a run not made by `prune-rnn bench`): nothing to count against
    if args is None:
        return []
    from agents.cli.bench_args import bench_cells

    want = [(_key(t), a, s) for t, a, s in bench_cells(args["sparsity"], args["agents"], args["seeds"])]
    have = [(_key(r.get("target_sparsity")), r.get("agent"), r.get("seed")) for r in rows]
    out = []
    missing = [c for c in want if c not in have]
    extra = [c for c in have if c not in want]
    if missing:
        out.append(f"row count: {len(rows)} rows, the run's arguments name {len(want)} cells; missing "
                   + ", ".join(f"{a} @ {t}, seed {s}" for t, a, s in missing[:5]) + (" ..." if len(missing) > 5
                                                                                     else ""))
    if extra:
        out.append("row count: rows of cells the run's arguments do not name: "
                   + ", ".join(f"{a} @ {t}, seed {s}" for t, a, s in extra[:5]) + (" ..." if len(extra) > 5 else ""))
    return out


# ------------------------------------------------------------------------------------------------ util
def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _key(t: Any) -> str:
    return f"{t:g}" if _is_num(t) else repr(t)


def _same(a: Any, b: Any) -> bool:
    """Numbers equal to the last bit or so; NaN (or ``None``, JSON's NaN) equals NaN."""
    na = a is None or (_is_num(a) and math.isnan(a))
    nb = b is None or (_is_num(b) and math.isnan(b))
    if na or nb:
        return na and nb
    if not (_is_num(a) and _is_num(b)):
        return False
    return math.isclose(a, b, rel_tol=REL, abs_tol=1e-12)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if a is None or b is None or _is_num(a) or _is_num(b):
        return _same(a, b)
    return a == b


def _short(x: Any) -> str:
    text = json.dumps(x, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = ["check_tables", "cell_label"]
