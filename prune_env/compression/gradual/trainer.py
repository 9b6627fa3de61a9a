"""The working model of gradual pruning: its optimizer, fixed masks, seeded batches and dropout, straight-through
quantization, and checkpoint scoring."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from prune_env.compression.finetune import training_loss
from prune_env.compression.quantize import quantize
from prune_env.devices import autocast
from prune_env.pruning.layers import rnn_modules
from prune_env.task import RNNTask, split_score


def refresh_rnns(model: nn.Module) -> None:
    for m in rnn_modules(model):
        m.flatten_parameters()


def evaluate_model(task: RNNTask, model: nn.Module):
    with torch.no_grad():
        return task.evaluate(model)


class MaskedTrainer:
    """The working model, its optimizer and its fixed masks."""

    def __init__(self, model, task, device, precision, lr, optimizer, momentum, clip, seed, quant_params, method,
                 select="score"):
        self.model, self.task, self.device, self.precision = model, task, device, precision
        self.clip, self.quant_params, self.method, self.select = clip, quant_params, method, select
        self.params = list(model.parameters())
        for p in self.params:
            p.requires_grad_(True)
        if optimizer == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(self.params, lr=lr)
        else:
            self.opt = torch.optim.SGD(self.params, lr=lr, momentum=momentum)
        self.generator = torch.Generator().manual_seed(int(seed))
        # Dropout draws from the global RNG: a private, seeded stream keeps runs reproducible without touching it.
        self.rng_state = self._seeded_rng_state(int(seed))
        self.masks: list[tuple[nn.Parameter, torch.Tensor]] = []
        self.losses: list[float] = []
        #: Called after the gradients are masked, before clipping and the optimizer step (movement scores).
        self.grad_hooks: list[Callable[[], None]] = []

    def _seeded_rng_state(self, seed: int):
        with torch.random.fork_rng(devices=self._rng_devices()):
            torch.manual_seed(seed)
            return self._get_rng()

    def _rng_devices(self) -> list[int]:
        return [self.device.index or 0] if self.device.type == "cuda" else []

    def _get_rng(self):
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda

    def _set_rng(self, state) -> None:
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], self.device)

    @property
    def lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    @torch.no_grad()
    def set_masks(self, masks: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
        """Hold ``masks`` fixed from now on; zero the newly pruned weights and their optimizer state."""
        self.masks = masks
        for p, m in masks:
            p.mul_(m)
            for value in self.opt.state.get(p, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == p.shape:
                    value.mul_(m)
        refresh_rnns(self.model)

    def train_step(self, straight_through: bool) -> float:
        model = self.model
        saved = self._swap_in_quantized() if straight_through else None
        model.train()  # cuDNN can only backpropagate through RNNs in training mode
        try:
            with torch.random.fork_rng(devices=self._rng_devices()):
                self._set_rng(self.rng_state)
                with torch.enable_grad():
                    loss = training_loss(model, self.task, self.generator)
                    self.opt.zero_grad(set_to_none=True)
                    loss.backward()
                self.rng_state = self._get_rng()
        finally:
            if saved is not None:  # straight-through: the gradient at quantize(w) updates the float weights w
                self._restore(saved)
        with torch.no_grad():
            for p, m in self.masks:
                if p.grad is not None:
                    p.grad.mul_(m)
            for hook in self.grad_hooks:
                hook()
            if self.clip is not None:
                torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        with torch.no_grad():
            for p, m in self.masks:
                p.mul_(m)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ValueError(f"the training loss became {value} at step {len(self.losses) + 1}; lower `lr`")
        self.losses.append(value)
        return value

    @torch.no_grad()
    def _swap_in_quantized(self) -> list[torch.Tensor] | None:
        if not self.quant_params:
            return None
        saved = []
        for p, b in self.quant_params:
            saved.append(p.detach().clone())
            p.copy_(quantize(p.detach(), b, self.method))
        refresh_rnns(self.model)
        return saved

    @torch.no_grad()
    def _restore(self, saved: list[torch.Tensor]) -> None:
        for (p, _), w in zip(self.quant_params, saved):
            p.copy_(w)
        refresh_rnns(self.model)

    def evaluate(self, candidate: bool, beat: float | None
                 ) -> tuple[float, float, dict[str, torch.Tensor] | None]:
        """Validation score of the current model (quantized, for quantized runs), its selection key (higher is
        better: the score, or minus the NLL), and for a ``candidate`` whose key beats ``beat`` (``None``: the first
        candidate) a copy of its state as scored."""
        saved = self._swap_in_quantized()
        self.model.eval()
        try:
            with autocast(self.device, self.precision):
                score, extras = split_score(evaluate_model(self.task, self.model))
            if self.select == "nll" and "nll" not in extras:
                raise ValueError("`select`='nll' needs a task whose evaluate reports 'nll'; this one reports "
                                 f"{sorted(extras) or 'only a score'}")
            key = -extras["nll"] if self.select == "nll" else score
            keep = candidate and (beat is None or key > beat)
            state = {k: v.detach().clone() for k, v in self.model.state_dict().items()} if keep else None
        finally:
            if saved is not None:
                self._restore(saved)
        return score, key, state
