"""Training checkpoints: written atomically beside the previous one, read back with a fallback.

A checkpoint is replaced in two renames: the new file is written and fsynced
under a temporary name first, the current ``last.pt`` becomes ``prev.pt``, and
only then does the new file become ``last.pt``. Whenever the process dies, one
complete checkpoint is on disk. On resume, a ``last.pt`` that cannot be read or
does not fit the model is moved aside (never deleted) and ``prev.pt`` is used,
so the next save cannot rotate a damaged file over the good one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ..core.errors import CheckpointError
from ..core.files import load_tagged, save_tagged

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_KEYS", "save_checkpoint", "load_checkpoint", "restore_newest"]

CHECKPOINT_FORMAT = "diffusion_lib/checkpoint/v1"
CHECKPOINT_KEYS = ("step", "config", "process", "data", "rng", "elapsed_s", "train_s")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write a training checkpoint to ``path``, keeping the previous one as ``prev.pt`` beside it."""
    path = Path(path)
    return save_tagged(path, CHECKPOINT_FORMAT, state, keep_previous=path.with_name("prev.pt"))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint (``weights_only=True``); a clear error if it is truncated, foreign or incomplete."""
    return load_tagged(path, CHECKPOINT_FORMAT, required=CHECKPOINT_KEYS)


def _candidates(folder: Path) -> Iterator[Path]:
    for name in ("last.pt", "prev.pt"):
        if (folder / name).exists():
            yield folder / name


def restore_newest(folder: str | Path, restore: Callable[[dict[str, Any]], None],
                   log: Callable[[str], None] = print, move_aside: bool = True) -> Optional[dict[str, Any]]:
    """Load the newest checkpoint in ``folder`` that ``restore(state)`` accepts; returns its state.

    ``restore`` raises :class:`CheckpointError` when a state does not fit (another
    model, a missing entry). A rejected ``last.pt`` is renamed to
    ``last.pt.unusable-<time>`` once ``prev.pt`` has been restored (unless
    ``move_aside`` is off: under DDP only rank 0 moves files). Returns None when
    the folder holds no checkpoint; raises when none is usable.
    """
    folder = Path(folder)
    errors, rejected = [], []
    for path in _candidates(folder):
        try:
            state = load_checkpoint(path)
            restore(state)
        except CheckpointError as exc:
            errors.append(f"{path}: {exc}")
            log(f"could not use {path}: {exc}")
            rejected.append(path)
            continue
        for bad in rejected if move_aside else []:
            aside = bad.with_name(f"{bad.name}.unusable-{time.strftime('%Y%m%d-%H%M%S')}")
            try:
                os.replace(bad, aside)
            except OSError as exc:
                raise CheckpointError(f"could not move the unusable {bad} aside ({exc.strerror or exc})") from exc
            log(f"resuming from the previous good checkpoint {path} (step {state['step']}); "
                f"the unusable {bad.name} was moved to {aside.name}")
        return state
    if errors:
        raise CheckpointError("no usable checkpoint to resume from:\n  " + "\n  ".join(errors)
                              + "\nStart over with --fresh (the old run is moved aside, not deleted).")
    return None
