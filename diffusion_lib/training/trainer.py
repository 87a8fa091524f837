"""One optimizer step, done right: AdamW, learning-rate warm-up and decay, gradient clipping, EMA, bf16 autocast, guards.

:class:`Trainer` knows nothing about diffusion: it owns a model's optimisation
state and turns a loss into an update. Nothing non-finite is ever committed: a
non-finite loss or gradient norm stops before the update, non-finite weights
after it stop before the EMA and the step count take it in.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..core.devices import cpu_has_native_bf16
from ..core.errors import CheckpointError, NonFiniteLossError
from ..nets.registry import all_finite

__all__ = ["LR_DECAYS", "Trainer", "ema_avg_fn", "ema_decay_at", "ema_initial_weight", "ema_warmup_reaches", "lr_factor",
           "use_bf16_autocast"]

_ADVICE = ("Likely causes: a learning rate that is too high, too little gradient clipping, "
           "or reduced precision (try lr / 10, grad_clip 1.0, or float32).")


def use_bf16_autocast(device: torch.device, amp: bool, amp_cpu: bool, log: Callable[[str], None] = print) -> bool:
    """Whether the training forward pass runs under bf16 autocast: ``amp`` on CUDA, ``amp_cpu`` on a CPU with native bf16."""
    if device.type == "cuda":
        return amp
    if device.type == "cpu" and amp_cpu:
        if cpu_has_native_bf16():
            return True
        log("amp_cpu: this CPU has no native bf16 (AVX512-BF16 or AMX); training in float32")
    return False


LR_DECAYS = ("none", "cosine")


def lr_factor(warmup_steps: int, decay: str = "none", total_steps: int = 0) -> Callable[[int], float]:
    """The learning rate's multiplier after ``step`` optimizer steps.

    A linear warm-up over ``warmup_steps``, then constant (``decay="none"``) or a
    half cosine from 1 down to 0 after the last of ``total_steps`` updates
    (``"cosine"``, as in Loshchilov & Hutter's SGDR without restarts).
    """
    if decay not in LR_DECAYS:
        raise ValueError(f"unknown learning-rate decay {decay!r}; valid: {', '.join(LR_DECAYS)}")
    if decay == "cosine" and total_steps <= warmup_steps:
        raise ValueError(f"a cosine decay needs total_steps ({total_steps}) > warmup_steps ({warmup_steps})")

    def factor(step: int) -> float:
        if warmup_steps > 0 and step + 1 < warmup_steps:
            return (step + 1) / warmup_steps
        if decay == "none":
            return 1.0
        # update k runs with factor(k - 1), so the last update (k = total_steps) still learns
        progress = min(1.0, (step + 1 - warmup_steps) / (total_steps - warmup_steps + 1))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def ema_decay_at(n: float, decay: float, warmup: bool) -> float:
    """The decay of the EMA update after ``n`` updates: ``decay``, or with ``warmup`` min(decay, (1 + n) / (10 + n))."""
    return min(decay, (1.0 + n) / (10.0 + n)) if warmup else decay


def ema_warmup_reaches(decay: float) -> float:
    """The number of updates after which the warm-up's decay (1 + n) / (10 + n) reaches ``decay``."""
    return (10.0 * decay - 1.0) / (1.0 - decay)


def ema_initial_weight(decay: float, steps: int, warmup: bool) -> float:
    """The weight the EMA still gives, after ``steps`` optimiser steps, to the network it first copied.

    ``AveragedModel`` copies the network at its first update (after one step from
    the random initialisation) and averages with :func:`ema_decay_at` from then on,
    so that network keeps the product of the decays of the ``steps - 1`` later updates.
    """
    if not warmup:
        return decay ** max(steps - 1, 0)
    log_w = sum(math.log(ema_decay_at(n, decay, True)) for n in range(1, steps))
    return math.exp(log_w)


def ema_avg_fn(decay: float, warmup: bool) -> Callable[[list, list, Any], None]:
    """The EMA update for ``AveragedModel``: a fixed ``decay``, or with ``warmup`` min(decay, (1 + n) / (10 + n)).

    The warm-up (the schedule of TensorFlow's ``ExponentialMovingAverage`` with
    ``num_updates``) lets the average forget the random initial weights quickly,
    so a short run's EMA is not dominated by its first steps; ``n`` is the number
    of updates so far, kept in the averaged model's state.
    """
    if not warmup:
        return get_ema_multi_avg_fn(decay)

    @torch.no_grad()
    def update(ema_params: list, params: list, num_averaged: Any) -> None:
        d = ema_decay_at(float(num_averaged), decay, True)
        if torch.is_floating_point(ema_params[0]):
            torch._foreach_lerp_(ema_params, params, 1.0 - d)
        else:  # integer buffers, as torch's own EMA function treats them
            for e, p in zip(ema_params, params, strict=True):
                e.copy_(e * d + p * (1.0 - d))

    return update


class Trainer:
    """The optimisation state of ``model`` and the step that updates it.

    Args:
        lr, weight_decay, warmup_steps: AdamW and its linear LR warm-up.
        lr_decay, total_steps: after the warm-up, ``"none"`` (constant) or ``"cosine"`` (to 0
            at ``total_steps``); see :func:`lr_factor`.
        grad_clip: clip the global gradient norm to this; ``<= 0`` measures without clipping.
        ema_decay: decay of the EMA weights (``torch.optim.swa_utils``); ``None``/0 disables EMA.
        ema_warmup: ramp the EMA decay up from 0.1 (see :func:`ema_avg_fn`).
        autocast: run the forward pass under bf16 autocast (see :func:`use_bf16_autocast`).
        wrap: builds the module that runs the training forward pass from the model
            (a DDP or ``torch.compile`` wrapper); the identity by default.
        agree: under DDP, turns this rank's "the loss is finite" into every rank's
            verdict, so all ranks stop together; the identity by default.
    """

    def __init__(self, model: nn.Module, *, lr: float = 2e-4, weight_decay: float = 0.0, warmup_steps: int = 0,
                 lr_decay: str = "none", total_steps: int = 0, grad_clip: float = 1.0,
                 ema_decay: Optional[float] = 0.999, ema_warmup: bool = False, autocast: bool = False,
                 wrap: Optional[Callable[[nn.Module], nn.Module]] = None,
                 agree: Optional[Callable[[bool], bool]] = None) -> None:
        self.model = model
        device = next(model.parameters()).device
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                                           **({"fused": True} if device.type == "cuda" else {}))
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                              lr_factor(warmup_steps, lr_decay, total_steps))
        self.ema: Optional[AveragedModel] = None
        if ema_decay:
            self.ema = AveragedModel(model, multi_avg_fn=ema_avg_fn(ema_decay, ema_warmup), use_buffers=True)
        self.grad_clip = float(grad_clip)
        self.autocast = bool(autocast)
        self.forward_model: nn.Module = wrap(model) if wrap is not None else model
        self._agree = agree or (lambda ok: ok)
        self.step = 0
        self.last_grad_norm = float("nan")

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def eval_model(self) -> nn.Module:
        """The EMA weights when kept, else the raw model."""
        return self.ema.module if self.ema is not None else self.model

    def update(self, loss: torch.Tensor) -> float:
        """Back-propagate ``loss`` and take one optimizer step; returns the loss as a float.

        Raises :class:`NonFiniteLossError`, leaving the weights, the EMA and the
        step count as they were (or, for weights that overflow in the update
        itself, at least the EMA and the step count), so nothing non-finite is
        ever saved.
        """
        value = loss.item()
        if not self._agree(math.isfinite(value)):
            raise NonFiniteLossError(f"the training loss became {value} at step {self.step + 1}; the weights were "
                                     f"not updated. {_ADVICE}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = self.grad_clip if self.grad_clip > 0 else float("inf")  # inf: measure, don't clip
        grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(f"the gradient norm became {grad_norm} at step {self.step + 1} (the loss was "
                                     f"{value:.4g}); the weights were not updated. {_ADVICE}")
        self.optimizer.step()
        if not all_finite(self.model):
            raise NonFiniteLossError(f"the weights became non-finite in the update of step {self.step + 1}; "
                                     f"nothing was saved from this step. {_ADVICE}")
        self.lr_scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.last_grad_norm = grad_norm
        self.step += 1
        return value

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state; anything that does not fit this model is one :class:`CheckpointError`."""
        try:
            self.model.load_state_dict(state["model"])
            if self.ema is not None and state.get("ema") is not None:
                self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
            self.step = int(state["step"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"the saved training state does not fit this model ({first})") from exc
