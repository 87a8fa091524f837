"""A U-Net for 32x32 RGB images (CIFAR-10), in the style of Ho et al.'s CIFAR-10 model.

The MNIST model's constraint (one time-embedding layer, concatenated) does not
bind here. This network conditions on time the way DDPM's own CIFAR-10 model
does: sinusoidal features -> a two-layer MLP -> in every residual block, a
per-block linear projection *added* to the features after the first
convolution. Adding a learned per-channel bias costs no extra input channels at
full resolution (concatenating a 512-d embedding would), and lets each block
read the step in its own terms.

Residual blocks use GroupNorm(32) and dropout; self-attention runs at the
resolutions listed in ``attn_resolutions`` (16x16 by default) and in the
bottleneck. With ``base_channels=128, channel_mults=(1, 2, 2, 2),
num_res_blocks=2`` it has about 35.7M parameters, the size of Ho et al.'s model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .unet import SelfAttention, _groups, check_input, sinusoidal_features

__all__ = ["ColorUNetConfig", "ColorUNet"]


@dataclass(frozen=True)
class ColorUNetConfig:
    image_size: int = 32
    channels: int = 3
    base_channels: int = 128
    channel_mults: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    groups: int = 32
    noise_steps: int = 1000
    arch: str = "additive"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        d["attn_resolutions"] = list(self.attn_resolutions)
        return d


class AddTimeResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv -> (+ Linear(t_emb)) -> GroupNorm -> SiLU -> dropout -> conv, plus a skip."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch, groups), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb = nn.Linear(temb_dim, out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch, groups), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None].to(h.dtype)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class ColorUNet(nn.Module):
    """``model(x_t, t) -> eps`` for RGB images; see the module docstring."""

    def __init__(self, image_size: int = 32, channels: int = 3, noise_steps: int = 1000, base_channels: int = 128,
                 channel_mults: tuple[int, ...] | list[int] = (1, 2, 2, 2), num_res_blocks: int = 2,
                 attn_resolutions: tuple[int, ...] | list[int] = (16,), dropout: float = 0.1, groups: int = 32,
                 arch: str = "additive") -> None:
        super().__init__()
        mults = tuple(int(m) for m in channel_mults)
        self.config = ColorUNetConfig(int(image_size), int(channels), int(base_channels), mults, int(num_res_blocks),
                                      tuple(int(r) for r in attn_resolutions), float(dropout), int(groups),
                                      int(noise_steps))
        factor = 2 ** (len(mults) - 1)
        if image_size % factor:
            raise ValueError(f"image_size {image_size} cannot be halved {len(mults) - 1} times "
                             f"(channel_mults={list(mults)}); use a multiple of {factor}")
        self.downsamplings = len(mults) - 1
        tdim = 4 * base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        chs = [base_channels * m for m in mults]
        self.stem = nn.Conv2d(channels, chs[0], 3, padding=1)
        skips, ch, res = [chs[0]], chs[0], image_size
        self.down = nn.ModuleList()
        for level, out_ch in enumerate(chs):
            for _ in range(num_res_blocks):
                self.down.append(AddTimeResBlock(ch, out_ch, tdim, groups, dropout))
                ch = out_ch
                if res in self.config.attn_resolutions:
                    self.down.append(SelfAttention(ch, groups))
                skips.append(ch)
            if level < len(chs) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
                res //= 2
        self.mid1 = AddTimeResBlock(ch, ch, tdim, groups, dropout)
        self.mid_attn = SelfAttention(ch, groups)
        self.mid2 = AddTimeResBlock(ch, ch, tdim, groups, dropout)
        self.up = nn.ModuleList()
        for level in reversed(range(len(chs))):
            for _ in range(num_res_blocks + 1):
                self.up.append(AddTimeResBlock(ch + skips.pop(), chs[level], tdim, groups, dropout))
                ch = chs[level]
                if res in self.config.attn_resolutions:
                    self.up.append(SelfAttention(ch, groups))
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)))
                res *= 2
        self.out_norm = nn.GroupNorm(_groups(ch, groups), ch)
        self.out_conv = nn.Conv2d(ch, channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_input(x, self.config.channels, len(self.config.channel_mults))
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        temb = self.time_mlp(sinusoidal_features(t.to(x.device), self.config.base_channels))
        h = self.stem(x)
        hs = [h]
        for layer in self.down:
            if isinstance(layer, AddTimeResBlock):
                h = layer(h, temb)
                hs.append(h)
            elif isinstance(layer, SelfAttention):
                h = layer(h)
                hs[-1] = h
            else:
                h = layer(h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for layer in self.up:
            if isinstance(layer, AddTimeResBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), temb)
            else:
                h = layer(h)
        return self.out_conv(F.silu(self.out_norm(h)))

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
