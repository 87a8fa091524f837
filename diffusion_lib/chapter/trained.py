"""Trained models as chapters use them: train or reuse a run, and load a chapter's model with its schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from ..core.paths import resolve
from ..diffusion.schedules import NoiseSchedule
from ..nets.registry import load_model
from ..nets.unet import UNet
from ..training.config import TrainConfig
from ..training.log import read_summary
from ..training.run import reuse_problem, train

__all__ = ["train_or_reuse", "load_trained"]


def train_or_reuse(cfg: TrainConfig, retrain: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The summary of ``cfg``'s run: reused when it can stand for ``cfg``, else trained (or resumed) now.

    ``retrain`` starts over, moving the old run aside. A stale run that cannot be
    resumed is an error that says why, never silently overwritten.
    """
    out = resolve(cfg.out_dir)
    if retrain:
        train(cfg, fresh=True)
    elif reuse_problem(cfg) is None:
        log(f"Reusing the finished run in {cfg.out_dir} (set retrain=True to train again).")
    else:
        train(cfg, resume=True)
    return read_summary(out / "summary.json")


def load_trained(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[UNet, NoiseSchedule, dict[str, Any]]:
    """The EMA model a training run saved in ``run_dir``, its noise schedule (on ``device``) and its metadata."""
    model, meta = load_model(resolve(run_dir) / "model_ema.pt", device=device)
    schedule = NoiseSchedule.from_name(meta["schedule"], meta["noise_steps"]).to(device)
    return model, schedule, meta
