"""Nearest training images, for memorisation checks."""

from __future__ import annotations

import torch

from ..data.images import to_model_range

__all__ = ["nearest_neighbours"]


@torch.no_grad()
def nearest_neighbours(queries: torch.Tensor, pool: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query image (model range), the pixel-space L2 distance to its nearest image of ``pool``, and its index.

    ``pool`` is a uint8 image tensor (N, C, H, W), e.g. a whole training set,
    converted to model range a chunk at a time.
    """
    a = queries.flatten(1).float()
    best_d = torch.full((len(a),), float("inf"))
    best_i = torch.zeros(len(a), dtype=torch.long)
    for start in range(0, len(pool), chunk):
        d = torch.cdist(a, to_model_range(pool[start:start + chunk]).flatten(1))
        m, j = d.min(1)
        better = m < best_d
        best_d[better], best_i[better] = m[better], j[better] + start
    return best_d, best_i
