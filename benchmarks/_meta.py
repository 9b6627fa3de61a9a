"""Run metadata for the benchmark scripts: one implementation, the CLI's (:mod:`agents.core.results`).

Every script calls :func:`run_meta` when it starts (after setting its torch threads, which it records) and opens
its Markdown with :func:`provenance`, which marks a run from a dirty tree **uncommitted changes**::

    sys.path.insert(0, str(Path(__file__).parent))
    from _meta import provenance, run_meta  # noqa: E402

    result = {"meta": run_meta(), ...}
    ...
    lines = ["# title", "", provenance(result["meta"]), ...]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `agents` from this checkout when it is not installed
    sys.path.append(str(ROOT))

from agents.core.results import DIRTY_NOTE, is_dirty, provenance  # noqa: E402
from agents.core.results import run_meta as _run_meta  # noqa: E402

__all__ = ["DIRTY_NOTE", "ROOT", "is_dirty", "named_policies", "provenance", "run_meta"]


def run_meta(argv: list[str] | None = None) -> dict[str, Any]:
    """Command, commit, dirty flag (warned on stderr), start time, machine (with the GPU, if any), versions.

    :param argv: the script and its arguments; default ``sys.argv``.
    """
    return _run_meta(["python", *(sys.argv if argv is None else argv)], ROOT, prog=Path(sys.argv[0]).name or "python",
                     gpu=True)


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
