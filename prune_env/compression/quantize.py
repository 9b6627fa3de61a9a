"""Weight quantization: symmetric per-output-channel linear (default) and k-means weight sharing.

Both keep zeros exactly zero, so a pruned weight stays pruned, and both are idempotent (quantizing an already
quantized tensor with the same settings returns it bit for bit), so a model the env scored re-exports to the same
values.

- ``linear``: row ``r`` (an output channel: the first axis) gets a scale ``s_r = max|w_r| / (2**(b-1) - 1)`` and
  each weight becomes ``round(w / s_r) * s_r``; the error is at most ``s_r / 2``. Codes are stored offset to
  unsigned ``b``-bit integers, scales as float32.
- ``kmeans``: one shared codebook per layer (Deep Compression): ``2**b - 1`` centroids fitted by Lloyd's algorithm
  from a linear initialisation over the nonzero weights, plus a reserved code 0 for the value 0. Limited to
  ``b <= 8``: a 16-bit codebook costs more than it saves, so 16 bits is always linear.

- ``gptq``: the ``linear`` grid and storage, with the rounding chosen by GPTQ (Frantar et al., ICLR 2023) from the
  task's calibration inputs (:func:`prune_env.pruning.obs.gptq`; the env's quantize mode). Without calibration
  inputs, as here, it rounds to nearest: exactly ``linear``.

``32`` bits means float32, unquantized.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prune_env.checks import is_int

#: Bit-widths the env's action chooses from.
BITS = (2, 3, 4, 6, 8, 16, 32)
METHODS = ("linear", "kmeans", "gptq")
KMEANS_MAX_BITS = 8
_LLOYD_ITERS = 20


def check_bits(bits: int, name: str = "bits") -> int:
    """:raises ValueError: unless ``bits`` is an int in 2..16 or 32."""
    if not is_int(bits) or not (2 <= bits <= 16 or bits == 32):
        raise ValueError(f"`{name}` must be an int in 2..16 or 32 (float32), got {bits!r}")
    return int(bits)


def check_method(method: str) -> str:
    """:raises ValueError: unless ``method`` is one of :data:`METHODS`."""
    if method not in METHODS:
        raise ValueError(f"unknown quantization `method` {method!r}; expected one of {METHODS}")
    return method


def effective_method(bits: int, method: str) -> str:
    """``"float"`` for 32 bits, ``"linear"`` for k-means above :data:`KMEANS_MAX_BITS`, else ``method``."""
    if bits == 32:
        return "float"
    if method == "gptq":
        return "linear"
    return "linear" if method == "kmeans" and bits > KMEANS_MAX_BITS else method


@dataclass
class Codes:
    """A quantized tensor: unsigned ``bits``-bit ``codes`` (same shape as the weight) and their ``table``.

    :param codes: int64 codes.
    :param table: float32 per-row scales (linear) or the ``2**bits`` codebook (k-means, entry 0 is 0.0).
    :param bits: bit-width.
    :param method: ``"linear"`` or ``"kmeans"``.
    """

    codes: torch.Tensor
    table: torch.Tensor
    bits: int
    method: str

    def zero_code(self) -> int:
        """The code of the value 0 (what relative-index fillers store)."""
        return qmax(self.bits) if self.method == "linear" else 0

    def dequantize(self) -> torch.Tensor:
        if self.method == "linear":
            q = (self.codes - qmax(self.bits)).float()
            return q * self.table.reshape(-1, *([1] * (q.dim() - 1)))
        return self.table[self.codes]


def qmax(bits: int) -> int:
    """Largest code magnitude of symmetric ``bits``-bit linear quantization."""
    return 2 ** (bits - 1) - 1


def encode(weight: torch.Tensor, bits: int, method: str = "linear") -> Codes:
    """Quantize ``weight`` (float, CPU) to codes; see the module docstring.

    :param weight: the tensor; its first axis is the output channel.
    :param bits: 2..16 (32 has no codes).
    :param method: ``"linear"`` or ``"kmeans"``.
    """
    check_bits(bits)
    method = effective_method(bits, check_method(method))
    if method == "float":
        raise ValueError("`bits`=32 keeps float32 values; there are no codes to encode")
    w = weight.detach().float().cpu()
    return _linear(w, bits) if method == "linear" else _kmeans(w, bits)


def quantize(weight: torch.Tensor, bits: int, method: str = "linear") -> torch.Tensor:
    """``weight`` rounded to its quantized values (same dtype and device); 32 bits returns a copy.

    :param weight: the tensor; its first axis is the output channel.
    :param bits: 2..16 or 32.
    :param method: ``"linear"`` or ``"kmeans"``.
    """
    if check_bits(bits) == 32:
        return weight.detach().clone()
    return encode(weight, bits, method).dequantize().to(weight.device, weight.dtype)


def _fixed_point_scales(m: torch.Tensor, qm: int) -> torch.Tensor:
    """Scales near ``m / qm`` for which requantization reproduces the same scale (``fl(fl(qm * s) / qm) == s``).

    Most float32 values already are; the rest are moved up by a few ulps, which keeps the error bound.
    """
    s = m / qm
    for _ in range(8):
        bad = (qm * s) / qm != s
        if not bool(bad.any()):
            break
        s = torch.where(bad, torch.nextafter(s, torch.full_like(s, float("inf"))), s)
    return s


def linear_scales(w: torch.Tensor, bits: int) -> torch.Tensor:
    """The per-row (first axis) float32 scales of ``linear`` quantization: ``max|w_r| / qmax`` (1 for a zero row)."""
    qm = qmax(bits)
    rows = w.reshape(w.shape[0], -1) if w.dim() > 1 else w.reshape(-1, 1)
    m = rows.float().abs().amax(dim=1)
    return torch.where(m > 0, _fixed_point_scales(m, qm), torch.ones_like(m))


def _linear(w: torch.Tensor, bits: int) -> Codes:
    qm = qmax(bits)
    rows = w.reshape(w.shape[0], -1) if w.dim() > 1 else w.reshape(-1, 1)
    scale = linear_scales(w, bits)
    q = torch.clamp(torch.round(rows / scale[:, None]), -qm, qm)
    codes = (q.long() + qm).reshape(w.shape)
    return Codes(codes, scale, bits, "linear")


def _kmeans(w: torch.Tensor, bits: int) -> Codes:
    k = 2 ** bits - 1
    flat = w.reshape(-1)
    nz = flat[flat != 0]
    distinct = torch.unique(nz)
    if distinct.numel() <= k:
        # Already shared (e.g. a tensor quantized before): keep the values exactly (idempotence).
        centroids = distinct
    else:
        centroids = _lloyd(nz, torch.linspace(float(nz.min()), float(nz.max()), k))
    codebook = torch.cat([torch.zeros(1), centroids, torch.zeros(k - centroids.numel())])
    codes = torch.zeros_like(flat, dtype=torch.long)
    if centroids.numel():
        codes[flat != 0] = _nearest(nz, centroids) + 1
    return Codes(codes.reshape(w.shape), codebook.float(), bits, "kmeans")


def _nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of the sorted ``centroids`` for each value (ties to the lower centroid)."""
    mids = (centroids[1:] + centroids[:-1]) / 2
    return torch.bucketize(x, mids, right=False)


def _lloyd(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Lloyd iterations in one dimension; an empty cluster keeps its centroid. Deterministic."""
    x = x.double()
    c = centroids.double()
    for _ in range(_LLOYD_ITERS):
        idx = _nearest(x, c)
        sums = torch.zeros_like(c).index_add_(0, idx, x)
        counts = torch.zeros_like(c).index_add_(0, idx, torch.ones_like(x))
        new = torch.where(counts > 0, sums / counts.clamp(min=1), c)
        new, _ = torch.sort(new)
        if torch.equal(new, c):
            break
        c = new
    return c.float()


def table_bits(rows: int, bits: int, method: str) -> int:
    """Bits of a layer's quantization table: float32 scales per row (linear) or the codebook (k-means)."""
    method = effective_method(bits, method)
    if method == "float":
        return 0
    return 32 * (rows if method == "linear" else 2 ** bits)
