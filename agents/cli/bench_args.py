"""The arguments of ``prune-rnn bench`` and the cells they name: shared by the bench, its resume and ``validate``'s
row count, so that the three read a bench's arguments the same way."""

from __future__ import annotations

import argparse
from typing import Any

from agents.cli.common import add_max_evals_arg, add_run_args, add_task_args

#: Agents ``bench`` runs by default (``policy`` needs a Python object, so it is API-only).
BENCH_AGENTS = ("uniform", "global", "gradient", "lamp", "erk", "random", "sensitivity", "reinforce", "ppo")
#: Agents that ignore the seed: ``bench`` runs them once (the first seed), since more seeds would repeat them.
DETERMINISTIC = ("uniform", "global", "gradient", "lamp", "erk", "obd", "sensitivity")
#: The arguments a bench records (``meta.args``) and ``--resume`` reuses: every one that changes a row.
RECORDED = ("task", "task_seed", "sparsity", "agents", "max_evals", "seeds", "mode", "option", "device", "precision",
            "criterion", "reconstruct")
#: Of those, the lists that name cells: a resume may add to them (more cells), not take away (unless ``--drop``).
CELL_LISTS = ("sparsity", "agents", "seeds")


def add_bench_arguments(b: argparse.ArgumentParser) -> None:
    """The options of ``bench`` on parser ``b``."""
    add_task_args(b)
    b.add_argument("--sparsity", type=float, nargs="+", default=[0.8, 0.9], help="target overall sparsities")
    b.add_argument("--agents", nargs="+", default=list(BENCH_AGENTS), help="agents to compare")
    add_max_evals_arg(b, 100, "evaluations per agent, run and sparsity (hard cap)")
    b.add_argument("--seeds", type=int, nargs="+", default=[0], help="agent seeds; scores are mean +- std")
    b.add_argument("--resume", metavar="RUN_DIR", help="finish the bench of RUN_DIR with its recorded arguments: run "
                   "only the cells its results.json lacks; an argument typed again must equal the recorded one, "
                   "except that more targets, agents or seeds add cells")
    b.add_argument("--drop", action="store_true", help="with --resume: allow fewer targets, agents or seeds than "
                   "the run has, removing the rows of the cells left out (a warning names them)")
    b.add_argument("--backend", default="local", choices=("local", "ray"), help="run the cells in this process "
                   "(local) or each as a Ray task (ray: needs the ray extra); the same table")
    b.add_argument("--address", default=None, help="with --backend ray: the Ray cluster to join (auto, HOST:6379); "
                   "default a local Ray instance")
    add_run_args(b)


def bench_cells(sparsities: list[float], names: list[str], seeds: list[int]) -> list[tuple[float, str, int]]:
    """The (target, agent, seed) cells of a bench in table order (deterministic agents: the first seed only)."""
    return [(target, name, seed) for target in sparsities for name in names
            for seed in (seeds[:1] if name in DETERMINISTIC else seeds)]


def defaults() -> dict[str, Any]:
    """The arguments of :data:`RECORDED` as a bench takes them when none is typed."""
    from agents.cli.common import CLIParser, finish_max_evals

    p = CLIParser(prog="prune-rnn bench")
    add_bench_arguments(p)
    ns = p.parse_args([])
    finish_max_evals(ns, warn_deprecated=False)
    return recorded(ns)


def recorded(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments of :data:`RECORDED` as plain values (what ``meta.args`` holds)."""
    return {k: list(getattr(args, k)) if isinstance(getattr(args, k), (list, tuple)) else getattr(args, k)
            for k in RECORDED}


__all__ = ["BENCH_AGENTS", "CELL_LISTS", "DETERMINISTIC", "RECORDED", "add_bench_arguments", "bench_cells", "defaults",
           "recorded"]
