"""MNIST through torchvision, made available offline from the shared folder.

:func:`prepare_mnist` is the project's ``data`` step: when the four original
``.gz`` files are not yet in ``<root>/MNIST/raw`` it copies them from the
offline folder (if there is one), checks their MD5 against torchvision's list,
and extracts them beside themselves (checking the extracted sizes, so a
truncated extraction is redone from the verified archive). Then
``torchvision.datasets.MNIST(root)`` reads them without touching the network.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path
from typing import Optional

import torch
from torchvision.datasets import MNIST

from ..core.errors import DataError
from ..core.files import digest
from .offline import data_folder, looked_where, shared_data_dir

__all__ = ["MNIST_FILES", "prepare_mnist", "load_mnist"]

# torchvision's MD5 list for the four original files, and each file's size once extracted
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
EXTRACTED_SIZES: dict[str, int] = {
    "train-images-idx3-ubyte": 16 + 60000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60000,
    "t10k-images-idx3-ubyte": 16 + 10000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10000,
}


def _missing_message(raw: Path) -> str:
    files = "\n".join(f"  {name}  (md5 {md5})" for name, md5 in MNIST_FILES.items())
    return (
        "MNIST is not available and could not be downloaded.\n"
        f"Put these four original files into {raw}/ :\n{files}\n"
        "They are the files of the original distribution (the project's offline copy lives in "
        "../shared/data/MNIST/raw/; set DIFFUSION_SHARED_DATA to point elsewhere), "
        "or run once with network access to let torchvision download them.\n"
        + looked_where()
    )


def prepare_mnist(root: str | Path = "data", source: str | Path | None = None) -> Path:
    """Make the MNIST files available and verified under ``<root>/MNIST/raw``; returns ``root``.

    Copies missing ``.gz`` files from ``source`` (default: the offline folder),
    checks the MD5 of every ``.gz`` present, and (re-)extracts any file that is
    missing or has the wrong size. A corrupt ``.gz`` raises :class:`DataError`
    naming it and its expected checksum; a missing one is left for torchvision.
    """
    root = data_folder(root)
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
            got = digest(dst, "md5")
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

    An extracted file of the wrong size (a killed or truncated extraction) is
    replaced from the archive, which was just verified.
    """
    out = gz.with_suffix("")
    if out.exists() and out.stat().st_size == EXTRACTED_SIZES[out.name]:
        return
    tmp = out.with_name(out.name + ".tmp")
    try:
        with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        os.replace(tmp, out)
    except (OSError, EOFError) as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"could not extract {gz}: {exc}; delete it and run `make data` again") from exc


def load_mnist(root: str | Path = "data", train: bool = True, download: Optional[bool] = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST as ``(images uint8 (N, 28, 28), labels int64 (N,))``.

    ``download`` defaults to True unless ``DIFFUSION_OFFLINE=1`` is set; offline,
    the files must be present (see :func:`prepare_mnist`).
    """
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
