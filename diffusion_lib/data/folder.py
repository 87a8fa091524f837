"""Your own images as a training set: every PNG, JPEG or WebP in a folder and its subfolders.

Each image is decoded once: turned upright by its EXIF orientation, converted to grayscale (``channels: 1``) or RGB (3),
resized so that its shorter side is ``image_size`` (bicubic, antialiased) and
centre-cropped to a square. The decoded set is cached as one uint8 tensor under
``$XDG_CACHE_HOME/diffusion_lib/folders/`` (``~/.cache`` by default), keyed by the
file list (names, sizes, modification times) and the preprocessing, so later
epochs and later runs read it as fast as MNIST. The cache is written atomically
and, under ``torchrun``, by rank 0 alone while the others wait for it.

When every image sits in a subfolder of the folder, the subfolders name the
classes (in sorted order, as torchvision's ``ImageFolder`` numbers them);
otherwise the images have no class (label 0).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from ..core.errors import CheckpointError, DataError
from ..core.files import load_tagged, save_tagged

__all__ = ["EXTENSIONS", "image_files", "load_folder", "cache_dir"]

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
CACHE_FORMAT = "diffusion_lib/image-folder/v2"


def cache_dir() -> Path:
    """Where decoded folders are kept: ``$XDG_CACHE_HOME/diffusion_lib/folders`` (default ``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "diffusion_lib" / "folders"


def image_files(root: str | Path) -> list[Path]:
    """The image files under ``root`` (any depth, hidden files and folders skipped), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder of images (dataset: folder reads PNG, JPEG and WebP files from "
                        "data_root and its subfolders)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise DataError(f"{root} holds no PNG, JPEG or WebP image (looked in it and its subfolders); "
                        "point data_root (or --data) at the folder of your images")
    return files


def _classes(root: Path, files: list[Path]) -> tuple[torch.Tensor, list[str]]:
    """One label per file: its first-level subfolder's index when every file is in one, else 0 for all."""
    parts = [f.relative_to(root).parts for f in files]
    if any(len(p) < 2 for p in parts):
        return torch.zeros(len(files), dtype=torch.long), []
    names = sorted({p[0] for p in parts})
    index = {n: i for i, n in enumerate(names)}
    return torch.tensor([index[p[0]] for p in parts], dtype=torch.long), names


def _decode(path: Path, image_size: int, channels: int) -> torch.Tensor:
    with Image.open(path) as img:
        img.load()  # a truncated file fails here, not later
        img = ImageOps.exif_transpose(img).convert("L" if channels == 1 else "RGB")  # upright, as photos are shown
    img = TF.resize(img, image_size, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    return TF.pil_to_tensor(TF.center_crop(img, image_size))


def _decode_all(root: Path, files: list[Path], image_size: int, channels: int, progress: bool) -> torch.Tensor:
    """Every file decoded, stacked; the files that cannot be decoded are all named in one :class:`DataError`."""
    decoded, bad = [], []
    for f in tqdm(files, desc=f"decoding {root}", unit="image", disable=None if progress else True, leave=False):
        try:
            decoded.append(_decode(f, image_size, channels))
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            bad.append(f"  {f}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    if bad:
        raise DataError(f"{len(bad)} of the {len(files)} images under {root} cannot be read; remove or replace them "
                        "and run again:\n" + "\n".join(bad))
    return torch.stack(decoded)


def _key(root: Path, files: list[Path], image_size: int, channels: int) -> str:
    listing = [(f.relative_to(root).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    text = json.dumps([CACHE_FORMAT, "shorter side, bicubic antialiased, centre crop", image_size, channels, listing])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def load_folder(root: str | Path, image_size: int, channels: int, *, progress: bool = True,
                ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The images under ``root`` as ``(uint8 (N, channels, image_size, image_size), int64 labels, class names)``.

    Every image that cannot be decoded is named in one :class:`DataError`, and nothing is cached.
    """
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB) for an image folder, got {channels}")
    root = Path(root)
    files = image_files(root)
    labels, names = _classes(root, files)
    cache = cache_dir() / f"{_key(root, files, image_size, channels)}.pt"
    distributed = dist.is_available() and dist.is_initialized()
    main = not distributed or dist.get_rank() == 0
    if not main:
        dist.barrier()  # rank 0 decodes and writes the cache (or fails and says why)
        if not cache.exists():
            raise DataError(f"rank 0 could not decode the images under {root}; its message says why")
    images = None
    if cache.exists():
        try:
            images = load_tagged(cache, CACHE_FORMAT, required=("images",))["images"]
        except CheckpointError:
            images = None  # a damaged cache is decoded again (and replaced by rank 0)
    try:
        if images is None:
            images = _decode_all(root, files, image_size, channels, progress)
            if main:
                save_tagged(cache, CACHE_FORMAT, {"images": images, "files": len(files)})
    finally:
        if distributed and main:
            dist.barrier()  # the other ranks read the cache, or learn that there is none
    return images, labels, names
