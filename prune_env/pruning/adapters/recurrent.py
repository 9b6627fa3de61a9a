"""Adapters of PyTorch's fused recurrent modules (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``) and the unrolled
recurrence that tells what each of their weights reads.

Every stacked layer ``k`` and direction has ``weight_ih_l{k}[_reverse]`` (reads ``x_t``, the layer's input
sequence: the module's input for ``k = 0``, the previous layer's output, both directions concatenated, above),
``weight_hh_l{k}[_reverse]`` (reads ``h_{t-1}``, the state the direction carries into step ``t``: ``h_0`` at its
first step, which is ``t = T - 1`` for the reverse direction) and, for an LSTM with ``proj_size``,
``weight_hr_l{k}[_reverse]`` (reads the unprojected ``o_t * tanh(c_t)``). Gate rows follow PyTorch's order: LSTM
``i, f, g, o``, GRU ``r, z, n``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from prune_env.pruning.adapters.registry import LayerAdapter, WeightSpec

_RNN_WEIGHT = re.compile(r"weight_(ih|hh|hr)_l(\d+)(_reverse)?$")
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


class RecurrentAdapter(LayerAdapter):
    """``nn.LSTM``/``nn.GRU``/``nn.RNN``: stacked, bidirectional, ``batch_first`` either way, LSTM ``proj_size``.

    Biases are never prunable. Packed sequences are refused by :meth:`capture` (pass padded tensors).
    """

    def weights(self, module: nn.Module) -> list[WeightSpec]:
        gates = GATES[module.mode]
        out = []
        for pname, _ in module.named_parameters(recurse=False):
            m = _RNN_WEIGHT.match(pname)
            if m is None:
                continue
            which, layer, reverse = m.group(1), int(m.group(2)), bool(m.group(3))
            if which == "ih":
                spec = WeightSpec(pname, "input-hidden", "input", gates, layer, reverse, "x_t")
            elif which == "hh":
                spec = WeightSpec(pname, "hidden-hidden", "recurrent", gates, layer, reverse, "h_{t-1}")
            else:
                spec = WeightSpec(pname, "hidden-hidden", "projection", 1, layer, reverse, "o_t * tanh(c_t)")
            out.append(spec)
        return out

    def capture(self, module: nn.Module, args: tuple, kwargs: Mapping[str, Any],
                output: Any) -> dict[str, torch.Tensor]:
        x = args[0] if args else kwargs.get("input")
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        out: dict[str, torch.Tensor] = {}
        for (layer, direction), (inp, h_prev, cell) in unroll(module, x, hx).items():
            sfx = f"_l{layer}" + ("_reverse" if direction else "")
            out["weight_ih" + sfx] = inp.reshape(-1, inp.shape[-1])
            out["weight_hh" + sfx] = h_prev.reshape(-1, h_prev.shape[-1])
            if cell is not None:
                out["weight_hr" + sfx] = cell.reshape(-1, cell.shape[-1])
        return out


@torch.no_grad()
def unroll(module: nn.RNNBase, x: torch.Tensor, hx: Any = None
           ) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Run ``module`` step by step on ``x`` and return, per ``(layer, direction)``, what its weights read.

    :param module: an ``nn.LSTM``, ``nn.GRU`` or ``nn.RNN`` (evaluation semantics: no inter-layer dropout).
    :param x: the module's input, batched or not, in its own ``batch_first`` layout.
    :param hx: the initial state as the module takes it (``None``: zeros).
    :returns: ``(layer, direction) -> (inputs, h_prev, cell_out)``, each ``(batch, time, features)`` in time
        order: ``inputs[:, t]`` is ``x_t``, ``h_prev[:, t]`` the state the direction carries into step ``t``, and
        ``cell_out[:, t]`` the unprojected ``o_t * tanh(c_t)`` of an LSTM with ``proj_size`` (else ``None``).
    :raises ValueError: for a packed sequence or a module this unroll does not know.
    """
    if isinstance(x, nn.utils.rnn.PackedSequence):
        raise ValueError("calibration capture does not support packed sequences (PackedSequence input to "
                         f"{type(module).__name__}); give the task calibration batches the model runs unpacked")
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"calibration capture expected a tensor input to {type(module).__name__}, "
                         f"got {type(x).__name__}")
    if module.mode not in GATES:
        raise ValueError(f"calibration capture does not know recurrent mode {module.mode!r}")
    unbatched = x.dim() == 2
    seq = x.unsqueeze(0) if unbatched else (x if module.batch_first else x.transpose(0, 1))
    batch = seq.shape[0]
    dirs = 2 if module.bidirectional else 1
    proj = getattr(module, "proj_size", 0)
    out_size = proj or module.hidden_size
    h0, c0 = _initial(module, hx, batch, out_size, dirs, unbatched, seq)
    result = {}
    for layer in range(module.num_layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            idx = layer * dirs + d
            o, h_prev, cell = _direction(module, sfx, seq, h0[idx], None if c0 is None else c0[idx], bool(d), proj)
            result[(layer, d)] = (seq, h_prev, cell)
            outs.append(o)
        seq = outs[0] if dirs == 1 else torch.cat(outs, -1)
    return result


def _initial(module, hx, batch, out_size, dirs, unbatched, like):
    n = module.num_layers * dirs
    if hx is None:
        h0 = like.new_zeros(n, batch, out_size)
        return h0, (like.new_zeros(n, batch, module.hidden_size) if module.mode == "LSTM" else None)
    h0, c0 = hx if module.mode == "LSTM" else (hx, None)
    if unbatched:
        h0 = h0.unsqueeze(1)
        c0 = None if c0 is None else c0.unsqueeze(1)
    return h0, c0


def _direction(module, sfx, seq, h, c, reverse: bool, proj: int):
    w_ih, w_hh = getattr(module, "weight_ih" + sfx), getattr(module, "weight_hh" + sfx)
    b_ih = getattr(module, "bias_ih" + sfx) if module.bias else None
    b_hh = getattr(module, "bias_hh" + sfx) if module.bias else None
    w_hr = getattr(module, "weight_hr" + sfx) if proj else None
    gi = nn.functional.linear(seq, w_ih, b_ih)
    steps = seq.shape[1]
    hidden = module.hidden_size
    outs, prevs, cells = [None] * steps, [None] * steps, [None] * steps
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        prevs[t] = h
        gh = nn.functional.linear(h, w_hh, b_hh)
        if module.mode == "LSTM":
            i, f, g, o = (gi[:, t] + gh).chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            full = torch.sigmoid(o) * torch.tanh(c)
            cells[t] = full
            h = nn.functional.linear(full, w_hr) if w_hr is not None else full
        elif module.mode == "GRU":
            r = torch.sigmoid(gi[:, t, :hidden] + gh[..., :hidden])
            z = torch.sigmoid(gi[:, t, hidden:2 * hidden] + gh[..., hidden:2 * hidden])
            n = torch.tanh(gi[:, t, 2 * hidden:] + r * gh[..., 2 * hidden:])
            h = (1 - z) * n + z * h
        else:
            pre = gi[:, t] + gh
            h = torch.tanh(pre) if module.mode == "RNN_TANH" else torch.relu(pre)
        outs[t] = h
    return torch.stack(outs, 1), torch.stack(prevs, 1), (torch.stack(cells, 1) if proj else None)
