"""Shared fixtures: tiny configurations that train in seconds on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

# nothing in the tests may touch the network
os.environ.setdefault("DIFFUSION_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def tiny_train_dict(out_dir: Path, **overrides) -> dict:
    """A training configuration that runs a few steps in a few seconds."""
    cfg = {
        "steps": 12,
        "batch_size": 16,
        "train_subset": 256,
        "noise_steps": 50,
        "model": {"base_channels": 8, "channel_mults": [1, 2], "time_dim": 8, "attention": False},
        "lr": 1e-3,
        "warmup_steps": 2,
        "sample_every": 0,
        "sample_n": 4,
        "checkpoint_every": 4,
        "out_dir": str(out_dir),
        "device": "cpu",
        "seed": 3,
    }
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


@pytest.fixture
def tiny_train(tmp_path):
    return lambda **kw: tiny_train_dict(tmp_path / "run", **kw)
