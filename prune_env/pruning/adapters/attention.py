"""Adapter of ``nn.MultiheadAttention`` (Vaswani et al., "Attention Is All You Need", NeurIPS 2017).

Its prunable weights, all of role ``attention`` and kind ``linear``:

- ``in_proj_weight``, the packed ``(3 * embed_dim, embed_dim)`` query, key and value projections (three gate
  blocks of rows: ``q, k, v``), or, when ``kdim``/``vdim`` differ from ``embed_dim``, the separate
  ``q_proj_weight``, ``k_proj_weight`` and ``v_proj_weight``;
- ``out_proj.weight``, the output projection. ``out_proj`` is a ``NonDynamicallyQuantizableLinear`` (an
  ``nn.Linear`` subclass) whose ``forward`` the attention never calls: it reads ``out_proj.weight`` directly. So the
  attention's adapter claims that weight (named from the attention module) and the ``nn.Linear`` adapter of the
  child does not list it again.

What each weight reads: the query, key and value inputs; ``out_proj.weight`` the heads' concatenated context
vectors, recomputed exactly by running the attention with an identity output projection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from prune_env.pruning.adapters.registry import LayerAdapter, WeightSpec

_ARGS = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights",
         "is_causal")


class MultiheadAttentionAdapter(LayerAdapter):
    """``nn.MultiheadAttention``: the input projection(s) and ``out_proj.weight`` (see the module docstring)."""

    def weights(self, module: nn.Module) -> list[WeightSpec]:
        if module.in_proj_weight is not None:
            specs = [WeightSpec("in_proj_weight", "linear", "attention", 3, reads="query, key, value")]
        else:
            specs = [WeightSpec(f"{w}_proj_weight", "linear", "attention", reads=r)
                     for w, r in (("q", "query"), ("k", "key"), ("v", "value"))]
        return specs + [WeightSpec("out_proj.weight", "linear", "attention", reads="attention context")]

    def input_weights(self, module: nn.Module) -> list[str]:
        """The weights whose columns read the attention's input features when query, key and value are all the
        consumed sequence (self-attention over it)."""
        if module.in_proj_weight is not None:
            return ["in_proj_weight"]
        return ["q_proj_weight", "k_proj_weight", "v_proj_weight"]

    def capture(self, module: nn.Module, args: tuple, kwargs: Mapping[str, Any],
                output: Any) -> dict[str, torch.Tensor]:
        call = dict(zip(_ARGS, args), **kwargs)
        q, k, v = call.get("query"), call.get("key"), call.get("value")
        if not all(isinstance(t, torch.Tensor) for t in (q, k, v)):
            raise ValueError("calibration capture expected tensor query, key and value inputs to MultiheadAttention")
        out: dict[str, torch.Tensor] = {}
        if module.in_proj_weight is not None:
            if not (q is k is v or (q.shape == k.shape == v.shape and torch.equal(q, k) and torch.equal(q, v))):
                raise ValueError("calibration capture of MultiheadAttention's packed in_proj_weight needs self-"
                                 "attention (query, key and value the same tensor): its q, k and v rows read "
                                 "different inputs otherwise")
            out["in_proj_weight"] = q.detach().reshape(-1, module.embed_dim)
        else:
            out["q_proj_weight"] = q.detach().reshape(-1, q.shape[-1])
            out["k_proj_weight"] = k.detach().reshape(-1, k.shape[-1])
            out["v_proj_weight"] = v.detach().reshape(-1, v.shape[-1])
        out["out_proj.weight"] = context(module, q, k, v, call)
        return out


@torch.no_grad()
def context(module: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
            call: Mapping[str, Any] | None = None) -> torch.Tensor:
    """The ``(rows, embed_dim)`` concatenated head outputs that ``out_proj.weight`` multiplies (evaluation
    semantics: no attention dropout), one row per query position.

    :param call: the other arguments of the forward call (``key_padding_mask``, ``attn_mask``, ``is_causal``).
    """
    call = call or {}
    batch_first = module.batch_first and query.dim() == 3
    if batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    separate = module.in_proj_weight is None
    eye = torch.eye(module.embed_dim, dtype=query.dtype, device=query.device)
    ctx, _ = nn.functional.multi_head_attention_forward(
        query, key, value, module.embed_dim, module.num_heads, module.in_proj_weight, module.in_proj_bias,
        module.bias_k, module.bias_v, module.add_zero_attn, 0.0, eye, None, training=False,
        key_padding_mask=call.get("key_padding_mask"), need_weights=False, attn_mask=call.get("attn_mask"),
        use_separate_proj_weight=separate, q_proj_weight=module.q_proj_weight if separate else None,
        k_proj_weight=module.k_proj_weight if separate else None,
        v_proj_weight=module.v_proj_weight if separate else None, is_causal=bool(call.get("is_causal", False)))
    return (ctx.transpose(0, 1) if batch_first else ctx).reshape(-1, module.embed_dim)  # rows as the query's
