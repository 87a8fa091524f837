"""How a path of images changes, seen through an instrument: step sizes, class changes, ink.

A path is a sequence of frames decoded from latents along an interpolation. In
the classifier's feature space (the one FID uses) the distance between
consecutive frames is a step; the steps of a smooth path are even, a jump is one
step that carries most of the path's length. The *largest-step share* (the
largest step over the sum of all steps) summarises that in one number that does
not depend on the direction the path is walked: 1/K for K perfectly even steps,
1 for a single jump.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F

from ..diffusion.interpolation import lerp, slerp
from .classifiers import ConvClassifier
from .floor import Interval, z_value
from .quality import features

__all__ = ["PATHS", "PathStats", "path_latents", "path_stats", "pixel_steps", "largest_step_share", "mean_interval"]

PATHS = {"linear": lerp, "spherical": slerp}


def path_latents(kind: str, a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Each pair's latents along the path ``kind`` (a key of :data:`PATHS`) at ``weights``, pair after pair:
    (pairs * frames, C, H, W). ``weights`` is (frames,) for every pair, or (pairs, frames), one row per pair."""
    w = weights.expand(len(a), -1)
    return PATHS[kind](a.repeat_interleave(w.shape[1], 0), b.repeat_interleave(w.shape[1], 0), w.flatten())


def pixel_steps(frames: torch.Tensor, per_path: int) -> torch.Tensor:
    """Euclidean distance between consecutive frames of each path, in pixels: (paths, frames - 1)."""
    x = frames.reshape(-1, per_path, frames[0].numel())
    return (x[:, 1:] - x[:, :-1]).norm(dim=2)


def mean_interval(values: Iterable[float], level: float = 0.95) -> Interval:
    """The mean of ``values`` (one per path) with its normal interval."""
    v = torch.tensor([float(x) for x in values], dtype=torch.float64)
    m, half = float(v.mean()), z_value(level) * float(v.std() / len(v) ** 0.5)
    return Interval(m, m - half, m + half)


@dataclass
class PathStats:
    """One path of K + 1 frames."""

    steps: torch.Tensor  # (K,) feature-space distance between consecutive frames
    classes: torch.Tensor  # (K + 1,) predicted digit of each frame
    confidence: torch.Tensor  # (K + 1,) the classifier's top probability
    ink: torch.Tensor  # (K + 1,) mean intensity in [0, 1]

    @property
    def class_changes(self) -> int:
        return int((self.classes[1:] != self.classes[:-1]).sum())

    @property
    def via_third_class(self) -> bool:
        """Whether the path passes through a class that is neither of its endpoints'."""
        ends = {int(self.classes[0]), int(self.classes[-1])}
        return any(int(c) not in ends for c in self.classes)

    @property
    def largest_step_share(self) -> float:
        return largest_step_share(self.steps)


def largest_step_share(steps: torch.Tensor) -> float:
    """The largest step over the path's total length: 1/K for even steps, 1 for a single jump."""
    total = float(steps.sum())
    return float(steps.max()) / total if total > 0 else 0.0


@torch.no_grad()
def path_stats(classifier: ConvClassifier, frames: torch.Tensor, frames_per_path: int) -> list[PathStats]:
    """Statistics of consecutive groups of ``frames_per_path`` frames (model range), one :class:`PathStats` each."""
    if len(frames) % frames_per_path:
        raise ValueError(f"{len(frames)} frames do not split into paths of {frames_per_path}")
    f = features(classifier, frames).float()
    device = next(classifier.parameters()).device
    p = torch.cat([F.softmax(classifier.head(f[i:i + 1000].to(device) * classifier.feature_scale), 1).cpu()
                   for i in range(0, len(f), 1000)])
    ink = ((frames + 1) / 2).mean(dim=(1, 2, 3))
    out = []
    for i in range(0, len(frames), frames_per_path):
        fi = f[i:i + frames_per_path]
        pi = p[i:i + frames_per_path]
        out.append(PathStats(steps=(fi[1:] - fi[:-1]).norm(dim=1), classes=pi.argmax(1), confidence=pi.max(1).values,
                             ink=ink[i:i + frames_per_path]))
    return out
