"""The U-Net body both networks share: levels down, a bottleneck, levels up with skips.

A subclass decides two things only: how the step ``t`` becomes an embedding
(:meth:`UNet.embed_time`) and which residual block reads it (``make_block``).
Everything else (the level structure, where attention sits, the skip
connections, the input checks, the geometry rules) is here, once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, ClassVar, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import SelfAttention, TimeBlock, downsample, group_count, upsample

__all__ = ["UNet", "UNetConfigBase", "geometry_problem", "check_geometry"]


def geometry_problem(image_size: int, channel_mults: Sequence[int]) -> Optional[str]:
    """Why ``image_size`` cannot pass through ``len(channel_mults)`` levels, or None when it can."""
    if not channel_mults or any(m <= 0 for m in channel_mults):
        return "channel_mults must be a non-empty list of positive integers"
    if image_size <= 0:
        return f"image_size must be positive, got {image_size}"
    halvings = len(channel_mults) - 1
    factor = 2 ** halvings
    if image_size % factor:
        near = [s for s in range(max(factor, image_size - factor), image_size + factor + 1) if s % factor == 0]
        return (f"image_size {image_size} cannot be halved {halvings} times (channel_mults={list(channel_mults)}); "
                f"use a multiple of {factor} (e.g. {near[0]} or {near[-1]}) or fewer levels")
    return None


def check_geometry(image_size: int, channel_mults: Sequence[int]) -> None:
    """Raise ``ValueError`` with :func:`geometry_problem`'s message when the shape does not fit."""
    problem = geometry_problem(image_size, channel_mults)
    if problem:
        raise ValueError(problem)


@dataclass(frozen=True)
class UNetConfigBase:
    """What every U-Net's stored configuration holds; each network's config adds its own fields.

    No defaults here: the networks' constructors hold them, and always pass every value.
    """

    arch: ClassVar[str]
    image_size: int
    channels: int
    base_channels: int
    channel_mults: tuple[int, ...]
    num_res_blocks: int
    dropout: float
    groups: int
    noise_steps: int

    def __post_init__(self) -> None:
        check_geometry(self.image_size, self.channel_mults)
        if min(self.channels, self.base_channels, self.num_res_blocks, self.groups) <= 0:
            raise ValueError("channels, base_channels, num_res_blocks and groups must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.noise_steps < 2:
            raise ValueError("noise_steps must be at least 2")

    def to_dict(self) -> dict[str, Any]:
        """The config as stored in a model file: plain lists, and the ``arch`` that picks the class."""
        return {"arch": self.arch, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}}


class UNet(nn.Module):
    """``model(x_t, t) -> eps``: the shared body. Subclasses set ``config`` and implement :meth:`embed_time`.

    Shapes: ``forward(x: (B, C, H, W), t: (B,) int) -> (B, C, H, W)``, with
    ``(C, H, W) = (channels, image_size, image_size)`` of the config.
    """

    def _build(self, *, channels: int, base_channels: int, channel_mults: Sequence[int], num_res_blocks: int,
               groups: int, image_size: int, make_block: Callable[[int, int], TimeBlock],
               attn_resolutions: Sequence[int] = (), mid_attention: bool = True) -> None:
        """Create the levels: ``num_res_blocks`` blocks per level down (then a stride-2 conv), one more up."""
        chs = [base_channels * m for m in channel_mults]
        self.stem = nn.Conv2d(channels, chs[0], 3, padding=1)
        skips, ch, res = [chs[0]], chs[0], image_size
        self.down = nn.ModuleList()
        for level, out_ch in enumerate(chs):
            for _ in range(num_res_blocks):
                self.down.append(make_block(ch, out_ch))
                ch = out_ch
                if res in attn_resolutions:
                    self.down.append(SelfAttention(ch, groups))
                skips.append(ch)
            if level < len(chs) - 1:
                self.down.append(downsample(ch))
                skips.append(ch)
                res //= 2
        self.mid1 = make_block(ch, ch)
        self.mid_attn = SelfAttention(ch, groups) if mid_attention else nn.Identity()
        self.mid2 = make_block(ch, ch)
        self.up = nn.ModuleList()
        for level in reversed(range(len(chs))):
            for _ in range(num_res_blocks + 1):
                self.up.append(make_block(ch + skips.pop(), chs[level]))
                ch = chs[level]
                if res in attn_resolutions:
                    self.up.append(SelfAttention(ch, groups))
            if level > 0:
                self.up.append(upsample(ch))
                res *= 2
        self.out_norm = nn.GroupNorm(group_count(ch, groups), ch)
        self.out_conv = nn.Conv2d(ch, channels, 3, padding=1)
        # start as a zero predictor: a stable first step, as in Ho et al.'s code
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def time_module(self) -> nn.Module:  # pragma: no cover - abstract
        """The learned layer(s) that turn time features into the embedding (for summaries)."""
        raise NotImplementedError

    def embed_label(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The embedding of step ``t`` and class label ``y``: only a conditional network has one."""
        raise ValueError(f"this {type(self).__name__} is unconditional: it takes no class label")

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The noise in ``x``; ``y`` (class labels, ``(B,)``) only for a conditional network."""
        self.check_input(x)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        temb = self.embed_time(t.to(x.device)) if y is None else self.embed_label(t.to(x.device), y.to(x.device))
        h = self.stem(x)
        hs = [h]
        for layer in self.down:
            if isinstance(layer, TimeBlock):
                h = layer(h, temb)
                hs.append(h)
            elif isinstance(layer, SelfAttention):  # refines the block before it: replaces its skip
                h = layer(h)
                hs[-1] = h
            else:  # downsampling
                h = layer(h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], dim=1), temb) if isinstance(layer, TimeBlock) else layer(h)
        return self.out_conv(F.silu(self.out_norm(h)))

    def check_input(self, x: torch.Tensor) -> None:
        """One clear error for a batch this network was not built for (rank, channels, image size)."""
        cfg = self.config
        want = (cfg.channels, cfg.image_size, cfg.image_size)
        if x.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
        if tuple(x.shape[1:]) != want:
            raise ValueError(f"this model was built for {'x'.join(map(str, want))} images (C x H x W), "
                             f"got a batch of {'x'.join(map(str, x.shape[1:]))}")

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
