"""Sparsity learned while training: proximal L1 (Lasso) on weights and group Lasso on hidden units (ISS).

During the pruning ramp of :func:`~prune_env.compression.gradual.gradual_prune`, every optimizer step is followed by
the proximal step of the penalty (proximal gradient descent; Parikh & Boyd, 2014, "Proximal Algorithms"), so that
weights and groups reach exact zeros instead of hovering near them:

- ``"l1"`` (Tibshirani, 1996): soft thresholding ``w <- sign(w) * max(|w| - tau, 0)`` of each pruned layer's weights
  (:func:`soft_threshold`).
- ``"group_lasso"`` (Yuan & Lin, 2006) over the Intrinsic Sparse Structures of Wen et al. (2018, "Learning Intrinsic
  Sparse Structures within Long Short-Term Memory"): the group of hidden unit ``k`` of one layer and direction of an
  ``nn.LSTM``/``nn.GRU``/``nn.RNN`` is its rows in every gate of ``weight_ih``, ``weight_hh`` and the biases, its
  column in ``weight_hh`` and its input columns in whatever consumes the hidden state (the next layer's
  ``weight_ih``, a following recurrent module, a ``Linear`` head), as found by
  :class:`~prune_env.pruning.structured.UnitPlan`. Group soft thresholding ``w_g <- w_g * max(0, 1 - tau_g /
  ||w_g||)`` (:func:`group_soft_threshold`) with ``tau_g = tau * sqrt(|g|)`` (Yuan & Lin's weighting by group size).
  The groups of consecutive layers overlap (unit ``k``'s column in the next layer's ``weight_ih`` lies in the rows
  of that layer's units), so an element of two groups is scaled by both groups' factors: exact for a group that
  overlaps no other, and a group whose factor is 0 is exactly zero either way.

The threshold of a step is ``tau = lr * strength_t``: with SGD the proximal step of the penalty ``strength * R(w)``;
with Adam, whose steps move each weight by about ``lr``, ``strength`` is the penalty's pull relative to a full Adam
step (so values in ``(0, 1)`` are meaningful whatever the scale of the weights). ``strength_t`` is ``strength``
throughout the ramp (``"constant"``) or grows linearly from ``strength / n`` to ``strength`` over its ``n`` steps
(``"ramp"``). A layer's penalty stops once it has zeroed the layer's final count (the target is met; more zeros
would only be trained back), and there is no penalty after the ramp.

With ``scope="candidates"`` the penalty applies at each step only to the layer's final count of lowest magnitudes
(group norms) at that step, the weights (units) that would be removed now, so that the ones kept are not shrunk (in
the spirit of targeted dropout, Gomez et al., 2019); ``"all"`` penalises every weight (unit) of a pruned layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from prune_env.pruning.structured import UnitPlan

#: Penalties of :func:`~prune_env.compression.gradual.gradual_prune`'s ``regularizer``.
REGULARIZERS = ("l1", "group_lasso")
#: Schedules of the penalty's strength over the pruning ramp.
STRENGTH_SCHEDULES = ("constant", "ramp")
#: What the penalty applies to: every weight (unit) of a pruned layer, or only the current candidates for removal.
SCOPES = ("all", "candidates")


def soft_threshold(w: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """The proximal operator of ``tau * ||w||_1``: ``sign(w) * max(|w| - tau, 0)`` (a new tensor)."""
    return torch.sign(w) * torch.clamp(w.abs() - tau, min=0.0)


def group_factors(norms: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """``max(0, 1 - tau / norm)`` per group (0 for a zero group): the scaling of group soft thresholding."""
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    return torch.where(norms > tau, 1.0 - tau / safe, torch.zeros_like(norms))


def group_soft_threshold(w: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """The proximal operator of ``tau * sum_g ||w_g||_2`` with one group per row of ``w`` (a new tensor): a row
    whose norm is at most ``tau`` becomes exactly zero, any other shrinks towards zero by ``tau`` in norm.

    >>> group_soft_threshold(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), 1.0)
    tensor([[2.4000, 3.2000],
            [0.0000, 0.0000]])
    """
    flat = w.reshape(w.shape[0], -1)
    return (flat * group_factors(flat.norm(dim=1), tau)[:, None]).reshape(w.shape)


def strength_at(t: int, start: int, end: int, strength: float, schedule: str) -> float:
    """The penalty's strength at (0-based) optimizer step ``t``: 0 outside the ramp ``[start, end)``."""
    if not start <= t < end:
        return 0.0
    if schedule == "constant":
        return strength
    return strength * (t - start + 1) / (end - start)


class L1Prox:
    """Proximal L1 steps on the weights of the pruned layers; remembers each weight's magnitude before thresholding
    (the rank of the final pruning: what the penalty zeroed comes first, in order of how far below ``tau``).

    :param params: the prunable weight of each layer.
    :param final_counts: each layer's final pruned count (a layer with 0 is never penalised).
    :param scope: ``"all"`` or ``"candidates"`` (see the module docstring).
    """

    def __init__(self, params: Sequence[nn.Parameter], final_counts: Sequence[int], scope: str = "all"):
        self.params = list(params)
        self.scope = scope
        self.final = [int(k) for k in final_counts]
        self.active = [k > 0 for k in self.final]
        self.before: list[torch.Tensor | None] = [None] * len(self.params)

    @torch.no_grad()
    def step(self, tau: float) -> None:
        for i, p in enumerate(self.params):
            self.before[i] = None
            if not self.active[i] or tau <= 0:
                continue
            mag = p.detach().abs().reshape(-1)
            self.before[i] = mag.clone()
            if self.scope == "all":
                p.copy_(soft_threshold(p, tau))
            else:  # only the final count of lowest magnitudes
                flat = p.view(-1)
                idx = torch.topk(mag, self.final[i], largest=False, sorted=False).indices
                flat[idx] = soft_threshold(flat[idx], tau)
            if int((p == 0).sum()) >= self.final[i]:
                self.active[i] = False

    def score(self, i: int) -> torch.Tensor:
        """Layer ``i``'s ranking (higher keeps): the magnitude before the last proximal step, else the current one."""
        before = self.before[i]
        return before if before is not None else self.params[i].detach().abs().reshape(-1)

    def zero_counts(self) -> list[int]:
        return [int((p == 0).sum()) for p in self.params]


class GroupLassoProx:
    """Proximal group-Lasso steps over the ISS groups of a model's hidden units (see the module docstring).

    :param plan: the model's :class:`~prune_env.pruning.structured.UnitPlan` (built from this model or a copy).
    :param model: the working model whose parameters are thresholded in place.
    :param final_counts: units removed per direction of each unit group at the end (a group with 0 is never
        penalised).
    :param scope: ``"all"`` or ``"candidates"`` (see the module docstring).
    """

    def __init__(self, plan: UnitPlan, model: nn.Module, final_counts: Sequence[int], scope: str = "all"):
        self.plan = plan
        self.scope = scope
        named = dict(model.named_parameters())
        self.entries = [(named[t.name], t) for t in plan.tensors]
        self.final = [int(k) for k in final_counts]
        self.active = [k > 0 for k in self.final]
        self.before: list[list[torch.Tensor] | None] = [None] * len(plan.groups)
        with torch.no_grad():
            sizes = self._sq_norms([torch.ones_like(p) for p, _ in self.entries])
        self.root_sizes = [[s.sqrt() for s in per_dir] for per_dir in sizes]

    def _sq_norms(self, tensors: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
        """Per group and direction, the sum of squares of every unit's group (each element counted once)."""
        device = self.entries[0][0].device
        sq = [[torch.zeros(g.hidden_size, device=device) for _ in range(g.directions)] for g in self.plan.groups]
        for w, (_, t) in zip(tensors, self.entries):
            w2 = w.detach().float().pow(2)
            if t.rows is not None:
                g, d = t.rows
                grp = self.plan.groups[g]
                sq[g][d] += w2.reshape(grp.gates, grp.hidden_size, -1).sum(dim=(0, 2))
            for c in t.cols:
                h = self.plan.groups[c.group].hidden_size
                sq[c.group][c.direction] += w2[:, c.start:c.start + h].sum(dim=0)
                if t.rows == (c.group, c.direction):  # weight_hh: the unit's own column crosses its own rows
                    grp = self.plan.groups[c.group]
                    ar = torch.arange(h, device=w2.device)
                    sq[c.group][c.direction] -= w2.reshape(grp.gates, h, -1)[:, ar, c.start + ar].sum(dim=0)
        return sq

    def norms(self) -> list[list[torch.Tensor]]:
        """The current group norm of every unit, per group and direction."""
        with torch.no_grad():
            sq = self._sq_norms([p for p, _ in self.entries])
        return [[s.clamp(min=0).sqrt() for s in per_dir] for per_dir in sq]

    @torch.no_grad()
    def step(self, tau: float) -> None:
        self.before = [None] * len(self.plan.groups)
        if tau <= 0 or not any(self.active):
            return
        norms = self.norms()
        factors = []
        for g, per_dir in enumerate(norms):
            if self.active[g]:
                self.before[g] = per_dir
                factors.append([self._group_factors(n, tau * r, self.final[g]) for n, r in
                                zip(per_dir, self.root_sizes[g])])
            else:
                factors.append([torch.ones_like(n) for n in per_dir])
        for p, t in self.entries:
            touched = ({t.rows[0]} if t.rows else set()) | {c.group for c in t.cols}
            if not any(self.active[g] for g in touched):
                continue
            p.mul_(self._factor(t, factors, p.shape).to(p.dtype))
        for g, per_dir in enumerate(factors):
            if self.active[g] and min(int((f == 0).sum()) for f in per_dir) >= self.final[g]:
                self.active[g] = False

    def _group_factors(self, norms: torch.Tensor, tau: torch.Tensor, k: int) -> torch.Tensor:
        f = group_factors(norms, tau)
        if self.scope == "all":
            return f
        out = torch.ones_like(f)
        idx = torch.topk(norms, k, largest=False, sorted=False).indices
        out[idx] = f[idx]
        return out

    def _factor(self, t, factors, shape: torch.Size) -> torch.Tensor:
        device = self.entries[0][0].device
        rows = torch.ones(shape[0], device=device)
        if t.rows is not None:
            g, d = t.rows
            rows = factors[g][d].repeat(self.plan.groups[g].gates)
        if len(shape) == 1:
            return rows
        cols = torch.ones(shape[1], device=device)
        for c in t.cols:
            cols[c.start:c.start + self.plan.groups[c.group].hidden_size] = factors[c.group][c.direction]
        out = rows[:, None] * cols[None, :]
        for c in t.cols:
            if t.rows == (c.group, c.direction):  # an element of one group only: scaled once
                grp = self.plan.groups[c.group]
                ar = torch.arange(grp.hidden_size, device=device)
                out.view(grp.gates, grp.hidden_size, -1)[:, ar, c.start + ar] = factors[c.group][c.direction]
        return out

    def scores(self) -> list[list[torch.Tensor]]:
        """Per group and direction, the ranking of units (higher keeps): group norms before the last proximal step
        where the group was penalised, else the current ones."""
        now = self.norms()
        return [before if before is not None else cur for before, cur in zip(self.before, now)]

    def zero_units(self) -> list[list[torch.Tensor]]:
        """Per group and direction, which units' whole group is exactly zero now."""
        return [[n == 0 for n in per_dir] for per_dir in self.norms()]


def check_strength(strength: float) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength) \
            or strength <= 0:
        raise ValueError(f"`regularizer_strength` must be a finite number > 0, got {strength!r}")
    return float(strength)
