"""Data-aware pruning arithmetic: Wanda and OBS rankings, row-wise least-squares reconstruction, GPTQ rounding.

For a weight matrix ``W`` (rows: outputs, each gate row of a recurrent matrix one output) and the Gram matrix
``H = sum x x^T`` of the inputs it multiplies (:mod:`prune_env.pruning.calibration`):

- Wanda (Sun et al., ICLR 2024) scores ``|W_ij| * ||x_j||`` and compares weights within each output row.
- OBS saliency (Hassibi and Stork, "Optimal Brain Surgeon", NeurIPS 1992; as in SparseGPT, Frantar and Alistarh,
  ICML 2023) scores ``W_ij**2 / [H^-1]_jj``, also within rows.
- :func:`reconstruct` fixes a mask and moves each row's remaining weights to minimise the change of that row's
  pre-activation on the calibration inputs, ``(w' - w) H (w' - w)^T`` (Optimal Brain Compression, Frantar et al.,
  NeurIPS 2022): an ordinary least-squares problem per row, solved exactly. The gates' nonlinearities come after
  the matrix product, so this holds for recurrent matrices too.
- :func:`gptq` rounds a row-wise linear grid column by column, moving the rounding error onto the columns not yet
  rounded (Frantar et al., "GPTQ", ICLR 2023); pruned weights round to 0, so it prunes and quantizes jointly.

``H`` is damped by ``damp * mean(diag H)`` on its diagonal (:func:`damped`), as SparseGPT and GPTQ do: the solution
then also penalises ``damp``-weighted changes of weights whose inputs the calibration data never excite.

Row-wise rankings become one nested prune order per layer (:func:`row_balanced_order`): pruning ``k`` weights
takes ``k // rows`` from every row and one more from the ``k % rows`` rows whose next weight scores lowest, so the
env's exact per-layer counts hold and rows are pruned as evenly as the count allows.
"""

from __future__ import annotations

import torch

#: Default damping of the Gram matrix, relative to its mean diagonal (SparseGPT's and GPTQ's 1 %).
DAMP = 0.01
#: Float64 bytes one chunk of batched row solves may hold.
CHUNK_BYTES = 64 << 20

__all__ = ["DAMP", "damped", "gptq", "obs_scores", "reconstruct", "row_balanced_order", "wanda_scores"]


def damped(gram: torch.Tensor, damp: float = DAMP) -> torch.Tensor:
    """``gram / rows``-free damping: ``gram + damp * mean(diag) * I`` in float64; an all-zero ``gram`` (inputs never
    seen) becomes the identity, under which nothing is reconstructed."""
    h = gram.double().clone()
    mean = float(h.diagonal().mean()) if h.numel() else 0.0
    if mean <= 0.0:
        return torch.eye(h.shape[0], dtype=torch.float64)
    h.diagonal().add_(damp * mean)
    if damp == 0.0:  # exact least squares: only inputs never seen get a unit diagonal
        dead = h.diagonal() == 0
        h[dead, dead] = 1.0
    return h


def wanda_scores(weight: torch.Tensor, sq_norms: torch.Tensor) -> torch.Tensor:
    """``|W_ij| * ||x_j||`` for a ``(rows, in)`` weight and the inputs' per-feature squared norms."""
    return weight.abs().double() * sq_norms.double().clamp(min=0).sqrt().reshape(1, -1)


def obs_scores(weight: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """OBS saliency ``W_ij**2 / [H^-1]_jj`` for a damped ``hessian`` (:func:`damped`)."""
    hinv_diag = torch.cholesky_inverse(torch.linalg.cholesky(hessian)).diagonal()
    return weight.double() ** 2 / hinv_diag.reshape(1, -1)


def row_balanced_order(scores: torch.Tensor) -> torch.Tensor:
    """Flat indices of a ``(rows, cols)`` score matrix from least to most important, taking every row's lowest
    weight first (rows ordered by that weight's score), then every row's second lowest, and so on. Stable: ties
    fall by column, then by row."""
    rows, cols = scores.shape
    vals, idx = torch.sort(scores, dim=1, stable=True)
    perm = torch.argsort(vals, dim=0, stable=True)  # perm[t, j]: the row taking place t in round j
    flat = perm * cols + idx.gather(0, perm)
    return flat.T.reshape(-1).contiguous()


@torch.no_grad()
def reconstruct(weight: torch.Tensor, pruned: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """The weights closest to ``weight`` in each row's pre-activation on the calibration inputs, with the ``pruned``
    entries zero: per row ``r``, ``argmin (w' - w_r) H (w' - w_r)^T`` subject to ``w'[pruned[r]] = 0``.

    Solved exactly and batched over rows with equal counts: with ``P`` the row's pruned and ``S`` its kept columns,
    either ``w'_S = H_SS^-1 (H w_r)_S`` or the OBS form ``w' = w_r - w_P [H^-1]_PP^-1 [H^-1]_P:``, whichever system
    is smaller for the layer.

    :param weight: ``(rows, in)`` dense weights.
    :param pruned: ``(rows, in)`` boolean mask of the weights to zero.
    :param hessian: ``(in, in)`` damped Gram matrix (:func:`damped`), positive definite.
    :returns: the reconstructed weights, ``weight``'s dtype and device, exactly zero where ``pruned``.
    """
    w = weight.detach().double().cpu()
    mask = pruned.cpu().bool()
    h = hessian.double().cpu()
    n_p = mask.sum(1)
    if n_p.numel() == 0 or int(n_p.max()) == 0:
        return weight.detach().clone()
    out = w.clone()
    if float((n_p.double() ** 3).sum()) <= float(((mask.shape[1] - n_p).double() ** 3).sum()):  # smaller systems
        hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
        _solve_rows(out, w, mask, hinv, obs_form=True)
    else:
        _solve_rows(out, w, ~mask, h, obs_form=False)
    out[mask] = 0.0
    return out.to(weight.device, weight.dtype)


def _solve_rows(out: torch.Tensor, w: torch.Tensor, select: torch.Tensor, mat: torch.Tensor, obs_form: bool) -> None:
    """Batched solves over the rows, grouped by how many columns each selects (no padding); ``out`` is written in
    place."""
    sizes = select.sum(1)
    hw = None if obs_form else w @ mat  # (H w_r) for every row, H symmetric
    for size in torch.unique(sizes).tolist():
        rows = torch.nonzero(sizes == size).reshape(-1)
        if size == 0:
            if not obs_form:  # nothing kept: the row is zero
                out[rows] = 0.0
            continue
        if not obs_form and size == select.shape[1]:  # nothing pruned: the row stays as it is
            continue
        step = max(1, CHUNK_BYTES // (8 * size * size))
        for start in range(0, rows.numel(), step):
            r = rows[start:start + step]
            # each row's selected columns, in column order
            cols = torch.argsort((~select[r]).to(torch.int8), dim=1, stable=True)[:, :size]
            a = mat[cols[:, :, None], cols[:, None, :]]
            if obs_form:
                z = torch.linalg.solve(a, w[r].gather(1, cols).unsqueeze(-1)).squeeze(-1)
                spread = torch.zeros_like(w[r]).scatter_(1, cols, z)
                out[r] = w[r] - spread @ mat  # = sum_k z_k [H^-1]_{P_k,:}, one dense product
            else:
                z = torch.linalg.solve(a, hw[r].gather(1, cols).unsqueeze(-1)).squeeze(-1)
                out[r] = torch.zeros_like(w[r]).scatter_(1, cols, z)


@torch.no_grad()
def gptq(weight: torch.Tensor, pruned: torch.Tensor, hessian: torch.Tensor, bits: int) -> torch.Tensor:
    """``weight`` rounded to the symmetric per-row linear grid of ``bits`` bits (the grid of
    :func:`prune_env.compression.quantize.quantize` with ``"linear"``), column by column with GPTQ's error feedback;
    ``pruned`` entries become 0 and their error is fed forward too.

    Each row's scale comes from its largest kept weight, and that weight is pinned to the grid's end, so the
    result is a fixed point of linear quantization: re-quantizing (or exporting) it changes nothing.

    :param weight: ``(rows, in)`` weights (already reconstructed, if wanted).
    :param pruned: ``(rows, in)`` boolean mask of the weights that must be zero.
    :param hessian: ``(in, in)`` damped Gram matrix (:func:`damped`).
    :param bits: 2..16 (32 returns the pruned weights unchanged).
    """
    from prune_env.compression.quantize import check_bits, linear_scales, qmax

    if check_bits(bits) == 32:
        return torch.where(pruned.to(weight.device), torch.zeros((), dtype=weight.dtype, device=weight.device),
                           weight.detach())
    w = weight.detach().double().cpu().clone()
    keep = ~pruned.cpu().bool()
    qm = qmax(bits)
    kept = torch.where(keep, w, torch.zeros((), dtype=torch.float64))
    scale = linear_scales(kept.float(), bits).double()
    top = kept.abs().argmax(1)
    pinned = torch.zeros_like(keep)
    pinned[torch.arange(w.shape[0]), top] = keep[torch.arange(w.shape[0]), top]
    pin_value = torch.sign(kept.gather(1, top[:, None]).squeeze(1)) * qm * scale
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian.double().cpu())), upper=True)
    q = torch.zeros_like(w)
    for j in range(w.shape[1]):
        col = w[:, j]
        rounded = torch.clamp(torch.round(col / scale), -qm, qm) * scale
        qj = torch.where(keep[:, j], rounded, torch.zeros((), dtype=torch.float64))
        qj = torch.where(pinned[:, j], pin_value, qj)
        q[:, j] = qj
        err = (col - qj) / u[j, j]
        if j + 1 < w.shape[1]:
            w[:, j + 1:] -= err[:, None] * u[j, j + 1:][None, :]
    return q.to(weight.device, weight.dtype)
