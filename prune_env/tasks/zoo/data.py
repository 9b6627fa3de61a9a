"""The zoo's data: the source of stdlib packages, the help text, digits read by rows and synthetic sequence tasks.

Synthetic data come from a ``torch.Generator`` seeded by the data name and split (:func:`data_generator`), so
they do not depend on the model seed; the data splits of the texts and of digits are fixed too.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import torch
from torch.nn import functional as F

from prune_env.tasks.zoo.catalogue import PREFIX, ZooDataUnavailable


def stdlib_text(package: str) -> str:
    """The source of a stdlib package: its ``.py`` files (recursively) in sorted relative-path order, joined."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"]) / package
    if not root.is_dir():
        raise ZooDataUnavailable(f"stdlib package {package!r} not found under {root.parent}")
    files = sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix())
    return "".join(p.read_text(encoding="utf-8", errors="replace") for p in files)


def source_text(data: str) -> str:
    if data == "pydoc":
        from prune_env.tasks.pydoc_char import load_text

        return load_text()
    return stdlib_text(data.split(":", 1)[1])


def data_generator(data: str, split: str) -> torch.Generator:
    """A generator seeded by the data name and split only: synthetic data never depend on the model seed."""
    return torch.Generator().manual_seed(zlib.crc32(f"{PREFIX}{data}/{split}".encode()))


def synthetic(data: str, n: int, seq_len: int, gen: torch.Generator, tokens: bool
              ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``n`` samples of a synthetic sequence task.

    - ``parity``: random bits; the label at every step is the parity of the bits so far (2 classes; targets
      ``[n, seq_len]``). The parity of a whole sequence from one label per sequence did not train in thousands of
      steps (it stayed at chance for 6-12 bits), per-step labels train in a few hundred.
    - ``adding``: random digits 0-9, two marked (one in each half); the label is the sum of the marked two (19
      classes). Features: ``(digit / 9, mark)``; tokens: ``digit + 10 * mark``.
    - ``counting``: random symbols 0-4; the label is how often 0 occurs, capped at 9 (10 classes). Features:
      one-hot symbols.
    - ``adding-sum``: as ``adding``, but the target is the sum of the two marked digits divided by 18, as a number
      (regression).
    - ``sines``: three sinusoids of random frequency (0.02-0.2 cycles per step), amplitude (0.2-1) and phase,
      plus Gaussian noise (sd 0.1); the inputs are ``seq_len`` values, the target the next one (regression).

    :param tokens: token ids (for a model with an embedding) instead of float features.
    :returns: ``(inputs [n, seq_len, features] float or [n, seq_len] long, targets [n] (parity: [n, seq_len]),
        classes or 1)``.
    """
    if data == "parity":
        bits = torch.randint(0, 2, (n, seq_len), generator=gen)
        y = bits.cumsum(1) % 2
        return (bits if tokens else bits.float().unsqueeze(-1)), y, 2
    if data in ("adding", "adding-sum"):
        digits = torch.randint(0, 10, (n, seq_len), generator=gen)
        half = seq_len // 2
        first = torch.randint(0, half, (n,), generator=gen)
        second = torch.randint(half, seq_len, (n,), generator=gen)
        mark = torch.zeros(n, seq_len, dtype=torch.long)
        rows = torch.arange(n)
        mark[rows, first] = 1
        mark[rows, second] = 1
        y = digits[rows, first] + digits[rows, second]
        classes = 19
        if data == "adding-sum":
            y, classes = y.float() / 18, 1
        if tokens:
            return digits + 10 * mark, y, classes
        return torch.stack([digits.float() / 9, mark.float()], -1), y, classes
    if data == "counting":
        sym = torch.randint(0, 5, (n, seq_len), generator=gen)
        y = (sym == 0).sum(1).clamp(max=9)
        return (sym if tokens else F.one_hot(sym, 5).float()), y, 10
    if data == "sines":
        t = torch.arange(seq_len + 1, dtype=torch.float32)
        freq = 0.02 + 0.18 * torch.rand(n, 3, 1, generator=gen)
        amp = 0.2 + 0.8 * torch.rand(n, 3, 1, generator=gen)
        phase = 2 * math.pi * torch.rand(n, 3, 1, generator=gen)
        series = (amp * torch.sin(2 * math.pi * freq * t + phase)).sum(1)
        series = series + 0.1 * torch.randn(n, seq_len + 1, generator=gen)
        return series[:, :-1].unsqueeze(-1), series[:, -1], 1
    raise ValueError(f"unknown synthetic data {data!r}")


def digits_rows() -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], int]:
    """``load_digits`` read row by row (8 steps of 8 pixels in [0, 1]), a fixed stratified 60/20/20 split."""
    from prune_env.tasks.digits import load_splits

    return load_splits(0, 0.2, 0.2), 10
