"""``reinforce``: REINFORCE with a Gaussian policy over per-layer sparsity, in one readable file (cleanrl style).

Joint mode: one episode is one action holding every layer's requested sparsity, so this is a Gaussian search
distribution over allocations whose mean is moved by the policy gradient. Sequential mode (AMC style): the same
network maps each step's observation (the current layer's features) to that layer's action, and every step of an
episode shares the episode's final reward.

The update, per batch of ``batch_size`` episodes with returns ``R``::

    b   <- baseline_decay * b + (1 - baseline_decay) * mean(R)       # moving-average baseline
    A    = (R - b) / (std(R) + 1e-8)                                 # normalised advantage
    loss = -mean(A * log pi(a | s)) - ent_coef * entropy(pi)

:class:`Args` holds only the options that showed a measured gain (or that the agent needs). Variants tried and
found no better (rank advantages, antithetic sampling, a separate log-std step, an MLP in joint mode, no centring)
stay reachable for the ablation benchmarks through the private :class:`_Ablation`, not as options.

The policy starts at uniform pruning (every layer requests the same sparsity), so anything it learns is an
improvement over that baseline. In joint budget mode the start is the middle of the action range (``init_mean="mid"``)
rather than the target's own request: the env's projection adds one common shift, so both are uniform pruning, but at
a 90% target the target's request sits near the +1 edge, where half of every sample clips and the differences
between layers are lost (see ``benchmarks/results/reinforce_tuning/``). Run it directly::

    python -m agents.searchers.reinforce --task digits --target-sparsity 0.9 --max-evals 300

Resumable searches: with ``checkpoint=PATH`` the search writes a checkpoint every ``checkpoint_every``
evaluations (default 100; after the first policy update at or past each multiple) and at the end, atomically
(temporary file in the same directory, then ``os.replace``). It holds the policy, Adam's state, the baseline, the
update count, the sampling generator, the env's ``np_random`` (fine-tuning seeds), the global RNG states, the
evaluations used, the best-so-far curve and the best allocation, and a fingerprint of the search (agent, evaluation
cap, seed, the options that change the result, the task's name, dense score, layer names and sizes, a hash of the
model's weights, the env's settings). Run the same call again after a crash and it resumes: the evaluation cap counts
across the interruption (the evaluations after the last checkpoint are redone: each kill costs at most
``checkpoint_every + batch_size - 1`` extra scorings, and exactly ``max_evals`` are recorded), and the result (best
score, allocation, history, policy) equals the uninterrupted run's for the same seed. A checkpoint of another search,
a corrupted one (its content carries a SHA-256) or an unreadable one is refused with
:class:`~agents.core.checkpoint.CheckpointError`. It is read with ``torch.load(weights_only=True)``: no code is
unpickled. A finished search's checkpoint is kept: running the call again returns the same result at no cost.
::

    agents.search("reinforce", env, 1000, seed=0, checkpoint="runs/digits-0.9.ckpt", checkpoint_every=100)
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.core.cap import EvalCap
from agents.core.checkpoint import (
    CheckpointError,
    check_checkpoint_path,
    load_checkpoint,
    save_checkpoint,
    search_fingerprint,
    set_global_rng_state,
)
from agents.core.options import parse_options
from agents.registry import AgentSpec
from prune_env.checks import check_choice, check_int, check_number
from prune_env.envs.actions import sparsity_to_action

SPEC = AgentSpec(name="reinforce", run="agents.searchers.reinforce:run", evals=None, deterministic=False,
                 batching=True,
                 description="REINFORCE with a Gaussian policy, moving-average baseline and entropy bonus")

#: :class:`Args` fields that do not change the search's result: a checkpoint resumes whatever their values.
_NOT_IN_FINGERPRINT = ("tensorboard_log", "save_path", "checkpoint", "checkpoint_every")


@dataclass
class Args:
    """Hyper-parameters of :func:`run` (every field is also a ``--flag`` of
    ``python -m agents.searchers.reinforce``)."""

    learning_rate: float = 0.05
    """Adam step size of the mean's bias and of the log standard deviation"""
    net_learning_rate: float = 0.003
    """Adam step size of the sequential-mode MLP (every one of its hidden units moves the mean, so it needs a
    smaller step)"""
    batch_size: int = 8
    """episodes per policy update"""
    init_std: float = 0.3
    """initial standard deviation of the Gaussian, in action units (the action range is [-1, 1])"""
    init_mean: str = "mid"
    """where the mean starts: "uniform" requests the target sparsity in every layer; "mid" (joint budget mode only)
    puts every component at 0, the middle of the action range. The env's projection adds one common shift, so both
    start at uniform pruning, but at a high target the "uniform" request sits near +1 where samples clip and lose
    their differences"""
    min_std: float = 0.02
    """floor on the standard deviation, so exploration never collapses completely"""
    ent_coef: float = 1e-3
    """weight of the entropy bonus"""
    baseline_decay: float = 0.8
    """decay of the moving-average reward baseline"""
    hidden: int = 64
    """width of the hidden layer in sequential mode (joint mode has a free mean vector and no network)"""
    tensorboard_log: str | None = None
    """TensorBoard log directory; None: no logging"""
    save_path: str | None = None
    """where to save the trained policy (torch state dict); None: not saved"""
    checkpoint: str | None = None
    """checkpoint file of a resumable search: if it exists the search resumes from it (refused with a
    ``CheckpointError`` if it was written by a different search or is corrupted), else it starts afresh; either way
    it is rewritten atomically every ``checkpoint_every`` evaluations and at the end. None: no checkpoints"""
    checkpoint_every: int = 100
    """evaluations between checkpoints: one is written after the first policy update at or past each multiple"""


@dataclass(frozen=True)
class _Ablation:
    """Variants kept for ``benchmarks/reinforce_ablation.py`` and ``benchmarks/reinforce_tuning.py``.

    None of them showed a gain in the recorded runs (``benchmarks/results/reinforce_tuning/``,
    ``benchmarks/results/reinforce_ablation/``), so they are not options of :func:`run`; the defaults are what
    :func:`run` does. Pass one as ``agents.search("reinforce", ..., _ablation=_Ablation(...))``.
    """

    advantage: str = "std"
    """"std": ``(R - b) / std(R)``; "rank": fitness shaping as in NES, the rank of each return among the batch and
    the baseline, minus the baseline's rank, over the batch size (in [-1, 1])"""
    mirrored: bool = False
    """joint mode: antithetic sampling, every noise vector ``eps`` is played as ``mean + eps`` and ``mean - eps``"""
    std_learning_rate: float | None = None
    """Adam step size of the log standard deviation; None: ``learning_rate``"""
    joint_hidden: int = 0
    """width of a hidden layer in joint mode; 0: a free mean vector (the joint observation never changes for a given
    target, and an MLP there only multiplies the effective step size by its width)"""
    center: bool | None = None
    """centre the joint mean on the uniform request; None: automatically in joint budget mode (see :func:`run`)"""

    def __post_init__(self) -> None:
        if self.advantage not in ("std", "rank"):
            raise ValueError(f"reinforce `advantage` must be 'std' or 'rank', got {self.advantage!r}")
        for name in ("mirrored", "center"):
            v = getattr(self, name)
            if not (isinstance(v, bool) or (name == "center" and v is None)):
                raise ValueError(f"reinforce `{name}` must be a bool, got {v!r}")
        if self.std_learning_rate is not None:
            check_number("std_learning_rate", self.std_learning_rate, 0.0)
        check_int("joint_hidden", self.joint_hidden, 0)


def search_options(options: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``agents.search("reinforce", ...)`` from a dict mixing :class:`Args` fields and
    :class:`_Ablation` knobs (the ablation benchmarks' variants): the knobs go into one ``_ablation``."""
    public = {f.name for f in dataclasses.fields(Args)}
    knobs = {k: v for k, v in options.items() if k not in public}
    kw = {k: v for k, v in options.items() if k in public}
    return {**kw, "_ablation": _Ablation(**knobs)} if knobs else kw


class GaussianPolicy(nn.Module):
    """``a ~ N(bias + MLP(obs), exp(log_std))``; the MLP's last layer starts at zero, so the start is ``bias``.

    With ``hidden=0`` there is no MLP: the mean is ``bias`` alone, whatever the observation.

    Implements the custom-policy protocol: :meth:`act` returns the mean action (deterministic).

    :param obs_dim: observation size.
    :param act_dim: action size.
    :param hidden: hidden-layer width.
    :param init_action: the starting mean action.
    :param init_std: the starting standard deviation.
    :param center: remove the common shift from the mean (see :func:`run`): the mean's average stays
        ``init_action``.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, init_action: float, init_std: float,
                 center: bool = False):
        super().__init__()
        self.center = center
        self.register_buffer("init_action", torch.tensor(float(init_action)))
        self.obs_dim, self.hidden = obs_dim, hidden
        self.net = (nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, act_dim)) if hidden
                    else None)
        if self.net is not None:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)
        self.bias = nn.Parameter(torch.full((act_dim,), float(init_action)))
        self.log_std = nn.Parameter(torch.full((act_dim,), float(np.log(init_std))))

    def dist(self, obs: torch.Tensor, min_std: float = 0.0) -> torch.distributions.Normal:
        """The action distribution for a batch of observations."""
        std = torch.exp(self.log_std).clamp_min(min_std)
        return torch.distributions.Normal(self.mean(obs), std)

    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        """The mean action (unclipped)."""
        m = self.bias + self.net(obs) if self.net is not None else self.bias.expand(*obs.shape[:-1], -1)
        if self.center:
            m = self.init_action + m - m.mean(-1, keepdim=True)
        return m

    @torch.no_grad()
    def act(self, obs: np.ndarray, info: dict[str, Any] | None = None) -> np.ndarray:
        """The mean action, clipped to the action range (custom-policy protocol)."""
        mean = self.mean(torch.as_tensor(obs, dtype=torch.float32))
        return mean.clamp(-1.0, 1.0).numpy().astype(np.float32)


def run(env: EvalCap, seed: int, _ablation: _Ablation | None = None, start: np.ndarray | None = None,
        **kwargs: Any) -> dict[str, Any]:
    """Train the policy on ``env`` until the evaluation cap is reached.

    :param env: the capped env (:class:`~agents.core.cap.EvalCap`) (joint or sequential mode).
    :param seed: seeds the network initialisation and the action sampling.
    :param start: joint mode: the starting mean action (e.g. a pretrained policy's allocation, see
        :mod:`agents.policies.policy`); default: ``init_mean``.
    :param _ablation: private: a variant for the ablation benchmarks (see :class:`_Ablation`); default: none.
    :param kwargs: fields of :class:`Args`.
    """
    args = _parse_args(kwargs)
    if _ablation is None:
        _ablation = _Ablation()
    elif not isinstance(_ablation, _Ablation):
        raise ValueError(f"reinforce `_ablation` must be an agents.searchers.reinforce._Ablation, got {_ablation!r}")
    ab = _ablation
    base = env.unwrapped

    # Seeding: a private generator for sampling, a forked RNG for the initialisation; the global RNG is untouched.
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        target = base.target_sparsity or 0.0
        # Joint budget mode: the env's projection ignores a common shift of all requests, so an uncentred mean
        # drifts along that direction (Adam rescales its noisy gradient to full steps) until it clips at +-1 and
        # the allocation collapses to uniform. Centring removes the direction.
        center = base.mode == "joint" and base.target_sparsity is not None if ab.center is None else ab.center
        hidden = args.hidden if base.mode == "sequential" else ab.joint_hidden
        uniform_request = float(sparsity_to_action(target, base.max_sparsity))
        mid = args.init_mean == "mid" and base.mode == "joint" and base.target_sparsity is not None
        policy = GaussianPolicy(env.observation_space.shape[0], env.action_space.shape[0], hidden,
                                init_action=0.0 if mid else uniform_request, init_std=args.init_std, center=center)
    if start is not None:
        start = np.asarray(start, dtype=np.float32).reshape(-1)
        if base.mode != "joint" or start.shape != tuple(env.action_space.shape):
            raise ValueError(f"reinforce `start` must be a joint action of shape {env.action_space.shape}")
        with torch.no_grad():
            policy.bias.copy_(torch.as_tensor(start))
    std_lr = args.learning_rate if ab.std_learning_rate is None else ab.std_learning_rate
    groups = [{"params": [policy.bias], "lr": args.learning_rate}, {"params": [policy.log_std], "lr": std_lr}]
    if policy.net is not None:
        groups.append({"params": policy.net.parameters(), "lr": args.net_learning_rate})
    optim = torch.optim.Adam(groups)

    baseline: float | None = None
    update = 0
    resumed_at = 0
    if args.checkpoint:
        options = {k: v for k, v in dataclasses.asdict(args).items() if k not in _NOT_IN_FINGERPRINT}
        options.update(_ablation=dataclasses.asdict(ab), start=None if start is None else start.tolist())
        fingerprint = search_fingerprint(env, "reinforce", seed, options)
        blob = load_checkpoint(args.checkpoint, fingerprint)
        if blob is not None:
            baseline, update = _load_state(blob["agent"], policy, optim, gen)
            env.load_state_dict(blob["cap"])
            set_global_rng_state(blob["global_rng"])
            resumed_at = env.used
    saved_at = env.used
    writer = _writer(args.tensorboard_log, args)
    t0 = time.perf_counter()
    while not env.exhausted:
        n = min(args.batch_size, env.remaining)
        if base.mode == "joint":
            obs_b, act_b, ret_b = _joint_batch(env, policy, gen, args.min_std, n, ab.mirrored)
        else:
            obs_b, act_b, ret_b = [], [], []
            for _ in range(n):
                obs_ep, act_ep, reward = _episode(env, policy, gen, args.min_std)
                obs_b += obs_ep
                act_b += act_ep
                ret_b += [reward] * len(obs_ep)
        episode_returns = np.array(ret_b)
        mean_r = float(episode_returns.mean())
        baseline = mean_r if baseline is None else args.baseline_decay * baseline + (1 - args.baseline_decay) * mean_r
        adv = torch.as_tensor(_advantages(episode_returns, baseline, ab.advantage), dtype=torch.float32)

        d = policy.dist(torch.as_tensor(np.stack(obs_b)), args.min_std)
        logp = d.log_prob(torch.as_tensor(np.stack(act_b))).sum(-1)
        entropy = d.entropy().sum(-1).mean()
        loss = -(adv * logp).mean() - args.ent_coef * entropy
        optim.zero_grad()
        loss.backward()
        optim.step()

        update += 1
        if writer is not None:
            step = env.used
            writer.add_scalar("charts/mean_reward", mean_r, step)
            writer.add_scalar("charts/best_score", env.tracker.best_score, step)
            writer.add_scalar("losses/policy_loss", loss.item(), step)
            writer.add_scalar("losses/entropy", entropy.item(), step)
            writer.add_scalar("charts/std", torch.exp(policy.log_std.detach()).mean().item(), step)
            writer.add_scalar("charts/evals_per_s", (step - resumed_at) / (time.perf_counter() - t0), step)
        if args.checkpoint and (env.used // args.checkpoint_every > saved_at // args.checkpoint_every
                                or env.exhausted):
            state = {"policy": policy.state_dict(), "optimizer": optim.state_dict(), "baseline": baseline,
                     "update": update, "generator": gen.get_state()}
            save_checkpoint(args.checkpoint, fingerprint, env, state)
            saved_at = env.used
    if writer is not None:
        writer.close()
    if args.save_path:
        save(policy, args.save_path)
    return {"policy": policy, "updates": update, "save_path": args.save_path, "checkpoint": args.checkpoint,
            "resumed_at": resumed_at}


def _load_state(state: dict[str, Any], policy: GaussianPolicy, optim: torch.optim.Optimizer,
                gen: torch.Generator) -> tuple[float | None, int]:
    """Put a checkpoint's agent state into the freshly built ``policy``, ``optim`` and ``gen``; returns the
    baseline and the update count."""
    try:
        policy.load_state_dict(state["policy"])
        optim.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        baseline = None if state["baseline"] is None else float(state["baseline"])
        return baseline, int(state["update"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"the checkpoint's reinforce state does not fit this policy: {type(e).__name__}: {e}"
                              ) from None


def _advantages(returns: np.ndarray, baseline: float, kind: str) -> np.ndarray:
    """The advantage of each return against the moving-average ``baseline`` (see ``_Ablation.advantage``)."""
    if kind == "std":
        return (returns - baseline) / (returns.std() + 1e-8)
    # Fitness shaping: rank the returns together with the baseline (ties share their mean rank) and measure each
    # return's rank from the baseline's. Better than the running baseline: positive; the scale is the batch size.
    pool = np.append(returns, baseline)
    ranks = (np.argsort(np.argsort(pool, kind="stable"), kind="stable")).astype(np.float64)
    for v in np.unique(pool):
        ranks[pool == v] = ranks[pool == v].mean()
    return (ranks[:-1] - ranks[-1]) / len(returns)


def _joint_batch(env: EvalCap, policy: GaussianPolicy, gen: torch.Generator, min_std: float,
                 n: int, mirrored: bool = False) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    """Sample ``n`` one-step episodes at once (scored together when ``env.vector_envs`` allows).

    ``mirrored``: the noise comes in antithetic pairs ``+eps, -eps`` (an odd ``n`` ends with one unpaired draw).
    """
    obs, _ = env.reset()
    with torch.no_grad():
        d = policy.dist(torch.as_tensor(obs, dtype=torch.float32), min_std)
        if mirrored:
            half = torch.randn(((n + 1) // 2, *d.mean.shape), generator=gen)
            eps = torch.stack([half, -half], 1).reshape(-1, *d.mean.shape)[:n]
        else:
            eps = torch.randn((n, *d.mean.shape), generator=gen)
        a = (d.mean + d.stddev * eps).numpy().astype(np.float32)
    played = env.evaluate_actions(np.clip(a, -1.0, 1.0))
    obs32 = np.asarray(obs, dtype=np.float32)
    return [obs32] * len(played), list(a[: len(played)]), [r for r, _ in played]


def _episode(env: EvalCap, policy: GaussianPolicy, gen: torch.Generator,
             min_std: float) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """Sample one episode; returns its observations, raw (unclipped) actions and final reward."""
    obs, _ = env.reset()
    observations, actions = [], []
    while True:
        with torch.no_grad():
            d = policy.dist(torch.as_tensor(obs, dtype=torch.float32), min_std)
            a = (d.mean + d.stddev * torch.randn(d.mean.shape, generator=gen)).numpy().astype(np.float32)
        observations.append(np.asarray(obs, dtype=np.float32))
        actions.append(a)
        obs, reward, terminated, truncated, _ = env.step(np.clip(a, -1.0, 1.0))
        if terminated or truncated:
            return observations, actions, float(reward)


def save(policy: GaussianPolicy, path: str) -> None:
    """Save ``policy`` (state dict and sizes) atomically to ``path``."""
    blob = {"state_dict": policy.state_dict(), "obs_dim": policy.obs_dim, "act_dim": policy.bias.numel(),
            "hidden": policy.hidden, "center": policy.center}
    from prune_env.io import atomic_save_torch

    atomic_save_torch(blob, path)


def load(path: str) -> GaussianPolicy:
    """Load a policy saved by :func:`save`."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    policy = GaussianPolicy(blob["obs_dim"], blob["act_dim"], blob["hidden"], 0.0, 1.0, center=blob["center"])
    policy.load_state_dict(blob["state_dict"])
    return policy


def _parse_args(kwargs: dict[str, Any]) -> Args:
    args = parse_options(Args, kwargs, "reinforce")
    for name in ("learning_rate", "net_learning_rate", "ent_coef"):
        check_number(name, getattr(args, name), 0.0)
    for name in ("init_std", "min_std"):
        check_number(name, getattr(args, name), 0.0, low_open=True)
    check_choice("init_mean", args.init_mean, ("uniform", "mid"))
    check_number("baseline_decay", args.baseline_decay, 0.0, 1.0, high_open=True)
    check_int("batch_size", args.batch_size, 1)
    check_int("hidden", args.hidden, 1)
    check_int("checkpoint_every", args.checkpoint_every, 1)
    args.checkpoint = check_checkpoint_path("checkpoint", args.checkpoint)
    return args


def _writer(logdir: str | None, args: Args):
    if not logdir:
        return None
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(logdir)
    table = "\n".join(f"|{k}|{v}|" for k, v in dataclasses.asdict(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    return writer


def _literal(text: str) -> Any:
    """A command-line value as a Python literal (``None``, ``True``, ``0.1``), else the string itself."""
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


if __name__ == "__main__":
    import sys

    import agents
    import prune_env

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--target-sparsity", type=float, default=0.9)
    parser.add_argument("--mode", default="joint", choices=("joint", "sequential"))
    parser.add_argument("--max-evals", type=int, default=300)
    parser.add_argument("--budget", type=int, default=None, help="deprecated name of --max-evals")
    parser.add_argument("--seed", type=int, default=0)
    for f in dataclasses.fields(Args):
        kind = float if f.type in ("float", float) else int if f.type in ("int", int) else _literal
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)
    cli = vars(parser.parse_args())
    if cli["budget"] is not None:
        print("--budget is deprecated; use --max-evals", file=sys.stderr)
        cli["max_evals"] = cli["budget"]
    del cli["budget"]
    env = prune_env.PruneRNNEnv(cli.pop("task"), target_sparsity=cli.pop("target_sparsity"), mode=cli.pop("mode"))
    result = agents.search("reinforce", env, cli.pop("max_evals"), seed=cli.pop("seed"), **cli)
    print(f"best validation score {result.val_score:.4f} after {result.evals} evaluations")
    print({k: round(v, 3) for k, v in result.allocation.items()})
