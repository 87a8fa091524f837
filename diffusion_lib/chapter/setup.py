"""The few lines every chapter starts with: where its results go, which device, one plotting style."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.devices import device_name, resolve_device
from ..core.paths import resolve
from .style import set_style

__all__ = ["Chapter", "start"]


@dataclass(frozen=True)
class Chapter:
    results: Path  # the profile's results folder (results/<profile>)
    art: Path  # this chapter's artifact folder inside it
    device: torch.device

    @property
    def device_name(self) -> str:
        return device_name(self.device)

    def run_dir(self, chapter: str) -> Path:
        """The artifact folder of another chapter of the same profile (e.g. ``"03_train"``)."""
        return self.results / chapter


def start(results_dir: str, chapter: str) -> Chapter:
    """Resolve the results folder, pick the device, set the figure style; the chapter's first code cell."""
    set_style()
    results = resolve(results_dir)
    return Chapter(results=results, art=results / chapter, device=resolve_device("auto"))
