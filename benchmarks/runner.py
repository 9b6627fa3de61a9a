"""The benchmark runner: a declarative config per benchmark, one results folder per config.

``configs/<name>.toml`` says what a benchmark runs; ``python -m benchmarks <name>`` runs it and files what it wrote
under ``results/<name>/``, replacing the previous run (history lives in git). Four kinds:

- ``bench``: an agent table, ``prune-rnn bench`` (through :func:`agents.cli.main.main`) with the config's ``task``,
  ``agents``, ``targets``, ``seeds``, ``max_evals`` and optional ``task_seed``, ``vector_envs``, ``precision``,
  ``mode``, the operator (``criterion``, ``reconstruct``), ``device`` and ``options`` (``AGENT.KEY=VALUE``). Files
  ``results.json``, ``results.csv``, ``pareto.png``, ``allocation.png`` and a ``results.md`` made from the JSON.
- ``compress``: ``prune-rnn compress`` with the config's ``task``, ``target`` and its other keys as flags
  (``lr_schedule = "cosine"`` -> ``--lr-schedule cosine``). Files the run directory's reports (not the model).
- ``script``: ``python -m benchmarks.<script> ARGS`` (or a module of the library, ``module = ...``) in a process of
  its own; ``args`` is a list of words, or a list of such lists run in order. ``{out}`` in an argument is the
  results folder; without it the runner adds ``--out {out}``.
- ``shell``: ``command`` (a list of words) with ``OUT`` set to the results folder.

Every config has a ``description`` (what the benchmark measures) and may set ``threads`` (torch and OpenMP threads
of the run). ``$VAR`` in a task or an argument is expanded; ``PRUNE_RNN_PTB`` defaults to ``../shared/data/ptb``
next to the checkout when that directory exists.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import CONFIGS, RESULTS, ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

KINDS = ("bench", "compress", "script", "shell")
COMMON = {"description", "kind", "threads"}
BENCH_KEYS = {"task", "task_seed", "agents", "targets", "seeds", "max_evals", "vector_envs", "precision", "mode",
              "criterion", "reconstruct", "device", "options"}
BENCH_REQUIRED = {"task", "agents", "targets", "seeds", "max_evals"}
COMPRESS_REQUIRED = {"task", "target"}
SCRIPT_KEYS = {"script", "module", "args", "env"}
#: What a ``bench`` run files (the CLI's run directory holds these and checkpoints).
BENCH_FILES = ("results.json", "results.csv", "pareto.png", "allocation.png")
#: What a ``compress`` run files: its reports and stage records, not the model files.
COMPRESS_SUFFIXES = (".json", ".md", ".png")
#: Where the CLI's run directories go (ignored by git).
RUNS = ROOT / "runs"


class ConfigError(ValueError):
    """A config that cannot be run as written (one line)."""


@dataclass
class Config:
    """One benchmark: its name (the config's file name and its results folder), kind and settings."""

    name: str
    kind: str
    description: str
    settings: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None

    @property
    def out(self) -> Path:
        return RESULTS / self.name


# ------------------------------------------------------------------------------------------------ configs
def names() -> list[str]:
    """Every benchmark, sorted."""
    return sorted(p.stem for p in CONFIGS.glob("*.toml"))


def load_config(name: str) -> Config:
    """Read and check ``configs/<name>.toml``.

    :raises ConfigError: for an unknown name, a missing or unknown key, or a value of the wrong type.
    """
    path = CONFIGS / f"{name}.toml"
    if not isinstance(name, str) or "/" in name or not path.is_file():
        raise ConfigError(f"unknown benchmark {name!r}; `python -m benchmarks --list` names them")
    if tomllib is None:
        raise ConfigError("reading the configs needs Python >= 3.11 or the tomli package")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path.name}: {e}") from None
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{path.name}: `kind` must be one of {KINDS}, got {kind!r}")
    if not isinstance(raw.get("description"), str) or not raw["description"].strip():
        raise ConfigError(f"{path.name}: `description` (what the benchmark measures) is required")
    threads = raw.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"{path.name}: `threads` must be a positive integer, got {threads!r}")
    settings = {k: v for k, v in raw.items() if k not in COMMON}
    _check(path.name, kind, settings)
    return Config(name, kind, raw["description"].strip(), settings, threads)


def _check(where: str, kind: str, s: dict[str, Any]) -> None:
    if kind == "bench":
        _require(where, s, BENCH_REQUIRED)
        _known(where, s, BENCH_KEYS)
        for key in ("agents", "targets", "seeds"):
            if not isinstance(s[key], list) or not s[key]:
                raise ConfigError(f"{where}: `{key}` must be a non-empty list")
        if not isinstance(s["max_evals"], int) or s["max_evals"] < 1:
            raise ConfigError(f"{where}: `max_evals` must be a positive integer")
    elif kind == "compress":
        _require(where, s, COMPRESS_REQUIRED)
    elif kind == "script":
        _known(where, s, SCRIPT_KEYS)
        if ("script" in s) == ("module" in s):
            raise ConfigError(f"{where}: give exactly one of `script` (under benchmarks/) and `module`")
        args = s.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args) and not all(
                isinstance(a, list) and all(isinstance(w, str) for w in a) for a in args):
            raise ConfigError(f"{where}: `args` must be a list of strings or a list of lists of strings")
    else:
        _require(where, s, {"command"})
        if not isinstance(s["command"], list) or not all(isinstance(w, str) for w in s["command"]):
            raise ConfigError(f"{where}: `command` must be a list of strings")


def _require(where: str, s: dict[str, Any], keys: set[str]) -> None:
    missing = sorted(keys - set(s))
    if missing:
        raise ConfigError(f"{where}: missing {missing}")


def _known(where: str, s: dict[str, Any], keys: set[str]) -> None:
    unknown = sorted(set(s) - keys)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; expected some of {sorted(keys)}")


# ------------------------------------------------------------------------------------------------ commands
def _env() -> dict[str, str]:
    env = dict(os.environ)
    ptb = ROOT.parent / "shared" / "data" / "ptb"
    if not env.get("PRUNE_RNN_PTB") and ptb.is_dir():
        env["PRUNE_RNN_PTB"] = str(ptb)
    return env


def _expand(word: Any, out: str, env: dict[str, str]) -> str:
    text = str(word).replace("{out}", out)
    for key, value in env.items():  # $VAR of the run's environment (os.path.expandvars reads os.environ only)
        if f"${key}" in text:
            text = text.replace(f"${key}", value)
    return text


def _rel(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it (the commands recorded stay portable)."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def max_evals_flag() -> str:
    """The CLI's flag for the evaluation cap: ``--max-evals`` where the CLI has it, else ``--budget``."""
    try:
        from agents.cli.main import build_parser

        sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
        bench = sub.choices["bench"]
        return "--max-evals" if "--max-evals" in bench._option_string_actions else "--budget"
    except Exception:  # the parser moved: the documented flag
        return "--max-evals"


def bench_argv(cfg: Config, env: dict[str, str] | None = None) -> list[str]:
    """The ``prune-rnn`` words of a ``bench`` config (without ``--out``)."""
    s, env = cfg.settings, _env() if env is None else env
    argv = ["bench", "--task", _expand(s["task"], "", env)]
    if "task_seed" in s:
        argv += ["--task-seed", str(s["task_seed"])]
    argv += ["--sparsity", *map(str, s["targets"]), "--agents", *map(str, s["agents"]),
             max_evals_flag(), str(s["max_evals"]), "--seeds", *map(str, s["seeds"])]
    for key in ("vector_envs", "precision", "mode", "criterion", "reconstruct", "device"):
        if key in s:
            argv += [_flag(key), str(s[key])]
    for option in s.get("options", []):
        argv += ["--option", str(option)]
    return argv


def compress_argv(cfg: Config, env: dict[str, str] | None = None) -> list[str]:
    """The ``prune-rnn`` words of a ``compress`` config (without ``--out``)."""
    s, env = dict(cfg.settings), _env() if env is None else env
    argv = ["compress", "--task", _expand(s.pop("task"), "", env), "--sparsity", str(s.pop("target"))]
    if "max_evals" in s:
        argv += [max_evals_flag(), str(s.pop("max_evals"))]
    for key, value in s.items():
        for v in value if isinstance(value, list) else [value]:
            argv += [_flag(key), str(v)]
    return argv


def script_commands(cfg: Config, out: str, extra: list[str] = (), env: dict[str, str] | None = None
                    ) -> list[list[str]]:
    """The commands of a ``script`` config, ``extra`` appended to the last."""
    s, env = cfg.settings, _env() if env is None else env
    module = s["module"] if "module" in s else f"benchmarks.{s['script']}"
    args = s.get("args", [])
    steps = args if args and isinstance(args[0], list) else [args]
    cmds = []
    for i, step in enumerate(steps):
        words = [_expand(w, out, env) for w in step]
        if not any("{out}" in w for w in step) and "--out" not in extra:
            words += ["--out", out]
        if i == len(steps) - 1:
            words += list(extra)
        cmds.append([sys.executable, "-m", module, *words])
    return cmds


# ------------------------------------------------------------------------------------------------ running
def run(name: str, extra: list[str] = (), dry_run: bool = False) -> int:
    """Run benchmark ``name`` and file its results; returns the exit code of its command."""
    cfg = load_config(name)
    env = _env()
    if cfg.threads:
        env["OMP_NUM_THREADS"] = str(cfg.threads)
    out = _rel(cfg.out)
    if cfg.kind in ("bench", "compress"):
        argv = (bench_argv if cfg.kind == "bench" else compress_argv)(cfg, env) + list(extra)
        print(f"== {name}: prune-rnn {' '.join(argv)}", flush=True)
        return 0 if dry_run else _run_cli(cfg, argv, env)
    if cfg.kind == "shell":
        cmds = [[_expand(w, out, env) for w in cfg.settings["command"]] + list(extra)]
        env["OUT"] = out
    else:
        cmds = script_commands(cfg, out, extra, env)
    for cmd in cmds:
        shown = ["python", *cmd[1:]] if cmd[0] == sys.executable else cmd
        print(f"== {name}: {' '.join(shown)}", flush=True)
        if dry_run:
            continue
        code = subprocess.call(cmd, cwd=ROOT, env=env)
        if code != 0:
            return code
    return 0


def _run_cli(cfg: Config, argv: list[str], env: dict[str, str]) -> int:
    import torch

    from agents.cli.main import main

    os.environ.update({k: v for k, v in env.items() if k == "PRUNE_RNN_PTB"})
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if "--resume" in argv:
        code = main([*argv, "--no-progress"])
        run_dir = Path(argv[argv.index("--resume") + 1])
    else:
        parent = RUNS / f"{cfg.name}-{os.getpid()}"  # a folder of our own: other runs may share runs/
        shown = _rel(parent) if Path.cwd().resolve() == ROOT else str(parent)  # the command recorded stays short
        code = main([*argv, "--out", shown, "--no-progress"])
        # compress writes into --out; bench makes a run directory inside it
        dirs = [p for p in parent.iterdir() if p.is_dir()] if parent.is_dir() else []
        run_dir = parent if cfg.kind == "compress" or not dirs else dirs[0]
    if code != 0:
        print(f"{cfg.name}: prune-rnn exited with {code}; nothing filed (the run directory is {run_dir})",
              file=sys.stderr)
        return code
    file_run(cfg, run_dir)
    print(f"filed under {_rel(cfg.out)}", flush=True)
    return 0


def file_run(cfg: Config, run_dir: Path) -> None:
    """Replace ``results/<name>/`` by the files of ``run_dir`` (see :data:`BENCH_FILES`, :data:`COMPRESS_SUFFIXES`),
    through a temporary folder and a rename, so the folder is either the old one or the complete new one."""
    if cfg.kind == "bench":
        files = [run_dir / f for f in BENCH_FILES if (run_dir / f).is_file()]
    else:
        files = sorted(p for p in run_dir.iterdir() if p.is_file() and p.suffix in COMPRESS_SUFFIXES)
    dest = cfg.out
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in files:
        shutil.copy2(f, tmp / f.name)
    if cfg.kind == "bench":
        write_bench_markdown(tmp)
    old = dest.with_name(f".{dest.name}.old")
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def write_bench_markdown(dest: Path) -> None:
    """``results.md``: the summary table of ``dest/results.json`` under the provenance of the run that produced it
    (marked **uncommitted changes** if it started from a dirty tree)."""
    from agents.core.results import provenance, write_text

    data = json.loads((dest / "results.json").read_text())
    meta = data["meta"]
    lines = [provenance(meta) + f" Wall time {meta['wall_time_s']:.0f} s"
             + ("." if meta.get("complete", True) else ", **incomplete: stopped part-way**."), "",
             "| sparsity | agent | test (mean ± std) | val | evals | evals to beat global | wall s |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(data["summary"], key=lambda r: (r["target_sparsity"], -r["test_mean"])):
        beat = "-" if r["evals_to_beat_global"] is None else f"{r['evals_to_beat_global']:.0f}"
        lines.append(f"| {r['target_sparsity']:g} | {r['agent']} | {r['test_mean']:.4f} ± {r['test_std']:.4f} | "
                     f"{r['val_mean']:.4f} | {r['evals']:.0f} | {beat} | {r['wall_time_s']:.1f} |")
    write_text(dest / "results.md", "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------------ records
def recorded(name: str) -> dict[str, Any] | None:
    """The meta of the filed run of ``name`` (from ``results.json``, ``report.json`` or the last of ``runs.json``'s
    metas); ``{}`` for a folder whose files record no meta; ``None`` if nothing is filed."""
    folder = RESULTS / name
    for fname in ("results.json", "report.json", "runs.json"):
        path = folder / fname
        if path.is_file():
            data = json.loads(path.read_text())
            meta = data.get("meta") or (data.get("metas") or [{}])[-1]
            meta = dict(meta) if isinstance(meta, dict) else {}
            if "wall_time_s" not in meta and isinstance(data.get("wall_time_s"), (int, float)):
                meta["wall_time_s"] = data["wall_time_s"]
            if isinstance(data.get("search_s_sum"), (int, float)):  # a report over cells computed earlier
                meta["cells_search_s"] = data["search_s_sum"]
            return meta
    return {} if folder.is_dir() else None
