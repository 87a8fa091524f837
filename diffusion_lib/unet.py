"""The noise-prediction U-Net, ``model(x_t, t) -> eps``.

The assignment allows exactly one embedding layer for the time step, and asks
that its output be *concatenated* with the features. Here the step ``t`` is
turned into fixed sinusoidal features (no parameters), passed through one
``nn.Linear`` (the embedding layer) and a SiLU, and the resulting vector is
broadcast over H x W and concatenated to the input of the first convolution of
every residual block. There are no per-block projections of the embedding.

The U-Net itself does not know the noise schedule.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNetConfig", "DiffusionModel", "sinusoidal_features", "summarize"]


def sinusoidal_features(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Transformer-style sin/cos features of the (integer) time step, shape ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None, :]
    feats = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        feats = F.pad(feats, (0, 1))
    return feats


def _groups(ch: int, max_groups: int) -> int:
    """The largest group count <= max_groups that divides ch (GroupNorm needs one)."""
    for g in range(min(max_groups, ch), 0, -1):
        if ch % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv([h, t_emb]) -> GroupNorm -> SiLU -> dropout -> conv, plus a skip."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch, groups), in_ch)
        # the time embedding enters here, concatenated to the features
        self.conv1 = nn.Conv2d(in_ch + temb_dim, out_ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(out_ch, groups), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    # the exact decomposition below is used unless this is switched off (tests compare both)
    fast_concat: bool = True

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(x))
        if self.fast_concat and min(x.shape[2], x.shape[3]) >= 2:
            h = self._conv1_concat_fast(h, temb)
        else:
            t_map = temb[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
            h = self.conv1(torch.cat([h, t_map.to(h.dtype)], dim=1))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h

    def _conv1_concat_fast(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """``conv1(cat([h, t_map]))`` computed exactly, without materialising the broadcast map.

        A convolution is linear in its input channels, so it splits into the
        features' part and the embedding's part. The embedding's map is constant
        over H x W, so its (zero-padded) 3x3 convolution takes only nine distinct
        values per channel: interior, four edges, four corners. Convolving the
        embedding on a 3x3 map gives exactly those nine, and they are expanded to
        H x W. Same weights, same result; the embedding's channels just stop
        costing a full-resolution convolution in every block.
        """
        c = h.shape[1]
        w_h, w_t = self.conv1.weight[:, :c], self.conv1.weight[:, c:]
        out = F.conv2d(h, w_h, self.conv1.bias, padding=1)
        small = temb[:, :, None, None].expand(-1, -1, 3, 3).to(h.dtype)
        t9 = F.conv2d(small, w_t.to(h.dtype), padding=1)  # (B, out, 3, 3): the nine border patterns
        H, W = h.shape[2], h.shape[3]
        # rows 0 | 1..H-2 | H-1 take the top, middle and bottom pattern; the same for columns.
        # Built from slices and expands (their backward is a slice and a sum), not from an index gather
        # whose backward is a scatter-add.
        t9 = torch.cat([t9[:, :, :1], t9[:, :, 1:2].expand(-1, -1, H - 2, -1), t9[:, :, 2:]], dim=2)
        t_map = torch.cat([t9[:, :, :, :1], t9[:, :, :, 1:2].expand(-1, -1, -1, W - 2), t9[:, :, :, 2:]], dim=3)
        return out + t_map


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H x W positions, with a residual connection."""

    def __init__(self, ch: int, groups: int, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads if ch % heads == 0 else 1
        self.norm = nn.GroupNorm(_groups(ch, groups), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        # (B, heads, HW, d) for scaled_dot_product_attention
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


@dataclass(frozen=True)
class UNetConfig:
    """Everything needed to rebuild a :class:`DiffusionModel` (stored in checkpoints)."""

    image_size: int = 28
    channels: int = 1
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    time_dim: int = 64
    dropout: float = 0.0
    attention: bool = True
    groups: int = 8
    noise_steps: int = 1000

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        return d


class DiffusionModel(nn.Module):
    """A U-Net that predicts the noise in ``x_t`` at step ``t``.

    Args:
        image_size: side of the square input; must be divisible by
            ``2 ** (len(channel_mults) - 1)`` (28 and 32 are, with three levels).
        channels: image channels (1 for MNIST, 3 for RGB).
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

    def __init__(
        self,
        image_size: int = 28,
        channels: int = 1,
        noise_steps: int = 1000,
        base_channels: int = 32,
        channel_mults: tuple[int, ...] | list[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        time_dim: int = 64,
        dropout: float = 0.0,
        attention: bool = True,
        groups: int = 8,
    ) -> None:
        super().__init__()
        mults = tuple(int(m) for m in channel_mults)
        self.config = UNetConfig(
            image_size=int(image_size), channels=int(channels), base_channels=int(base_channels),
            channel_mults=mults, num_res_blocks=int(num_res_blocks), time_dim=int(time_dim),
            dropout=float(dropout), attention=bool(attention), groups=int(groups),
            noise_steps=int(noise_steps),
        )
        _validate(self.config)
        self.downsamplings = len(mults) - 1

        # the one time-embedding layer
        self.time_embed = nn.Linear(time_dim, time_dim)

        chs = [base_channels * m for m in mults]
        self.stem = nn.Conv2d(channels, chs[0], 3, padding=1)
        skips = [chs[0]]
        ch = chs[0]
        self.down = nn.ModuleList()
        for level, out_ch in enumerate(chs):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(ch, out_ch, time_dim, groups, dropout))
                ch = out_ch
                skips.append(ch)
            if level < len(chs) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)

        self.mid1 = ResBlock(ch, ch, time_dim, groups, dropout)
        self.mid_attn = SelfAttention(ch, groups) if attention else nn.Identity()
        self.mid2 = ResBlock(ch, ch, time_dim, groups, dropout)

        self.up = nn.ModuleList()
        for level in reversed(range(len(chs))):
            out_ch = chs[level]
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(ch + skips.pop(), out_ch, time_dim, groups, dropout))
                ch = out_ch
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)))

        self.out_norm = nn.GroupNorm(_groups(ch, groups), ch)
        self.out_conv = nn.Conv2d(ch, channels, 3, padding=1)
        # start as a zero predictor: a stable first step, as in Ho et al.'s code
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) integer steps -> (B, time_dim) embedding, through the single embedding layer."""
        return F.silu(self.time_embed(sinusoidal_features(t, self.config.time_dim)))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        temb = self.embed_time(t.to(x.device))
        h = self.stem(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), temb)
            else:
                h = layer(h)
        return self.out_conv(F.silu(self.out_norm(h)))

    def _check_input(self, x: torch.Tensor) -> None:
        check_input(x, self.config.channels, len(self.config.channel_mults))

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_config(cls, config: UNetConfig | dict) -> "DiffusionModel":
        d = config.to_dict() if isinstance(config, UNetConfig) else dict(config)
        return cls(**d)


def check_input(x: torch.Tensor, channels: int, levels: int) -> None:
    """One clear error for a batch the U-Net cannot take (wrong rank, channels, or a size it cannot halve)."""
    if x.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"model expects {channels} channel(s), got {x.shape[1]}")
    factor = 2 ** (levels - 1)
    if x.shape[2] % factor or x.shape[3] % factor:
        raise ValueError(f"image size {x.shape[2]}x{x.shape[3]} is not divisible by {factor}, "
                         f"which {levels} resolution levels need")


def _validate(cfg: UNetConfig) -> None:
    if cfg.image_size <= 0 or cfg.channels <= 0:
        raise ValueError("image_size and channels must be positive")
    if not cfg.channel_mults or any(m <= 0 for m in cfg.channel_mults):
        raise ValueError("channel_mults must be a non-empty list of positive integers")
    factor = 2 ** (len(cfg.channel_mults) - 1)
    if cfg.image_size % factor:
        ok = [s for s in range(max(factor, cfg.image_size - factor), cfg.image_size + factor + 1) if s % factor == 0]
        raise ValueError(
            f"image_size {cfg.image_size} cannot be halved {len(cfg.channel_mults) - 1} times "
            f"(channel_mults={list(cfg.channel_mults)}); use a multiple of {factor} "
            f"(e.g. {ok[0]} or {ok[-1]}) or fewer levels"
        )
    if cfg.base_channels <= 0 or cfg.num_res_blocks <= 0 or cfg.time_dim <= 1:
        raise ValueError("base_channels and num_res_blocks must be positive, time_dim at least 2")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.noise_steps < 2:
        raise ValueError("noise_steps must be at least 2")


def summarize(model: nn.Module, batch: int = 1) -> list[dict]:
    """One row per top-level block of the U-Net, in execution order.

    Each row: ``name``, ``kind`` (class name), ``stage`` (down/mid/up/io),
    ``out_shape`` (C, H, W) for one forward pass of a ``batch`` of inputs, and
    ``params``. Built from forward hooks, so it describes what really runs.
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
            kind = type(mod).__name__
            if kind == "AddTimeResBlock":
                kind = "ResBlock (+ time)"
            if kind == "Conv2d" and mod.stride == (2, 2):
                kind = "Downsample (conv, stride 2)"
            elif kind == "Sequential":
                kind = "Upsample (nearest + conv)"
            elif kind == "GroupNorm":
                kind = "GroupNorm + SiLU"
            elif kind == "Identity":
                kind = "(no attention)"
            rows.append({"name": name, "kind": kind, "stage": stage, "out_shape": tuple(out.shape[1:]),
                         "params": sum(p.numel() for p in mod.parameters())})
        hooks.append(module.register_forward_hook(hook))
    try:
        cfg = model.config
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(batch, cfg.channels, cfg.image_size, cfg.image_size, device=device),
                  torch.zeros(batch, dtype=torch.long, device=device))
    finally:
        for h in hooks:
            h.remove()
    if hasattr(model, "time_embed"):
        time_row = ("time_embed", "Linear (the one time embedding)", model.time_embed)
    else:
        time_row = ("time_mlp", "MLP (time embedding, projected in every block)", model.time_mlp)
    rows.insert(0, {"name": time_row[0], "kind": time_row[1], "stage": "time",
                    "out_shape": (time_row[2][-1].out_features if isinstance(time_row[2], nn.Sequential)
                                  else time_row[2].out_features,),
                    "params": sum(p.numel() for p in time_row[2].parameters())})
    return rows
