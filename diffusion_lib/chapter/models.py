"""A chapter's trained model, loaded with its noise schedule (this module does not import the training run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..core.paths import resolve
from ..diffusion.schedules import NoiseSchedule
from ..nets.registry import load_model
from ..nets.unet import UNet

__all__ = ["load_trained"]


def load_trained(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[UNet, NoiseSchedule, dict[str, Any]]:
    """The EMA model a training run saved in ``run_dir``, its noise schedule (on ``device``) and its metadata.

    ``run_dir`` may also name a model file itself (a snapshot, ``snapshots/ema_<step>.pt``).
    """
    path = resolve(run_dir)
    model, meta = load_model(path if path.is_file() else path / "model_ema.pt", device=device)
    schedule = NoiseSchedule.from_name(meta["schedule"], meta["noise_steps"]).to(device)
    return model, schedule, meta
