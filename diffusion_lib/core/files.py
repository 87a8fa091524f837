"""Files that are never half-written: atomic writes, tagged torch files, digests, free-space checks.

Every file the project produces goes through :func:`atomic_write`: the bytes go
to a temporary file beside the target, are flushed and fsynced, and only then
renamed over the target. Whenever the process dies, the target holds either
the old complete file or the new complete file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from .errors import CheckpointError

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "replace_marked_section",
    "temp_file_beside",
    "remove_stale_temp_files",
    "digest",
    "serialize",
    "check_space",
    "save_tagged",
    "load_tagged",
]

_MARGIN = 1 << 20  # keep a MiB free beyond the file itself
_UMASK = os.umask(0)  # read once (setting it is the only way to read it), so no thread ever sees 0
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", keep_previous: Optional[Path] = None) -> Iterator:
    """Write ``path`` through a temporary file in the same folder: flush, fsync, rename.

    If the body raises (or the process dies), the temporary file is removed (or
    left as litter that :func:`remove_stale_temp_files` clears) and ``path`` is
    untouched. With ``keep_previous``, the current ``path`` is renamed to it just
    before the new file takes its place, so one complete older copy survives.
    """
    path = Path(path)
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def temp_file_beside(path: Path) -> tuple[int, str]:
    """A new temporary file in ``path``'s folder (created if needed), with the usual umask permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are meant to be shared
    return fd, tmp


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files a killed write left in ``folder``; returns what was removed."""
    removed = []
    if folder.is_dir():
        for p in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def atomic_write_bytes(path: str | Path, data: bytes, keep_previous: Optional[Path] = None) -> None:
    with atomic_write(path, "wb", keep_previous=keep_previous) as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as fh:
        fh.write(text)


def replace_marked_section(path: str | Path, name: str, body: str) -> None:
    """Replace what stands between ``<!-- name:start -->`` and ``<!-- name:end -->`` in a text file, atomically.

    The generated parts of the README (benchmark tables, the training recipe) are written this way.
    """
    path = Path(path)
    text = path.read_text()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise ValueError(f"{path} has no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(path, f"{head}{start}\n{body}\n{end}{tail}")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def serialize(obj: Any) -> bytes:
    """``torch.save`` into bytes (so the size is known before anything touches the disk)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def check_space(folder: Path, nbytes: int) -> None:
    """Raise :class:`CheckpointError` unless ``folder`` has room for ``nbytes`` and a margin."""
    free = shutil.disk_usage(folder).free
    if free < nbytes + _MARGIN:
        raise CheckpointError(
            f"not enough disk space in {folder} for a {nbytes / 2**20:.1f} MiB file "
            f"({free / 2**20:.1f} MiB free); nothing was overwritten. Free some space and resume."
        )


def save_tagged(path: str | Path, fmt: str, payload: dict[str, Any], keep_previous: Optional[Path] = None) -> Path:
    """Write ``{"format": fmt, **payload}`` with ``torch.save``, atomically, after a free-space check.

    A write that fails (full disk, file-size limit, permissions) raises one
    :class:`CheckpointError` naming the file; the previous file is left intact.
    """
    path = Path(path)
    data = serialize({"format": fmt, **payload})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        check_space(path.parent, len(data))
        atomic_write_bytes(path, data, keep_previous=keep_previous)
    except OSError as exc:
        kept = f" (or as {keep_previous.name}, if it was being replaced)" if keep_previous is not None else ""
        raise CheckpointError(f"could not write {path} ({exc.strerror or exc}); "
                              f"the previous file, if any, is intact{kept}") from exc
    return path


def load_tagged(path: str | Path, expected_format: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a file written by :func:`save_tagged` (``weights_only=True``), with one clear error if it is not one.

    ``required`` lists the keys the caller needs; a file without them is reported
    as foreign rather than failing later with a ``KeyError``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, wrong magic number ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is truncated or is not a file this project can read ({first})") from exc
    if not isinstance(obj, dict) or obj.get("format") != expected_format:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} is not a {expected_format} file (found {found!r})")
    missing = [k for k in required if k not in obj]
    if missing:
        raise CheckpointError(f"{path} is a damaged or forged {expected_format} file: it lacks {', '.join(missing)}")
    return obj
