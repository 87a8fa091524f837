"""Which network a stored configuration builds, and the model files that carry one.

A model file (``model_ema.pt``) holds the network's configuration (``unet``,
with an ``arch`` key), its weights and free-form ``meta`` (schedule, steps,
training config). :func:`load_model` rebuilds exactly that network.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import CheckpointError
from ..core.files import load_tagged, save_tagged
from .additive_unet import ColorUNet, ColorUNetConfig
from .concat_unet import ConditionalConfig, ConditionalModel, DiffusionModel, UNetConfig
from .unet import UNet

__all__ = ["ARCHS", "build_model", "arch_fields", "save_model", "load_model", "MODEL_FORMAT", "fingerprint",
           "same_function", "all_finite"]

# "concat": the MNIST U-Net with one concatenated time embedding (the assignment's constraint);
# "additive": the RGB U-Net with per-block additive time conditioning (Ho et al.'s CIFAR-10 design);
# "conditional": the concat U-Net with a class label (classifier-free guidance, chapter 10)
ARCHS: dict[str, tuple[type[UNet], type]] = {"concat": (DiffusionModel, UNetConfig),
                                             "additive": (ColorUNet, ColorUNetConfig),
                                             "conditional": (ConditionalModel, ConditionalConfig)}
MODEL_FORMAT = "diffusion_lib/model/v1"


def arch_fields(arch: str) -> set[str]:
    """The hyper-parameters architecture ``arch`` takes (its config's fields)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHS)}")
    return {f.name for f in dataclasses.fields(ARCHS[arch][1])}


def build_model(config: dict[str, Any]) -> UNet:
    """The network ``config`` describes, as stored by ``model.config.to_dict()`` (``arch`` defaults to concat)."""
    cfg = dict(config)
    arch = cfg.pop("arch", "concat")
    unknown = set(cfg) - arch_fields(arch)
    if unknown:
        raise ValueError(f"architecture {arch!r} takes no {', '.join(sorted(unknown))}")
    return ARCHS[arch][0](**cfg)


def all_finite(module: nn.Module) -> bool:
    """True when every floating-point parameter and buffer is finite.

    One sum per tensor, stacked into one check: a NaN or inf anywhere makes the
    total non-finite (cheap enough to run after every optimizer step).
    """
    with torch.no_grad():
        sums = [t.detach().float().sum() for t in module.state_dict().values() if t.is_floating_point()]
    return bool(torch.isfinite(torch.stack(sums).sum())) if sums else True


def save_model(path: str | Path, model: UNet, **meta: Any) -> Path:
    """Export a model's weights with what is needed to rebuild it; a model with NaN/inf weights is refused."""
    if not isinstance(model, UNet):
        raise TypeError("save_model exports a network of diffusion_lib.nets (a UNet with a .config)")
    if not all_finite(model):
        raise CheckpointError(f"refusing to write {path}: the model's weights are not all finite")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_tagged(path, MODEL_FORMAT, {"unet": model.config.to_dict(), "state_dict": state, "meta": meta})


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[UNet, dict[str, Any]]:
    """Rebuild an exported model in eval mode; returns ``(model, meta)``."""
    obj = load_tagged(path, MODEL_FORMAT, required=("unet", "state_dict"))
    try:
        model = build_model(obj["unet"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the stored architecture ({exc})") from exc
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: the weights do not match the stored architecture ({first})") from exc
    return model.to(device).eval(), dict(obj.get("meta", {}))


@torch.no_grad()
def fingerprint(model: UNet, n: int = 2, k: int = 8, seed: int = 0) -> list[float]:
    """What the network computes, in ``k`` numbers: its output on a fixed seeded probe, randomly projected.

    Two networks with the same weights give the same fingerprint only if their code
    computes the same function; a trained model is reused only while it does.
    """
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cfg.channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.linspace(0, cfg.noise_steps - 1, n).round().long()
    device = next(model.parameters()).device
    was_training = model.training
    out = model.eval()(x.to(device), t.to(device)).double().flatten().cpu()
    model.train(was_training)
    proj = torch.randn(out.numel(), k, generator=g, dtype=torch.float64) / out.numel() ** 0.5
    return [round(v, 8) for v in (out @ proj).tolist()]


def same_function(a: list[float], b: list[float], rtol: float = 1e-4) -> bool:
    """Whether two fingerprints agree to within float32 noise."""
    if len(a) != len(b):
        return False
    scale = max(1.0, max(abs(v) for v in a))
    return all(math.isfinite(u) and abs(u - v) <= rtol * scale for u, v in zip(a, b))
