"""Where the project's offline copies of the datasets live (a read-only ``shared/`` folder).

``shared/`` sits beside the checkout or beside any folder above it (the nearest
wins); ``$DIFFUSION_SHARED`` names it outright and ``$DIFFUSION_SHARED_DATA``
names its ``data/`` folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional

from ..core.errors import DataError
from ..core.paths import project_root, resolve

__all__ = ["shared_dir", "shared_data_dir", "looked_where", "data_folder"]


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
    """The read-only folder beside the project holding ``data/`` and ``spec/``, or None."""
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


def looked_where() -> str:
    """One sentence for error messages: which offline folder was searched, or every place looked at."""
    found = shared_data_dir()
    if found is not None:
        return f"Offline folder searched: {found}."
    looked = ", ".join(str(c) for c in dict.fromkeys(_shared_candidates()))
    return f"No offline folder was found; looked for: {looked}."


def data_folder(root: str | Path) -> Path:
    """The data root (relative to the project root), with one clear error when it is not a folder."""
    path = resolve(root)
    if path.exists() and not path.is_dir():
        raise DataError(f"the data root {path} is a file, not a folder; point data_root at a folder "
                        "(the project's default is data/)")
    return path
