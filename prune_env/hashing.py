"""Hashes of model weights: one identity for a dense model, shared by the cache, replay records and run
fingerprints."""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def model_hash(model: nn.Module) -> str:
    """SHA-256 over the model's ``state_dict``: every entry's name, dtype, shape and raw bytes, in name order.

    The same weights give the same hash on any device (tensors are read on the CPU); a changed weight, buffer, dtype
    or shape changes it. Returned as ``"sha256:<hex>"``.
    """
    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()
