"""``torch.nn.utils.prune``-compatible masks of a pruned model: :func:`masks` and :func:`apply_masks`."""

from __future__ import annotations

import torch
from torch import nn

from prune_env.pruning.layers import find_prunable_layers


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``torch.nn.utils.prune``-compatible masks: prunable weight name -> float 0/1 tensor (0 where pruned).

    Apply them with :func:`apply_masks` (or ``torch.nn.utils.prune.custom_from_mask``) to fine-tune in your own
    training loop with the pruned weights held at zero.

    :param model: the pruned model.
    """
    params = dict(model.named_parameters())
    return {layer.name: (params[layer.name].detach() != 0).float() for layer in find_prunable_layers(model)}


def apply_masks(model: nn.Module, mask_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Attach ``mask_dict`` to ``model`` in place with ``torch.nn.utils.prune.custom_from_mask``; returns ``model``.

    :param model: the model to reparametrize (``weight`` becomes ``weight_orig * weight_mask``).
    :param mask_dict: parameter name -> 0/1 mask of the same shape, e.g. from :func:`masks`.
    """
    from torch.nn.utils import prune

    params = dict(model.named_parameters())
    for name, mask in mask_dict.items():
        if name not in params or params[name].shape != mask.shape:
            raise ValueError(f"`mask_dict`[{name!r}] matches no parameter of that shape in `model`")
        mname, _, pname = name.rpartition(".")
        prune.custom_from_mask(model.get_submodule(mname), pname, mask.to(params[name].device))
    return model
