"""Classifier-free guidance (Ho & Salimans 2022): one network, two predictions, mixed at every step.

A :class:`~diffusion_lib.nets.concat_unet.ConditionalModel` predicts the noise
with the requested class ``y`` and with "no label". Guidance moves the
prediction from the unconditional one towards, and past, the conditional one:

    eps = eps(x_t, t, no label) + w * (eps(x_t, t, y) - eps(x_t, t, no label))

``w = 0`` is the unconditional model and ``w = 1`` the plainly conditional one;
``w > 1`` exaggerates what makes the sample look like its class. Ho & Salimans
write the same rule as ``(1 + w') eps(y) - w' eps(no label)``: their ``w'`` is
``w - 1`` here. :class:`Guided` is a network ``model(x_t, t) -> eps`` like any
other, so every sampler of the library (DDPM, DDIM, DPM-Solver++) and every
backend runs it unchanged, and an unconditional model never passes through it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nets.concat_unet import ConditionalModel

__all__ = ["Guided"]


class Guided(nn.Module):
    """``model(x_t, t) -> eps`` for class ``label`` at guidance scale ``w`` (see the module docstring).

    ``label``: an int, or a ``(B,)`` tensor of labels matching the batch. With
    ``batched`` (the default) the two predictions come from one network call on a
    batch of twice the size; otherwise from two calls. ``w`` 0 and 1 need one
    prediction, and make one call.
    """

    def __init__(self, model: ConditionalModel, label: int | torch.Tensor, w: float, batched: bool = True) -> None:
        super().__init__()
        if not isinstance(model, ConditionalModel):
            raise ValueError(f"guidance needs a conditional model (model.arch: conditional); this is a "
                             f"{type(model).__name__}, trained without labels")
        k = model.config.num_classes
        labels = torch.as_tensor(label).long()
        if labels.ndim > 1 or bool(((labels < 0) | (labels >= k)).any()):
            raise ValueError(f"label must be a class of this model, 0 to {k - 1}, got {label}")
        if not w >= 0:
            raise ValueError(f"the guidance scale w must be a number >= 0, got {w}")
        self.model, self.config, self.w, self.batched = model, model.config, float(w), batched
        self.register_buffer("label", labels, persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        y = self.label.to(x.device).expand(x.shape[0])
        if self.w == 0:
            return self.model(x, t)
        if self.w == 1:
            return self.model(x, t, y)
        if self.batched:
            both = self.model(torch.cat([x, x]), torch.cat([t, t]),
                              torch.cat([torch.full_like(y, self.config.num_classes), y]))
            uncond, cond = both.chunk(2)
        else:
            uncond, cond = self.model(x, t), self.model(x, t, y)
        # mixed in float32 at least: under bf16 autocast the network's outputs are bf16, and w scales their rounding
        dtype = torch.promote_types(uncond.dtype, torch.float32)
        uncond, cond = uncond.to(dtype), cond.to(dtype)
        return uncond + self.w * (cond - uncond)
