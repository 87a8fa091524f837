"""``python -m diffusion_lib.sample``: the report's samplers from the command line, on any model file the project saves."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from diffusion_lib.diffusion.generate import SamplerSpec, generate
from diffusion_lib.diffusion.schedules import NoiseSchedule
from diffusion_lib.nets.inference import FastModel
from diffusion_lib.nets.registry import load_model
from diffusion_lib.sample import main

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "results" / "cpu" / "03_train" / "model_ema.pt"
CIFAR = ROOT / "results" / "cpu" / "08_cifar10" / "model_ema.pt"


def _images(path: Path) -> np.ndarray:
    return np.load(path)["images"]


def test_the_command_draws_what_the_library_draws(tmp_path):
    """DDIM, eager float32, the same seed and batch size: the library's generate() through the same backend, bit for
    bit."""
    out = tmp_path / "s.npz"
    assert main([str(MNIST), "-n", "6", "--seed", "3", "--steps", "5", "--backend", "eager", "--batch-size", "4",
                 "--npz", str(out), "--no-progress"]) == 0
    model, meta = load_model(MNIST)
    schedule = NoiseSchedule.from_name(meta["schedule"], meta["noise_steps"])
    want, _ = generate(FastModel(model, "eager"), schedule, SamplerSpec("ddim", 5), 6, seed=3, batch_size=4)
    got = _images(out)
    assert got.shape == (6, 1, 28, 28) and got.dtype == np.float32
    assert np.array_equal(got, want.numpy())


def test_a_seed_gives_the_same_images_and_every_output_is_written(tmp_path):
    args = [str(CIFAR), "-n", "3", "--sampler", "dpm++2m", "--steps", "3", "--backend", "eager", "--no-progress"]
    assert main(args + ["--seed", "1", "--npz", str(tmp_path / "a.npz"), "--out", str(tmp_path / "grid.png"),
                        "--out-dir", str(tmp_path / "each")]) == 0
    assert main(args + ["--seed", "1", "--npz", str(tmp_path / "b.npz")]) == 0
    assert main(args + ["--seed", "2", "--npz", str(tmp_path / "c.npz")]) == 0
    a, b, c = (_images(tmp_path / f"{k}.npz") for k in "abc")
    assert a.shape == (3, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert Image.open(tmp_path / "each" / "00001.png").size == (32, 32)
    assert Image.open(tmp_path / "grid.png").mode == "RGB"


@pytest.mark.parametrize("args, message", [
    (["--sampler", "ddpm", "--steps", "50"], "DDPM runs all T = 1000 steps"),
    (["--steps", "0"], "sampling steps must be integers in [1, 1000]"),
    (["--eta", "1.5"], "eta: must be in [0, 1]"),
])
def test_bad_settings_are_one_message_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "s.png"
    assert main([str(MNIST), "--out", str(out), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_a_file_that_is_not_a_model_is_named_with_the_fix(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("not a model")
    r = subprocess.run([sys.executable, "-m", "diffusion_lib.sample", str(bad), "--out", str(tmp_path / "s.png")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {bad}") and "model_ema.pt" in r.stderr
    assert "Traceback" not in r.stderr and sorted(tmp_path.iterdir()) == [bad]


def test_the_default_backend_is_bf16_only_where_it_is_native(monkeypatch):
    import diffusion_lib.sample as sample

    monkeypatch.setattr(sample, "bf16_native", lambda device: False)
    assert sample.default_backend(torch.device("cpu")) == "eager"
    monkeypatch.setattr(sample, "bf16_native", lambda device: True)
    assert sample.default_backend(torch.device("cpu")) == "bf16"


@pytest.mark.slow
def test_a_lean_install_trains_and_samples(tmp_path):
    """`pip install .` alone (no chapter, report or benchmark packages) trains a model and samples from it.

    .ci/run makes that install in a venv of its own and names its Python in LEAN_PYTHON.
    """
    python = os.environ.get("LEAN_PYTHON")
    if not python:
        if os.environ.get("CI"):
            pytest.fail("CI must set LEAN_PYTHON to the Python of a venv made with `pip install .` alone")
        pytest.skip("set LEAN_PYTHON to the Python of a venv made with `pip install .` alone (.ci/run makes one)")
    from conftest import tiny_train_dict

    def run(*args):
        r = subprocess.run([python, *args], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "DIFFUSION_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")})
        assert r.returncode == 0, r.stderr[-2000:]
        return r

    assert "matplotlib" in run("-c", "import importlib.util as u; print([m for m in ('matplotlib', 'pandas', "
                               "'seaborn', 'papermill', 'onnx') if u.find_spec(m) is None])").stdout  # really lean
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({"train": {**tiny_train_dict(tmp_path / "run"), "data_root": str(ROOT / "data")}}))
    run("-m", "diffusion_lib.train", "--config", str(cfg), "--no-progress")
    bin_dir = Path(python).parent
    run(str(bin_dir / "diffusion-sample"), str(tmp_path / "run" / "model_ema.pt"), "-n", "4", "--steps", "3",
        "--npz", "s.npz", "--no-progress")
    assert np.load(tmp_path / "s.npz")["images"].shape == (4, 1, 28, 28)
    # a folder of your own images, through the same lean install
    from test_folder import shapes

    shapes(tmp_path / "shapes", n=64, size=16)
    folder_cfg = tmp_path / "folder.yaml"
    folder_cfg.write_text(yaml.safe_dump({"train": {**tiny_train_dict(tmp_path / "folder_run"), "dataset": "folder",
                                                    "data_root": str(tmp_path / "shapes"), "image_size": 16,
                                                    "channels": 3}}))
    run("-m", "diffusion_lib.train", "--config", str(folder_cfg), "--no-progress")
    run(str(bin_dir / "diffusion-sample"), str(tmp_path / "folder_run" / "model_ema.pt"), "-n", "4", "--steps", "3",
        "--npz", "f.npz", "--no-progress")
    assert np.load(tmp_path / "f.npz")["images"].shape == (4, 3, 16, 16)


def test_a_device_that_is_not_there_is_one_message(tmp_path, capsys):
    for device in ["nonsense"] + ([] if torch.cuda.is_available() else ["cuda"]):
        assert main([str(MNIST), "--device", device, "--out", str(tmp_path / "s.png")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --device {device}") and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_an_output_that_cannot_be_written_is_one_message(tmp_path, capsys):
    blocked = tmp_path / "file"
    blocked.write_text("a file where a folder should be")
    assert main([str(MNIST), "-n", "2", "--steps", "2", "--no-progress", "--npz", str(tmp_path / "ok.npz"),
                 "--out-dir", str(blocked / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not write") and "written: nothing" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
