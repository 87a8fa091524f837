"""A U-Net described block by block, from what really runs (forward hooks)."""

from __future__ import annotations

import torch
from torch import nn

from .unet import UNet

__all__ = ["summarize"]


def _kind(module: nn.Module) -> str:
    if hasattr(module, "kind"):
        return module.kind
    if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
        return "Downsample (conv, stride 2)"
    if isinstance(module, nn.Sequential):
        return "Upsample (nearest + conv)"
    if isinstance(module, nn.GroupNorm):
        return "GroupNorm + SiLU"
    if isinstance(module, nn.Identity):
        return "(no attention)"
    return type(module).__name__


def summarize(model: UNet, batch: int = 1) -> list[dict]:
    """One row per top-level block of the U-Net, in execution order.

    Each row: ``name``, ``kind``, ``stage`` (time/io/down/mid/up), ``out_shape``
    (C, H, W) for one forward pass of a ``batch`` of inputs, and ``params``. The
    rows' parameters add up to the model's.
    """
    rows: list[dict] = []
    blocks: list[tuple[str, str, nn.Module]] = [("stem", "io", model.stem)]
    blocks += [(f"down.{i}", "down", m) for i, m in enumerate(model.down)]
    blocks += [("mid1", "mid", model.mid1), ("mid_attn", "mid", model.mid_attn), ("mid2", "mid", model.mid2)]
    blocks += [(f"up.{i}", "up", m) for i, m in enumerate(model.up)]
    blocks += [("out_norm", "io", model.out_norm), ("out_conv", "io", model.out_conv)]
    hooks = []
    for name, stage, module in blocks:
        def hook(mod, inp, out, name=name, stage=stage):
            rows.append({"name": name, "kind": _kind(mod), "stage": stage, "out_shape": tuple(out.shape[1:]),
                         "params": sum(p.numel() for p in mod.parameters())})
        hooks.append(module.register_forward_hook(hook))
    cfg = model.config
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(batch, cfg.channels, cfg.image_size, cfg.image_size, device=device),
                  torch.zeros(batch, dtype=torch.long, device=device))
    finally:
        for h in hooks:
            h.remove()
    tm = model.time_module
    out_features = [m.out_features for m in tm.modules() if isinstance(m, nn.Linear)][-1]
    n_linear = sum(isinstance(m, nn.Linear) for m in tm.modules())
    kind = "Linear (the one time embedding)" if n_linear == 1 else f"MLP ({n_linear} layers; projected in every block)"
    name = next(n for n, m in model.named_children() if m is tm)
    rows.insert(0, {"name": name, "kind": kind, "stage": "time", "out_shape": (out_features,),
                    "params": sum(p.numel() for p in tm.parameters())})
    return rows


