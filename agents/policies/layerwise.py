"""A layer-wise pruning policy that transfers across models, and its REINFORCE pretraining on a zoo.

:class:`LayerwisePolicy` is one small network shared across layers: it maps a layer's row of the zoo observation
(its static statistics, its LAMP sparsity at the target, the sparsity chosen so far, a validity flag;
:data:`prune_env.envs.zoo.ROW`) together with the model-level context (:data:`prune_env.envs.zoo.CONTEXT`, the target
included) to how far that layer's mean action departs from LAMP's. So it works for any number of layers, one policy
serves every target (target-conditioned, as in CACP), and the untrained policy is LAMP itself: pretraining can only
be selected if it beats LAMP on the validation models.

In joint budget mode the env's projection ignores a common shift of all requests, so the departures are centred over
the model's real layers: without that the policy could drift along the ignored direction until every action clips
(the same fix as :mod:`agents.searchers.reinforce`).

:func:`pretrain` trains it with REINFORCE on a :class:`~prune_env.PruneRNNZooEnv` in joint mode: each episode draws
a model and a target, the Gaussian policy proposes one allocation, the env projects it onto the target and scores
it. By default each model keeps a running mean and variance of its reward: the advantage is the reward minus that
mean, in units of that standard deviation (rewards of different models are on different scales), normalised again per
batch. With ``group_size`` G > 1, G allocations are sampled for each drawn (model, target) and each is compared with
the other G - 1 (RLOO's leave-one-out baseline), so the reward's dependence on the target drops out of the gradient.

Policies are saved as a ``torch.save`` dict of tensors and plain values and loaded with ``weights_only=True``: a
policy file never runs code.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from agents.policies.network import LayerwisePolicy, networks
from prune_env.checks import check_int, check_number
from prune_env.envs.zoo import OBSERVATION_FORMATS, ROW_V2, PruneRNNZooEnv

#: Format tag of saved policies (format 3 records the row columns the policy reads; format 2 read :data:`ROW_V2`).
FORMAT = "prune-rnn-gym/layerwise-policy/3"
_FORMATS = {"prune-rnn-gym/layerwise-policy/2": ROW_V2, FORMAT: None}


@dataclass
class PretrainArgs:
    """Options of :func:`pretrain`."""

    episodes: int = 2000
    """episodes (evaluations) in all"""
    batch_size: int = 16
    """episodes per update"""
    learning_rate: float = 3e-3
    """Adam step size"""
    hidden: int = 64
    """width of the policy's hidden layers"""
    init_std: float = 0.3
    """starting standard deviation"""
    min_std: float = 0.05
    """floor on the standard deviation"""
    baseline_decay: float = 0.8
    """decay of each model's running mean and variance of the reward (its baseline and scale; ``group_size`` 1)"""
    group_size: int = 1
    """allocations sampled for each drawn (model, target); above 1, each is compared with the others of its group
    (leave-one-out baseline) instead of with the model's running mean over all targets"""
    ema_decay: float = 0.0
    """above 0, :func:`pretrain_selected` keeps an exponential moving average of the policy's weights (this decay per
    update) and selects, and returns, the average instead of the raw weights: less noise between rounds"""
    seed: int = 0
    """seeds the policy and its sampling (the zoo env is reset with it too)"""
    pool: bool = False
    """each layer's departure also reads the other layers' pooled encodings (:class:`LayerwisePolicy`'s ``pool``)"""


def pretrain(zoo: PruneRNNZooEnv, args: PretrainArgs | None = None, policy: LayerwisePolicy | None = None,
             progress: bool = False, writer: Any = None, optimizer: torch.optim.Optimizer | None = None,
             average: LayerwisePolicy | None = None) -> tuple[LayerwisePolicy, list[float]]:
    """Train a :class:`LayerwisePolicy` with REINFORCE on ``zoo`` (joint mode); returns it and the mean reward of
    each batch.

    :param zoo: the zoo env, joint mode.
    :param args: options (:class:`PretrainArgs`).
    :param policy: continue training this policy instead of a fresh one.
    :param progress: show a tqdm bar.
    :param writer: an optional TensorBoard ``SummaryWriter``.
    :param optimizer: continue with this optimizer (over ``policy``'s parameters); default: a new Adam.
    :param average: a policy of the same shape moved towards ``policy``'s weights after every update, by
        ``args.ema_decay`` (an exponential moving average; ignored when ``ema_decay`` is 0).
    """
    args = args or PretrainArgs()
    if zoo.mode != "joint":
        raise ValueError("pretrain needs a joint-mode PruneRNNZooEnv")
    for name in ("episodes", "batch_size", "group_size"):
        check_int(name, getattr(args, name), 1)
    check_number("ema_decay", args.ema_decay, 0.0, 1.0, high_open=True)
    gen = torch.Generator().manual_seed(args.seed)
    columns = OBSERVATION_FORMATS[zoo.observation_format]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        policy = policy or LayerwisePolicy(args.hidden, args.init_std, columns, pool=args.pool)
    if policy.observation_format != zoo.observation_format:
        raise ValueError(f"`policy` reads observation format {policy.observation_format}, the zoo env gives format "
                         f"{zoo.observation_format}")
    optim = optimizer or torch.optim.Adam(policy.parameters(), lr=args.learning_rate)
    baselines: dict[int, tuple[float, float]] = {}  # model -> running mean and variance of its reward
    curve: list[float] = []
    zoo.reset(seed=args.seed)
    done = 0
    from tqdm.auto import tqdm

    bar = tqdm(total=args.episodes, desc="pretrain", disable=not progress)
    t0 = time.perf_counter()
    while done < args.episodes:
        n = min(args.batch_size, args.episodes - done)
        obs_b, eps_b, adv_b, rewards = [], [], [], []
        while len(rewards) < n:
            obs, info = zoo.reset()
            k, target = info["task_index"], info["target_sparsity"]
            group = []
            for j in range(min(args.group_size, n - len(rewards))):
                if j:  # the same model at the same target again
                    obs, info = zoo.reset(options={"task_index": k, "target_sparsity": target})
                with torch.no_grad():
                    mu, valid = policy.means(torch.as_tensor(obs))
                    std = policy.log_std.exp().clamp_min(args.min_std)
                    eps = torch.randn(mu.shape, generator=gen) * valid
                    action = (mu + std * eps).clamp(-1.0, 1.0).numpy()
                group.append(zoo.step(action.astype(np.float32))[1])
                obs_b.append(obs)
                eps_b.append(eps)
            rewards += group
            if args.group_size == 1:
                # Rewards of different models live on different scales (a regression model's score ratio can reach
                # -100 where a classifier's stays in [0, 1]): each model's advantage is measured in its own running
                # standard deviation.
                reward = group[0]
                mean, var = baselines.get(k, (reward, 0.0))
                adv_b.append((reward - mean) / (np.sqrt(var) + 1e-3))
                d = args.baseline_decay
                baselines[k] = (d * mean + (1 - d) * reward, d * var + (1 - d) * (reward - mean) ** 2)
            else:
                adv_b += _group_advantages(group)
        adv = torch.as_tensor(adv_b, dtype=torch.float32)
        adv = adv / (adv.std() + 1e-8) if len(adv_b) > 1 else adv
        mu, valid = policy.means(torch.as_tensor(np.stack(obs_b)))
        std = policy.log_std.exp().clamp_min(args.min_std)
        actions = mu.detach() + std.detach() * torch.stack(eps_b)
        dist = torch.distributions.Normal(mu, std)
        logp = (dist.log_prob(actions) * valid).sum(-1)
        loss = -(adv * logp).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        if average is not None and args.ema_decay > 0:
            with torch.no_grad():
                for avg, p in zip(average.parameters(), policy.parameters()):
                    avg.mul_(args.ema_decay).add_(p, alpha=1.0 - args.ema_decay)
        done += n
        curve.append(float(np.mean(rewards)))
        bar.update(n)
        if writer is not None:
            writer.add_scalar("pretrain/mean_reward", curve[-1], done)
            writer.add_scalar("pretrain/std", float(std.detach()), done)
            writer.add_scalar("pretrain/episodes_per_s", done / (time.perf_counter() - t0), done)
    bar.close()
    return policy, curve


def _fingerprint_args(args: PretrainArgs) -> dict[str, Any]:
    """``args`` as a checkpoint records them; ``pool`` only when set, so runs from before it resume."""
    return {k: v for k, v in args.__dict__.items() if k != "pool" or v}


def _group_advantages(rewards: list[float]) -> list[float]:
    """Each reward against the mean of the others in its group (same model, same target), in units of the group's
    standard deviation: the leave-one-out baseline of RLOO, so neither the model's nor the target's level of reward
    enters the gradient. A group of one has no comparison and gets advantage 0."""
    r = np.asarray(rewards, dtype=np.float64)
    if len(r) < 2:
        return [0.0] * len(r)
    others = (r.sum() - r) / (len(r) - 1)
    return ((r - others) / (r.std() + 1e-3)).tolist()


#: Model-selection criteria of :func:`zero_shot_score` and :func:`pretrain_selected`.
SELECTION_METRICS = ("reward", "score")


def zero_shot_score(policy: LayerwisePolicy, tasks: list[Any], targets: Sequence[float] = (0.5, 0.7, 0.9),
                    metric: str = "reward", **env_kwargs: Any) -> float:
    """The mean over ``tasks`` and ``targets`` of ``policy``'s one-evaluation allocation, on validation splits only:
    the model-selection criterion of :func:`pretrain_selected`.

    :param metric: ``"reward"``: the reward (validation score relative to dense), each clipped to [0, 1] so that
        one collapsed model (a regression model's ratio can reach -100) cannot outweigh the rest (policy v1's
        criterion); ``"score"``: the raw validation score in each task's own units, the quantity the transfer
        benchmark averages on the test splits, so a model that collapses counts by how far its score falls.
    """
    from prune_env import PruneRNNEnv

    if metric not in SELECTION_METRICS:
        raise ValueError(f"unknown `metric` {metric!r}; expected one of {SELECTION_METRICS}")
    values = []
    for task in tasks:
        for target in targets:
            env = PruneRNNEnv(task, target_sparsity=target, **env_kwargs)
            env.reset(seed=0)
            _, reward, _, _, info = env.step(policy.allocation_action(env))
            values.append(float(np.clip(reward, 0.0, 1.0)) if metric == "reward" else float(info["score"]))
    return float(np.mean(values))


#: The zoo env's arguments that :func:`pretrain_selected`'s validation envs share with it (how a layer is pruned).
OPERATOR_KEYS = ("criterion", "reconstruct", "max_sparsity", "granularity")

#: What :func:`pretrain_selected` writes in a checkpoint's ``"format"``.
PRETRAIN_CHECKPOINT_FORMAT = "prune-rnn-gym pretrain checkpoint"


def pretrain_selected(train: PruneRNNZooEnv, validation: list[Any], args: PretrainArgs, rounds: int = 10,
                      progress: bool = False, writer: Any = None, checkpoint: str | os.PathLike | None = None,
                      selection_metric: str = "reward", selection_targets: Sequence[float] = (0.5, 0.7, 0.9)
                      ) -> tuple[LayerwisePolicy, list[dict[str, float]]]:
    """:func:`pretrain` in ``rounds`` equal parts, keeping the policy with the best :func:`zero_shot_score` on the
    ``validation`` tasks (scored before training too, so the result is never worse than the untrained policy,
    which is LAMP). Returns the selected policy and one log row per round. With ``args.ema_decay`` > 0 the
    moving average of the weights is scored and selected instead of the raw weights. The validation envs prune
    with ``train``'s operator (its :data:`OPERATOR_KEYS` arguments), and the policy reads ``train``'s observation
    format.

    :param checkpoint: a file to resume from and to rewrite atomically after every round (policy, optimizer, the best
        policy so far and the log; read back with ``weights_only=True``). Each round reseeds its sampling and the
        zoo's draws, so a run resumed after a kill ends with the same policy, bit for bit, as an uninterrupted one; a
        kill loses at most the round it was in. A checkpoint of another run (other options, rounds or models) is
        refused with a :class:`~agents.core.checkpoint.CheckpointError` naming what differs.
    :param selection_metric: :func:`zero_shot_score`'s ``metric`` (default: v1's clipped reward).
    :param selection_targets: the targets :func:`zero_shot_score` averages over.
    """
    import copy

    from agents.core.checkpoint import CheckpointError, check_checkpoint_path, differences, read_sealed, write_sealed

    check_int("rounds", rounds, 1)
    if selection_metric not in SELECTION_METRICS:
        raise ValueError(f"unknown `selection_metric` {selection_metric!r}; expected one of {SELECTION_METRICS}")
    selection_targets = tuple(check_number("selection_targets", t, 0.0, 1.0, high_open=True)
                              for t in selection_targets)
    if not selection_targets:
        raise ValueError("`selection_targets` must hold at least one target sparsity")

    # the validation envs prune with the training zoo's operator, so selection scores what training rewarded
    operator = {k: train.env_kwargs[k] for k in OPERATOR_KEYS if k in train.env_kwargs}

    def criterion(p: LayerwisePolicy) -> float:
        return zero_shot_score(p, validation, selection_targets, selection_metric, **operator)

    checkpoint = check_checkpoint_path("checkpoint", checkpoint)
    per = -(-args.episodes // rounds)
    columns = OBSERVATION_FORMATS[train.observation_format]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        policy = LayerwisePolicy(args.hidden, args.init_std, columns, pool=args.pool)
    optimizer = torch.optim.Adam(policy.parameters(), lr=args.learning_rate)
    # with ema_decay > 0 the moving average is what is scored, selected and returned
    average = copy.deepcopy(policy) if args.ema_decay > 0 else None
    fingerprint = json.loads(json.dumps({  # plain values, as a checkpoint reads them back
        "args": _fingerprint_args(args), "rounds": rounds, "train": [t.name for t in train.tasks],
        "target_range": [float(x) for x in train.target_range],
        "validation": [getattr(t, "name", str(t)) for t in validation],
        "selection": [selection_metric, list(selection_targets)], "columns": list(columns),
        **({"operator": operator} if operator else {})}))
    start = 0
    if checkpoint is not None and os.path.exists(checkpoint):
        blob = read_sealed(checkpoint, PRETRAIN_CHECKPOINT_FORMAT,
                           ("fingerprint", "round", "done", "policy", "optimizer", "best", "log"))
        diff = differences(blob["fingerprint"], fingerprint)
        if diff:
            raise CheckpointError(f"checkpoint {checkpoint!r} was written by another pretraining run "
                                  f"({'; '.join(diff)}); pass the same options and models, or another path")
        policy.load_state_dict(blob["policy"])
        optimizer.load_state_dict(blob["optimizer"])
        if average is not None:
            average.load_state_dict(blob["average"])
        b = blob["best"]
        best = (float(b["score"]), b["state"], int(b["done"]))
        log, done, start = json.loads(blob["log"]), int(blob["done"]), int(blob["round"])
    else:
        best = (criterion(policy), copy.deepcopy(policy.state_dict()), 0)  # untrained: the average is the policy
        log = [{"episodes": 0, "validation": best[0]}]
        done = 0
    for r in range(start, rounds):
        n = min(per, args.episodes - done)
        if n <= 0:
            break
        round_args = PretrainArgs(**{**args.__dict__, "episodes": n, "seed": args.seed + r})
        policy, curve = pretrain(train, round_args, policy=policy, progress=progress, writer=writer,
                                 optimizer=optimizer, average=average)
        done += n
        scored = policy if average is None else average
        score = criterion(scored)
        log.append({"episodes": done, "validation": score, "train_reward": float(np.mean(curve))})
        if writer is not None:
            writer.add_scalar("pretrain/validation_zero_shot", score, done)
        if score > best[0]:
            best = (score, copy.deepcopy(scored.state_dict()), done)
        if checkpoint is not None:
            write_sealed(checkpoint, {"fingerprint": fingerprint, "round": r + 1,
                                      "done": done, "policy": policy.state_dict(), "optimizer": optimizer.state_dict(),
                                      "best": {"score": best[0], "state": best[1], "done": best[2]},
                                      "log": json.dumps(log),
                                      "average": None if average is None else average.state_dict()},
                          PRETRAIN_CHECKPOINT_FORMAT, round=r + 1)
    selected = LayerwisePolicy(args.hidden, args.init_std, columns, pool=args.pool)
    selected.load_state_dict(best[1])
    selected.meta = {"selected_after_episodes": best[2], "validation_zero_shot": best[0]}
    return selected, log


#: The policies shipped inside the package, by version; their ``meta`` and ``benchmarks/results/`` record the command
#: that made each. ``v6`` (the default) and ``v5`` read observation format 4 (calibration-aware layer features,
#: pretrained on zoo-v2 with OBS ranking and reconstruction; v6 for 16384 episodes, v5 for 4096); ``v6-magnitude`` is
#: v6's recipe with magnitude ranking and no reconstruction; ``v4`` reads format 3 (zoo-v1, magnitude ranking).
SHIPPED_POLICIES = {"v6": "data/default_policy.pt", "v6-magnitude": "data/policy_v6_magnitude.pt",
                    "v5": "data/policy_v5.pt", "v4": "data/policy_v4.pt",
                    "v6-committee": "data/committee_v6.pt", "v6-magnitude-committee": "data/committee_v6_magnitude.pt"}
#: The committees (several policies in one file, see :func:`members`) the ``pick`` agent ranks by default, by
#: operator: ``"magnitude"`` for magnitude ranking without reconstruction, ``"default"`` for every other.
COMMITTEES = {"default": "v6-committee", "magnitude": "v6-magnitude-committee"}
#: The version ``policy=None`` and :func:`default_policy` use.
DEFAULT_VERSION = "v6"
#: The default shipped policy's file, inside the package.
DEFAULT_POLICY = SHIPPED_POLICIES[DEFAULT_VERSION]


def default_policy(version: str = DEFAULT_VERSION) -> LayerwisePolicy:
    """A layer-wise policy shipped with the package (pretrained on a zoo's train split, selected on validation
    models); its ``meta`` records the command, commit and zoo it came from.

    :param version: a key of :data:`SHIPPED_POLICIES`: ``"v6"`` (the default; like ``"v6-magnitude"`` and ``"v5"`` it
        needs tasks with calibration data, see :func:`agents.policies.policy.shipped_policy`), ``"v5"`` or ``"v4"``.
    :raises ValueError: for an unknown ``version``.
    :raises FileNotFoundError: in a checkout or install without the file.
    """
    from importlib.resources import as_file, files

    if not isinstance(version, str) or version not in SHIPPED_POLICIES:
        raise ValueError(f"unknown `version` {version!r}; the shipped policies are {sorted(SHIPPED_POLICIES)}")
    res = files("agents").joinpath(SHIPPED_POLICIES[version])
    if not res.is_file():
        raise FileNotFoundError(f"no {version} policy shipped (agents/{SHIPPED_POLICIES[version]} is missing); pass "
                                "`policy=` a path or a LayerwisePolicy, or pretrain one with `prune-rnn pretrain`")
    with as_file(res) as path:
        return load(path)


def ensemble(policies: Sequence[LayerwisePolicy]) -> LayerwisePolicy:
    """One policy whose departure from LAMP is the mean of ``policies``' departures (and whose standard deviation is
    their geometric mean): an ensemble of independently pretrained policies, which averages out the draw of any one
    run. Ensembles are flattened into their networks. The result is a :class:`LayerwisePolicy` with ``members``
    networks, saved and loaded like any other; its ``meta["members"]`` holds the members' ``meta``.

    :raises ValueError: for no policies, or policies of different widths or observation columns.
    """
    policies = list(policies)
    if not policies or not all(isinstance(p, LayerwisePolicy) for p in policies):
        raise ValueError("`policies` must be a non-empty sequence of LayerwisePolicy")
    first = policies[0]
    if any(p.hidden != first.hidden or p.columns != first.columns or p.pool != first.pool for p in policies):
        raise ValueError("`policies` must share the hidden width, the observation columns they read and `pool`")
    nets = [net for p in policies for net in networks(p)]
    out = LayerwisePolicy(first.hidden, columns=first.columns, members=len(nets), pool=first.pool)
    with torch.no_grad():
        for mine, theirs in zip(networks(out), nets):
            mine.load_state_dict(theirs.state_dict())
        out.log_std.copy_(torch.stack([p.log_std for p in policies]).mean())
    out.meta = {"members": [getattr(p, "meta", {}) for p in policies]}
    return out


def members(policy: LayerwisePolicy) -> list[LayerwisePolicy]:
    """The policies of an ensemble (or committee) file, each with one network, in the order they were joined; a
    one-network policy gives itself. Each member's ``meta`` is the one recorded for it, when there is one."""
    nets = networks(policy)
    if len(nets) == 1:
        return [policy]
    metas = getattr(policy, "meta", {}).get("members", [])
    out = []
    for k, net in enumerate(nets):
        one = LayerwisePolicy(policy.hidden, columns=policy.columns, pool=policy.pool)
        with torch.no_grad():
            one.net.load_state_dict(net.state_dict())
            one.log_std.copy_(policy.log_std)
        one.meta = metas[k] if k < len(metas) and isinstance(metas[k], dict) else {}
        out.append(one)
    return out


def scaled(policy: LayerwisePolicy, factor: float) -> LayerwisePolicy:
    """A copy of ``policy`` whose every layer departure from LAMP is ``factor`` times ``policy``'s (the last linear
    layer of each network scaled): 0 gives LAMP, 1 the policy, above 1 departs further. ``policy`` is not changed;
    ``meta["scale"]`` records the factor (times any earlier one).

    :raises ValueError: for a ``factor`` that is negative or not finite.
    """
    import copy

    factor = check_number("factor", factor, 0.0)
    out = copy.deepcopy(policy)
    with torch.no_grad():
        for net in networks(out):
            last = net.head[-1] if out.pool else net[-1]
            last.weight.mul_(factor)
            last.bias.mul_(factor)
    out.meta = {**getattr(policy, "meta", {}), "scale": factor * getattr(policy, "meta", {}).get("scale", 1.0)}
    return out


def save(policy: LayerwisePolicy, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> None:
    """Save ``policy`` (tensors and plain values only) atomically to ``path``, with ``meta`` (command, commit, zoo)."""
    # meta as JSON text: only tensors, ints and strings reach the file, which weights_only loading accepts
    blob = {"format": FORMAT, "hidden": policy.hidden, "columns": list(policy.columns), "members": policy.members,
            **({"pool": True} if policy.pool else {}), "state_dict": policy.state_dict(),
            "meta": json.dumps(meta or {}, default=str)}
    from prune_env.io import atomic_save_torch

    atomic_save_torch(blob, path)


def load(path: str | os.PathLike) -> LayerwisePolicy:
    """Load a policy saved by :func:`save`, never executing code from the file.

    :raises ValueError: for a file that is not a readable layer-wise policy (corrupt, foreign or crafted).
    """
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # an unpickling error, a truncated zip, a pickle that would run code...
        raise ValueError(f"{os.fspath(path)!r} is not a readable layer-wise policy: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(blob, dict) or blob.get("format") not in _FORMATS:
        raise ValueError(f"{os.fspath(path)!r} is not a layer-wise policy file (format {FORMAT!r} or older)")
    columns = _FORMATS[blob["format"]] or blob.get("columns")
    if not isinstance(columns, (list, tuple)) or not all(isinstance(c, str) for c in columns):
        raise ValueError(f"{os.fspath(path)!r} does not list the observation columns its policy reads")
    try:
        members = int(blob.get("members", 1))
        pool = blob.get("pool", False)
        if not isinstance(pool, bool):
            raise ValueError(f"`pool` {pool!r}")
        if not 1 <= members <= len(blob["state_dict"]):  # each network has its own weights in the file
            raise ValueError(f"{members} networks")
        policy = LayerwisePolicy(int(blob["hidden"]), columns=columns, members=members, pool=pool)
        policy.load_state_dict(blob["state_dict"])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{os.fspath(path)!r} holds mismatched policy weights: {e}") from None
    try:
        policy.meta = json.loads(blob.get("meta", "{}"))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{os.fspath(path)!r} holds unreadable policy metadata: {e}") from None
    return policy


__all__ = ["DEFAULT_POLICY", "DEFAULT_VERSION", "FORMAT", "PRETRAIN_CHECKPOINT_FORMAT", "LayerwisePolicy",
           "PretrainArgs", "SELECTION_METRICS", "SHIPPED_POLICIES", "default_policy", "ensemble", "load", "pretrain",
           "pretrain_selected", "save", "scaled", "members", "zero_shot_score", "COMMITTEES"]
