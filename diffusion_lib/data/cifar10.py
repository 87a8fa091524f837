"""CIFAR-10 from the project's offline copy (``shared/data/cifar10/cifar10.npz``), verified by SHA-256."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..core.errors import DataError
from ..core.files import digest
from .offline import data_folder, looked_where, shared_data_dir

__all__ = ["CIFAR10_CLASSES", "CIFAR10_SHA256", "prepare_cifar10", "load_cifar10"]

CIFAR10_NPZ = "cifar10/cifar10.npz"
CIFAR10_SHA256 = "a4e3621fa9e6d18ace83b7634e477991efb6665757a10b5c153ee87921398197"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def prepare_cifar10(root: str | Path = "data", source: str | Path | None = None, verify: bool = True) -> Path:
    """Make ``<root>/cifar10/cifar10.npz`` available (a symlink to the offline copy) and verify it.

    Returns the path of the npz file. A missing file is a :class:`DataError` naming
    the file and where it goes; a corrupt one names the expected SHA-256.
    """
    dst = data_folder(root) / CIFAR10_NPZ
    src_dir = Path(source) if source is not None else shared_data_dir()
    if not dst.exists():
        if dst.is_symlink():  # a dangling link from a moved shared folder
            dst.unlink()
        src = src_dir / CIFAR10_NPZ if src_dir is not None else None
        if src is None or not src.exists():
            raise DataError(
                f"CIFAR-10 is not available: put cifar10.npz (uint8 arrays x_train, y_train, x_test, y_test; "
                f"SHA-256 {CIFAR10_SHA256}) at {dst}, or place the project's offline copy at "
                "../shared/data/cifar10/cifar10.npz (or set DIFFUSION_SHARED_DATA).\n" + looked_where()
            )
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(src.resolve(), dst)
    if verify:
        got = digest(dst, "sha256")
        if got != CIFAR10_SHA256:
            raise DataError(f"{dst} is corrupt or truncated: SHA-256 {got}, expected {CIFAR10_SHA256}. "
                            "Delete it and run `make data` again to link the offline copy.")
    return dst


def load_cifar10(root: str | Path = "data", train: bool = True, verify: bool = True,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 as ``(images uint8 (N, 32, 32, 3) HWC RGB, labels int64 (N,))``, in the official order.

    The same arrays as ``torchvision.datasets.CIFAR10(root).data`` / ``.targets``.
    """
    path = prepare_cifar10(root, verify=verify)
    split = "train" if train else "test"
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y = z[f"x_{split}"], z[f"y_{split}"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path} cannot be read as the CIFAR-10 npz ({exc})") from exc
    return torch.from_numpy(x), torch.from_numpy(y.astype("int64"))
