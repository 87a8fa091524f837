"""Interpolation between latents, and how smooth a path of images is."""

from __future__ import annotations

import torch

__all__ = ["lerp", "slerp"]


def _weights(w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return w.to(like.device, like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def lerp(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(1 - w) a + w b, per batch element; ``w`` has shape (B,)."""
    w = _weights(w, a)
    return (1 - w) * a + w * b


def slerp(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985) between flattened ``a`` and ``b``, per batch element.

    sin((1 - w) theta) / sin(theta) a + sin(w theta) / sin(theta) b, with theta the angle
    between a and b. For Gaussian latents it keeps the norm near sqrt(d), where the
    model saw its training inputs; it falls back to lerp when a and b are parallel.
    """
    fa, fb = a.flatten(1), b.flatten(1)
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp(min=eps)
    theta = torch.arccos(cos.clamp(-1 + eps, 1 - eps))
    w = w.to(a.device, a.dtype)
    s = torch.sin(theta)
    ca, cb = torch.sin((1 - w) * theta) / s, torch.sin(w * theta) / s
    out = ca[:, None] * fa + cb[:, None] * fb
    parallel = s.abs() < 1e-4
    if parallel.any():
        out[parallel] = lerp(fa[parallel], fb[parallel], w.expand(len(fa))[parallel])
    return out.view_as(a)
