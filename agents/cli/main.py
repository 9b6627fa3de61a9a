"""``prune-rnn``: benchmark pruning agents, train one, evaluate a saved allocation or policy, compress a model,
validate filed results, list the tasks.

Each command lives in its own module of :mod:`agents.cli` (``bench``, ``train``, ``evaluate``, ``pretrain``,
``compress``, ``validate``); this one assembles their parsers and runs the chosen command. Every run writes to a fresh
``<out>/<time>/`` directory (never an earlier run's), files written atomically, with the run's metadata taken when
it starts (:func:`agents.core.results.run_meta`: commit, uncommitted changes, start time, machine). A bad argument
(unknown task or agent, sparsity outside [0, 1), missing corpus directory, unknown device, ...) prints one line on
stderr and exits with code 2. Run it as ``prune-rnn``, ``python -m agents.cli`` or ``python -m agents.cli.main``.
"""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Sequence

from agents.cli import bench, compress, evaluate, pretrain, train, validate
from agents.cli.common import CLIError, CLIParser, finish_max_evals, one_line


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``prune-rnn`` command line; returns the exit code.

    :param argv: arguments without the program name; default ``sys.argv[1:]``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise CLIError("choose a command (see prune-rnn --help)")
        finish_max_evals(args)
        args.argv = argv
        return args.func(args)
    except (CLIError, ValueError, OSError) as e:
        print(f"prune-rnn: error: {one_line(e)}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``prune-rnn``."""
    p = CLIParser(prog="prune-rnn", description="Learn how to prune recurrent networks: benchmark agents, train "
                                                "one, evaluate the result.")
    sub = p.add_subparsers(dest="command", parser_class=CLIParser)
    for command in (bench, train, evaluate, pretrain, compress, validate):
        command.add_parser(sub)
    ls = sub.add_parser("tasks", help="list the built-in tasks")
    ls.set_defaults(func=cmd_tasks)
    return p


def cmd_tasks(args: argparse.Namespace) -> int:
    """Print the presets."""
    from rich.table import Table

    from agents.core.results import console
    from prune_env.tasks import PRESETS

    table = Table(title="prune-rnn tasks")
    table.add_column("name")
    table.add_column("description")
    for name, desc in PRESETS.items():
        table.add_row(name, desc)
    table.add_row("<dir>", "a corpus directory (train/valid/test .txt), same as corpus with path=<dir>")
    table.add_row("<module:function>", "your own factory returning an RNNTask")
    console().print(table)
    return 0


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`main`: ``agents.cli.main`` names the function before the submodule is
    imported and the submodule after, and either runs the command line when called."""

    def __call__(self, argv: Sequence[str] | None = None) -> int:
        return main(argv)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["build_parser", "cmd_tasks", "main"]

if __name__ == "__main__":
    sys.exit(main())
