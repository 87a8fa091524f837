"""Image grids and the few plotting helpers the chapters share."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

import torch
from torchvision.utils import make_grid

from .data import to_unit_range
from .utils import atomic_write_bytes

__all__ = ["grid_image", "save_grid", "show_grid", "show_strips"]


def grid_image(x: torch.Tensor, nrow: int = 8, padding: int = 2) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> one (C, H', W') grid in [0, 1]."""
    return make_grid(to_unit_range(x.detach().float().cpu()), nrow=nrow, padding=padding, pad_value=1.0)


def save_grid(path: str | Path, x: torch.Tensor, nrow: int = 8) -> Path:
    """Write a PNG grid of ``x`` (model range) atomically."""
    from PIL import Image

    g = (grid_image(x, nrow) * 255).round().byte().permute(1, 2, 0).numpy()
    img = Image.fromarray(g[..., 0] if g.shape[2] == 1 else g)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def show_grid(x: torch.Tensor, nrow: int = 8, ax=None, title: Optional[str] = None, scale: float = 0.6):
    """Draw a grid of model-range images on a matplotlib axis (created when ``ax`` is None)."""
    import matplotlib.pyplot as plt

    g = grid_image(x, nrow).permute(1, 2, 0).numpy()
    if ax is None:
        rows = (x.shape[0] + nrow - 1) // nrow
        _, ax = plt.subplots(figsize=(scale * nrow, scale * rows))
    ax.imshow(g[..., 0] if g.shape[2] == 1 else g, cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def show_strips(rows: Sequence[torch.Tensor], row_labels: Sequence[str], col_labels: Optional[Sequence[str]] = None,
                scale: float = 0.9):
    """Rows of images (each (K, C, H, W), model range) as a labelled figure; returns the figure."""
    import matplotlib.pyplot as plt

    k = max(r.shape[0] for r in rows)
    fig, axes = plt.subplots(len(rows), k, figsize=(scale * k, scale * len(rows) + 0.3), squeeze=False)
    for i, r in enumerate(rows):
        for j in range(k):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < r.shape[0]:
                img = to_unit_range(r[j].detach().float().cpu()).permute(1, 2, 0).numpy()
                ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1)
            if i == 0 and col_labels is not None and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=8)
        axes[i, 0].set_ylabel(row_labels[i], fontsize=8, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig
