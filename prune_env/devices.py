"""Devices and scoring precision: the one place that picks a device, reads a model's device, and decides whether
bf16 scoring can run here.

``precision="bf16"`` scores under :func:`torch.autocast` with bfloat16. On a CPU the fused recurrent kernels come from
oneDNN, which has no bf16 LSTM/GRU/RNN primitive on every processor (for example on an AVX2-only AMD EPYC: "could not
create a primitive descriptor for the LSTM forward propagation primitive"). :func:`check_precision` therefore runs a
tiny module of each recurrent kind the model holds under autocast once per (device type, kind) and refuses bf16 at
construction, with a message that says why and suggests ``"fp32"``, instead of failing in the middle of a search.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn

#: ``precision`` -> autocast dtype of the scoring forward pass (``None``: plain float32).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}

_SUPPORT: dict[tuple[str, str], str | None] = {}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a :class:`torch.device`; ``None`` picks ``"cuda"`` when available, else ``"cpu"``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"`device` must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from None


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless model)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """``torch.autocast`` with the precision's dtype, or nothing for ``"fp32"``."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield


def recurrent_kinds(model: nn.Module) -> list[str]:
    """The distinct ``RNNBase.mode`` values (``"LSTM"``, ``"GRU"``, ``"RNN_TANH"``, ``"RNN_RELU"``) in ``model``."""
    return sorted({m.mode for m in model.modules() if isinstance(m, nn.RNNBase)})


def precision_problem(device: torch.device, precision: str, kind: str) -> str | None:
    """Why ``precision`` cannot score a recurrent module of ``kind`` on ``device`` (``None``: it can).

    Probed once per (device type, kind, precision) with a tiny module under autocast; the answer is cached.
    """
    if PRECISIONS[precision] is None:
        return None
    key = (f"{device.type}:{precision}", kind)
    if key not in _SUPPORT:
        _SUPPORT[key] = _probe(device, precision, kind)
    return _SUPPORT[key]


def _probe(device: torch.device, precision: str, kind: str) -> str | None:
    cls = {"LSTM": nn.LSTM, "GRU": nn.GRU}.get(kind, nn.RNN)
    kwargs = {"nonlinearity": "relu" if kind == "RNN_RELU" else "tanh"} if cls is nn.RNN else {}
    try:
        with torch.no_grad():
            module = cls(8, 8, batch_first=True, **kwargs).to(device).eval()
            with autocast(device, precision):
                module(torch.zeros(2, 3, 8, device=device))
    except RuntimeError as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0]}"
    return None


def check_precision(model: nn.Module, device: torch.device, precision: str) -> None:
    """:raises ValueError: if ``precision`` cannot score ``model``'s recurrent modules on ``device``."""
    for kind in recurrent_kinds(model):
        problem = precision_problem(device, precision, kind)
        if problem is not None:
            raise ValueError(f"`precision`={precision!r} is not available here: this {device.type} has no "
                             f"{precision} {kind} kernel ({problem}); use precision='fp32'")


def _one_thread_after_fork() -> None:
    """In a forked child, run torch on one intra-op thread.

    A parent that has run a forward pass has started torch's OpenMP thread pool, which does not survive ``fork``: the
    child's first parallel region deadlocks. Gymnasium's ``AsyncVectorEnv`` forks by default on Linux after building
    a dummy env in the parent, so ``gym.make_vec(..., vectorization_mode="async")`` hung forever. With one thread the
    child never enters a parallel region (PyTorch's own DataLoader workers do the same). Spawned processes are not
    affected.
    """
    torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_one_thread_after_fork)
