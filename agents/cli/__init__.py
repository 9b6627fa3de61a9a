"""The ``prune-rnn`` command line: one module per command (:mod:`agents.cli.bench`, ``train``, ``evaluate``,
``pretrain``, ``compress``, ``validate``), their shared pieces in :mod:`agents.cli.common`, the parser assembly in
:mod:`agents.cli.main`. The console script is :func:`main`."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``prune-rnn`` command line (see :func:`agents.cli.main.main`); returns the exit code.

    The commands are imported on the first call, so that ``python -m agents.cli.main`` runs its module once.
    """
    from agents.cli.main import main as run

    return run(argv)


__all__ = ["main"]
