"""One record per agent: :class:`AgentSpec`, and the registry every list of agents is read from.

Each built-in agent module declares its own record as a module-level literal::

    SPEC = AgentSpec(name="lamp", run="agents.rules.lamp:run", evals=1, deterministic=True, batching=False,
                     description="LAMP (Lee et al. 2021): ...", granularities=("unstructured",), rival_order=1)

The built-ins are found by listing the modules of :data:`PACKAGES` (``pkgutil.iter_modules``) and reading each
one's ``SPEC = AgentSpec(...)`` statement from its source with :mod:`ast` (keyword values must be literals): no
agent module is imported, so discovery neither pulls in Stable-Baselines3 nor runs any code. Adding a rule is
therefore one new module (plus its test) and no edit here. Agents defined elsewhere join with :func:`register`.

:data:`agents.AGENTS` and :data:`agents.DESCRIPTIONS` are live read-only views of this registry.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The packages whose modules may declare a built-in agent's ``SPEC``.
PACKAGES = ("agents.rules", "agents.searchers", "agents.policies")
#: The granularities an agent may support (``PruneRNNEnv(granularity=...)``).
GRANULARITIES = ("unstructured", "hidden_unit")


@dataclass(frozen=True)
class AgentSpec:
    """What :func:`agents.search` and everything that lists agents need to know about one agent.

    :param name: the agent's name in :func:`agents.search` and on the command line.
    :param run: its run function as ``"module:function"``; ``fn(env: EvalCap, seed: int, **options) -> extras``.
    :param evals: evaluations it uses: an exact count (``1`` for a one-shot rule) or ``None`` for "up to
        ``max_evals``".
    :param deterministic: ``True`` when its result does not depend on the seed.
    :param batching: ``True`` when it proposes candidates in batches, so ``search(..., vector_envs=K)`` scores
        ``K`` at a time in one batched pass.
    :param description: one line for ``prune-rnn`` and the docs.
    :param needs_loss: ``True`` when the task must have a loss (``loss``, or ``train_loss`` for a Fisher estimate).
    :param granularities: the env granularities it supports (a subset of :data:`GRANULARITIES`).
    :param rival_order: for a one-shot rule that the transfer policy's few-shot adaptation scores by default
        (:func:`agents.policies.policy.default_rivals`), its place in that sequence (lowest first); ``None``: not
        a default rival.
    :param default_max_evals: the evaluation cap ``compress`` uses when none is given (``None``: ``evals`` for a
        one-shot agent, else 100; see :meth:`suggested_max_evals`).
    :param extras: the optional dependency groups it needs (``pip install prune-rnn-gym[<extra>]``), e.g.
        ``("ray",)``.
    """

    name: str
    run: str
    evals: int | None
    deterministic: bool
    batching: bool
    description: str
    needs_loss: bool = False
    granularities: tuple[str, ...] = GRANULARITIES
    rival_order: int | None = None
    default_max_evals: int | None = None
    extras: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for key in ("name", "run", "description"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise TypeError(f"AgentSpec `{key}` must be a non-empty str, got {value!r}")
        module, sep, func = self.run.partition(":")
        if not (sep and module and func.isidentifier()):
            raise ValueError(f"AgentSpec `run` must be 'module:function', got {self.run!r}")
        for key in ("evals", "default_max_evals", "rival_order"):
            value = getattr(self, key)
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"AgentSpec `{key}` must be a positive int or None, got {value!r}")
        for key in ("deterministic", "batching", "needs_loss"):
            if not isinstance(getattr(self, key), bool):
                raise TypeError(f"AgentSpec `{key}` must be a bool, got {getattr(self, key)!r}")
        if not self.granularities or any(g not in GRANULARITIES for g in self.granularities):
            raise ValueError(f"AgentSpec `granularities` must be a non-empty subset of {GRANULARITIES}, got "
                             f"{self.granularities!r}")
        if not isinstance(self.extras, tuple) or not all(isinstance(e, str) for e in self.extras):
            raise TypeError(f"AgentSpec `extras` must be a tuple of str, got {self.extras!r}")
        if self.rival_order is not None and self.evals != 1:
            raise ValueError(f"AgentSpec {self.name!r}: only a one-shot agent (evals=1) can be a rival")

    @property
    def one_shot(self) -> bool:
        """``True`` when the agent uses exactly one evaluation."""
        return self.evals == 1

    def suggested_max_evals(self) -> int:
        """The evaluation cap to use when the caller gives none: :attr:`default_max_evals`, else ``evals`` for a
        one-shot agent, else 100."""
        if self.default_max_evals is not None:
            return self.default_max_evals
        return self.evals if self.evals is not None else 100

    def load(self) -> Callable[..., dict[str, Any] | None]:
        """The run function (importing its module, and so its libraries, now)."""
        module, func = self.run.split(":")
        return getattr(importlib.import_module(module), func)


_REGISTRY: dict[str, AgentSpec] = {}
_BUILTINS_LOADED = False


def register(spec: AgentSpec) -> AgentSpec:
    """Add ``spec`` to the registry (registering an equal record again is a no-op).

    :raises TypeError: unless ``spec`` is an :class:`AgentSpec`.
    :raises ValueError: if another record already has its name.
    """
    if not isinstance(spec, AgentSpec):
        raise TypeError(f"`spec` must be an AgentSpec, got {type(spec).__name__}")
    _load_builtins()
    return _add(spec)


def _add(spec: AgentSpec) -> AgentSpec:
    known = _REGISTRY.get(spec.name)
    if known is not None and known != spec:
        raise ValueError(f"agent {spec.name!r} is already registered (run {known.run!r}); pick another name")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> AgentSpec:
    """Remove agent ``name`` from the registry and return its record (built-ins come back only in a new process).

    :raises ValueError: for an unknown name.
    """
    spec = get_spec(name)
    del _REGISTRY[name]
    return spec


def get_spec(name: str) -> AgentSpec:
    """The record of agent ``name``.

    :raises ValueError: for an unknown name.
    """
    _load_builtins()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown agent {name!r}; expected one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def specs() -> tuple[AgentSpec, ...]:
    """Every registered record: the built-ins (those of :data:`PACKAGES` in that order, each package's by module
    name), then the ones added by :func:`register`, in order."""
    _load_builtins()
    return tuple(_REGISTRY.values())


def names() -> tuple[str, ...]:
    """Every registered agent's name, in :func:`specs` order."""
    return tuple(s.name for s in specs())


def one_shot() -> tuple[str, ...]:
    """The agents that use exactly one evaluation (``evals == 1``), in :func:`specs` order."""
    return tuple(s.name for s in specs() if s.one_shot)


# ------------------------------------------------------------------------------------------------- discovery
def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    builtins = [spec for package in PACKAGES for spec in _declared_in(package)]
    _BUILTINS_LOADED = True
    for spec in builtins:
        _add(spec)


def _declared_in(package: str) -> Iterator[AgentSpec]:
    """The ``SPEC`` of each module of ``package`` that declares one, by module name."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return
    for info in sorted(pkgutil.iter_modules(found.submodule_search_locations), key=lambda m: m.name):
        if info.ispkg:
            continue
        path = Path(info.module_finder.path) / f"{info.name}.py"  # type: ignore[union-attr]
        if path.is_file():
            spec = declared_spec(path)
            if spec is not None:
                yield spec


def declared_spec(path: str | Path) -> AgentSpec | None:
    """The ``SPEC = AgentSpec(...)`` that the module at ``path`` declares at top level, read from its source without
    importing it (``None`` if it declares none).

    :raises ValueError: if the statement is not a call of ``AgentSpec`` with literal keyword arguments.
    """
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if not (isinstance(target, ast.Name) and target.id == "SPEC") or node.value is None:
            continue
        call = node.value
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "AgentSpec"
                and not call.args and all(k.arg for k in call.keywords)):
            raise ValueError(f"{path}: SPEC must be `AgentSpec(...)` with keyword arguments only")
        try:
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        except ValueError:
            raise ValueError(f"{path}: SPEC's arguments must be literals (strings, numbers, tuples, None, "
                             "True/False)") from None
        return AgentSpec(**kwargs)
    return None


class _Column(Mapping[str, Any]):
    """A live read-only mapping agent name -> one field of its record."""

    def __init__(self, field: str):
        self._field = field

    def __getitem__(self, name: str) -> Any:
        if name not in self:
            raise KeyError(name)
        return getattr(get_spec(name), self._field)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in names()

    def __iter__(self) -> Iterator[str]:
        return iter(names())

    def __len__(self) -> int:
        return len(specs())

    def __repr__(self) -> str:
        return repr(dict(self))


#: Agent name -> ``"module:function"`` (a live view of the registry).
AGENTS: Mapping[str, str] = _Column("run")
#: Agent name -> its one-line description (a live view of the registry).
DESCRIPTIONS: Mapping[str, str] = _Column("description")

__all__ = ["AGENTS", "DESCRIPTIONS", "GRANULARITIES", "PACKAGES", "AgentSpec", "declared_spec", "get_spec", "names",
           "one_shot", "register", "specs", "unregister"]
