"""Calibration-aware, evaluation-free layer features: what pruning one layer alone does to it and to the training
loss, how heavy-tailed its weights are, and the role it plays.

Everything here reads the dense model, its training-batch calibration inputs
(:mod:`prune_env.pruning.calibration`) and its training loss; the validation and test splits are never read and no
evaluation is spent, so a policy reading these features still prunes an unseen model in one evaluation. Per layer:

- ``recon_error``: the relative error of the layer's pre-activations on the calibration inputs when that layer
  alone loses the weights of its share, ``||(W' - W) X||^2 / ||W X||^2 = tr(D H D^T) / tr(W H W^T)`` with
  ``D = W' - W`` and ``H = sum x x^T``; ``W'`` keeps the rest of the weights dense (the zeroing operator).
- ``recon_error_obs``: the same error when the rest of each row is re-fitted by least squares
  (:func:`prune_env.pruning.obs.reconstruct`; SparseGPT, Frantar and Alistarh, ICML 2023). Never above
  ``recon_error``. An embedding reads one-hot tokens: its error weighs each token's row by its count, and there is
  nothing to re-fit, so both errors are equal.
- ``owl_share``: the share of the layer's activation-weighted scores ``|W_ij| * ||x_j||`` above :data:`OWL_M` times
  their mean (the layer outlier ratio of OWL, Yin et al., "Outlier Weighed Layerwise Sparsity", ICML 2024, with
  their ``M = 5``); an embedding's score is ``|W_vj| * sqrt(count_v)``.
- ``alpha_hill``: the heavy-tail exponent of the eigenvalues of ``W^T W`` (PL_Alpha_Hill of AlphaPruning, Lu et
  al., NeurIPS 2024, after Martin and Mahoney's WeightWatcher): the Hill estimator over the upper half of the
  non-zero eigenvalues, :func:`hill_alpha`. Smaller means heavier-tailed, "better trained", pruned less by
  AlphaPruning. Shown as ``1 - 1 / alpha`` (``alpha >= 1``).
- ``loss_increase``: the increase of the training loss (``task.train_loss`` on :data:`LOSS_DRAWS` batches from a
  fixed seed, or ``task.loss``'s fixed training batch) when that layer alone loses the weights of its share, under
  the env's operator (``reconstruct``), relative to the dense loss ``r = max(L' - L, 0) / L``, shown as
  ``r / (1 + r)``; ``loss_share`` is the layer's part of the sum of those increases.
- ``role_*``: the one-hot role of the layer (:data:`~prune_env.pruning.adapters.ROLES`): the adapter's role, with a
  linear layer that runs before every recurrent module read as ``input`` and a one-output linear layer that runs
  before another linear layer after the recurrence read as ``attention`` (a pooling score), see
  :func:`layer_roles`.

The share of each layer is its LAMP sparsity at the episode's target (the env passes it). The error and loss
curves are computed once per model at the sparsities :data:`SPARSITY_GRID` (exact there) and read between them by
linear interpolation, so a new target costs nothing; they are kept with the analysis (``Analysis.cached``), and the
rows per (model, target) by the zoo env. At ``hidden_unit`` granularity every column is 0.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from prune_env.pruning import obs
from prune_env.pruning.adapters import ROLES
from prune_env.pruning.calibration import LayerInputs, calibration_inputs
from prune_env.pruning.criteria import sparsity_to_count
from prune_env.pruning.layers import PrunableLayer, get_param, rnn_modules

#: Layer sparsities at which the error and loss curves are computed exactly (linear interpolation between them).
SPARSITY_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0)
#: OWL's outlier threshold, in multiples of the layer's mean score (Yin et al., ICML 2024).
OWL_M = 5.0
#: Training batches the loss increase averages over (the same batches for every layer and sparsity).
LOSS_DRAWS = 4
#: Seed of their generator.
LOSS_SEED = 0
#: Eigenvalues at or below this are left out of the Hill estimator (AlphaPruning's ``EVALS_THRESH``).
EIG_FLOOR = 1e-5
#: The observation columns, in order.
COLUMNS = ("recon_error", "recon_error_obs", "owl_share", "alpha_hill", "loss_increase", "loss_share",
           *(f"role_{r}" for r in ROLES))

__all__ = ["COLUMNS", "EIG_FLOOR", "LOSS_DRAWS", "OWL_M", "SPARSITY_GRID", "LayerCurves", "feature_columns",
           "hill_alpha", "layer_curves", "layer_roles", "owl_share", "raw_features", "relative_error"]


def hill_alpha(weight: torch.Tensor, floor: float = EIG_FLOOR) -> float:
    """PL_Alpha_Hill of a weight matrix (rows, any further dimensions flattened): with ``lambda_1 <= ... <=
    lambda_N`` the eigenvalues of ``W^T W`` above ``floor``, ``i = N // 2`` and ``n = N - i``,
    ``alpha = 1 + n / sum_{j >= i} ln(lambda_j / lambda_i)`` (AlphaPruning's ``xmin_mid``). ``inf`` when the upper
    half is flat; 1 for fewer than two eigenvalues."""
    w = weight.detach().double().reshape(weight.shape[0], -1)
    eigs = torch.sort(torch.linalg.svdvals(w) ** 2).values
    eigs = eigs[eigs > floor]
    if eigs.numel() < 2:
        return 1.0
    i = eigs.numel() // 2
    logs = torch.log(eigs[i:])
    spread = float((logs - logs[0]).sum())
    return 1.0 + (eigs.numel() - i) / spread if spread > 0 else math.inf


def owl_share(weight: torch.Tensor, inputs: LayerInputs, m: float = OWL_M) -> float:
    """The share of ``|W_ij| * ||x_j||`` (an embedding: ``|W_vj| * sqrt(count_v)``) above ``m`` times its mean."""
    w = weight.detach().double().abs().reshape(weight.shape[0], -1)
    if inputs.token_counts is not None:
        scores = w * inputs.token_counts.double().clamp(min=0).sqrt().reshape(-1, 1)
    else:
        scores = w * inputs.sq_norms.double().clamp(min=0).sqrt().reshape(1, -1)
    mean = float(scores.mean())
    return float((scores > m * mean).double().mean()) if mean > 0 else 0.0


def relative_error(dense: torch.Tensor, pruned: torch.Tensor, inputs: LayerInputs) -> float:
    """``||(W' - W) X||^2 / ||W X||^2`` over the calibration inputs (``tr(D H D^T) / tr(W H W^T)``); an
    embedding's rows weighted by their token counts. Inputs never seen: the relative Frobenius error."""
    w = dense.detach().double().reshape(dense.shape[0], -1)
    d = pruned.detach().double().reshape(w.shape) - w
    if inputs.token_counts is not None:
        c = inputs.token_counts.double().reshape(-1, 1)
        num, den = float((c * d * d).sum()), float((c * w * w).sum())
    elif inputs.rows > 0 and float(inputs.gram.diagonal().sum()) > 0:
        h = inputs.gram.double()
        num, den = float(((d @ h) * d).sum()), float(((w @ h) * w).sum())
    else:
        num, den = float((d * d).sum()), float((w * w).sum())
    return num / den if den > 0 else 0.0


@torch.no_grad()
def layer_roles(model: nn.Module, layers: Sequence[PrunableLayer], batch: Any) -> list[str]:
    """Each layer's role: its adapter's, except for linear layers (the adapter calls every one ``head``), read from
    the order modules run in on one calibration ``batch`` (on a throwaway copy): a linear layer that runs before
    every recurrent module is an ``input`` projection, and a one-output linear layer that runs after the recurrence
    but before another linear layer is an ``attention`` score. A model without recurrent modules keeps the
    adapter's roles."""
    from prune_env.pruning.calibration import run_batches

    work = copy.deepcopy(model).cpu().eval()
    first: dict[str, int] = {}
    names = {layer.module_name for layer in layers} | {n for n, m in work.named_modules() if isinstance(m, nn.RNNBase)}
    handles = []
    for name in names:
        def hook(module, args, name=name):
            first.setdefault(name, len(first))
        handles.append(work.get_submodule(name).register_forward_pre_hook(hook))
    try:
        run_batches(work, [batch])
    finally:
        for h in handles:
            h.remove()
    rnn_runs = [first[n] for n, m in work.named_modules() if isinstance(m, nn.RNNBase) and n in first]
    heads = [first[x.module_name] for x in layers if x.role == "head" and x.module_name in first]
    roles = []
    for layer in layers:
        role, at = layer.role, first.get(layer.module_name)
        if role == "head" and rnn_runs and at is not None:
            if at < min(rnn_runs):
                role = "input"
            elif layer.shape[0] == 1 and at > min(rnn_runs) and any(h > at for h in heads):
                role = "attention"
        roles.append(role if role in ROLES else "head")
    return roles


@dataclass(frozen=True)
class LayerCurves:
    """What :func:`layer_curves` measures once per model, per action layer (read-only arrays).

    :param grid: the layer sparsities of the curves (:data:`SPARSITY_GRID`).
    :param error: ``(layers, grid)`` relative pre-activation error, zeroing operator.
    :param error_obs: ``(layers, grid)`` the same with least-squares reconstruction.
    :param loss: ``(layers, grid)`` training loss with that layer alone pruned (``nan`` without a loss).
    :param dense_loss: the dense model's training loss on the same batches (``nan`` without a loss).
    :param owl: ``(layers,)`` OWL outlier share.
    :param alpha: ``(layers,)`` PL_Alpha_Hill.
    :param roles: each layer's role.
    :param reconstruct: the operator the loss curves were measured under.
    """

    grid: np.ndarray
    error: np.ndarray
    error_obs: np.ndarray
    loss: np.ndarray
    dense_loss: float
    owl: np.ndarray
    alpha: np.ndarray
    roles: tuple[str, ...]
    reconstruct: str | None


def layer_curves(analysis, task, reconstruct: str | None = None) -> LayerCurves:
    """The :class:`LayerCurves` of ``task``'s model (unstructured ``analysis`` of ``task``), computed once and kept
    with the analysis; the loss curves under ``reconstruct`` (``None`` or ``"obs"``).

    :raises ValueError: for a task without calibration data (naming ``observation_format``) or an analysis at
        ``hidden_unit`` granularity.
    """
    if analysis.plan is not None:
        raise ValueError("layer curves prune single weights; hidden-unit granularity has none")
    from prune_env.pruning.analysis import calibration

    stats = calibration(analysis, task, "observation_format")
    roles = analysis.cached("layer_roles", lambda: tuple(layer_roles(
        task.model, analysis.layers, calibration_inputs(task, "observation_format")[0])))
    return analysis.cached(("layer_curves", reconstruct), lambda: _curves(analysis, task, stats, roles, reconstruct))


def _curves(analysis, task, stats, roles, reconstruct) -> LayerCurves:
    from prune_env.pruning.fisher import has_loss
    from prune_env.pruning.reconstruction import pruned_mask

    grid = np.asarray(SPARSITY_GRID)
    n = analysis.num_layers
    error, error_obs, loss = np.zeros((n, grid.size)), np.zeros((n, grid.size)), np.full((n, grid.size), np.nan)
    owl, alpha = np.zeros(n), np.zeros(n)
    losser = _Losser(task) if has_loss(task) else None
    dense_loss = losser.dense if losser is not None else math.nan
    for i, (layer, dense, order) in enumerate(zip(analysis.layers, analysis.dense, analysis.orders)):
        inputs = stats[layer.name]
        w = dense.reshape(layer.shape[0], -1)
        owl[i] = owl_share(w, inputs)
        alpha[i] = hill_alpha(w)
        refit = layer.kind != "embedding" and inputs.gram is not None and inputs.rows > 0
        h = obs.damped(inputs.gram) if refit else None
        for j, s in enumerate(grid):
            count = sparsity_to_count(float(s), layer.numel)
            if count == 0:
                error[i, j] = error_obs[i, j] = 0.0
                if losser is not None:
                    loss[i, j] = dense_loss
                continue
            mask = pruned_mask(layer, order, count)
            zeroed = w.masked_fill(mask, 0.0)
            fitted = obs.reconstruct(w, mask, h) if h is not None else zeroed
            error[i, j] = relative_error(w, zeroed, inputs)
            error_obs[i, j] = relative_error(w, fitted, inputs)
            if losser is not None:
                loss[i, j] = losser(layer, fitted if reconstruct else zeroed)
    arrays = (grid, error, error_obs, loss, owl, alpha)
    for a in arrays:
        a.setflags(write=False)
    return LayerCurves(grid, error, error_obs, loss, float(dense_loss), owl, alpha, tuple(roles), reconstruct)


class _Losser:
    """The training loss of a throwaway copy of the model with one layer's weights replaced, on fixed batches."""

    def __init__(self, task):
        self.task = task
        self.work = copy.deepcopy(task.model).cpu().eval().requires_grad_(False)
        self.dense = self._loss()

    @torch.no_grad()
    def _loss(self) -> float:
        if self.task.train_loss is None:
            return float(self.task.loss(self.work))
        gen = torch.Generator().manual_seed(LOSS_SEED)
        return float(np.mean([float(self.task.train_loss(self.work, gen)) for _ in range(LOSS_DRAWS)]))

    @torch.no_grad()
    def __call__(self, layer: PrunableLayer, weight: torch.Tensor) -> float:
        p = get_param(self.work, layer)
        keep = p.detach().clone()
        try:
            p.copy_(weight.reshape(p.shape).to(p.dtype))
            _refresh(self.work)
            return self._loss()
        finally:
            p.copy_(keep)
            _refresh(self.work)


def _refresh(model: nn.Module) -> None:
    for m in rnn_modules(model):
        m.flatten_parameters()


def raw_features(curves: LayerCurves, shares: np.ndarray) -> dict[str, np.ndarray]:
    """The untransformed per-layer features at the layer sparsities ``shares`` (one per layer): ``recon_error``,
    ``recon_error_obs``, ``loss_increase`` (relative, may be negative; ``nan`` without a loss), ``owl_share``,
    ``alpha_hill`` and ``role`` (index into :data:`ROLES`)."""
    shares = np.clip(np.asarray(shares, dtype=np.float64), 0.0, 1.0)
    if shares.shape != (len(curves.roles),):
        raise ValueError(f"`shares` must hold one sparsity per layer ({len(curves.roles)}), got shape {shares.shape}")

    def at(curve: np.ndarray) -> np.ndarray:
        return np.array([np.interp(s, curves.grid, c) for s, c in zip(shares, curve)])

    dense = curves.dense_loss
    rel = (at(curves.loss) - dense) / max(abs(dense), 1e-12) if np.isfinite(dense) else np.full(len(shares), np.nan)
    return {"recon_error": at(curves.error), "recon_error_obs": at(curves.error_obs), "loss_increase": rel,
            "owl_share": curves.owl.copy(), "alpha_hill": curves.alpha.copy(),
            "role": np.array([ROLES.index(r) for r in curves.roles])}


def feature_columns(analysis, task, shares: np.ndarray, reconstruct: str | None = None) -> np.ndarray:
    """``(num_layers, len(COLUMNS))`` observation columns in [0, 1] at the layer sparsities ``shares`` (the env
    passes each layer's LAMP sparsity at its target); all 0 at ``hidden_unit`` granularity. See the module
    docstring for each column and its scaling."""
    out = np.zeros((analysis.num_layers, len(COLUMNS)))
    if analysis.plan is not None:
        return out
    raw = raw_features(layer_curves(analysis, task, reconstruct), shares)
    inc = np.nan_to_num(np.maximum(raw["loss_increase"], 0.0), nan=0.0)
    alpha = raw["alpha_hill"]
    cols = {"recon_error": raw["recon_error"], "recon_error_obs": raw["recon_error_obs"],
            "owl_share": raw["owl_share"], "alpha_hill": np.where(np.isfinite(alpha), 1.0 - 1.0 / alpha, 1.0),
            "loss_increase": inc / (1.0 + inc), "loss_share": inc / inc.sum() if inc.sum() > 0 else inc * 0.0}
    for j, name in enumerate(COLUMNS[:len(cols)]):
        out[:, j] = cols[name]
    out[np.arange(analysis.num_layers), len(cols) + raw["role"]] = 1.0
    return np.clip(out, 0.0, 1.0)
