"""``prune-rnn bench --resume RUN_DIR``: the finished cells of an earlier bench, read as data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agents.cli.common import CLIError, row_max_evals


def resume_dir(run_dir: str, task_name: str, max_evals: int) -> tuple[Path, dict[tuple, dict[str, Any]]]:
    """The run directory to finish and its finished cells, keyed by (target, agent, seed)."""
    out = Path(run_dir)
    path = out / "results.json"
    if not path.is_file():
        raise CLIError(f"--resume: no results.json in {run_dir} (nothing to resume)")
    try:
        data = json.loads(path.read_text())
        runs = data["runs"]
    except (ValueError, KeyError, TypeError) as e:
        raise CLIError(f"--resume: {path} is not a bench results file ({e})") from None
    for r in runs:
        if r.get("task") != task_name or row_max_evals(r) != max_evals:
            raise CLIError(f"--resume: {run_dir} holds a bench of task {r.get('task')!r} with max_evals "
                           f"{row_max_evals(r)}, not {task_name!r} with {max_evals}; pass the same arguments")
    return out, {(r["target_sparsity"], r["agent"], r["seed"]): r for r in runs}
