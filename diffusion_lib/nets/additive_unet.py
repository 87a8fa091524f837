"""A U-Net for 32x32 RGB images (CIFAR-10), in the style of Ho et al.'s CIFAR-10 model.

The MNIST model's constraint (one time-embedding layer, concatenated) does not
bind here. This network conditions on time the way DDPM's own CIFAR-10 model
does: sinusoidal features -> a two-layer MLP -> in every residual block, a
per-block linear projection *added* to the features after the first
convolution (:class:`~diffusion_lib.nets.blocks.AddResBlock`). Adding a learned
per-channel bias costs no extra input channels at full resolution
(concatenating a 512-d embedding would), and lets each block read the step in
its own terms.

Residual blocks use GroupNorm and dropout; self-attention runs at the
resolutions listed in ``attn_resolutions`` (16x16 by default) and in the
bottleneck. With ``base_channels=128, channel_mults=(1, 2, 2, 2),
num_res_blocks=2`` it has about 35.7M parameters, the size of Ho et al.'s model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .blocks import AddResBlock, sinusoidal_features
from .unet import UNet, UNetConfigBase

__all__ = ["ColorUNetConfig", "ColorUNet"]


@dataclass(frozen=True)
class ColorUNetConfig(UNetConfigBase):
    """Everything needed to rebuild a :class:`ColorUNet` (stored with its weights)."""

    arch: ClassVar[str] = "additive"
    attn_resolutions: tuple[int, ...]


class ColorUNet(UNet):
    """``model(x_t, t) -> eps`` for RGB images, with per-block additive time conditioning; see the module docstring."""

    def __init__(self, image_size: int = 32, channels: int = 3, noise_steps: int = 1000, base_channels: int = 128,
                 channel_mults: tuple[int, ...] | list[int] = (1, 2, 2, 2), num_res_blocks: int = 2,
                 attn_resolutions: tuple[int, ...] | list[int] = (16,), dropout: float = 0.1, groups: int = 32,
                 ) -> None:
        super().__init__()
        self.config = ColorUNetConfig(
            image_size=int(image_size), channels=int(channels), base_channels=int(base_channels),
            channel_mults=tuple(int(m) for m in channel_mults), num_res_blocks=int(num_res_blocks),
            dropout=float(dropout), groups=int(groups), noise_steps=int(noise_steps),
            attn_resolutions=tuple(int(r) for r in attn_resolutions),
        )
        cfg = self.config
        tdim = 4 * cfg.base_channels
        self.time_mlp = nn.Sequential(nn.Linear(cfg.base_channels, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self._build(channels=cfg.channels, base_channels=cfg.base_channels, channel_mults=cfg.channel_mults,
                    num_res_blocks=cfg.num_res_blocks, groups=cfg.groups, image_size=cfg.image_size,
                    make_block=lambda i, o: AddResBlock(i, o, tdim, cfg.groups, cfg.dropout),
                    attn_resolutions=cfg.attn_resolutions, mid_attention=True)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) integer steps -> (B, 4 * base_channels) embedding, through the two-layer MLP."""
        return self.time_mlp(sinusoidal_features(t, self.config.base_channels))

    @property
    def time_module(self) -> nn.Module:
        return self.time_mlp
