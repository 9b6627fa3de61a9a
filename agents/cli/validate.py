"""``prune-rnn validate RUN_DIR``: re-score every result row of a run and report what no longer matches.

Each row is rebuilt from its ``replay`` record (:mod:`prune_env.replay`): the task once per distinct task (from its
preset, config and seed, or its spec matched against the installed presets, zoo and aliases: nothing the file names is
imported, see :mod:`agents.cli.record_task`), the env with the row's options,
then the row's exact pruned counts are scored one-shot on validation (the env's device and precision) and test (fp32),
as ``prune-rnn`` scored them. A row passes when

- the dense model is the one the row was made with (same :func:`~prune_env.replay.model_hash`, same dense validation
  score): a different dense model is reported as such, since every other difference then follows from it;
- its allocation, achieved sparsity and non-zero count agree with the counts (a hand-edited row does not), and the
  counts meet the row's target;
- the re-scored validation and test scores are within ``tolerance`` of the filed ones.

Rows written before the ``replay`` record existed are validated from *legacy fields*: the task from
``meta.task_metadata`` (preset, config, seed) or the command's ``--task``/``--task-seed``, the env options from the
row or ``meta.command`` (defaults for what the CLI never set), and the counts from the float allocation, rounded as
the env rounds it. Without a hash, the dense model is checked through its dense validation score and, where
``meta.task_metadata`` records them (the presets), its dense metrics (validation and test score, NLL, perplexity):
a finer fingerprint than an accuracy. The report says which rows were validated that way.

What a reader sees is recomputed from the rows too (:mod:`agents.cli.validate_tables`): the summary table, ``evals``
and ``history`` lengths, ``results.csv`` and the row count; any difference fails, naming the cell.

``validate`` writes nothing: a dense model missing from the cache is an error unless ``train_missing`` allows
training (and caching) it. A ``module:function`` task is imported only when the user names it (``--task``), from
``sys.path`` as it is. Exit code: 0 when every row passes, 1 otherwise (2, from the CLI, for bad input).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.cli.record_task import RecordTaskError, build_recorded_task, plan_key, task_plan

#: Keys every row needs, replay record or not.
ROW_KEYS = ("agent", "target_sparsity", "val_score", "test_score", "allocation")
#: Env options the CLI never set before rows recorded them: the env's defaults.
LEGACY_ENV = {"granularity": "unstructured", "criterion": "magnitude", "max_sparsity": 0.98, "quantize": None,
              "finetune_steps": 0}


class ValidateError(ValueError):
    """Bad input: no run directory, no results file, or rows that are not result rows (one line, exit 2)."""


@dataclass
class RowCheck:
    """The outcome of one row."""

    index: int
    label: str
    source: str  # "replay" or "legacy"
    agent: str = ""
    target: str = ""
    seed: str = ""
    filed_val: float | None = None
    filed_test: float | None = None
    val: float | None = None
    test: float | None = None
    problems: list[str] = field(default_factory=list)
    dense_mismatch: bool = False

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def d_val(self) -> float | None:
        return _diff(self.filed_val, self.val)

    @property
    def d_test(self) -> float | None:
        return _diff(self.filed_test, self.test)


@dataclass
class Report:
    """Everything ``validate`` found in one run directory."""

    run_dir: str
    rows: list[RowCheck]
    tolerance: float
    device: str
    notes: list[str] = field(default_factory=list)
    #: differences between what the run shows (summary, CSV, counts) and its rows
    tables: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows) and not self.tables


# ------------------------------------------------------------------------------------------------ loading
def load_rows(run_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(meta, rows)`` of a bench (``results.json``) or train (``result.json``) run directory.

    :raises ValidateError: for a missing directory or file, bad JSON, or rows without the keys of :data:`ROW_KEYS`.
    """
    _, meta, rows = load_results(run_dir)
    return meta, rows


def load_results(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """``(data, meta, rows)``: the whole results file as well (see :func:`load_rows`)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ValidateError(f"validate: run directory not found: {run_dir}")
    path = root / "results.json"
    if not path.is_file():
        path = root / "result.json"
    if not path.is_file():
        raise ValidateError(f"validate: no results.json (bench) or result.json (train) in {run_dir}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValidateError(f"validate: {path} is not readable JSON ({' '.join(str(e).split())})") from None
    rows = data.get("runs") if isinstance(data, dict) else None
    if rows is None and isinstance(data, dict) and isinstance(data.get("result"), dict):
        rows = [data["result"]]
    if not isinstance(rows, list) or not rows:
        raise ValidateError(f"validate: {path} holds no result rows (expected a non-empty 'runs' list)")
    for i, r in enumerate(rows):
        missing = [k for k in ROW_KEYS if not isinstance(r, dict) or k not in r]
        if missing:
            raise ValidateError(f"validate: {path} row {i} lacks {missing}; not a prune-rnn result row")
        problem = _malformed(r)
        if problem:
            raise ValidateError(f"validate: {path} row {i}: {problem}")
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    return data, meta, rows


def _malformed(row: Mapping[str, Any]) -> str | None:
    """What in a row (and its ``replay`` record) is not of the type ``prune-rnn`` writes, or ``None``."""
    def num(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    def mapping(x: Any, value: Any) -> bool:
        return isinstance(x, dict) and all(isinstance(k, str) and value(v) for k, v in x.items())

    if not mapping(row["allocation"], num):
        return "'allocation' is not a {layer: sparsity} mapping"
    for key in ("target_sparsity", "val_score", "test_score", "dense_val"):
        if row.get(key) is not None and not num(row[key]):
            return f"{key!r} is not a number"
    rp = row.get("replay")
    if rp is None:
        return None
    if not isinstance(rp, dict):
        return "'replay' is not a record"
    checks = {"task": lambda x: isinstance(x, dict), "pruned": lambda x: mapping(x, lambda v: isinstance(v, int)),
              "units": lambda x: mapping(x, lambda v: isinstance(v, int)),
              "bits": lambda x: x is None or mapping(x, lambda v: isinstance(v, int)),
              "dense_hash": lambda x: x is None or isinstance(x, str),
              "versions": lambda x: x is None or isinstance(x, dict),
              "target_sparsity": num, "max_sparsity": lambda x: x is None or num(x),
              "finetune_steps": lambda x: x is None or isinstance(x, int),
              **{k: (lambda x: x is None or isinstance(x, (str, bool))) for k in
                 ("mode", "granularity", "criterion", "precision", "quantize", "reconstruct", "device")}}
    for key, ok in checks.items():
        if key in rp and not ok(rp[key]):
            return f"replay.{key} is not of the type prune-rnn records"
    return None


def row_label(i: int, row: Mapping[str, Any]) -> str:
    """``row 3 (reinforce @ 0.8, seed 1)``: how messages name a row."""
    t = row.get("target_sparsity")
    return f"row {i} ({row.get('agent')} @ {t:g}, seed {row.get('seed')})" if isinstance(t, (int, float)) \
        else f"row {i} ({row.get('agent')}, seed {row.get('seed')})"


# ------------------------------------------------------------------------------------------------ plans
@dataclass
class _Plan:
    """How to rebuild one row: its task, env options and counts (``None``: from the allocation, legacy)."""

    source: str
    task_key: tuple
    task_how: dict[str, Any]
    env: dict[str, Any]
    counts: dict[str, int] | None
    bits: dict[str, int] | None
    dense_hash: str | None
    versions: dict[str, Any] | None


def _legacy_command(meta: Mapping[str, Any]) -> argparse.Namespace:
    """The options of ``meta.command`` that rebuild a legacy row's task and env."""
    from agents.cli.common import CLIError, CLIParser

    p = CLIParser(add_help=False)
    p.add_argument("--task", default="digits")
    p.add_argument("--task-seed", type=int, default=0)
    p.add_argument("--mode", default="joint")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--device", default="cpu")
    cmd = meta.get("command")
    try:
        words = shlex.split(cmd) if isinstance(cmd, str) else [str(w) for w in (cmd or [])]
        ns, _ = p.parse_known_args(words)
    except (CLIError, ValueError, TypeError):  # a malformed value, unbalanced quotes, not a list
        raise ValidateError(f"validate: cannot read the options of meta.command {cmd!r}") from None
    ns.has_command = bool(words)
    return ns


def plan_row(row: Mapping[str, Any], meta: Mapping[str, Any], legacy: argparse.Namespace) -> _Plan:
    """What to rebuild for ``row``: from its ``replay`` record, else from legacy fields."""
    rp = row.get("replay")
    if isinstance(rp, dict):
        t = rp.get("task") if isinstance(rp.get("task"), dict) else {}
        how = task_plan(t.get("spec"), t.get("seed"), t.get("preset"), t.get("config"), t.get("metadata_seed"))
        env = {k: rp.get(k) for k in ("target_sparsity", "mode", "granularity", "criterion", "max_sparsity",
                                      "quantize", "finetune_steps", "precision", "reconstruct")}
        return _Plan("replay", plan_key(how), how, env, dict(rp.get("pruned") or {}), rp.get("bits"),
                     rp.get("dense_hash"), rp.get("versions"))
    if not legacy.has_command and not meta.get("task_metadata"):
        raise ValidateError("validate: rows without a 'replay' record need meta.command or meta.task_metadata")
    md = meta.get("task_metadata") if isinstance(meta.get("task_metadata"), dict) else {}
    how = task_plan(legacy.task, legacy.task_seed, md.get("preset"), md.get("config"), md.get("seed"))
    env = {**LEGACY_ENV, "target_sparsity": row.get("target_sparsity"), "mode": row.get("mode", legacy.mode),
           "precision": row.get("precision", legacy.precision)}
    return _Plan("legacy", plan_key(how), how, env, None, None, None, None)


# ------------------------------------------------------------------------------------------------ validation
def validate_run(run_dir: str | Path, tolerance: float = 1e-6, device: str = "cpu", *,
                 trusted_task: str | None = None, train_missing: bool = False) -> Report:
    """Re-score every row of ``run_dir`` and recompute what it shows (see the module docstring); nothing is written
    unless ``train_missing``.

    :param tolerance: the largest |filed - re-scored| accepted for validation and test scores.
    :param device: where the envs score (``"cpu"`` by default, whatever device the run used).
    :param trusted_task: a ``module:function`` the user names: rows with exactly this spec import it.
    :param train_missing: train (and cache) a preset's dense model that the cache lacks, instead of failing.
    :raises ValidateError: for bad input, or a task that cannot be rebuilt here.
    """
    from prune_env import PruneRNNEnv
    from prune_env.replay import model_hash, package_versions

    if not (isinstance(tolerance, (int, float)) and tolerance >= 0 and math.isfinite(tolerance)):
        raise ValidateError(f"validate: --tolerance must be a finite number >= 0, got {tolerance}")
    from agents.cli.validate_tables import check_tables

    data, meta, rows = load_results(run_dir)
    legacy = _legacy_command(meta)
    report = Report(str(run_dir), [], float(tolerance), device, tables=check_tables(run_dir, data, rows))
    try:
        plans = [plan_row(r, meta, legacy) for r in rows]
    except RecordTaskError as e:
        raise ValidateError(f"validate: {e}") from None
    tasks: dict[tuple, Any] = {}
    hashes: dict[tuple, str] = {}
    fingerprints: dict[tuple, str | None] = {}  # legacy rows: how the task's dense metrics differ from the meta's
    envs: dict[tuple, Any] = {}
    now = package_versions()
    seen_versions: set[str] = set()
    for i, (row, plan) in enumerate(zip(rows, plans)):
        check = RowCheck(i, row_label(i, row), plan.source, str(row.get("agent")), _fmt(_num(row["target_sparsity"])),
                         str(row.get("seed", "-")), _num(row["val_score"]), _num(row["test_score"]))
        report.rows.append(check)
        if plan.task_key not in tasks:
            try:
                tasks[plan.task_key] = build_recorded_task(plan.task_how, trusted_spec=trusted_task,
                                                           train_missing=train_missing)
            except RecordTaskError as e:
                raise ValidateError(f"validate: {e}") from None
            hashes[plan.task_key] = model_hash(tasks[plan.task_key].model)
            fingerprints[plan.task_key] = _metadata_difference(meta.get("task_metadata"),
                                                               tasks[plan.task_key].metadata, tolerance)
        task = tasks[plan.task_key]
        if plan.versions:
            diff = {k: (v, now.get(k)) for k, v in plan.versions.items() if now.get(k) != v}
            text = ", ".join(f"{k} {a} filed, {b} now" for k, (a, b) in sorted(diff.items()))
            if text and text not in seen_versions:
                seen_versions.add(text)
                report.notes.append(f"package versions differ from the filed rows': {text}")
        # the dense model
        if plan.dense_hash is not None and plan.dense_hash != hashes[plan.task_key]:
            check.dense_mismatch = True
            check.problems.append(f"dense model differs: hash {plan.dense_hash[:19]}... filed, "
                                  f"{hashes[plan.task_key][:19]}... now")
        elif plan.dense_hash is None and fingerprints[plan.task_key]:
            check.dense_mismatch = True
            check.problems.append(f"dense model differs: {fingerprints[plan.task_key]}")
        env_key = (plan.task_key, json.dumps(plan.env, sort_keys=True), device)
        if env_key not in envs:
            try:
                envs[env_key] = PruneRNNEnv(task, device=device, **plan.env)
            except (ValueError, TypeError) as e:
                envs[env_key] = e
        env = envs[env_key]
        if isinstance(env, Exception):
            check.problems.append(f"cannot rebuild the env with {plan.env}: {' '.join(str(env).split())}")
            continue
        dense_val = _num(row["dense_val"]) if "dense_val" in row else None
        if dense_val is not None and not _close(dense_val, env.dense_score, tolerance):
            if not check.dense_mismatch:
                check.problems.append(f"dense model differs: dense val {dense_val:.6g} filed, "
                                      f"{env.dense_score:.6g} now")
            check.dense_mismatch = True
        # the counts, and whether the row's other fields agree with them
        try:
            counts = _row_counts(env, row, plan)
        except ValueError as e:
            check.problems.append(f"allocation cannot be applied: {' '.join(str(e).split())}")
            continue
        check.problems += _consistency(env, row, counts, plan)
        # the scores
        if plan.env.get("finetune_steps"):
            report.notes.append(f"{check.label}: fine-tuned scores depend on the search's random stream")
        check.val, check.test = _rescore(env, counts, plan.bits)
        for what, d in (("validation", check.d_val), ("test", check.d_test)):
            if d is None or d > tolerance:
                filed, now_ = (check.filed_val, check.val) if what == "validation" else (check.filed_test, check.test)
                check.problems.append(f"{what} score differs by {_fmt(d)} (filed {_fmt(filed)}, re-scored "
                                      f"{_fmt(now_)})")
    filed_devices = sorted({str((r.get("replay") or {}).get("device") or r.get("device") or legacy.device)
                            for r in rows})
    if filed_devices != [device]:
        report.notes.append(f"rows were scored on {', '.join(filed_devices)}, re-scored on {device}: scores may "
                            "differ in the last digits")
    return report


def _metadata_difference(filed: Any, now: Any, tolerance: float) -> str | None:
    """The first dense metric (``dense_val_metrics``, ``dense_test_metrics``: score, NLL, ...) that differs between
    the run's ``meta.task_metadata`` and the rebuilt task's metadata: a fingerprint of the dense model finer than its
    accuracy, for rows without a dense hash. ``None`` when they agree or either side lacks them."""
    if not isinstance(filed, Mapping) or not isinstance(now, Mapping):
        return None
    for key in ("dense_val_metrics", "dense_test_metrics"):
        a, b = filed.get(key), now.get(key)
        if not isinstance(a, Mapping) or not isinstance(b, Mapping):
            continue
        for k in sorted(set(a) & set(b)):
            x, y = _num(a[k]), _num(b[k])
            if x is not None and y is not None and not _close(x, y, tolerance):
                split = "val" if key.startswith("dense_val") else "test"
                return f"dense {split} {k} {x:.6g} filed, {y:.6g} now (meta.task_metadata vs the rebuilt task's)"
    return None


def _rescore(env: Any, counts: Any, bits: Any) -> tuple[float, float]:
    from prune_env.replay import rescore

    return rescore(env, counts, bits)


def _row_counts(env: Any, row: Mapping[str, Any], plan: _Plan) -> Any:
    """The row's counts: the replay record's exact integers, else the float allocation rounded as the env does."""
    from prune_env.replay import counts_of

    if plan.counts is not None:
        return counts_of({"pruned": plan.counts}, env.layer_names)
    return env.counts_for({str(k): float(v) for k, v in row["allocation"].items()})


def _consistency(env: Any, row: Mapping[str, Any], counts: Any, plan: _Plan) -> list[str]:
    """What in the row disagrees with its counts: allocation, achieved sparsity, non-zero count, the budget."""
    from prune_env.pruning import allocation as B
    out = []
    if plan.counts is not None:
        try:
            alloc_counts = env.counts_for({str(k): float(v) for k, v in row["allocation"].items()})
        except ValueError as e:
            return [f"allocation cannot be applied: {' '.join(str(e).split())}"]
        bad = [n for n, a, c in zip(env.layer_names, alloc_counts, counts) if a != c]
        if bad:
            out.append(f"allocation disagrees with the replay counts in {bad}")
        units = {n: int(m) for n, m in zip(env.layer_names, env.numels)}
        rp_units = (row.get("replay") or {}).get("units")
        if isinstance(rp_units, dict) and rp_units != units:
            out.append("the model's layer sizes differ from the replay record's")
    total = int(counts.sum())
    achieved = _num(row.get("achieved_sparsity"))
    if achieved is not None and abs(achieved - total / float(env.numels.sum())) > 1e-9:
        out.append(f"achieved_sparsity {achieved:.6g} disagrees with the counts ({total / env.numels.sum():.6g})")
    model = _num(row.get("model_sparsity"))
    if model is not None and env.granularity == "unstructured" \
            and abs(model - env.coverage.model_sparsity(total)) > 1e-9:
        out.append(f"model_sparsity {model:.6g} disagrees with the counts ({env.coverage.model_sparsity(total):.6g})")
    nonzero = row.get("nonzero_params")
    if isinstance(nonzero, (int, float)) and env.granularity == "unstructured" \
            and int(nonzero) != int(env.total_params - total):
        out.append(f"nonzero_params {nonzero} disagrees with the counts ({int(env.total_params - total)})")
    target = plan.env.get("target_sparsity")
    if isinstance(target, (int, float)) and total != B.target_count(float(target), env.numels):
        out.append(f"the counts prune {total} units, not the {B.target_count(float(target), env.numels)} of "
                   f"target {target:g}")
    return out


def _num(x: Any) -> float | None:
    """A finite float, NaN for ``null``/NaN (no test split), ``None`` for a missing value."""
    if x is None:
        return float("nan")
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _diff(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    if math.isnan(a) and math.isnan(b):
        return 0.0
    return abs(a - b) if not (math.isnan(a) or math.isnan(b)) else math.inf


def _close(a: float, b: float, tol: float) -> bool:
    d = _diff(a, b)
    return d is not None and d <= tol


def _fmt(x: float | None) -> str:
    return "-" if x is None else ("nan" if math.isnan(x) else f"{x:.6g}")


# ------------------------------------------------------------------------------------------------ output
def print_report(report: Report) -> None:
    """The table of rows with |Δval| and |Δtest|, then one line per problem and a summary line."""
    from rich.table import Table

    from agents.core.results import console

    table = Table(title=f"validate {report.run_dir} (tolerance {report.tolerance:g}, {report.device})")
    for col in ("row", "agent", "target", "seed", "from", "val filed", "|Δval|", "test filed", "|Δtest|", "status"):
        table.add_column(col, justify="left" if col in ("agent", "from", "status") else "right")
    for r in report.rows:
        status = "ok" if r.passed else ("DENSE MODEL DIFFERS" if r.dense_mismatch else "MISMATCH")
        table.add_row(str(r.index), r.agent, r.target, r.seed, r.source, _fmt(r.filed_val), _fmt(r.d_val),
                      _fmt(r.filed_test), _fmt(r.d_test), status)
    c = console()
    c.print(table)
    for note in report.notes:
        print(f"note: {note}")
    for r in report.rows:
        for p in r.problems:
            print(f"{r.label}: {p}")
    for p in report.tables:
        print(p)
    failed = [r for r in report.rows if not r.passed]
    legacy = sum(r.source == "legacy" for r in report.rows)
    dense = sum(r.dense_mismatch for r in report.rows)
    print(f"validate: {len(report.rows)} rows, {len(report.rows) - len(failed)} passed, {len(failed)} mismatched"
          + (f" ({dense} with a different dense model)" if dense else "")
          + (f"; {legacy} validated from legacy fields (no replay record)" if legacy else "")
          + (f"; {len(report.tables)} table difference(s)" if report.tables else "")
          + f"; tolerance {report.tolerance:g}: {'PASS' if report.passed else 'FAIL'}")


def add_parser(sub: Any) -> None:
    """Register ``validate`` on the ``prune-rnn`` subparsers."""
    v = sub.add_parser("validate", help="re-score every row of a bench/train run directory; exit 1 on a mismatch")
    v.add_argument("run_dir", metavar="RUN_DIR", help="a run directory holding results.json (or result.json)")
    v.add_argument("--tolerance", type=float, default=1e-6, help="largest |filed - re-scored| val and test score")
    v.add_argument("--device", default="cpu", help="where to re-score (default cpu, whatever the run used)")
    v.add_argument("--task", default=None, metavar="MODULE:FUNCTION", help="import this factory for the rows whose "
                   "task spec it is (a module:function in a results file is never imported on the file's word); "
                   "from sys.path as it is, without the current directory")
    v.add_argument("--train-missing", action="store_true", help="train and cache a preset's dense model that the "
                   "cache lacks (default: write nothing, and fail on a missing model)")
    v.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    """``prune-rnn validate``: 0 when every row re-scores within the tolerance, 1 otherwise."""
    from agents.cli.common import CLIError, check_device

    check_device(args.device)
    try:
        report = validate_run(args.run_dir, args.tolerance, args.device, trusted_task=args.task,
                              train_missing=args.train_missing)
    except ValidateError as e:
        raise CLIError(str(e).removeprefix("validate: ")) from None
    print_report(report)
    return 0 if report.passed else 1


__all__ = ["Report", "RowCheck", "ValidateError", "add_parser", "cmd_validate", "load_rows", "print_report",
           "validate_run"]
