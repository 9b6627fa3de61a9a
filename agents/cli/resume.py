"""``prune-rnn bench --resume RUN_DIR``: finish a bench with the arguments it recorded, refusing to mix runs.

A bench records its arguments (``meta.args``; for runs of earlier releases they are read back from
``meta.command`` by the bench's own parser, as data) and one **fingerprint** (``meta.fingerprint``,
:func:`run_fingerprint`): the task spec, task seed and name, the dense model's hash, the env settings (mode,
precision, criterion, granularity, quantization, every other setting of the env's config but its device and
target), the evaluation cap, the agents' options and the package versions.

``--resume RUN_DIR`` alone resumes with the recorded arguments. An argument typed again must equal the recorded one
(the error names it), except the lists that name cells: more targets, agents or seeds add cells; fewer are refused
unless ``--drop`` is given, which removes the rows of the cells left out with a warning naming them. Before the
first cell the fingerprint is computed afresh and any difference from the recorded one is refused, naming it;
finished rows are never deleted silently. A ``module:function`` task is imported only when the user types it again
(``--task module:function``): the spec in the file alone is not trusted.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agents.cli.bench_args import CELL_LISTS, RECORDED, add_bench_arguments, bench_cells, defaults, recorded
from agents.cli.common import CLIError, CLIParser, finish_max_evals, is_factory_spec, row_max_evals, warn

#: Version of the fingerprint's layout.
FINGERPRINT_FORMAT = 1
#: Recorded arguments that bench runs of earlier releases may lack (they ran with the default).
LATER = ("criterion", "reconstruct")
#: Env config keys that are not settings of the run (where it ran, what it scored, how it renders).
NOT_SETTINGS = ("task", "task_kwargs", "device", "render_mode", "target_sparsity")


class _Typed(argparse.Namespace):
    """A namespace on which argparse sets only what was typed: it reads every other name as ``None``, so argparse
    sees each destination as present and fills in no default."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # argparse's own bookkeeping (unrecognized arguments)
            raise AttributeError(name)
        return None


def typed_args(words: Sequence[str]) -> dict[str, Any]:
    """The bench arguments the user typed (``words`` after ``bench``), without the defaults; ``--budget`` counts as
    ``max_evals``."""
    p = CLIParser(prog="prune-rnn bench")
    add_bench_arguments(p)
    ns = p.parse_args(list(words), namespace=_Typed())
    typed = dict(vars(ns))
    if "budget" in typed:
        typed.setdefault("max_evals", typed.pop("budget"))
    return typed


def recorded_args(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The arguments a bench recorded: ``meta.args``, else ``meta.command`` parsed by the bench's parser (runs of
    earlier releases); ``None`` when ``meta`` records neither (not a ``prune-rnn bench`` run).

    :raises ValueError: for arguments that are not those of a bench.
    """
    args = meta.get("args")
    if isinstance(args, Mapping):
        missing = [k for k in RECORDED if k not in args]
        if set(missing) - set(LATER):
            raise ValueError(f"meta.args lacks {missing}")
        out = {**defaults(), **{k: args[k] for k in RECORDED if k in args}}  # arguments added since: their defaults
    else:
        cmd = meta.get("command")
        words = shlex.split(cmd) if isinstance(cmd, str) else None
        if not words or "bench" not in words[:3] or not words[0].endswith("prune-rnn"):
            return None
        p = CLIParser(prog="prune-rnn bench")
        add_bench_arguments(p)
        try:
            ns = p.parse_args(words[words.index("bench") + 1:])
            finish_max_evals(ns, warn_deprecated=False)
        except CLIError as e:
            raise ValueError(f"meta.command is not a bench command line ({e})") from None
        out = recorded(ns)
    for k in CELL_LISTS + ("option",):
        if not isinstance(out[k], list):
            raise ValueError(f"meta.args.{k} is not a list")
    return out


def read_results(run_dir: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(meta, rows)`` of a bench's ``results.json``, checked as data.

    :raises CLIError: for a missing or unreadable file, or rows that are not bench rows.
    """
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise CLIError(f"--resume: no results.json in {run_dir} (nothing to resume)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CLIError(f"--resume: {path} is not readable JSON ({e})") from None
    runs = data.get("runs") if isinstance(data, dict) else None
    meta = data.get("meta") if isinstance(data, dict) else None
    if not isinstance(runs, list) or not isinstance(meta, dict):
        raise CLIError(f"--resume: {path} is not a bench results file (no 'runs' list and 'meta')")
    for i, r in enumerate(runs):
        if not (isinstance(r, dict) and isinstance(r.get("target_sparsity"), (int, float))
                and isinstance(r.get("agent"), str) and isinstance(r.get("seed"), int)
                and isinstance(r.get("history"), list)):
            raise CLIError(f"--resume: {path} row {i} is not a bench row (target_sparsity, agent, seed, history)")
        r["history"] = [math.nan if h is None else h for h in r["history"]]  # JSON's null: no feasible score yet
    return meta, runs


def merge_args(args: argparse.Namespace, rec: Mapping[str, Any], typed: Mapping[str, Any],
               drop: bool) -> list[tuple[float, str, int]]:
    """Set on ``args`` every recorded argument the user did not type; refuse a typed one that differs.

    :returns: the recorded cells that the (typed) lists leave out: allowed only with ``drop``.
    :raises CLIError: naming the first argument that differs, or the cells left out without ``drop``.
    """
    for k in RECORDED:
        if k not in typed or (k == "max_evals" and typed[k] is None):
            setattr(args, k, rec[k])
            continue
        if k in CELL_LISTS:
            continue
        if _plain(typed[k]) != _plain(rec[k]):
            flag = "--" + ("option" if k == "option" else k.replace("_", "-"))
            raise CLIError(f"--resume: {flag} {_show(typed[k])} differs from the run's {_show(rec[k])}; a resumed "
                           "bench keeps its arguments (leave it out, or start a new run)")
    old = bench_cells(rec["sparsity"], rec["agents"], rec["seeds"])
    new = set(bench_cells(args.sparsity, args.agents, args.seeds))
    left_out = [c for c in old if c not in new]
    if left_out and not drop:
        lists = [f"--{k}" for k in CELL_LISTS if not set(rec[k]) <= set(getattr(args, k))]
        raise CLIError(f"--resume: {' and '.join(lists) or 'the cells'} leave out {len(left_out)} cell(s) of the run "
                       f"(e.g. {left_out[0][1]} @ {left_out[0][0]:g}, seed {left_out[0][2]}); pass --drop to remove "
                       "their rows")
    return left_out


def check_trusted_task(spec: str, typed: Mapping[str, Any]) -> None:
    """:raises CLIError: when the run's task is a ``module:function`` the user did not type again."""
    if is_factory_spec(spec) and typed.get("task") != spec:
        raise CLIError(f"--resume: the run's task {spec!r} is code named by the results file, and is not imported; "
                       f"if you trust it, name it yourself: --task {spec}")


def run_fingerprint(task: Any, env: Any, args: argparse.Namespace, options: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two benches' rows comparable in one table (see the module docstring). Plain values."""
    from agents.cli.common import plain
    from prune_env.replay import model_hash, package_versions

    settings = {k: v for k, v in env.config.items() if k not in NOT_SETTINGS}
    return plain({"format": FINGERPRINT_FORMAT,
                  "task": {"spec": args.task, "seed": args.task_seed, "name": task.name},
                  "dense_hash": model_hash(task.model), "env": settings, "max_evals": args.max_evals,
                  "options": dict(options), "versions": package_versions()})


def with_env_defaults(fingerprint: Any) -> Any:
    """``fingerprint`` with the env settings it lacks filled in by the env's defaults: a setting added to the env
    after a run was recorded is the default the run used."""
    from agents.cli.common import plain
    from prune_env import PruneRNNEnv

    if not isinstance(fingerprint, Mapping) or not isinstance(fingerprint.get("env"), Mapping):
        return fingerprint
    defaults = plain({k: v for k, v in PruneRNNEnv.default_config().items() if k not in NOT_SETTINGS})
    return {**fingerprint, "env": {**defaults, **fingerprint["env"]}}


def fingerprint_differences(old: Any, new: Mapping[str, Any], where: str = "") -> list[str]:
    """Every field of ``new`` that ``old`` records differently, as ``"env.mode 'joint' recorded, 'sequential'
    now"``."""
    if not isinstance(old, Mapping):
        return [f"{where or 'fingerprint'}: {_show(old)} recorded, {_show(new)} now"]
    out = []
    for k in sorted(set(old) | set(new)):
        name = f"{where}.{k}" if where else str(k)
        a, b = old.get(k), new.get(k)
        if isinstance(b, Mapping) and isinstance(a, Mapping):
            out += fingerprint_differences(a, b, name)
        elif _plain(a) != _plain(b):
            out.append(f"{name} {_show(a)} recorded, {_show(b)} now")
    return out


def check_rows(rows: Sequence[Mapping[str, Any]], task: Any, env: Any, args: argparse.Namespace) -> None:
    """Rows of a run without a fingerprint (earlier releases): each must be of this task, evaluation cap, mode and
    precision, and of this dense model where it records its hash.

    :raises CLIError: naming the first row that is not.
    """
    from prune_env.replay import model_hash

    dense = model_hash(task.model)
    for i, r in enumerate(rows):
        rp = r.get("replay") if isinstance(r.get("replay"), dict) else {}
        checks = (("task", r.get("task"), task.name), ("max_evals", row_max_evals(r), args.max_evals),
                  ("mode", r.get("mode", args.mode), args.mode),
                  ("precision", r.get("precision", args.precision), args.precision),
                  ("dense model hash", rp.get("dense_hash", dense), dense))
        for what, have, want in checks:
            if have != want:
                raise CLIError(f"--resume: row {i} ({r.get('agent')} @ {r.get('target_sparsity')}, seed "
                               f"{r.get('seed')}) has {what} {_show(have)}, this bench {_show(want)}; it is of "
                               "another run")


def finished_cells(rows: Sequence[dict[str, Any]], cells: Sequence[tuple], left_out: Sequence[tuple],
                   run_dir: str) -> dict[tuple, dict[str, Any]]:
    """The finished rows keyed by cell; rows of ``left_out`` cells are dropped with a warning naming them.

    :raises CLIError: for a row of a cell that the run's arguments never named, or two rows of one cell.
    """
    wanted, gone = set(cells), set(left_out)
    out: dict[tuple, dict[str, Any]] = {}
    dropped = []
    for i, r in enumerate(rows):
        cell = (r["target_sparsity"], r["agent"], r["seed"])
        if cell in gone:
            dropped.append(cell)
        elif cell not in wanted:
            raise CLIError(f"--resume: row {i} ({cell[1]} @ {cell[0]:g}, seed {cell[2]}) is not a cell of the run's "
                           "arguments; the results file was edited or is of another run")
        elif cell in out:
            raise CLIError(f"--resume: two rows of the cell {cell[1]} @ {cell[0]:g}, seed {cell[2]}")
        else:
            out[cell] = r
    if dropped:
        warn(f"--drop: removing {len(dropped)} finished row(s) from {run_dir}: "
             + ", ".join(f"{a} @ {t:g} seed {s}" for t, a, s in dropped))
    return out


def _plain(x: Any) -> Any:
    return json.loads(json.dumps(x, sort_keys=True, default=str))


def _show(x: Any) -> str:
    text = json.dumps(x, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = ["FINGERPRINT_FORMAT", "check_rows", "check_trusted_task", "finished_cells", "fingerprint_differences",
           "merge_args", "read_results", "recorded_args", "run_fingerprint", "typed_args", "with_env_defaults"]
