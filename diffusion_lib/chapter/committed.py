"""Runs a chapter commits: their EMA weights stored in float16, so a fresh clone reuses them instead of retraining.

Chapter 05's 22 short runs and chapter 07's same-minutes diffusion run (with its
snapshots) are committed so, in half the bytes of float32.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.errors import CheckpointError
from ..core.files import load_tagged, save_tagged
from ..core.paths import resolve
from ..nets.registry import MODEL_FORMAT, fingerprint, load_model, same_function
from ..training.log import read_summary, write_summary

__all__ = ["compact"]


def _to_float16(path: Path) -> None:
    """Rewrite a model file's float32 weights in float16 (a file without any is left as it is)."""
    obj = load_tagged(path, MODEL_FORMAT, required=("unet", "state_dict"))
    if not any(v.dtype == torch.float32 for v in obj["state_dict"].values()):
        return
    half = {k: v.half() if v.dtype == torch.float32 else v for k, v in obj["state_dict"].items()}
    if not all(bool(torch.isfinite(v).all()) for v in half.values() if v.is_floating_point()):
        raise CheckpointError(f"{path}: some weights lie beyond float16's range; the file is left in float32")
    save_tagged(path, obj.pop("format"), {**obj, "state_dict": half})


def compact(run_dir: str | Path) -> None:
    """Store a finished run's EMA weights (and snapshots) in float16, and record what the stored weights compute.

    The run must still compute what its summary records (its fingerprint), so
    that no run trained by other code is relabelled. The fingerprint is then taken
    again from the rounded weights and the summary marked ``"weights": "float16"``:
    the run is reused as it is stored, and a chapter measures the stored weights.
    A compacted run is left as it is; one interrupted between its two files is
    completed.
    """
    out = resolve(run_dir)
    for snapshot in sorted((out / "snapshots").glob("ema_*.pt")):
        _to_float16(snapshot)
    summary = read_summary(out / "summary.json")
    if summary.get("weights") == "float16":
        return
    model_file = out / "model_ema.pt"
    stored = load_tagged(model_file, MODEL_FORMAT, required=("state_dict",))["state_dict"]
    if any(v.dtype == torch.float32 for v in stored.values()):  # not yet rounded: the run its summary describes
        if not same_function(fingerprint(load_model(model_file)[0]), summary.get("fingerprint") or []):
            raise CheckpointError(f"{model_file} no longer computes what {out / 'summary.json'} records; "
                                  "train the run again before compacting it")
        _to_float16(model_file)
    summary.update(weights="float16", fingerprint=fingerprint(load_model(model_file)[0]))
    write_summary(out / "summary.json", summary)
