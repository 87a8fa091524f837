"""The pieces both U-Nets are built from: time features, residual blocks, attention, resampling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["sinusoidal_features", "group_count", "TimeBlock", "ConcatResBlock", "AddResBlock", "SelfAttention",
           "downsample", "upsample"]


def sinusoidal_features(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Transformer-style sin/cos features of the (integer) time step, shape ``(B, dim)`` (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None, :]
    feats = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        feats = F.pad(feats, (0, 1))
    return feats


def group_count(ch: int, max_groups: int) -> int:
    """The largest group count <= max_groups that divides ch (GroupNorm needs one)."""
    for g in range(min(max_groups, ch), 0, -1):
        if ch % g == 0:
            return g
    return 1


class TimeBlock(nn.Module):
    """A block that reads the time embedding: ``block(h, temb)``. The U-Net body routes ``temb`` to these."""

    kind = "ResBlock"  # how summaries name it

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class ConcatResBlock(TimeBlock):
    """GroupNorm -> SiLU -> conv([h, t_emb]) -> GroupNorm -> SiLU -> dropout -> conv, plus a skip.

    The time embedding is *concatenated* to the features, broadcast over H x W,
    as the input of the first convolution: the assignment's rule.
    """

    kind = "ResBlock (t concatenated)"

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(in_ch, groups), in_ch)
        self.conv1 = nn.Conv2d(in_ch + temb_dim, out_ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(group_count(out_ch, groups), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv_with_time(F.silu(self.norm1(x)), temb)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h

    def conv_with_time(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """``conv1`` over the features with the time embedding broadcast over H x W and concatenated to them.

        (The training and sampling programs compute the same with less work: :mod:`diffusion_lib.nets.fast`.)
        """
        t_map = temb[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
        return self.conv1(torch.cat([h, t_map.to(h.dtype)], dim=1))


class AddResBlock(TimeBlock):
    """GroupNorm -> SiLU -> conv -> (+ Linear(t_emb)) -> GroupNorm -> SiLU -> dropout -> conv, plus a skip.

    The time embedding is projected per block and *added* to the features (Ho et
    al.'s CIFAR-10 design); the second convolution starts at zero, so each block
    starts as its skip connection.
    """

    kind = "ResBlock (t added)"

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(in_ch, groups), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb = nn.Linear(temb_dim, out_ch)
        self.norm2 = nn.GroupNorm(group_count(out_ch, groups), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None].to(h.dtype)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H x W positions, with a residual connection."""

    kind = "SelfAttention"

    def __init__(self, ch: int, groups: int, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads if ch % heads == 0 else 1
        self.norm = nn.GroupNorm(group_count(ch, groups), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        # (B, heads, HW, d) for scaled_dot_product_attention
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


def downsample(ch: int) -> nn.Module:
    """Halve the resolution: a stride-2 3x3 convolution."""
    return nn.Conv2d(ch, ch, 3, stride=2, padding=1)


def upsample(ch: int) -> nn.Module:
    """Double the resolution: nearest-neighbour upsampling, then a 3x3 convolution."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1))
