"""Images between the data's uint8 range, the model's [-1, 1] range, and PNG grids."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid

from ..core.files import atomic_write_bytes

__all__ = ["to_model_range", "to_uint8", "hwc_to_model_range", "to_unit_range", "grid_image", "save_grid"]


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, C, H, W) in [0, 255] -> float (N, C, H, W) in [-1, 1]."""
    x = images.float() / 127.5 - 1.0
    return x.unsqueeze(1) if x.ndim == 3 else x


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Model-range images [-1, 1] -> uint8 in [0, 255] (rounded), the inverse of :func:`to_model_range`."""
    return ((x.detach().float().cpu().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def hwc_to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 HWC images (N, H, W, C) -> float (N, C, H, W) in [-1, 1]."""
    return to_model_range(images.permute(0, 3, 1, 2))


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Model range [-1, 1] -> [0, 1] for display."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def grid_image(x: torch.Tensor, nrow: int = 8, padding: int = 2) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> one (C, H', W') grid in [0, 1]."""
    return make_grid(to_unit_range(x.detach().float().cpu()), nrow=nrow, padding=padding, pad_value=1.0)


def save_grid(path: str | Path, x: torch.Tensor, nrow: int = 8) -> Path:
    """Write a PNG grid of ``x`` (model range) atomically."""
    g = (grid_image(x, nrow) * 255).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(g).save(buf, format="PNG")  # make_grid always returns 3 channels for 1-channel input
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
