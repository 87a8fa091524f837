"""The datasets behind one interface: their shapes, their splits, and seeded subsets of them.

MNIST and CIFAR-10 are the report's; ``folder`` is a folder of your own images
(:mod:`diffusion_lib.data.folder`), at the size and channels the training
configuration asks for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import DataError
from ..core.paths import resolve
from .cifar10 import load_cifar10
from .folder import load_folder
from .images import to_model_range
from .mnist import load_mnist

__all__ = ["DatasetInfo", "DATASETS", "check_dataset", "load_split", "random_subset"]


@dataclass(frozen=True)
class DatasetInfo:
    image_size: int  # 0: whatever the configuration asks for
    channels: int  # 0: 1 or 3, as the configuration asks
    title: str  # as the report names it


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(28, 1, "MNIST"),
    "cifar10": DatasetInfo(32, 3, "CIFAR-10"),
    "folder": DatasetInfo(0, 0, "an image folder"),
}


def check_dataset(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name]


def load_split(dataset: str, root: str | Path = "data", train: bool = True, *, image_size: int = 0,
               channels: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A split as ``(uint8 images (N, C, H, W), int64 labels (N,))``.

    A ``folder`` (``root``, relative to the project root like every path of a configuration) has one split, the
    training one, decoded at ``image_size`` with ``channels``.
    """
    check_dataset(dataset)
    if dataset == "folder":
        if not train:
            raise DataError(f"an image folder ({root}) has only a training split")
        return load_folder(resolve(root), image_size, channels)[:2]
    if dataset == "cifar10":
        x, y = load_cifar10(root, train=train)
        return x.permute(0, 3, 1, 2).contiguous(), y
    x, y = load_mnist(root, train=train)
    return x.unsqueeze(1), y


def random_subset(dataset: str, n: int, seed: int, root: str | Path = "data", train: bool = False,
                  skip: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images of a split in model range, drawn by a seeded permutation, after its first ``skip``.

    The same (dataset, seed) always gives the same permutation, so ``skip=n`` gives
    a second subset disjoint from the first (e.g. held-out images beside a reference set).
    """
    x, y = load_split(dataset, root, train=train)
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[skip:skip + n]
    return to_model_range(x[idx]), y[idx]
