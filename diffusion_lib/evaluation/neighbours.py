"""Nearest training images in the instrument's features, for memorisation checks.

Pixel distance favours blurry images (a blur is close to many digits at once)
and cannot tell a copy from a blur; the classifier's features, the space FID
uses, compare what the images show. A model that copies its training set puts
samples much closer to their nearest training image than held-out real images
are to theirs; a model that generalises puts them about as close.
"""

from __future__ import annotations

import torch

from ..data.images import to_model_range
from .classifiers import ConvClassifier
from .quality import features

__all__ = ["pool_features", "nearest_in_features"]


@torch.no_grad()
def pool_features(classifier: ConvClassifier, pool: torch.Tensor, chunk: int = 5000) -> torch.Tensor:
    """The instrument's features of a uint8 image set (N, C, H, W), e.g. a training set, a chunk at a time."""
    return torch.cat([features(classifier, to_model_range(pool[s:s + chunk])) for s in range(0, len(pool), chunk)])


@torch.no_grad()
def nearest_in_features(classifier: ConvClassifier, queries: torch.Tensor, pool: torch.Tensor,
                        chunk: int = 5000) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query image (model range), the feature distance to its nearest ``pool`` image, and that image's index.

    ``pool`` is either uint8 images (N, C, H, W) or their features from :func:`pool_features` (N, F),
    which saves computing them again for every set of queries.
    """
    feats = pool if pool.ndim == 2 else pool_features(classifier, pool, chunk)
    q = features(classifier, queries)
    best_d = torch.full((len(q),), float("inf"), dtype=q.dtype)
    best_i = torch.zeros(len(q), dtype=torch.long)
    for start in range(0, len(feats), chunk):
        m, j = torch.cdist(q, feats[start:start + chunk].to(q.dtype)).min(1)
        better = m < best_d
        best_d[better], best_i[better] = m[better], j[better] + start
    return best_d, best_i
