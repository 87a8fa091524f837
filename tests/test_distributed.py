"""Data-parallel training through torchrun: 2 CPU processes with gloo."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from diffusion_lib.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def _cfg(tmp_path, name, **kw):
    d = {"steps": 6, "batch_size": 16, "train_subset": 256, "noise_steps": 50, "device": "cpu", "threads": 1,
         "model": {"base_channels": 8, "channel_mults": [1, 2], "time_dim": 8, "attention": False},
         "checkpoint_every": 3, "seed": 5, "lr": 1e-3, "warmup_steps": 2, "out_dir": str(tmp_path / name), **kw}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump({"train": d}))
    return p


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path):
    env = {**os.environ, "DIFFUSION_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "diffusion_lib.train", "--config", str(_cfg(tmp_path, "one")),
                             "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "diffusion_lib.train", "--config", str(_cfg(tmp_path, "two")), "--no-progress"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["ranks"] == 2 and summary["ranks_in_sync"] is True  # both ranks ended with identical weights
    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 6
    # Summing the two halves' gradients in another order changes them in the last float bits, and
    # Adam divides each gradient by its own running scale, so a weight whose gradient is tiny can
    # move by up to lr per step whatever its bits say: a few single weights may differ. A wrong data
    # split or a missed all-reduce moves nearly every weight by a good fraction of lr (1e-3 here): with
    # other data, 92% of the model's weights differ by more than 1e-4 (the EMA has barely left its start).
    for part in ("model", "ema"):
        diffs = torch.cat([(v.float() - b["process"][part][k].float()).abs().flatten()
                           for k, v in a["process"][part].items()])
        off = (diffs > 1e-4).float().mean().item()
        assert off < 0.01, f"{part}: {off:.1%} of the weights differ by more than 1e-4"
    # the logged loss is the mean over ranks, so it matches the single process's loss on the same global
    # batch; the gradient norm is taken after the all-reduce, so a sum instead of a mean would double it
    rows = {n: [r.split(",") for r in (tmp_path / n / "metrics.csv").read_text().splitlines()[1:]] for n in ("one", "two")}
    for col in (1, 2):  # loss, grad_norm
        assert [float(r[col]) for r in rows["one"]] == pytest.approx([float(r[col]) for r in rows["two"]], rel=1e-4)


def test_global_batch_must_split_evenly(tmp_path, monkeypatch):
    from diffusion_lib.core.config import from_dict
    from diffusion_lib.training.config import TrainConfig
    from diffusion_lib.training.distributed import Distributed
    from diffusion_lib.core.errors import ConfigError
    from diffusion_lib.training.run import train

    monkeypatch.setattr(Distributed, "from_env", classmethod(lambda cls: cls(world_size=3, rank=0, local_rank=0)))
    cfg = yaml.safe_load(_cfg(tmp_path, "x").read_text())["train"]
    with pytest.raises(ConfigError, match="divisible by the 3 ranks"):
        train(from_dict(TrainConfig, cfg), progress=False, log=lambda *_: None)
