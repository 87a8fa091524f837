"""The figures chapters share: image grids and strips, the U-Net diagram, training curves and grids."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.patches import FancyBboxPatch
from PIL import Image

from ..data.images import grid_image, to_unit_range

__all__ = ["show_grid", "show_strips", "plot_unet", "plot_loss", "show_training_grids"]


def show_grid(x: torch.Tensor, nrow: int = 8, ax=None, title: Optional[str] = None, scale: float = 0.6):
    """Draw a grid of model-range images on a matplotlib axis (created when ``ax`` is None)."""
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


def plot_unet(rows: Sequence[dict], ax=None):
    """A schematic of the U-Net from :func:`diffusion_lib.nets.summary.summarize` rows.

    Blocks run left to right in execution order; their height is the spatial
    resolution (lower = coarser), each box is labelled with its output channels;
    grey arcs are the skip connections between the down and up paths.
    """
    blocks = [r for r in rows if r["stage"] != "time"]
    sizes = sorted({r["out_shape"][-1] for r in blocks}, reverse=True)
    level = {s: i for i, s in enumerate(sizes)}
    colours = {"ResBlock": "#4C72B0", "SelfAttention": "#C44E52", "Downsample": "#55A868",
               "Upsample": "#8172B2", "Conv2d": "#777777", "GroupNorm": "#999999"}
    if ax is None:
        _, ax = plt.subplots(figsize=(max(8, 0.62 * len(blocks)), 3.4))
    for i, r in enumerate(blocks):
        key = next((k for k in colours if r["kind"].startswith(k)), "Conv2d")
        y = -level[r["out_shape"][-1]]
        ax.add_patch(FancyBboxPatch((i - 0.38, y - 0.3), 0.76, 0.6, boxstyle="round,pad=0.02",
                                    fc=colours[key], ec="black", lw=0.5, alpha=0.9))
        ax.text(i, y, str(r["out_shape"][0]), ha="center", va="center", color="white", fontsize=8, weight="bold")
    names = [r["name"] for r in blocks]
    downs = [i for i, r in enumerate(blocks) if r["stage"] in ("down",) or r["name"] == "stem"]
    ups = [i for i, r in enumerate(blocks) if r["stage"] == "up" and r["kind"].startswith("ResBlock")]
    for d, u in zip(reversed(downs), ups):  # skips are consumed last-in, first-out
        yd, yu = -level[blocks[d]["out_shape"][-1]], -level[blocks[u]["out_shape"][-1]]
        ax.annotate("", xy=(u, yu + 0.32), xytext=(d, yd + 0.32),
                    arrowprops=dict(arrowstyle="->", color="grey", lw=0.6, connectionstyle="arc3,rad=-0.25"))
    ax.set_xlim(-0.7, len(blocks) - 0.3)
    ax.set_ylim(-len(sizes) + 0.4, 2.4)
    ax.set_yticks([-i for i in range(len(sizes))], [f"{s}x{s}" for s in sizes])
    ax.set_xticks(range(len(blocks)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("resolution")
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    handles = [plt.Rectangle((0, 0), 1, 1, fc=c) for c in colours.values()]
    ax.legend(handles, list(colours), ncol=6, fontsize=7, loc="upper center", frameon=False)
    return ax


def plot_loss(metrics: pd.DataFrame, ax=None, window: Optional[int] = None, label: str = "L_simple"):
    """The per-step training loss (faint) and its rolling mean on a log scale; returns the axis."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.8))
    window = window or max(5, len(metrics) // 50)
    ax.plot(metrics["step"], metrics["loss"], alpha=0.25, lw=0.6, label="per step")
    ax.plot(metrics["step"], metrics["loss"].rolling(window, min_periods=1).mean(), label=f"rolling mean ({window} steps)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(label)
    ax.legend()
    return ax


def show_training_grids(run_dir: Path, at_most: int = 6, width: float = 2.4):
    """The sample grids a training run drew (``samples/step_*.png``), evenly thinned to ``at_most``; returns the figure."""
    grids = sorted((Path(run_dir) / "samples").glob("step_*.png"))
    if len(grids) > at_most:
        grids = grids[:: max(1, len(grids) // at_most)][-at_most:]
    fig, axes = plt.subplots(1, max(1, len(grids)), figsize=(width * max(1, len(grids)), width + 0.3), squeeze=False)
    for ax, path in zip(axes[0], grids):
        img = Image.open(path)
        ax.imshow(img, cmap="gray" if img.mode == "L" else None)
        ax.set_title(f"step {int(path.stem.split('_')[1]):,}", fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    return fig
