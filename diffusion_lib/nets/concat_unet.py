"""The MNIST noise-prediction U-Net, ``model(x_t, t) -> eps``: the assignment's ``DiffusionModel``.

The assignment allows exactly one embedding layer for the time step, and asks
that its output be *concatenated* with the features. Here the step ``t`` is
turned into fixed sinusoidal features (no parameters), passed through one
``nn.Linear`` (the embedding layer) and a SiLU, and the resulting vector is
broadcast over H x W and concatenated to the input of the first convolution of
every residual block (:class:`~diffusion_lib.nets.blocks.ConcatResBlock`).
There are no per-block projections of the embedding.

The U-Net itself does not know the noise schedule.

:class:`ConditionalModel` is the same network asked for a class: one more
single-layer embedding, of the label, added to the time embedding before its
SiLU, so every block reads step and class through the one concatenated vector
it already reads (chapter 10, classifier-free guidance).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConcatResBlock, sinusoidal_features
from .unet import UNet, UNetConfigBase

__all__ = ["UNetConfig", "DiffusionModel", "ConditionalConfig", "ConditionalModel"]


@dataclass(frozen=True)
class UNetConfig(UNetConfigBase):
    """Everything needed to rebuild a :class:`DiffusionModel` (stored with its weights)."""

    arch: ClassVar[str] = "concat"
    time_dim: int
    attention: bool

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.time_dim < 2:
            raise ValueError("time_dim must be at least 2")


class DiffusionModel(UNet):
    """A U-Net that predicts the noise in ``x_t`` at step ``t``, with one concatenated time embedding.

    Args:
        image_size: side of the square input; must be divisible by
            ``2 ** (len(channel_mults) - 1)`` (28 and 32 are, with three levels).
        channels: image channels (1 for MNIST).
        noise_steps: number of diffusion steps T; ``t`` must lie in ``[0, T)``.
        base_channels: width of the first level.
        channel_mults: width multiplier of each resolution level.
        num_res_blocks: residual blocks per level on the way down.
        time_dim: size of the single time embedding.
        dropout: dropout inside the residual blocks.
        attention: self-attention at the lowest resolution (the bottleneck).
        groups: maximum number of GroupNorm groups.

    Shapes: ``forward(x: (B, C, H, W), t: (B,) int) -> (B, C, H, W)``.
    """

    def __init__(self, image_size: int = 28, channels: int = 1, noise_steps: int = 1000, base_channels: int = 32,
                 channel_mults: tuple[int, ...] | list[int] = (1, 2, 2), num_res_blocks: int = 2,
                 time_dim: int = 64, dropout: float = 0.0, attention: bool = True, groups: int = 8) -> None:
        super().__init__()
        self.config = UNetConfig(
            image_size=int(image_size), channels=int(channels), base_channels=int(base_channels),
            channel_mults=tuple(int(m) for m in channel_mults), num_res_blocks=int(num_res_blocks),
            time_dim=int(time_dim), dropout=float(dropout), attention=bool(attention), groups=int(groups),
            noise_steps=int(noise_steps),
        )
        cfg = self.config
        # the one time-embedding layer
        self.time_embed = nn.Linear(cfg.time_dim, cfg.time_dim)
        self._build(channels=cfg.channels, base_channels=cfg.base_channels, channel_mults=cfg.channel_mults,
                    num_res_blocks=cfg.num_res_blocks, groups=cfg.groups, image_size=cfg.image_size,
                    make_block=lambda i, o: ConcatResBlock(i, o, cfg.time_dim, cfg.groups, cfg.dropout),
                    mid_attention=cfg.attention)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) integer steps -> (B, time_dim) embedding, through the single embedding layer."""
        return F.silu(self.time_embed(sinusoidal_features(t, self.config.time_dim)))

    @property
    def time_module(self) -> nn.Module:
        return self.time_embed


@dataclass(frozen=True)
class ConditionalConfig(UNetConfig):
    """A :class:`UNetConfig` with the classes a :class:`ConditionalModel` is asked for."""

    arch: ClassVar[str] = "conditional"
    num_classes: int
    p_uncond: float  # the share of training images shown "no label" (label dropout)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_classes < 2:
            raise ValueError(f"a conditional model needs at least 2 classes, got num_classes={self.num_classes}")
        if not 0.0 < self.p_uncond < 1.0:
            raise ValueError(f"p_uncond must be in (0, 1): the model must also learn without a label, "
                             f"got {self.p_uncond}")


class ConditionalModel(DiffusionModel):
    """``model(x_t, t, y) -> eps``: the :class:`DiffusionModel` told which class to draw (Ho & Salimans 2022).

    The label ``y`` (``0 .. num_classes - 1``, or ``num_classes`` for "no label")
    has its own embedding layer, one row per class, the same width as the time
    embedding. The two are *added* before the SiLU rather than concatenated: the
    blocks keep reading one ``time_dim`` vector, so the body is the unconditional
    network's, layer for layer, and a label changes the vector every block reads
    the same way a step does. Without ``y`` the model predicts with "no label".
    Training shows the null label to a share ``p_uncond`` of the images, so the
    one network learns both predictions that guidance mixes.
    """

    def __init__(self, image_size: int = 28, channels: int = 1, noise_steps: int = 1000, base_channels: int = 32,
                 channel_mults: tuple[int, ...] | list[int] = (1, 2, 2), num_res_blocks: int = 2,
                 time_dim: int = 64, dropout: float = 0.0, attention: bool = True, groups: int = 8,
                 num_classes: int = 10, p_uncond: float = 0.1) -> None:
        super().__init__(image_size, channels, noise_steps, base_channels, channel_mults, num_res_blocks, time_dim,
                         dropout, attention, groups)
        self.config = ConditionalConfig(**asdict(self.config), num_classes=int(num_classes),
                                        p_uncond=float(p_uncond))
        self.label_embed = nn.Embedding(self.config.num_classes + 1, self.config.time_dim)

    @property
    def null_label(self) -> int:
        """The label that means "no label"."""
        return self.config.num_classes

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """The embedding of step ``t`` with no label."""
        return self.embed_label(t, torch.full_like(t, self.null_label))

    def embed_label(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B,) steps and (B,) labels -> (B, time_dim): the time layer's output plus the label's row, then SiLU."""
        y = y.long().expand(t.shape[0]) if y.ndim == 0 else y.long()
        if y.shape != t.shape:  # (the embedding refuses a label outside [0, null_label] itself)
            raise ValueError(f"expected one label per image ({t.shape[0]}), got labels of shape {tuple(y.shape)}")
        return F.silu(self.time_embed(sinusoidal_features(t, self.config.time_dim)) + self.label_embed(y))
