"""Runs a chapter commits: their EMA weights stored in float16, so a fresh clone reuses them instead of retraining.

Chapter 05's 22 short runs and chapter 07's same-minutes diffusion run (with its
snapshots) take half the bytes so.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.files import load_tagged, save_tagged
from ..core.paths import resolve
from ..nets.registry import MODEL_FORMAT, fingerprint, load_model
from ..training.log import read_summary, write_summary

__all__ = ["compact"]


def _to_float16(path: Path) -> bool:
    """Rewrite a model file's float32 weights in float16; whether there were any."""
    obj = load_tagged(path, MODEL_FORMAT, required=("unet", "state_dict"))
    if not any(v.dtype == torch.float32 for v in obj["state_dict"].values()):
        return False
    obj["state_dict"] = {k: v.half() if v.dtype == torch.float32 else v for k, v in obj["state_dict"].items()}
    save_tagged(path, obj.pop("format"), obj)
    return True


def compact(run_dir: str | Path) -> None:
    """Store a finished run's EMA weights (and snapshots) in float16, and record what the stored weights compute.

    The run's fingerprint is taken again from the rounded weights, so the run is
    reused as it is stored, and what a chapter measures is the stored weights. A
    run already stored so is left as it is.
    """
    out = resolve(run_dir)
    for snapshot in sorted((out / "snapshots").glob("ema_*.pt")):
        _to_float16(snapshot)
    if _to_float16(out / "model_ema.pt"):
        summary = read_summary(out / "summary.json")  # interrupted here, the run counts as stale: it trains again
        summary["fingerprint"] = fingerprint(load_model(out / "model_ema.pt")[0])
        write_summary(out / "summary.json", summary)
