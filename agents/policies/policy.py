"""The custom-policy protocol, and the ``policy`` agent that runs any object implementing it.

A policy is anything with ``act(obs, info) -> action``. It may also define ``observe(reward, info)``, called at the
end of every episode, to learn from the outcome. The learning agents return their trained policy in this form
(``SearchResult.policy``), so a trained policy and a hand-written rule are used the same way::

    class KeepHeadDense:
        def act(self, obs, info):
            return env.action_for({name: (0.0 if name == "head.weight" else 0.95) for name in env.layer_names})

    result = agents.search("policy", env, max_evals=10, policy=KeepHeadDense())
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from agents.registry import AgentSpec, get_spec, specs

SPEC = AgentSpec(name="policy", run="agents.policies.policy:run", evals=None, deterministic=False, batching=False,
                 default_max_evals=1,
                 description="a pretrained layer-wise policy (zero-shot at max_evals=1, then adapted by REINFORCE) or "
                             "your own object with act(obs, info) -> action (pass policy=...)")


@runtime_checkable
class Policy(Protocol):
    """Maps an observation (and the last ``info``) to an action of the env's action space."""

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """The action for ``obs``.

        :param obs: the env's observation.
        :param info: the ``info`` from the last ``reset``/``step``.
        """
        ...


def play(env: gym.Env, policy: Policy) -> tuple[float, dict[str, Any]]:
    """Play one episode with ``policy``; calls its ``observe(reward, info)`` if it has one.

    :param env: the env (capped or not); it is reset here.
    :param policy: an object with ``act(obs, info)``.
    :returns: the final reward and info.
    """
    obs, info = env.reset()
    while True:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
        if terminated or truncated:
            observe = getattr(policy, "observe", None)
            if callable(observe):
                observe(float(reward), info)
            return float(reward), info


def __getattr__(name: str) -> tuple[str, ...]:
    """``RIVALS`` (every agent with a ``rival_order``, in it) and ``ONE_SHOT`` (every agent with ``evals=1``):
    read from :mod:`agents.registry` when asked for."""
    if name == "RIVALS":
        return tuple(s.name for s in sorted((s for s in specs() if s.rival_order is not None),
                                            key=lambda s: s.rival_order))
    if name == "ONE_SHOT":
        return tuple(s.name for s in specs() if s.one_shot)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_rivals(env: gym.Env) -> tuple[str, ...]:
    """The one-shot rules that few-shot adaptation scores before it searches (:func:`run`'s ``rivals``): the
    registered agents with a ``rival_order`` (:class:`~agents.registry.AgentSpec`), in that order, that support
    ``env``'s granularity and whose task has the loss they need.

    :param env: the (wrapped) env.
    """
    from prune_env.pruning.fisher import has_loss

    base = env.unwrapped
    granularity = "unstructured" if base.analysis.plan is None else "hidden_unit"
    loss_aware = has_loss(base.task)
    chosen = [s for s in specs() if s.rival_order is not None and granularity in s.granularities
              and (loss_aware or not s.needs_loss)]
    return tuple(s.name for s in sorted(chosen, key=lambda s: s.rival_order))


def reads_layer_features(env: gym.Env) -> bool:
    """Whether format-4 layer features can be computed for ``env``: a task with calibration data, single weights."""
    from prune_env.pruning.calibration import has_calibration

    base = env.unwrapped
    return has_calibration(base.task) and base.analysis.plan is None


def ranks_by_magnitude(env: gym.Env) -> bool:
    """Whether ``env`` ranks by magnitude without reconstruction (the env's default operator), the operator the
    magnitude-trained shipped policies were trained on."""
    base = env.unwrapped
    return base.criterion == "magnitude" and not base.reconstruct


def shipped_policy(env: gym.Env) -> Any:
    """The shipped layer-wise policy for ``env``. Where its layer features can be computed (a task with calibration
    data, single-weight granularity): the one trained on ``env``'s operator, ``v6-magnitude`` for magnitude ranking
    without reconstruction (the env's default operator) and the default ``v6`` (OBS-trained, observation format 4)
    for every other; elsewhere ``v4`` (format 3)."""
    from agents.policies.layerwise import DEFAULT_VERSION, default_policy

    if not reads_layer_features(env):
        return default_policy("v4")
    return default_policy("v6-magnitude" if ranks_by_magnitude(env) else DEFAULT_VERSION)


def run(env: gym.Env, seed: int, policy: Any = None, episodes: int | None = None,
        init_std: float = 0.15, rivals: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The ``policy`` agent: run a custom policy, or transfer a pretrained layer-wise policy.

    - A :class:`~agents.policies.layerwise.LayerwisePolicy` (or the path of one saved by
      :func:`agents.policies.layerwise.save`; by default the policy shipped with the package,
      :func:`agents.policies.layerwise.default_policy`, whose calibration-aware features need a task with
      calibration data and single-weight granularity: elsewhere the default is the shipped ``v4`` policy, which
      reads neither):
      **zero-shot**, its allocation for this model and target is scored once (the first evaluation); **few-shot**,
      with a larger ``max_evals`` the one-shot ``rivals`` are scored next (one evaluation each), and the remaining
      evaluations run REINFORCE whose mean starts at the best of these allocations on validation (joint mode;
      sequential mode runs REINFORCE from its default start). The result is the best allocation seen, so on
      validation it is never below the zero-shot one nor below any rival rule.
    - Any other object with ``act(obs, info)``: played until the evaluation cap is reached (or for ``episodes``
      episodes).

    :param env: the capped env.
    :param seed: seeds the few-shot search (a custom policy seeds itself).
    :param policy: the policy object, a path to a saved layer-wise policy, or ``None`` for the shipped one.
    :param episodes: custom policies: stop after this many episodes (a deterministic policy needs only 1).
    :param init_std: layer-wise few-shot: the starting standard deviation around the start allocation.
    :param rivals: layer-wise few-shot: one-shot agents (``evals=1`` in :mod:`agents.registry`) scored after the
        policy's allocation, while evaluations remain, before REINFORCE starts from the best; default
        :func:`default_rivals` (``lamp``, ``erk``, ``global`` and, for a task with a loss, ``obd``; none at
        ``hidden_unit`` granularity, where they do not apply); ``()`` starts from the policy's allocation.
    """
    import os

    from agents.core.cap import submit
    from agents.policies.layerwise import LayerwisePolicy, load

    if policy is None:
        policy = shipped_policy(env)
    if isinstance(policy, (str, os.PathLike)):
        policy = load(policy)
    if isinstance(policy, LayerwisePolicy):
        base = env.unwrapped
        if base.target_sparsity is None:
            raise ValueError("agent 'policy' with a layer-wise policy needs an env with target_sparsity (budget mode)")
        if rivals is None:
            rivals = default_rivals(env)
        one_shot = [s.name for s in specs() if s.one_shot]
        if not isinstance(rivals, (list, tuple)) or any(name not in one_shot for name in rivals):
            raise ValueError(f"`rivals` must be a sequence of one-shot agents from {one_shot}, got {rivals!r}")
        fns = [get_spec(name).load() for name in rivals]
        env.reset()
        start = policy.allocation_action(env)  # read before anything is pruned: the episode's first observation
        requested = policy.allocation(env)
        submit(env, requested)
        extras: dict[str, Any] = {"policy": policy, "zero_shot_allocation": requested}
        for fn in fns:
            if env.exhausted:
                break
            fn(env, seed)
        if not env.exhausted:
            from prune_env.envs.actions import sparsity_to_action
            best = env.tracker.best_allocation  # the best of the policy's and the rivals' allocations, as applied
            if best is not None and base.mode == "joint":
                start = sparsity_to_action(base.counts_for(best) / base.numels, base.max_sparsity)
            reinforce = get_spec("reinforce").load()  # the registered agent, by name, as the rivals are
            adapted = reinforce(env, seed, start=start if base.mode == "joint" else None, init_std=init_std)
            extras["adapted_policy"] = adapted["policy"]
        return extras
    if not callable(getattr(policy, "act", None)):
        raise ValueError("agent 'policy' needs `policy=` an object with act(obs, info) -> action, a LayerwisePolicy, "
                         f"or the path of a saved one; got {type(policy).__name__}")
    n = env.remaining if episodes is None else min(int(episodes), env.remaining)
    for _ in range(n):
        play(env, policy)
    return {"policy": policy}
