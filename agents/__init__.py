"""Agents that choose per-layer sparsities for a :class:`~prune_env.PruneRNNEnv`, and one entry point to run them.

>>> result = agents.search("reinforce", env, max_evals=200, seed=0)   # doctest: +SKIP
>>> result.allocation, result.val_score, result.evals

Every agent sees the env only through :class:`agents.core.cap.EvalCap`, which counts evaluations (finished
episodes, i.e. scorings of a pruned model) and refuses to score past the evaluation cap ``max_evals``: the same
hard cap for every agent, so comparisons are fair.
:func:`search` leaves the global RNGs (Python's, NumPy's, torch's) as it found them, whatever the agent seeds.
Every agent has one record, an :class:`~agents.registry.AgentSpec` (:mod:`agents.registry`), declared in its own
module; :data:`AGENTS` and :data:`DESCRIPTIONS` are views of that registry. Agents are imported lazily, so
``import agents`` does not pull in Stable-Baselines3.
"""

from __future__ import annotations

import contextlib
import inspect
import random
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from agents.policies.policy import Policy
from agents.registry import AGENTS, DESCRIPTIONS, AgentSpec, get_spec, register, specs
from prune_env.checks import check_int


@dataclass
class SearchResult:
    """What an agent found.

    :param allocation: layer name -> sparsity of the best allocation, as the env applied it.
    :param val_score: that allocation's validation score, as the reward saw it (``info["score"]``).
    :param evals: env evaluations used, at most ``max_evals``.
    :param history: best validation score so far after each evaluation (``len(history) == evals``).
    :param agent: the agent's name.
    :param wall_time: seconds spent in the search.
    :param policy: for learning agents, the trained policy in its deterministic form (see :class:`Policy`).
    :param extras: agent-specific facts (e.g. where a policy was saved).
    """

    allocation: dict[str, float]
    val_score: float
    evals: int
    history: list[float]
    agent: str = ""
    wall_time: float = 0.0
    policy: Policy | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def search(name: str, env: Any, max_evals: int | None = None, seed: int = 0, *, vector_envs: int = 0,
           budget: int | None = None, **kwargs: Any) -> SearchResult:
    """Run agent ``name`` on ``env`` with at most ``max_evals`` evaluations and return the best allocation found.

    Python's, NumPy's (legacy global) and torch's global RNG states (CPU, and every CUDA device when CUDA is
    available) are restored when the search ends, also on an exception: agents that seed them (Stable-Baselines3
    does) do not change the caller's random streams.

    :param name: a registered agent (:data:`AGENTS`, :mod:`agents.registry`).
    :param env: a :class:`~prune_env.PruneRNNEnv` (not wrapped; the agent wraps it in
        :class:`~agents.core.cap.EvalCap`).
    :param max_evals: the evaluation cap: the hard cap on evaluations (finished episodes), a positive int.
    :param seed: seeds the agent (and the env's ``reset``); the same seed gives the same result.
    :param vector_envs: ``K > 1`` lets the agents that propose candidates in batches (``random``, ``reinforce``
        in joint mode) score ``K`` at a time in one batched pass (:class:`~prune_env.PruneRNNVectorEnv`). The
        evaluation cap and the results are the same; only the wall time changes.
    :param budget: deprecated name of ``max_evals`` (a :class:`DeprecationWarning`).
    :param kwargs: agent-specific options, see each agent module (e.g. ``agents.searchers.reinforce.Args``).
    :raises ValueError: for an unknown agent, a bad evaluation cap or seed, or an agent option it does not take.
    :raises TypeError: when ``max_evals`` is missing, or given twice (also as ``budget``).
    """
    from agents.core.cap import EvalCap

    if budget is not None:
        if max_evals is not None:
            raise TypeError("search() got both `max_evals` and its deprecated name `budget`; pass `max_evals` only")
        warnings.warn("search(budget=...) is deprecated; use max_evals=...", DeprecationWarning, stacklevel=2)
        max_evals = budget
    if max_evals is None:
        raise TypeError("search() missing the evaluation cap `max_evals`")

    with _global_rng_restored():
        fn = get_agent(name)  # importing an agent's libraries can draw from Python's RNG (rich, via SB3, does)
        _check_options(name, fn, kwargs)
        check_max_evals(max_evals)
        check_int("seed", seed, 0)
        wrapped = EvalCap(env, max_evals, vector_envs=vector_envs)
        wrapped.reset(seed=seed)
        t0 = time.perf_counter()
        try:
            extras = fn(wrapped, seed=seed, **kwargs) or {}
        finally:
            wrapped.release()
        wall = time.perf_counter() - t0
    tracker = extras.pop("tracker", None) or wrapped.tracker
    if tracker.best_allocation is None:
        raise RuntimeError(f"agent {name!r} finished without evaluating an allocation that meets the target")
    return SearchResult(allocation=tracker.best_allocation, val_score=tracker.best_score, evals=tracker.evals,
                        history=list(tracker.history), agent=name, wall_time=wall,
                        policy=extras.pop("policy", None), extras=extras)


@contextlib.contextmanager
def _global_rng_restored() -> Iterator[None]:
    """Save the global RNG states (Python, NumPy legacy, torch CPU and CUDA) and restore them on exit, also on error.

    Stable-Baselines3 seeds all of them (``set_random_seed``), and on CUDA also sets cuDNN's ``deterministic`` and
    ``benchmark`` flags, which are restored too. With CUDA available the CUDA states are read up front, which
    initialises CUDA (so seeding during the search cannot be queued lazily past the restore).
    """
    import numpy as np
    import torch

    py, legacy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(legacy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def get_agent(name: str) -> Callable[..., dict[str, Any] | None]:
    """The run function of agent ``name`` (its :class:`~agents.registry.AgentSpec`'s ``run``).

    :param name: a registered agent (:func:`agents.registry.names`).
    :raises ValueError: for an unknown name.
    """
    return get_spec(name).load()


def _check_options(name: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """:raises ValueError: naming the options agent ``name``'s run function does not take (agents with a
    dataclass of options, which take ``**kwargs``, check their own)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = sorted(n for n in params if n not in ("env", "seed"))
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"agent {name!r} got unknown options {unknown}; valid: {valid}")


def check_max_evals(max_evals: Any) -> int:
    """``max_evals``; :raises ValueError: unless it is a positive int."""
    return check_int("max_evals", max_evals, 1)


def check_budget(budget: Any) -> int:
    """Deprecated name of :func:`check_max_evals` (a :class:`DeprecationWarning`)."""
    warnings.warn("agents.check_budget is deprecated; use agents.check_max_evals", DeprecationWarning, stacklevel=2)
    return check_max_evals(budget)


__all__ = ["AGENTS", "DESCRIPTIONS", "AgentSpec", "Policy", "SearchResult", "check_max_evals", "get_agent", "get_spec",
           "register", "search", "specs"]
