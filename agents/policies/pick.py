"""``pick``: several candidate allocations (pretrained layer-wise policies and one-shot rules) ranked by the pruned
model's training loss on a few training batches, the lowest refined on the same loss and scored once.

The candidates cost no evaluation: each is pruned with the env's operator (reconstruction included) and its loss is
measured on ``batches`` training batches drawn with a fixed generator, the same batches for every candidate. The
validation split is read once, for the chosen allocation. This is the training data the calibration-aware layer
features already read, used on whole allocations instead of single layers: a policy's departures from LAMP help on
some models and hurt on others, and the loss tells them apart on the model at hand.

By default the candidates are the shipped committee for the env's operator (:func:`committee`) and the one-shot
rules uniform, global magnitude, LAMP, ERK and OBD. A task without a training loss gets the first policy's
allocation (the shipped policy's, as ``agents.search("policy", env, 1)`` would). The chosen allocation and LAMP's
are then moved by :func:`refine`, a local search on the same loss (``refine_prunings``, default
:data:`REFINE_PRUNINGS`; 0 turns it off), and the one with the lower loss is evaluated once.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.registry import AgentSpec, get_spec

SPEC = AgentSpec(name="pick", run="agents.policies.pick:run", evals=1, deterministic=True, batching=False,
                 granularities=("unstructured",),
                 description="pretrained policies and one-shot rules ranked by the pruned model's training loss; the "
                             "lowest refined on that loss and scored once (1 evaluation)")

#: The one-shot rules :func:`run` adds to the policies by default.
DEFAULT_RULES = ("uniform", "global", "lamp", "erk", "obd")


class _Recorder(gym.Wrapper):
    """Takes the episode a one-shot rule plays and records its action instead of scoring it."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.actions: list[np.ndarray] = []

    def reset(self, **kwargs: Any):
        self.actions = []
        return np.zeros(self.observation_space.shape, np.float32), {}

    def step(self, action):
        self.actions.append(np.asarray(action, dtype=np.float64).reshape(-1))
        done = sum(len(a) for a in self.actions) >= self.env.unwrapped.num_layers
        return np.zeros(self.observation_space.shape, np.float32), 0.0, done, False, {}


def rule_allocation(env: gym.Env, name: str) -> dict[str, float]:
    """The allocation the one-shot rule ``name`` gets on ``env`` (as the env applies it), without an evaluation."""
    base = env.unwrapped
    rec = _Recorder(env)
    get_spec(name).load()(rec, 0)
    return _allocation(base, base.joint_counts(np.concatenate(rec.actions)))


def applied(env: gym.Env, requested: dict[str, float]) -> dict[str, float]:
    """The allocation the env applies when an episode requests ``requested`` (as :func:`agents.core.cap.submit`
    plays it: clipped at the caps and projected onto the target)."""
    from prune_env.envs.actions import sparsity_to_action

    base = env.unwrapped
    return _allocation(base, base.joint_counts(sparsity_to_action(base.counts_for(requested) / base.numels,
                                                                   base.max_sparsity)))


def _allocation(base: Any, counts: np.ndarray) -> dict[str, float]:
    return dict(zip(base.layer_names, (counts / base.numels).tolist()))


def training_loss(task: Any, model: torch.nn.Module, batches: int = 8, seed: int = 0) -> float | None:
    """The mean of ``task.train_loss`` over ``batches`` batches drawn from ``seed`` (``task.loss`` once without it);
    ``None`` for a task with neither."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if task.train_loss is not None:
            return float(np.mean([float(task.train_loss(model, gen)) for _ in range(batches)]))
        if task.loss is not None:
            return float(task.loss(model))
    return None


def committee(env: gym.Env) -> list[Any]:
    """The shipped policies :func:`run` ranks by default: the members of the committee shipped for ``env``'s
    operator (:data:`agents.policies.layerwise.COMMITTEES`), the shipped policy for that operator first; where
    format-4 features cannot be computed, the one policy :func:`~agents.policies.policy.shipped_policy` picks."""
    from agents.policies.layerwise import COMMITTEES, default_policy, members
    from agents.policies.policy import ranks_by_magnitude, reads_layer_features, shipped_policy

    if not reads_layer_features(env):
        return [shipped_policy(env)]
    return members(default_policy(COMMITTEES["magnitude" if ranks_by_magnitude(env) else "default"]))


def candidates(env: gym.Env, policies: list[Any] | None = None,
               rules: tuple[str, ...] | None = None) -> dict[str, dict[str, float]]:
    """The candidate allocations of :func:`run` as the env applies them (each meets the target), by name
    (``policy:<i>`` for the i-th policy, the rule's name for a rule), none of them evaluated. Rules join only for a
    task with a loss (they could not be ranked otherwise). ``policies=[]`` with ``rules`` ranks rules alone
    (``policies=[], rules=("lamp",)`` refines LAMP in :func:`run`).

    :raises ValueError: without a target sparsity, at ``hidden_unit`` granularity, for bad ``policies`` (or none where
        no rule can be ranked) or an unknown rule.
    """
    import os

    from agents.policies.layerwise import LayerwisePolicy, load
    from agents.registry import specs
    from prune_env.pruning.fisher import has_loss

    base = env.unwrapped
    if base.target_sparsity is None:
        raise ValueError("agent 'pick' needs an env with target_sparsity (budget mode)")
    if base.analysis.plan is not None:
        raise ValueError("agent 'pick' ranks single-weight allocations; use unstructured granularity")
    policies = committee(env) if policies is None else [load(p) if isinstance(p, (str, os.PathLike)) else p
                                                         for p in policies]
    if not isinstance(policies, list) or not all(isinstance(p, LayerwisePolicy) for p in policies):
        raise ValueError("`policies` must be a list of LayerwisePolicy or paths of saved ones")
    one_shot = [s.name for s in specs() if s.one_shot and s.name != "pick"]
    if rules is None:
        rules = tuple(r for r in DEFAULT_RULES if has_loss(base.task) or not get_spec(r).needs_loss)
    if not isinstance(rules, (list, tuple)) or any(r not in one_shot for r in rules):
        raise ValueError(f"`rules` must be a sequence of one-shot agents from {one_shot}, got {rules!r}")
    if not policies and not (rules and has_loss(base.task)):
        raise ValueError("`policies` may be empty only with `rules` on a task with a training loss (nothing to rank "
                         "or fall back on otherwise)")
    env.reset()
    out = {f"policy:{i}": applied(env, p.allocation(env)) for i, p in enumerate(policies)}
    if has_loss(base.task):
        out.update({r: rule_allocation(env, r) for r in rules})
    return out


def rank(env: gym.Env, allocations: dict[str, dict[str, float]], batches: int = 8) -> tuple[str, dict[str, float]]:
    """The name of the allocation whose pruned model has the lowest training loss (ties: the first), and every
    allocation's loss; the first allocation and no losses for a task without a loss."""
    from prune_env.checks import check_int
    from prune_env.pruning.fisher import has_loss

    batches = check_int("batches", batches, 1)
    base = env.unwrapped
    names = list(allocations)
    if not names:
        raise ValueError("`allocations` must hold at least one allocation")
    if not has_loss(base.task):
        return names[0], {}
    losses = {name: training_loss(base.task, base.pruned_model(a).eval(), batches) for name, a in allocations.items()}
    return min(names, key=lambda k: (losses[k], names.index(k))), losses


#: Prunings :func:`run` spends on :func:`refine` by default (chosen on zoo-v1 among 16, 48 and 128; it beat ``pick``
#: without refinement on zoo-v2 validation with both operators: ``benchmarks/results/policy_refine_*``).
REFINE_PRUNINGS = 128

#: The candidates :func:`run` refines by default: the one with the lowest loss and LAMP's (the policies' own
#: starting point); the refined allocation with the lower loss is scored. Chosen on zoo-v1 (``policy_refine_lamp_*``).
REFINE_FROM = ("chosen", "lamp")

#: Log-density steps :func:`refine` tries, largest first.
REFINE_STEPS = (0.5, 0.25, 0.125)


def refine(env: gym.Env, allocation: dict[str, float], prunings: int, batches: int = 8,
           loss: float | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """A local search from ``allocation`` on the pruned model's training loss, without an evaluation.

    One layer at a time (largest first), its density is multiplied by ``exp(+-step)`` for each step of
    :data:`REFINE_STEPS` and the request projected onto the target as the env applies it; a move is kept as soon as
    its loss (on the batches :func:`rank` uses) is lower. A step that no longer moves anything gives way to the next,
    smaller one. At most ``prunings`` candidates are pruned. The result is kept only if its loss is also lower on
    ``batches`` fresh training batches (seed 1), two more prunings, so a move that only fits the search's batches
    is undone.

    :returns: the allocation (``allocation`` itself when nothing was kept) and a record: ``prunings`` used,
        ``moves`` kept, the search's ``loss`` before and after, and whether the result was ``kept``.
    """
    from prune_env.checks import check_int

    prunings = check_int("prunings", prunings, 0)
    batches = check_int("batches", batches, 1)
    base = env.unwrapped
    task = base.task

    def loss_of(a: dict[str, float], seed: int = 0) -> float:
        value = training_loss(task, base.pruned_model(a).eval(), batches, seed)
        if value is None:
            raise ValueError("refine needs a task with a training loss")
        return value

    start = dict(allocation)
    best, best_loss = start, loss_of(start) if loss is None else float(loss)
    first_loss = best_loss
    seen = {tuple(base.counts_for(start).tolist())}
    used = moves = 0
    order = np.argsort(-base.numels, kind="stable")
    for step in REFINE_STEPS:
        improved = True
        while improved and used < prunings:
            improved = False
            for i in order:
                name = base.layer_names[i]
                for sign in (1.0, -1.0):
                    if used >= prunings:
                        break
                    density = (1.0 - best[name]) * float(np.exp(sign * step))
                    proposal = applied(env, {**best, name: float(np.clip(1.0 - density, 0.0, 1.0))})
                    key = tuple(base.counts_for(proposal).tolist())
                    if key in seen:
                        continue
                    seen.add(key)
                    used += 1
                    value = loss_of(proposal)
                    if value < best_loss:
                        best, best_loss, improved, moves = proposal, value, True, moves + 1
                        break
    kept = best is not start and loss_of(best, seed=1) < loss_of(start, seed=1)
    record = {"prunings": used, "moves": moves, "loss": first_loss, "refined_loss": best_loss, "kept": bool(kept)}
    return (best if kept else start), record


def result_loss(record: dict[str, Any]) -> float:
    """The loss, on the ranking's batches, of the allocation :func:`refine` returned (its start's where the search
    was undone), from :func:`refine`'s record."""
    return record["refined_loss"] if record["kept"] else record["loss"]


def run(env: gym.Env, seed: int, policies: list[Any] | None = None, rules: tuple[str, ...] | None = None,
        batches: int = 8, refine_prunings: int = REFINE_PRUNINGS,
        refine_from: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Rank the candidates by training loss, refine the lowest (and LAMP's) with :func:`refine`, and score the
    refined allocation with the lower loss once.

    :param env: the capped env (budget mode, unstructured granularity). In sequential mode the candidates are ranked
        as a joint episode would apply them; the chosen one is then played in the env's own mode.
    :param seed: unused (the loss batches are drawn from seed 0 for every candidate).
    :param policies: layer-wise policies (or paths of saved ones); default :func:`committee`.
    :param rules: one-shot agents (``evals=1``) whose allocations join the candidates; default
        :data:`DEFAULT_RULES`, less those the task cannot run (OBD without a loss).
    :param batches: training batches each loss averages.
    :param refine_prunings: most candidates each :func:`refine` prunes; 0 scores the chosen candidate as it is (a
        task without a loss is never refined).
    :param refine_from: the candidates to refine, by name (``"chosen"``: the lowest-loss one); the refined
        allocation with the lowest loss on the ranking's batches is scored. Default: the chosen one and LAMP's
        where LAMP is a candidate (:data:`REFINE_FROM`).
    :raises ValueError: without a target sparsity, at ``hidden_unit`` granularity, for an unknown rule, or for a
        ``refine_from`` name that is not a candidate.
    """
    from agents.core.cap import submit
    from prune_env.checks import check_int

    refine_prunings = check_int("refine_prunings", refine_prunings, 0)
    allocations = candidates(env, policies, rules)
    if refine_from is None:
        refine_from = tuple(n for n in REFINE_FROM if n == "chosen" or n in allocations)
    names = ["chosen", *allocations]
    if (not isinstance(refine_from, (list, tuple)) or not refine_from
            or any(not isinstance(n, str) or n not in names for n in refine_from)):
        raise ValueError(f"`refine_from` must be a non-empty sequence of names from {names}, got {refine_from!r}")
    chosen, losses = rank(env, allocations, batches)
    allocation, extras = allocations[chosen], {"chosen": chosen, "train_losses": losses}
    if refine_prunings and losses:
        starts = list(dict.fromkeys(chosen if n == "chosen" else n for n in refine_from))
        runs = {n: refine(env, allocations[n], refine_prunings, batches, losses[n]) for n in starts}
        best = min(starts, key=lambda n: (result_loss(runs[n][1]), starts.index(n)))
        allocation, extras["refined"] = runs[best][0], {**runs[best][1], "from": best}
        extras["refinements"] = {n: r for n, (_, r) in runs.items()}
    submit(env, allocation)
    return extras
