"""Datasets: MNIST through torchvision, made available offline from ``../shared/data``.

``prepare_mnist`` is the project's ``data`` step: when the four original ``.gz``
files are not yet in ``<root>/MNIST/raw`` it copies them from the shared offline
folder (if there is one), checks their MD5 against torchvision's list, and then
``torchvision.datasets.MNIST(root, download=True)`` finds them, verifies them and
extracts them without touching the network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from .errors import DataError
from .utils import project_root

__all__ = [
    "MNIST_FILES",
    "shared_dir",
    "shared_data_dir",
    "resolve_root",
    "prepare_mnist",
    "load_mnist",
    "to_model_range",
    "to_unit_range",
    "TensorBatches",
    "prepare_cifar10",
    "load_cifar10",
    "hwc_to_model_range",
    "CIFAR10_CLASSES",
]

# torchvision's MD5 list for the four original files
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def _shared_candidates() -> Iterator[Path]:
    """Where the shared folder may be: beside the project first, then beside each folder above it.

    Both the physical project root and the logical one (``$PWD``, which keeps symlinked
    paths) are tried, so a checkout reached through a link still finds its neighbour.
    """
    roots = [project_root()]
    pwd = os.environ.get("PWD")
    if pwd and Path(pwd).is_dir():
        logical = Path(pwd)
        for p in [logical, *logical.parents]:
            if (p / "pyproject.toml").exists() and (p / "diffusion_lib").is_dir():
                roots.append(p)
                break
    for root in roots:
        for above in root.parents:
            yield above / "shared"


def shared_dir() -> Optional[Path]:
    """The read-only folder beside the project holding ``data/`` and ``spec/``.

    ``$DIFFUSION_SHARED`` names it outright (``$DIFFUSION_SHARED_DATA`` names its data
    folder); otherwise the nearest ``shared/`` with a ``data`` or ``spec`` folder,
    looking beside the project first and then beside each folder above it.
    """
    env = os.environ.get("DIFFUSION_SHARED")
    if env:
        return Path(env) if Path(env).is_dir() else None
    env_data = os.environ.get("DIFFUSION_SHARED_DATA")
    if env_data:
        return Path(env_data).parent if Path(env_data).is_dir() else None
    for cand in _shared_candidates():
        if (cand / "data").is_dir() or (cand / "spec").is_dir():
            return cand
    return None


def shared_data_dir() -> Optional[Path]:
    """The offline data folder: ``$DIFFUSION_SHARED_DATA``, else ``data/`` of :func:`shared_dir`."""
    env = os.environ.get("DIFFUSION_SHARED_DATA")
    if env:
        return Path(env) if Path(env).is_dir() else None
    shared = shared_dir()
    return shared / "data" if shared is not None and (shared / "data").is_dir() else None


def resolve_root(root: str | Path) -> Path:
    """A relative data root is taken relative to the project root, so chapters and CLI agree."""
    root = Path(root)
    return root if root.is_absolute() else project_root() / root


def _digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _missing_message(raw: Path) -> str:
    files = "\n".join(f"  {name}  (md5 {md5})" for name, md5 in MNIST_FILES.items())
    return (
        "MNIST is not available and could not be downloaded.\n"
        f"Put these four original files into {raw}/ :\n{files}\n"
        "They are the files of the original distribution (the project's offline copy lives in "
        "../shared/data/MNIST/raw/; set DIFFUSION_SHARED_DATA to point elsewhere), "
        "or run once with network access to let torchvision download them.\n"
        + _looked_where()
    )


def _looked_where() -> str:
    found = shared_data_dir()
    if found is not None:
        return f"Offline folder searched: {found}."
    looked = ", ".join(str(c) for c in dict.fromkeys(_shared_candidates()))
    return f"No offline folder was found; looked for: {looked}."


def prepare_mnist(root: str | Path = "data", source: str | Path | None = None) -> Path:
    """Make the MNIST ``.gz`` files available under ``<root>/MNIST/raw``; returns ``root``.

    Copies missing files from ``source`` (default: :func:`shared_data_dir`), and checks
    the MD5 of every ``.gz`` file present. A corrupt file raises :class:`DataError`
    naming it and its expected checksum; a missing file is left for torchvision to
    download.
    """
    root = resolve_root(root)
    raw = root / "MNIST" / "raw"
    src_dir = Path(source) if source is not None else shared_data_dir()
    src_raw = src_dir / "MNIST" / "raw" if src_dir is not None else None
    for name, md5 in MNIST_FILES.items():
        dst = raw / name
        if not dst.exists() and src_raw is not None and (src_raw / name).exists():
            raw.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_suffix(".gz.tmp")
            shutil.copyfile(src_raw / name, tmp)
            os.replace(tmp, dst)
        if dst.exists():
            got = _digest(dst, "md5")
            if got != md5:
                raise DataError(
                    f"{dst} is corrupt or truncated: its MD5 is {got}, expected {md5} "
                    f"({dst.stat().st_size} bytes). Delete it (and the extracted file beside it) "
                    "and run `make data` again to copy a good one from the offline folder, "
                    "or let torchvision download it."
                )
            _extract(dst)
    return root


def _extract(gz: Path) -> None:
    """Decompress a verified ``.gz`` beside itself (what torchvision reads), atomically.

    torchvision only extracts inside ``download=True``; offline (``DIFFUSION_OFFLINE=1``)
    it expects the extracted files, so a fresh data folder is extracted here.
    """
    import gzip

    out = gz.with_suffix("")
    if out.exists():
        return
    tmp = out.with_name(out.name + ".tmp")
    try:
        with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        os.replace(tmp, out)
    except (OSError, EOFError) as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"could not extract {gz}: {exc}; delete it and run `make data` again") from exc


def load_mnist(
    root: str | Path = "data", train: bool = True, download: Optional[bool] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST as ``(images uint8 (N, 28, 28), labels int64 (N,))``.

    ``download`` defaults to True unless ``DIFFUSION_OFFLINE=1`` is set; offline,
    the files must be present (see :func:`prepare_mnist`).
    """
    from torchvision.datasets import MNIST

    if download is None:
        download = os.environ.get("DIFFUSION_OFFLINE", "") not in ("1", "true", "yes")
    root = prepare_mnist(root)
    raw = root / "MNIST" / "raw"
    have_all = all((raw / n).exists() or (raw / n[:-3]).exists() for n in MNIST_FILES)
    if not have_all and not download:
        raise DataError(_missing_message(raw))
    try:
        ds = MNIST(str(root), train=train, download=download)
    except (RuntimeError, OSError) as exc:
        raise DataError(_missing_message(raw) + f"\n(torchvision said: {str(exc).strip().splitlines()[0]})") from exc
    return ds.data.clone(), ds.targets.clone().long()


CIFAR10_NPZ = "cifar10/cifar10.npz"
CIFAR10_SHA256 = "a4e3621fa9e6d18ace83b7634e477991efb6665757a10b5c153ee87921398197"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def prepare_cifar10(root: str | Path = "data", source: str | Path | None = None, verify: bool = True) -> Path:
    """Make ``<root>/cifar10/cifar10.npz`` available (a symlink to the offline copy) and verify it.

    Returns the path of the npz file. A missing file is a :class:`DataError` naming
    the file and where it goes; a corrupt one names the expected SHA-256.
    """
    root = resolve_root(root)
    dst = root / CIFAR10_NPZ
    src_dir = Path(source) if source is not None else shared_data_dir()
    if not dst.exists():
        if dst.is_symlink():  # a dangling link from a moved shared folder
            dst.unlink()
        src = src_dir / CIFAR10_NPZ if src_dir is not None else None
        if src is None or not src.exists():
            raise DataError(
                f"CIFAR-10 is not available: put cifar10.npz (uint8 arrays x_train, y_train, x_test, y_test; "
                f"SHA-256 {CIFAR10_SHA256}) at {dst}, or place the project's offline copy at "
                "../shared/data/cifar10/cifar10.npz (or set DIFFUSION_SHARED_DATA).\n" + _looked_where()
            )
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(src.resolve(), dst)
    if verify:
        got = _digest(dst, "sha256")
        if got != CIFAR10_SHA256:
            raise DataError(f"{dst} is corrupt or truncated: SHA-256 {got}, expected {CIFAR10_SHA256}. "
                            "Delete it and run `make data` again to link the offline copy.")
    return dst


def load_cifar10(root: str | Path = "data", train: bool = True, verify: bool = True,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 as ``(images uint8 (N, 32, 32, 3) HWC RGB, labels int64 (N,))``, in the official order.

    The same arrays as ``torchvision.datasets.CIFAR10(root).data`` / ``.targets``.
    """
    import numpy as np

    path = prepare_cifar10(root, verify=verify)
    split = "train" if train else "test"
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y = z[f"x_{split}"], z[f"y_{split}"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path} cannot be read as the CIFAR-10 npz ({exc})") from exc
    return torch.from_numpy(x), torch.from_numpy(y.astype("int64"))


def hwc_to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 HWC images (N, H, W, C) -> float (N, C, H, W) in [-1, 1]."""
    return to_model_range(images.permute(0, 3, 1, 2))


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, C, H, W) in [0, 255] -> float (N, C, H, W) in [-1, 1]."""
    x = images.float() / 127.5 - 1.0
    return x.unsqueeze(1) if x.ndim == 3 else x


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Model range [-1, 1] -> [0, 1] for display."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


class TensorBatches:
    """Shuffled mini-batches from a dataset held as one tensor (on the training device).

    Each epoch is a fresh permutation from a seeded generator; an incomplete last
    batch is dropped. :meth:`state_dict` captures the position exactly, so a resumed
    run draws the same batches as an uninterrupted one.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int, device: torch.device | str = "cpu") -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if batch_size > images.shape[0]:
            raise ValueError(f"batch_size {batch_size} is larger than the dataset ({images.shape[0]} images)")
        self.images = images.to(device)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.pos = 0
        self._epoch_state = self.generator.get_state()
        self._perm = torch.randperm(len(self.images), generator=self.generator)

    def __len__(self) -> int:
        return len(self.images) // self.batch_size

    def _new_epoch(self) -> None:
        self.epoch += 1
        self.pos = 0
        self._epoch_state = self.generator.get_state()
        self._perm = torch.randperm(len(self.images), generator=self.generator)

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > len(self._perm):
            self._new_epoch()
        idx = self._perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return self.images[idx.to(self.images.device)]

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield self.next()

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos, "epoch_state": self._epoch_state.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["epoch_state"])
        self._epoch_state = state["epoch_state"].clone()
        self._perm = torch.randperm(len(self.images), generator=self.generator)
        self.epoch = int(state["epoch"])
        self.pos = int(state["pos"])


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m diffusion_lib.data [ROOT]``: the project's data step (copy, verify, extract MNIST)."""
    import sys

    root = (argv if argv is not None else sys.argv[1:]) or ["data"]
    try:
        x, _ = load_mnist(root[0], train=True)
        xt, _ = load_mnist(root[0], train=False)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"MNIST ready in {resolve_root(root[0]) / 'MNIST'}: {len(x):,} training and {len(xt):,} test images")
    try:  # only chapter 07 needs CIFAR-10; its absence is reported, not fatal here
        print(f"CIFAR-10 ready: {prepare_cifar10(root[0])}")
    except DataError as exc:
        print(f"note: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
