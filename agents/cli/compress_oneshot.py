"""The one-shot model of ``prune-rnn compress`` and fine-tuning from it with its masks held fixed
(``--finetune-from oneshot``).

The one-shot model is the search's allocation pruned by the env's operator (``criterion``, ``reconstruct``): with
``reconstruct="obs"`` its kept weights are re-fitted by least squares on training inputs (SparseGPT, Frantar and
Alistarh, ICML 2023), either on the dense model's inputs, as the search scored it, or ``sequential``-ly, each layer
on the inputs of the model whose earlier layers are already pruned
(:func:`prune_env.pruning.reconstruction.sequential_prune`).

:func:`finetune_oneshot` trains that model at full sparsity from the first step: it is
:func:`prune_env.compression.gradual.gradual_prune` with the pruning ramp ending at step 0 (``start = end = 0``),
run on the one-shot model, whose pruned weights are exactly its zeros. That step prunes each layer's count of lowest
``|w|``, which are the one-shot zeros: kept weights that happen to be exactly zero are first set to the smallest
normal float32 (a change far below any rounding), so the masks are the one-shot model's exactly, and stay fixed.
Quantization-aware training (``bits``) then covers every step, and the best validation checkpoint is kept, from
step 0 (the one-shot model itself) on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

#: Values of ``finetune_from``: the gradual ramp from the dense model, or fixed masks from the one-shot model.
FINETUNE_FROM = ("dense", "oneshot")


def oneshot_model(env: Any, allocation: Mapping[str, float], sequential: bool = False) -> nn.Module:
    """The one-shot model of ``allocation`` under the env's operator (a new module; the task's model is untouched).

    :param sequential: with ``reconstruct="obs"``, re-fit layer after layer on the inputs of the model pruned so far.
    """
    allocation = {str(k): float(v) for k, v in allocation.items()}
    return env.pruned_model(allocation, sequential=True) if sequential else env.pruned_model(allocation)


def oneshot_masks(env: Any, counts: Any) -> dict[str, torch.Tensor]:
    """Parameter name -> boolean tensor (the parameter's shape) of the weights the env prunes for ``counts``: the
    first ``count`` entries of each layer's prune order, exactly what :func:`oneshot_model` zeroes."""
    from prune_env.pruning.reconstruction import pruned_mask

    names = dict(env.task.model.named_parameters())
    out = {}
    for layer, order, k in zip(env.layers, env.analysis.orders, counts):
        name = _param_name(layer, names)
        out[name] = pruned_mask(layer, order, int(k)).reshape(names[name].shape)
    return out


def _param_name(layer: Any, names: Mapping[str, Any]) -> str:
    full = f"{layer.module_name}.{layer.param_name}" if layer.module_name else layer.param_name
    return full if full in names else layer.name


def masks_kept(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> bool:
    """Whether every weight ``masks`` marks is exactly zero in ``model``."""
    params = dict(model.named_parameters())
    return all(bool((params[n].detach().cpu()[m.cpu()] == 0).all()) for n, m in masks.items())


def finetune_oneshot(env: Any, oneshot: nn.Module, allocation: Mapping[str, float], masks: Mapping[str, torch.Tensor],
                     **gradual: Any) -> Any:
    """Fine-tune ``oneshot`` (from :func:`oneshot_model`; not modified) with ``masks`` (from :func:`oneshot_masks`)
    held fixed; returns :func:`~prune_env.compression.gradual.gradual_prune`'s result.

    :param gradual: ``steps``, ``lr``, ``seed``, ``bits``, ``method``, ``lr_schedule``, ``select``, ``device``,
        ``progress`` of :func:`~prune_env.compression.gradual.gradual_prune` (its ``start`` and ``end`` are 0).
    :raises ValueError: when ``oneshot`` is not zero where ``masks`` says (not the one-shot model of these masks).
    """
    import prune_env.compression.gradual as G

    model = _separate_zeros(oneshot, masks)
    task = dataclasses.replace(env.task, model=model)
    return G.gradual_prune(task, dict(allocation), start=0, end=0, **gradual)


@torch.no_grad()
def _separate_zeros(oneshot: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of ``oneshot`` whose only exact zeros in the masked parameters are the masked weights."""
    import copy

    model = copy.deepcopy(oneshot)
    params = dict(model.named_parameters())
    tiny = torch.finfo(torch.float32).tiny
    for name, mask in masks.items():
        p = params[name]
        m = mask.to(p.device)
        if not bool((p[m] == 0).all()):
            raise ValueError(f"the one-shot model is not zero where its masks prune `{name}`")
        p.copy_(torch.where((p == 0) & ~m, torch.full_like(p, tiny), p))
    for module in model.modules():
        if isinstance(module, nn.RNNBase):
            module.flatten_parameters()
    return model


__all__ = ["FINETUNE_FROM", "finetune_oneshot", "masks_kept", "oneshot_masks", "oneshot_model"]
