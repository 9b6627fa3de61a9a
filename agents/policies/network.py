"""The network of :class:`LayerwisePolicy`: one small net shared across a model's layers that maps each layer's row
of the zoo observation (and the model-level context) to how far that layer's mean action departs from LAMP's.

Two shapes:

- **per layer** (the default, and every policy shipped before ``pool``): each layer's departure reads only its own
  row and the context;
- **pooled** (``pool=True``, a Deep Sets network): each layer's row is encoded, the encodings are averaged and
  max-pooled over the model's real layers, and each layer's departure reads its own encoding beside the pooled
  ones. So a layer's departure can depend on what the model's other layers are (a projection or an attention layer
  beside it, how its loss increase compares with theirs), which per-layer rows cannot say; the network still works
  for any number of layers and any layer order.

Either way the last layer starts at zero, so the untrained policy is exactly LAMP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from prune_env.checks import check_int, check_number
from prune_env.envs.zoo import CONTEXT, OBSERVATION_FORMATS, ROW, ROW_V4, observation


class _Mean(nn.Module):
    """The mean of several networks' outputs: the layer departure of an ensemble of policies."""

    def __init__(self, nets: Sequence[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x, valid) for m in self.members]).mean(0)


class _PerLayer(nn.Sequential):
    """Two tanh hidden layers applied to each layer's input alone (``valid`` is not read)."""

    def __init__(self, features: int, hidden: int):
        super().__init__(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                         nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)


class _Pooled(nn.Module):
    """Deep Sets over a model's layers: ``out_l = head([enc(x_l), mean_valid(enc(x)), max_valid(enc(x))])``."""

    def __init__(self, features: int, hidden: int):
        super().__init__()
        self.encode = nn.Sequential(nn.Linear(features, hidden), nn.Tanh())
        self.head = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = self.encode(x)  # (..., layers, hidden)
        m = valid.unsqueeze(-1).to(h.dtype)
        mean = (h * m).sum(-2, keepdim=True) / m.sum(-2, keepdim=True).clamp_min(1.0)
        peak = torch.where(m > 0, h, torch.full_like(h, -1.0)).amax(-2, keepdim=True)  # tanh >= -1
        return self.head(torch.cat([h, mean.expand_as(h), peak.expand_as(h)], -1))


class LayerwisePolicy(nn.Module):
    """``a_l ~ N(lamp_l + delta(row_l, context[, the other rows]), std)`` for each real layer ``l``, one network for
    every layer.

    ``lamp_l`` is LAMP's action for the layer at the episode's target (read from the row), so the untrained policy
    is exactly LAMP, the strongest one-shot rule we measured; the network learns where to depart from it.

    :param hidden: width of the hidden layers.
    :param init_std: the starting standard deviation, in action units.
    :param columns: the columns of :data:`~prune_env.envs.zoo.ROW` the network reads (default: all of them; a policy
        of an older observation format reads the ones it was trained on). A policy reading any column of
        :data:`~prune_env.envs.zoo.ROW_V4` outside :data:`~prune_env.envs.zoo.ROW` acts on observation format 4.
    :param members: networks whose departures are averaged (an ensemble, see
        :func:`agents.policies.layerwise.ensemble`); 1: one network.
    :param pool: each layer's departure also reads the mean and the maximum of every real layer's encoding (a Deep
        Sets network, see the module's doc); False: each layer's departure reads its own row only.
    """

    def __init__(self, hidden: int = 64, init_std: float = 0.3, columns: Sequence[str] = ROW, members: int = 1,
                 pool: bool = False):
        super().__init__()
        self.hidden = check_int("hidden", hidden, 1)
        self.members = check_int("members", members, 1)
        if not isinstance(pool, bool):
            raise ValueError(f"`pool` must be a bool, got {pool!r}")
        self.pool = pool
        unknown = [c for c in columns if c not in ROW_V4]
        if unknown or not columns:
            raise ValueError(f"`columns` must be a non-empty subset of the observation row {ROW_V4}; unknown: "
                             f"{unknown}")
        self.columns = tuple(columns)
        #: the zoo observation format the policy reads (3: rows of ROW, 4: rows of ROW_V4) and its row
        self.observation_format = 3 if all(c in ROW for c in self.columns) else 4
        self.row = OBSERVATION_FORMATS[self.observation_format]
        self._lamp, self._valid = self.row.index("lamp"), self.row.index("valid")
        self.register_buffer("_index", torch.tensor([self.row.index(c) for c in self.columns]), persistent=False)
        make = _Pooled if pool else _PerLayer
        nets = [make(len(self.columns) + len(CONTEXT), hidden) for _ in range(members)]
        for net in nets:
            last = net.head[-1] if pool else net[-1]
            nn.init.zeros_(last.weight)  # the start: LAMP's allocation
            nn.init.zeros_(last.bias)
        self.net = nets[0] if members == 1 else _Mean(nets)
        self.log_std = nn.Parameter(torch.tensor(float(np.log(check_number("init_std", init_std, 0.0,
                                                                              low_open=True)))))

    def means(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Centred mean actions ``(batch, layers)`` and the validity mask, for joint zoo observations ``(batch, n)``."""
        n_ctx = len(CONTEXT)
        rows = obs[..., :-n_ctx].reshape(*obs.shape[:-1], -1, len(self.row))
        context = obs[..., -n_ctx:].unsqueeze(-2).expand(*rows.shape[:-1], n_ctx)
        valid = rows[..., self._valid] > 0.5
        delta = self.net(torch.cat([rows.index_select(-1, self._index), context], -1), valid).squeeze(-1)
        centre = (delta * valid).sum(-1, keepdim=True) / valid.sum(-1, keepdim=True).clamp_min(1)
        mu = 2.0 * rows[..., self._lamp] - 1.0 + delta - centre
        return torch.where(valid, mu, torch.zeros_like(mu)), valid

    @torch.no_grad()
    def act(self, obs: np.ndarray, info: dict[str, Any] | None = None) -> np.ndarray:
        """The mean action for a joint zoo observation, clipped to [-1, 1] (custom-policy protocol)."""
        mu, _ = self.means(torch.as_tensor(obs, dtype=torch.float32))
        return mu.clamp(-1.0, 1.0).numpy().astype(np.float32)

    @torch.no_grad()
    def allocation_action(self, env: Any) -> np.ndarray:
        """The joint action (one entry per layer) this policy picks for a budget-mode
        :class:`~prune_env.PruneRNNEnv` at the start of an episode, in either mode."""
        return self.act(observation(env.unwrapped, joint=True, observation_format=self.observation_format))

    def allocation(self, env: Any) -> dict[str, float]:
        """Layer name -> requested sparsity (before the env's projection onto the target)."""
        from prune_env.envs.actions import action_to_sparsity

        base = env.unwrapped
        return dict(zip(base.layer_names, action_to_sparsity(self.allocation_action(env), base.max_sparsity).tolist()))


def networks(policy: LayerwisePolicy) -> list[nn.Module]:
    """The networks of ``policy``: one, or an ensemble's members."""
    return list(policy.net.members) if policy.members > 1 else [policy.net]


__all__ = ["LayerwisePolicy", "networks"]
