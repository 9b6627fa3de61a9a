"""Calibration: what every prunable weight multiplies when the model reads training inputs.

The data-aware operators read, for each weight matrix ``W``, the input vectors ``x`` it multiplies: Wanda (Sun et
al., "A Simple and Effective Pruning Approach for Large Language Models", ICLR 2024) their per-feature norms,
SparseGPT (Frantar and Alistarh, ICML 2023), Optimal Brain Compression (Frantar et al., NeurIPS 2022) and GPTQ
(Frantar et al., ICLR 2023) their Gram matrix ``H = sum x x^T``. The layer adapters (:mod:`prune_env.pruning.adapters`)
say what each weight reads: ``x_t`` for ``weight_ih``, ``h_{t-1}`` for ``weight_hh``, a linear layer's input, an
embedding's token ids (whose counts stand in for the one-hot inputs).

The inputs are the task's ``calibration_batches``; a task without them but with ``train_loss`` lends the inputs
its training batches feed the model (:data:`DRAWS` draws from a generator seeded :data:`SEED`, so the same task
always calibrates the same). Validation and test data are never read. Capture runs once per model, on a
throwaway CPU copy in eval mode, and the :class:`~prune_env.pruning.analysis.Analysis` keeps the result.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prune_env.pruning.adapters import adapter_for
from prune_env.pruning.layers import PrunableLayer

__all__ = ["DRAWS", "SEED", "CalibrationStats", "LayerInputs", "calibration_inputs", "calibration_stats",
           "capture_inputs", "digest", "has_calibration", "run_batches"]

#: Training batches drawn from ``train_loss`` for a task without ``calibration_batches``.
DRAWS = 8
#: Seed of the generator those draws use.
SEED = 0


class _Stop(Exception):
    """Raised from a pre-forward hook: the batch is seen, the forward (and the loss) need not run."""


def has_calibration(task) -> bool:
    """Whether ``task`` can give calibration inputs (:func:`calibration_inputs`): ``calibration_batches`` or a
    ``train_loss`` whose inputs serve."""
    return task.calibration_batches is not None or task.train_loss is not None


def calibration_inputs(task, argument: str = "criterion") -> tuple:
    """The task's calibration batches: ``task.calibration_batches``, or the inputs ``task.train_loss`` feeds the
    model on :data:`DRAWS` draws (the model is not run past its first hook).

    :param task: an :class:`~prune_env.RNNTask`.
    :param argument: the setting that needs calibration, named in the error.
    :raises ValueError: for a task with neither, naming ``argument`` and ``calibration_batches``.
    """
    if task.calibration_batches is not None:
        return tuple(task.calibration_batches)
    if not has_calibration(task):
        raise ValueError(f"`{argument}` needs calibration data: give the task `calibration_batches` (a list of "
                         "model inputs from the training split) or `train_loss(model, generator)`")
    work = copy.deepcopy(task.model).cpu().eval()
    seen: list[Any] = []

    def hook(module, args, kwargs):
        if kwargs:
            raise ValueError(f"`{argument}`: the model is called with keyword arguments {sorted(kwargs)}, which "
                             "calibration cannot replay; give the task `calibration_batches`")
        seen.append(tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args))
        raise _Stop

    handle = work.register_forward_pre_hook(hook, with_kwargs=True)
    gen = torch.Generator().manual_seed(SEED)
    try:
        with torch.no_grad():
            for _ in range(DRAWS):
                with contextlib.suppress(_Stop):
                    task.train_loss(work, gen)
    finally:
        handle.remove()
    if len(seen) != DRAWS:
        raise ValueError(f"`{argument}`: task.train_loss did not call the model once per draw; give the task "
                         "`calibration_batches`")
    return tuple(s[0] if len(s) == 1 else s for s in seen)


@dataclass(frozen=True)
class LayerInputs:
    """What one prunable weight read on the calibration batches.

    :param gram: ``(in, in)`` float64 ``sum x x^T`` over every input vector ``x`` (``None`` for an embedding).
    :param rows: how many input vectors (or looked-up tokens) there were; 0 if the weight was never used.
    :param token_counts: an embedding's lookups per token id (``None`` otherwise).
    """

    gram: torch.Tensor | None
    rows: int
    token_counts: torch.Tensor | None = None

    @property
    def sq_norms(self) -> torch.Tensor | None:
        """``||x_j||^2`` per input feature ``j`` (the Gram matrix's diagonal)."""
        return None if self.gram is None else self.gram.diagonal()


@dataclass(frozen=True)
class CalibrationStats:
    """Per prunable weight name, its :class:`LayerInputs`; how many batches produced them and their digest.

    :param inputs: weight name -> :class:`LayerInputs`.
    :param batches: calibration batches read.
    :param digest: SHA-256 of the batches (shapes, dtypes and values), so a record names the data exactly.
    """

    inputs: dict[str, LayerInputs]
    batches: int
    digest: str = ""

    def __getitem__(self, name: str) -> LayerInputs:
        return self.inputs[name]


def digest(batches: Sequence[Any]) -> str:
    """SHA-256 over the shapes, dtypes and bytes of every tensor of ``batches``, in order."""
    import hashlib

    h = hashlib.sha256()
    for b in batches:
        for t in (b if isinstance(b, tuple) else (b,)):
            if isinstance(t, torch.Tensor):
                c = t.detach().cpu().contiguous()
                h.update(f"{tuple(c.shape)}{c.dtype};".encode())
                h.update(c.reshape(-1).view(torch.uint8).numpy().tobytes())
            else:
                h.update(repr(t).encode())
    return h.hexdigest()


def run_batches(model: nn.Module, batches: Sequence[Any]) -> None:
    """Run ``model`` (on its device, no gradients) on every batch; a tuple is passed as positional arguments."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad():
        for b in batches:
            parts = b if isinstance(b, tuple) else (b,)
            model(*(t.to(device) if isinstance(t, torch.Tensor) else t for t in parts))


@contextlib.contextmanager
def _hooks(model: nn.Module, layers: Sequence[PrunableLayer],
           sink: Callable[[PrunableLayer, torch.Tensor], None]) -> Iterator[None]:
    by_module: dict[str, list[PrunableLayer]] = {}
    for layer in layers:
        by_module.setdefault(layer.module_name, []).append(layer)
    handles = []
    try:
        for mname, wanted in by_module.items():
            module = model.get_submodule(mname)
            adapter = adapter_for(module)
            if adapter is None:
                raise ValueError(f"no layer adapter for {type(module).__name__} (module {mname or '<root>'!r})")

            def hook(mod, args, kwargs, output, adapter=adapter, wanted=wanted, mname=mname):
                captured = adapter.capture(mod, args, kwargs, output)
                for layer in wanted:
                    if layer.param_name not in captured:
                        raise ValueError(f"the adapter of {type(mod).__name__} captured no input for "
                                         f"{layer.param_name!r} (module {mname or '<root>'!r})")
                    sink(layer, captured[layer.param_name])

            handles.append(module.register_forward_hook(hook, with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def _throwaway(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).cpu().eval()


def capture_inputs(model: nn.Module, layers: Sequence[PrunableLayer], batches: Sequence[Any]
                   ) -> dict[str, torch.Tensor]:
    """Every input vector each weight of ``layers`` multiplied on ``batches``, stacked: layer name -> ``(rows,
    in_features)`` (token ids for an embedding), in the order the adapters captured them. Runs on a copy."""
    got: dict[str, list[torch.Tensor]] = {layer.name: [] for layer in layers}
    with _hooks(work := _throwaway(model), layers, lambda layer, x: got[layer.name].append(x.detach())):
        run_batches(work, batches)
    return {name: torch.cat(xs) if xs else torch.zeros(0) for name, xs in got.items()}


def calibration_stats(model: nn.Module, layers: Sequence[PrunableLayer], batches: Sequence[Any]
                      ) -> CalibrationStats:
    """The :class:`CalibrationStats` of ``layers`` on ``batches``, accumulated on a throwaway copy of ``model``."""
    grams: dict[str, torch.Tensor] = {}
    tokens: dict[str, torch.Tensor] = {}
    rows = {layer.name: 0 for layer in layers}

    def sink(layer: PrunableLayer, x: torch.Tensor) -> None:
        if layer.kind == "embedding" or not x.is_floating_point():
            counts = torch.bincount(x.reshape(-1).long(), minlength=layer.shape[0])[:layer.shape[0]]
            tokens[layer.name] = tokens.get(layer.name, 0) + counts
        else:
            x = x.detach().double()
            g = x.T @ x
            grams[layer.name] = grams[layer.name] + g if layer.name in grams else g
        rows[layer.name] += int(x.shape[0])

    with _hooks(work := _throwaway(model), layers, sink):
        run_batches(work, batches)
    inputs = {}
    for layer in layers:
        if layer.kind == "embedding":
            counts = tokens.get(layer.name, torch.zeros(layer.shape[0], dtype=torch.long))
            inputs[layer.name] = LayerInputs(None, rows[layer.name], counts)
        else:
            fan_in = layer.shape[-1]
            gram = grams.get(layer.name, torch.zeros(fan_in, fan_in, dtype=torch.float64))
            inputs[layer.name] = LayerInputs(gram, rows[layer.name])
    return CalibrationStats(inputs, len(batches), digest(batches))
