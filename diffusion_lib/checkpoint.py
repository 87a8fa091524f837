"""Checkpoints and exported weights: written atomically, read with ``weights_only=True``.

A training checkpoint is replaced in two renames: the new file is written and
fsynced under a temporary name first, the current ``last.pt`` becomes
``prev.pt``, and only then does the new file become ``last.pt``. Whenever the
process dies, one complete checkpoint is on disk.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from .errors import CheckpointError
from .utils import atomic_write_bytes, temp_file_beside

__all__ = [
    "CHECKPOINT_FORMAT",
    "MODEL_FORMAT",
    "save_checkpoint",
    "load_checkpoint",
    "find_resume_checkpoint",
    "save_model",
    "load_model",
    "serialize",
    "check_space",
    "load_tagged",
]

CHECKPOINT_FORMAT = "diffusion_lib/checkpoint/v1"
MODEL_FORMAT = "diffusion_lib/model/v1"
_MARGIN = 1 << 20  # keep a MiB free beyond the file itself


def serialize(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def check_space(folder: Path, nbytes: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < nbytes + _MARGIN:
        raise CheckpointError(
            f"not enough disk space in {folder} for a {nbytes / 2**20:.1f} MiB file "
            f"({free / 2**20:.1f} MiB free); nothing was overwritten. Free some space and resume."
        )


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write a training checkpoint to ``path``, keeping the previous one as ``prev.pt`` beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = serialize({"format": CHECKPOINT_FORMAT, **state})
    check_space(path.parent, len(data))
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.replace(path, path.with_name("prev.pt"))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def load_tagged(path: Path, expected_format: str) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, wrong magic number ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is truncated or is not a checkpoint this project can read ({first})") from exc
    if not isinstance(obj, dict) or obj.get("format") != expected_format:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} is not a {expected_format} file (found {found!r})")
    return obj


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint (``weights_only=True``); a clear error if it is truncated or foreign."""
    return load_tagged(Path(path), CHECKPOINT_FORMAT)


def find_resume_checkpoint(folder: str | Path) -> tuple[Optional[dict[str, Any]], list[str]]:
    """The newest readable checkpoint in ``folder`` (``last.pt``, else ``prev.pt``) and notes for the user.

    Returns ``(None, notes)`` when the folder holds no checkpoint; raises
    :class:`CheckpointError` when checkpoints exist but none can be read.
    """
    folder = Path(folder)
    notes: list[str] = []
    candidates = [folder / "last.pt", folder / "prev.pt"]
    if not any(p.exists() for p in candidates):
        return None, notes
    errors = []
    for p in candidates:
        if not p.exists():
            continue
        try:
            state = load_checkpoint(p)
        except CheckpointError as exc:
            errors.append(str(exc))
            notes.append(f"could not read {p}: {exc}")
            continue
        if p.name == "prev.pt":
            notes.append(f"resuming from the previous good checkpoint {p} (step {state.get('step')})")
        return state, notes
    raise CheckpointError("no readable checkpoint to resume from:\n  " + "\n  ".join(errors))


def save_model(path: str | Path, model: nn.Module, **meta: Any) -> Path:
    """Export a model's weights with what is needed to rebuild it (config, schedule, notes)."""
    if not hasattr(getattr(model, "config", None), "to_dict"):
        raise TypeError("save_model exports a model of diffusion_lib.models (one with a .config)")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    data = serialize({"format": MODEL_FORMAT, "unet": model.config.to_dict(), "state_dict": state, "meta": meta})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    check_space(path.parent, len(data))
    atomic_write_bytes(path, data)
    return path


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an exported model in eval mode; returns ``(model, meta)``."""
    from .models import build_model

    obj = load_tagged(Path(path), MODEL_FORMAT)
    try:
        model = build_model(obj["unet"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the stored architecture ({exc})") from exc
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the stored architecture ({exc})") from exc
    return model.to(device).eval(), dict(obj.get("meta", {}))
