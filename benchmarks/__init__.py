"""The benchmark suite of prune-rnn-gym: one runner, declarative configs, one results folder per benchmark.

Run from the repository root (the package is not installed with ``prune_env``/``agents``)::

    python -m benchmarks --list              # every benchmark, what it measures, its recorded wall time
    python -m benchmarks NAME                # run configs/NAME.toml, writing results/NAME/
    python -m benchmarks NAME -- ARGS        # the same with extra arguments for its command

See ``benchmarks/README.md`` and :mod:`benchmarks.runner`.
"""

from __future__ import annotations

from pathlib import Path

#: The repository root (the runner's working directory).
ROOT = Path(__file__).resolve().parent.parent
#: One folder per benchmark, named after its config.
RESULTS = Path(__file__).resolve().parent / "results"
#: The declarative configs, ``<name>.toml``.
CONFIGS = Path(__file__).resolve().parent / "configs"

__all__ = ["CONFIGS", "RESULTS", "ROOT"]
