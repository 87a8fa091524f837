"""Build a noise-prediction network from its stored configuration."""

from __future__ import annotations

from typing import Any

from torch import nn

from .unet import DiffusionModel
from .unet_color import ColorUNet

__all__ = ["ARCHS", "build_model"]

# "concat": the MNIST U-Net with one concatenated time embedding (the assignment's constraint);
# "additive": the RGB U-Net with per-block additive time conditioning (Ho et al.'s CIFAR-10 design)
ARCHS: dict[str, type[nn.Module]] = {"concat": DiffusionModel, "additive": ColorUNet}


def build_model(config: dict[str, Any]) -> nn.Module:
    """``config`` as stored by ``model.config.to_dict()`` (an ``arch`` key picks the class; default concat)."""
    cfg = dict(config)
    arch = cfg.pop("arch", "concat")
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHS)}")
    if arch == "additive":
        cfg["arch"] = arch
    return ARCHS[arch](**cfg)
