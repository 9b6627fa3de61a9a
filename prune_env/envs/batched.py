"""Scoring K pruning allocations of one model in a single batched forward pass.

For a structured task (``eval_batch`` + ``metric``) the K candidates differ only in which weights are zero, so
their forward passes can share every kernel launch:

- the K masked copies of each prunable weight are stacked into ``(K, ...)`` tensors, built from the same cached
  prune orders the env uses (``rank[j] >= count`` keeps weight ``j``), so candidate ``i`` is exactly the model
  :class:`~prune_env.pruning.kinds.Unstructured` would produce for ``counts[i]``;
- the user's own ``forward`` runs unchanged under :func:`torch.func.vmap` with
  :func:`torch.func.functional_call`, so it sees the shapes of a single model and the K variants are folded into
  every matmul (``Linear`` and ``Embedding`` have batching rules; they become ``bmm``/gather);
- PyTorch's fused ``nn.LSTM``/``nn.GRU``/``nn.RNN`` kernels have no batching rule, so each recurrent module is
  swapped for :class:`LoopRNN`, the same recurrence written as a Python time loop of matmuls (PyTorch's gate
  order, every stacked layer and direction, ``batch_first``, LSTM ``proj_size``). Under ``vmap`` each step is
  one ``bmm`` over the K variants.

Anything the batched path cannot express (a ``PackedSequence`` input, data-dependent Python control flow, an
in-place op ``vmap`` refuses) raises at the construction-time probe, and the caller falls back to sequential
evaluation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from prune_env.checks import check_int
from prune_env.pruning.layers import PrunableLayer, get_param
from prune_env.task import RNNTask, metric_from_logits, split_score

TRIM_EVERY = 32
"""CPU batched passes between two returns of freed heap memory to the OS (see :func:`trim_heap`)."""


def _glibc_malloc_trim():
    """glibc's ``malloc_trim``, or ``None`` off glibc (macOS, Windows, musl)."""
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _glibc_malloc_trim()


def trim_heap() -> None:
    """Give freed heap memory back to the OS.

    A batched CPU pass allocates and frees many large, differently sized activations. glibc keeps such freed
    memory in its heap (its mmap threshold rises after the first large frees), so the resident size creeps up by
    fragmentation although nothing leaks: 16% over 10,000 candidates of `digits` at K=16, back to the start after a
    ``malloc_trim``. Trimming every :data:`TRIM_EVERY` passes costs well under a millisecond per call.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


#: Bytes of activations one batched pass may hold on a CPU; the candidates are split into chunks to fit.
CPU_MEMORY_BUDGET = 1 << 30
#: Share of the free GPU memory one batched pass may use.
GPU_MEMORY_SHARE = 0.5


class LoopRNN(nn.Module):
    """``nn.LSTM``/``nn.GRU``/``nn.RNN`` as a Python time loop of matmuls, so that ``vmap`` can batch it.

    It holds the wrapped module's own parameters under the same names (``weight_ih_l0``, ``bias_hh_l1_reverse``,
    ...), so :func:`torch.func.functional_call` can substitute them, and it returns what the wrapped module
    returns: ``(output, h_n)``, or ``(output, (h_n, c_n))`` for an LSTM. Evaluation only: inter-layer dropout is
    never applied.

    :param rnn: the recurrent module to mirror.
    """

    def __init__(self, rnn: nn.RNNBase):
        super().__init__()
        self.mode = rnn.mode
        self.input_size = rnn.input_size
        self.hidden_size = rnn.hidden_size
        self.num_layers = rnn.num_layers
        self.bias = rnn.bias
        self.batch_first = rnn.batch_first
        self.bidirectional = rnn.bidirectional
        self.proj_size = getattr(rnn, "proj_size", 0)
        self.directions = 2 if rnn.bidirectional else 1
        for name, p in rnn.named_parameters(recurse=False):
            self.register_parameter(name, p)

    def _weights(self, layer: int, direction: int) -> tuple[torch.Tensor, ...]:
        sfx = f"_l{layer}" + ("_reverse" if direction else "")
        w_ih, w_hh = getattr(self, "weight_ih" + sfx), getattr(self, "weight_hh" + sfx)
        b_ih = getattr(self, "bias_ih" + sfx) if self.bias else None
        b_hh = getattr(self, "bias_hh" + sfx) if self.bias else None
        w_hr = getattr(self, "weight_hr" + sfx) if self.proj_size else None
        return w_ih, w_hh, b_ih, b_hh, w_hr

    def forward(self, input: torch.Tensor, hx=None):  # noqa: A002 - nn.RNNBase's argument name
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"LoopRNN takes a padded tensor, not {type(input).__name__} (PackedSequence)")
        unbatched = input.dim() == 2
        x = input.unsqueeze(1 if not self.batch_first else 0) if unbatched else input
        if not self.batch_first:
            x = x.transpose(0, 1)
        batch = x.shape[0]
        out_size = self.proj_size or self.hidden_size
        h0, c0 = self._initial_state(hx, batch, out_size, x, unbatched)
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.directions):
                idx = layer * self.directions + d
                o, h, c = self._run(x, layer, d, h0[idx], None if c0 is None else c0[idx])
                outs.append(o)
                h_n.append(h)
                c_n.append(c)
            x = outs[0] if len(outs) == 1 else torch.cat(outs, -1)
        out = x if self.batch_first else x.transpose(0, 1)
        h_n = torch.stack(h_n)
        if unbatched:
            out = out.squeeze(0 if self.batch_first else 1)
            h_n = h_n.squeeze(1)
        if self.mode != "LSTM":
            return out, h_n
        c_n = torch.stack(c_n)
        return out, (h_n, c_n.squeeze(1) if unbatched else c_n)

    def _initial_state(self, hx, batch: int, out_size: int, x: torch.Tensor, unbatched: bool):
        n = self.num_layers * self.directions
        if hx is None:
            h0 = x.new_zeros(n, batch, out_size)
            return h0, (x.new_zeros(n, batch, self.hidden_size) if self.mode == "LSTM" else None)
        h0, c0 = hx if self.mode == "LSTM" else (hx, None)
        if unbatched:
            h0 = h0.unsqueeze(1)
            c0 = None if c0 is None else c0.unsqueeze(1)
        return h0, c0

    def _run(self, x: torch.Tensor, layer: int, direction: int, h: torch.Tensor, c: torch.Tensor | None):
        """One layer and direction over the whole sequence ``x`` (batch, time, features)."""
        w_ih, w_hh, b_ih, b_hh, w_hr = self._weights(layer, direction)
        if c is None:
            c = h.new_zeros(0)
        return rnn_layer(x, w_ih, w_hh, b_ih, b_hh, w_hr, h, c, self.mode, bool(direction))


@torch.library.custom_op("prune_env::rnn_layer", mutates_args=())
def rnn_layer(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor | None,
              b_hh: torch.Tensor | None, w_hr: torch.Tensor | None, h0: torch.Tensor, c0: torch.Tensor, mode: str,
              reverse: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One recurrent layer and direction: ``x`` (batch, time, in) -> ``(output, h_n, c_n)``.

    A custom op so that :func:`torch.func.vmap` hands its batching rule plain ``(K, ...)`` tensors: the time loop
    then runs as explicit ``bmm`` over the K variants, without vmap's per-op dispatch in the loop. ``c0``/``c_n``
    are empty for GRU and RNN.
    """
    args = [None if t is None else t.unsqueeze(0) for t in (x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0)]
    return tuple(t.squeeze(0) if t.numel() else t.clone() for t in _recurrence(*args, mode, reverse))


@rnn_layer.register_vmap
def _rnn_layer_vmap(info, in_dims, x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, mode, reverse):
    tensors = (x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0)
    # Batched arguments get the candidate axis first; shared ones a size-1 axis that broadcasts.
    args = [None if t is None else (t.movedim(d, 0) if d is not None else t.unsqueeze(0))
            for t, d in zip(tensors, in_dims[:8])]
    out, h, c = _recurrence(*args, mode, reverse)
    return (out, h, c), (0, 0, 0 if c.numel() else None)


def _recurrence(x, w_ih, w_hh, b_ih, b_hh, w_hr, h, c, mode: str, reverse: bool):
    """The time loop on tensors with a leading candidate axis (size K, or 1 to broadcast over the candidates).

    PyTorch's gate order and equations: LSTM ``i, f, g, o`` (then ``h = W_hr h`` with a projection), GRU
    ``r, z, n`` with ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, RNN ``tanh``/``relu``.
    """
    n_in, batch, steps, _ = x.shape
    gi = torch.matmul(x.reshape(n_in, batch * steps, -1), w_ih.transpose(1, 2))
    if b_ih is not None:
        gi = gi + b_ih.unsqueeze(1)
    k = gi.shape[0]
    gi = gi.view(k, batch, steps, -1).permute(2, 0, 1, 3).contiguous()  # time-major: gi[t] is contiguous
    w_hh_t = w_hh.transpose(1, 2)
    hidden = w_hh.shape[1] // {"LSTM": 4, "GRU": 3}.get(mode, 1)
    w_hr_t = None if w_hr is None else w_hr.transpose(1, 2)
    bias = None if b_hh is None else b_hh.unsqueeze(1)
    k = max(k, w_hh.shape[0])
    h = h.expand(k, -1, -1)
    c = c.expand(k, -1, -1) if c.numel() else c
    outs = [None] * steps
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        gh = torch.bmm(h, w_hh_t.expand(k, -1, -1)) if bias is None else torch.baddbmm(bias, h, w_hh_t.expand(
            k, -1, -1))
        # Few, whole-tensor kernels per step: on a GPU the loop is bound by kernel launches, not arithmetic.
        if mode == "LSTM":
            gates = gh.add_(gi[t])
            i, f, _, o = torch.sigmoid(gates).chunk(4, -1)
            g = torch.tanh(gates[..., 2 * hidden:3 * hidden])
            c = torch.addcmul(f * c, i, g)
            h = o * torch.tanh(c)
            if w_hr_t is not None:
                h = torch.bmm(h, w_hr_t.expand(k, -1, -1))
        elif mode == "GRU":
            r, z = torch.sigmoid(gi[t][..., :2 * hidden] + gh[..., :2 * hidden]).chunk(2, -1)
            n = torch.tanh(torch.addcmul(gi[t][..., 2 * hidden:], r, gh[..., 2 * hidden:]))
            h = torch.addcmul(n, z, h - n)
        else:
            pre = gh.add_(gi[t])
            h = torch.tanh(pre) if mode == "RNN_TANH" else torch.relu(pre)
        outs[t] = h
    return torch.stack(outs, 2), h.contiguous(), (c.contiguous() if c.numel() else c.new_zeros(0))


def loop_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose recurrent modules are :class:`LoopRNN` s (same parameter names), in eval mode."""
    work = copy.deepcopy(model).eval()
    for name, module in list(work.named_modules()):
        if isinstance(module, nn.RNNBase):
            parent_name, _, child = name.rpartition(".")
            parent = work.get_submodule(parent_name) if parent_name else work
            if not name:
                raise TypeError("the model is itself a recurrent module; wrap it in an nn.Module with a head")
            setattr(parent, child, LoopRNN(module))
    for p in work.parameters():
        p.requires_grad_(False)
    return work


class BatchedScorer:
    """Scores many pruning allocations of a structured task's model in batched forward passes.

    :param task: a structured :class:`~prune_env.RNNTask` (``eval_batch`` and ``metric`` set).
    :param layers: the prunable layers, in allocation order.
    :param orders: per layer, flat indices from least to most important (the env's cached prune orders).
    :param device: where the passes run.
    :param max_batch: most candidates per pass; ``None`` sizes chunks to :data:`CPU_MEMORY_BUDGET` on a CPU or
        :data:`GPU_MEMORY_SHARE` of the free memory on a GPU.
    :param autocast: run the passes under ``torch.autocast`` with this dtype (``None``: float32); the outputs
        are returned as float32.
    :param weights: ``weights(i, k)``, layer ``i``'s flat weights at count ``k`` when they are not the dense ones
        with the first ``k`` of the order zeroed (the env kind's ``target`` under ``reconstruct``); ``None``: those.
    """

    def __init__(self, task: RNNTask, layers: Sequence[PrunableLayer], orders: Sequence[torch.Tensor],
                 device: torch.device, max_batch: int | None = None, autocast: torch.dtype | None = None,
                 weights: Callable[[int, int], torch.Tensor] | None = None):
        self.weights = weights
        if not task.structured:
            raise ValueError("BatchedScorer needs a structured `task` (RNNTask with eval_batch and metric)")
        if max_batch is not None:
            max_batch = check_int("max_batch", max_batch, 1)
        self.device = torch.device(device)
        self.autocast = autocast
        self.layers = list(layers)
        self.metric = task.metric
        self.model = loop_model(task.model).to(self.device)
        inputs, targets = task.eval_batch
        self.inputs = inputs.to(self.device)
        self.targets = targets.to(self.device)
        self.dense = [get_param(self.model, layer).detach().clone() for layer in self.layers]
        # rank[j] = position of weight j in the prune order: count k prunes exactly the weights with rank < k.
        self.ranks = []
        for order, layer in zip(orders, self.layers):
            rank = torch.empty(layer.numel, dtype=torch.int64)
            rank[order] = torch.arange(layer.numel)
            self.ranks.append(rank.to(self.device))
        self._batched = vmap(self._one, in_dims=(0,), randomness="error")
        # One dense pass up front: it fails fast on a forward vmap cannot batch and sizes the output for chunking.
        self.output_numel = self.logits(np.zeros((1, len(self.layers)), dtype=np.int64))[0].numel()
        self.max_batch = max_batch or self._auto_batch()
        self._passes = 0

    def _one(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(self.model, params, (self.inputs,))

    def _forward(self, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.autocast is None:
            return self._batched(weights)
        with torch.autocast(self.device.type, dtype=self.autocast):
            return self._batched(weights).float()

    def stacked_weights(self, counts: np.ndarray) -> dict[str, torch.Tensor]:
        """The ``(K, *shape)`` masked weights of each prunable layer for ``counts`` of shape ``(K, num_layers)``."""
        c = torch.as_tensor(np.asarray(counts, dtype=np.int64), device=self.device)
        out = {}
        for i, layer in enumerate(self.layers):
            if self.weights is not None:
                rows = [self.weights(i, k).to(self.device) for k in np.asarray(counts)[:, i].tolist()]
                out[layer.name] = torch.stack(rows).reshape(c.shape[0], *layer.shape)
                continue
            keep = self.ranks[i].unsqueeze(0) >= c[:, i:i + 1]
            w = torch.where(keep, self.dense[i].reshape(1, -1), torch.zeros((), device=self.device))
            out[layer.name] = w.reshape(c.shape[0], *layer.shape)
        return out

    @torch.no_grad()
    def logits(self, counts: np.ndarray) -> torch.Tensor:
        """The model's outputs on ``eval_batch`` for each row of ``counts``, stacked along a new first axis."""
        return self._forward(self.stacked_weights(counts))

    @torch.no_grad()
    def score(self, counts: np.ndarray) -> list[tuple[float, dict[str, float]]]:
        """``(score, extras)`` for each row of ``counts`` (pruned weights per layer), as ``task.evaluate`` gives.

        :param counts: ``(K, num_layers)`` integer array.
        """
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim != 2 or counts.shape[1] != len(self.layers):
            raise ValueError(f"`counts` must have shape (K, {len(self.layers)}), got {counts.shape}")
        results: list[tuple[float, dict[str, float]]] = []
        for start in range(0, counts.shape[0], self.max_batch):
            weights = self.stacked_weights(counts[start:start + self.max_batch])
            results.extend(self._score_logits(self._forward(weights)))
            del weights
            self._passes += 1
            if self.device.type == "cpu" and self._passes % TRIM_EVERY == 0:
                trim_heap()
        return results

    def _score_logits(self, logits: torch.Tensor) -> list[tuple[float, dict[str, float]]]:
        if callable(self.metric):
            return [split_score(metric_from_logits(lg, self.targets, self.metric)) for lg in logits]
        k = logits.shape[0]
        flat = logits.reshape(k, -1, logits.shape[-1]).float()
        tgt = self.targets.reshape(-1)
        nll = F.cross_entropy(flat.reshape(-1, flat.shape[-1]), tgt.repeat(k), reduction="none")
        nll = nll.view(k, -1).mean(1)
        acc = (flat.argmax(-1) == tgt).float().mean(1)
        out = []
        for n, a in zip(nll.tolist(), acc.tolist()):
            ppl = float(torch.exp(torch.tensor(min(n, 80.0))))
            score = a if self.metric == "accuracy" else -n
            out.append((score, {"nll": n, "perplexity": ppl}))
        return out

    def _auto_batch(self) -> int:
        """Candidates per pass that keep the activations within the memory budget."""
        per = self._bytes_per_candidate()
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            budget = GPU_MEMORY_SHARE * free
        else:
            budget = CPU_MEMORY_BUDGET
        return max(1, int(budget // per))

    def _bytes_per_candidate(self) -> int:
        """A generous estimate of what one candidate adds to a pass: twice its weights (dense copy and mask), the
        largest recurrent layer's gate pre-activations and outputs over the whole batch, and its outputs."""
        weights = sum(layer.numel for layer in self.layers)
        positions = self.inputs[..., 0].numel() if self.inputs.is_floating_point() else self.inputs.numel()
        rnn = 0
        for m in self.model.modules():
            if isinstance(m, LoopRNN):
                gates = {"LSTM": 4, "GRU": 3}.get(m.mode, 1) * m.hidden_size
                rnn = max(rnn, positions * m.directions * (gates + 2 * (m.proj_size or m.hidden_size)))
        return 4 * (2 * weights + rnn + 2 * self.output_numel) + 32 * max(layer.numel for layer in self.layers)
