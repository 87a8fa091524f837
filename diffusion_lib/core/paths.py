"""Where things are: the project root, and paths given relative to it."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["project_root", "resolve"]


def project_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding ``pyproject.toml`` and ``diffusion_lib/``.

    Chapters run from ``chapters/`` or the repository root (papermill keeps the
    caller's cwd); both find the same root. Installed outside a checkout, the
    library falls back to the source tree it was installed from.
    """
    here = Path(start or os.getcwd()).resolve()
    for p in [here, *here.parents]:
        if (p / "pyproject.toml").exists() and (p / "diffusion_lib").is_dir():
            return p
    return Path(__file__).resolve().parents[2]


def resolve(path: str | Path) -> Path:
    """``path`` as given when absolute, else relative to the project root (so chapters and the CLI agree)."""
    p = Path(path)
    return p if p.is_absolute() else project_root() / p
