"""``python -m benchmarks``: run benchmarks by name, list them, or refresh the README's table.

    python -m benchmarks --list
    python -m benchmarks agents_digits                 # configs/agents_digits.toml -> results/agents_digits/
    python -m benchmarks env_speed -- --reps 5         # extra arguments for the benchmark's command
    python -m benchmarks --dry-run agents_pydoc        # print the command only
    python -m benchmarks --markdown agents_digits      # rewrite results.md of a filed agent table from its JSON
    python -m benchmarks --readme                      # rewrite the table of benchmarks/README.md
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import ROOT
from benchmarks.runner import ConfigError, load_config, names, recorded, run, write_bench_markdown

README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- table: python -m benchmarks --readme -->", "<!-- end of table -->"


def wall_time(name: str) -> str:
    """The recorded wall time of the filed run, e.g. ``131 s`` or ``58 min``; ``not recorded`` if its meta has none,
    ``not filed`` if nothing is filed."""
    meta = recorded(name)
    if meta is None:
        return "not filed"
    seconds = meta.get("wall_time_s")
    if isinstance(meta.get("cells_search_s"), (int, float)) and not isinstance(seconds, (int, float)):
        return f"{_duration(meta['cells_search_s'])} (the cells' searches, summed)"
    return _duration(seconds) if isinstance(seconds, (int, float)) else "not recorded"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def table() -> list[str]:
    """The README's table: every benchmark, its command, its recorded wall time and machine, what it measures."""
    lines = ["| benchmark | kind | wall time (filed run) | CPU of the filed run | what it measures |",
             "|---|---|---|---|---|"]
    for name in names():
        cfg = load_config(name)
        filed = recorded(name)
        meta = filed or {}
        machine = meta.get("machine")
        if filed is None:
            cpu = "-"
        elif "cells_search_s" in meta:  # the report's run is not where its cells were measured
            cpu = "see results.md"
        elif isinstance(machine, dict):
            cpu = f"{machine.get('cpu') or 'CPU'} x {machine.get('cpus', '?')}"
        else:
            cpu = " ".join(str(machine).split()) if machine else "not recorded"
        what = " ".join(cfg.description.split()).replace("|", "\\|")
        lines.append(f"| `{name}` | {cfg.kind} | {wall_time(name)} | {cpu} | {what} |")
    return lines


def write_readme() -> None:
    """Replace the table between the README's markers."""
    from prune_env.io import atomic_write

    text = README.read_text()
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"{README}: the table markers are missing")
    atomic_write(README, head + BEGIN + "\n" + "\n".join(table()) + "\n" + END + tail)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run, in order (configs/NAME.toml)")
    p.add_argument("--list", action="store_true", help="list the benchmarks")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--markdown", action="store_true", help="rewrite results.md of the named agent tables")
    p.add_argument("--readme", action="store_true", help="rewrite the table of benchmarks/README.md")
    args = p.parse_args(argv)
    if extra and len(args.names) != 1:
        p.error("extra arguments after -- go to exactly one benchmark")
    try:
        if args.list:
            print("\n".join(table()))
        for name in args.names:
            cfg = load_config(name)
            if args.markdown:
                if cfg.kind != "bench":
                    p.error(f"--markdown: {name} is not an agent table")
                write_bench_markdown(cfg.out)
                continue
            code = run(name, extra, dry_run=args.dry_run)
            if code != 0:
                return code
        if args.readme:
            write_readme()
    except ConfigError as e:
        print(f"python -m benchmarks: {e}", file=sys.stderr)
        return 2
    if not (args.names or args.list or args.readme):
        p.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
