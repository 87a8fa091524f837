"""Training on a folder of your own images, through the command line: train, kill, resume, sample; bad folders."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_lib.core.errors import DataError
from diffusion_lib.data.folder import cache_dir, load_folder
from diffusion_lib.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def shapes(folder: Path, n: int = 512, size: int = 16) -> Path:
    """``n`` PNGs of a coloured disc or square on a coloured ground, in two class subfolders."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        kind = ("discs", "squares")[i % 2]
        cx, cy, r = rng.uniform(4, size - 4, 2).tolist() + [rng.uniform(2, 5)]
        inside = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r) if kind == "discs" else \
            (abs(xx - cx) < r) & (abs(yy - cy) < r)
        img = np.empty((size, size, 3), np.uint8)
        img[:] = rng.integers(0, 120, 3)
        img[inside] = rng.integers(120, 256, 3)
        (folder / kind).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / kind / f"{i:04d}.png")
    return folder


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}


def train_cli(args, env, **kw):
    return subprocess.run([sys.executable, "-m", "diffusion_lib.train", *args, "--no-progress"], cwd=ROOT, env=env,
                          capture_output=True, text=True, **kw)


def write_config(path: Path, folder: Path, out: Path, steps: int) -> Path:
    path.write_text(f"""train:
  dataset: folder
  data_root: {folder}
  image_size: 16
  channels: 3
  hflip: true
  steps: {steps}
  batch_size: 32
  lr: 0.001
  warmup_steps: 10
  checkpoint_every: 20
  model: {{base_channels: 16, channel_mults: [1, 2], time_dim: 16, attention: false}}
  noise_steps: 100
  out_dir: {out}
  device: cpu
  threads: 1
  deterministic: true
""")
    return path


@pytest.mark.slow
def test_train_kill_resume_and_sample_a_folder(tmp_path, env):
    folder = shapes(tmp_path / "shapes")
    ref = write_config(tmp_path / "ref.yaml", folder, tmp_path / "ref", 200)
    r = train_cli(["--config", str(ref)], env)
    assert r.returncode == 0, r.stderr
    assert len(list(Path(env["XDG_CACHE_HOME"], "diffusion_lib/folders").glob("*.pt"))) == 1  # decoded once

    killed = write_config(tmp_path / "killed.yaml", folder, tmp_path / "killed", 200)
    proc = subprocess.Popen([sys.executable, "-m", "diffusion_lib.train", "--config", str(killed), "--no-progress"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    last = tmp_path / "killed/checkpoints/last.pt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert load_checkpoint(last)["step"] < 200
    r = train_cli(["--config", str(killed), "--resume"], env)
    assert r.returncode == 0, r.stderr
    a, b = (load_checkpoint(tmp_path / d / "checkpoints/last.pt")["process"]["ema"] for d in ("ref", "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the resumed run is the uninterrupted one, bitwise

    def sample(seed, out):
        s = subprocess.run([sys.executable, "-m", "diffusion_lib.sample", str(tmp_path / "killed/model_ema.pt"),
                            "-n", "6", "--seed", str(seed), "--steps", "10", "--npz", str(out), "--no-progress"],
                           cwd=ROOT, env=env, capture_output=True, text=True)
        assert s.returncode == 0, s.stderr
        return np.load(out)["images"]

    x, y, z = sample(1, tmp_path / "a.npz"), sample(1, tmp_path / "b.npz"), sample(2, tmp_path / "c.npz")
    assert x.shape == (6, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(x, y) and not np.array_equal(x, z)


def test_the_data_option_trains_on_a_folder_without_a_config(tmp_path, env):
    folder = shapes(tmp_path / "shapes", n=130)  # the default batch is 128
    r = train_cli(["--data", str(folder), "--image-size", "16", "--channels", "3", "--steps", "3",
                   "--out-dir", str(tmp_path / "run"), "--device", "cpu"], env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run/model_ema.pt").exists()
    r = train_cli(["--steps", "3"], env)
    assert r.returncode == 2 and "--data DIR" in r.stderr


def test_classes_come_from_subfolders_and_the_cache_is_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = shapes(tmp_path / "shapes", n=10)
    x, y, names = load_folder(folder, 8, 1, progress=False)
    assert x.shape == (10, 1, 8, 8) and x.dtype == torch.uint8
    assert names == ["discs", "squares"] and y.tolist() == [0] * 5 + [1] * 5  # files in sorted order
    assert len(list(cache_dir().glob("*.pt"))) == 1
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("the cached folder was decoded again"))
    assert torch.equal(load_folder(folder, 8, 1, progress=False)[0], x)


@pytest.mark.parametrize("problem", ["missing", "empty", "no images", "corrupt", "size", "channels"])
def test_a_bad_folder_is_one_message_and_nothing_is_written(tmp_path, env, problem):
    folder = tmp_path / "images"
    if problem not in ("missing", "empty", "no images"):
        shapes(folder, n=8)
    if problem == "empty":
        folder.mkdir()
    if problem == "no images":
        folder.mkdir()
        (folder / "notes.txt").write_text("not an image")
    if problem == "corrupt":
        (folder / "discs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        good = (folder / "squares" / "0001.png").read_bytes()
        (folder / "squares" / "cut.png").write_bytes(good[: len(good) // 2])
    size = "18" if problem == "size" else "16"
    channels = ["--channels", "3"] if problem != "channels" else ["--channels", "2"]
    r = train_cli(["--data", str(folder), "--image-size", size, *channels, "--steps", "2",
                   "--out-dir", str(tmp_path / "run"), "--device", "cpu"], env)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") or problem == "channels" and "invalid choice" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists() and not Path(env["XDG_CACHE_HOME"]).exists()
    expected = {"missing": "is not a folder", "empty": "holds no PNG, JPEG or WebP image",
                "no images": "holds no PNG, JPEG or WebP image", "size": "cannot be halved",
                "corrupt": "2 of the 10 images", "channels": "invalid choice"}[problem]
    assert expected in r.stderr
    if problem == "corrupt":
        assert "broken.png" in r.stderr and "cut.png" in r.stderr


def test_a_folder_of_grayscale_digits_loads_like_mnist(tmp_path, monkeypatch):
    """28x28 grayscale PNGs of MNIST digits come back as the very pixels (no resampling at the same size)."""
    from diffusion_lib.data.datasets import load_split

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    try:
        x, y = load_split("mnist", "data", train=False)
    except DataError:
        pytest.skip("MNIST is not prepared (make data)")
    for i in range(20):
        (tmp_path / "digits" / str(int(y[i]))).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i, 0].numpy()).save(tmp_path / "digits" / str(int(y[i])) / f"{i:03d}.png")
    images, labels, names = load_folder(tmp_path / "digits", 28, 1, progress=False)
    order = sorted(range(20), key=lambda i: (str(int(y[i])), f"{i:03d}"))
    assert torch.equal(images, x[order]) and names == sorted({str(int(v)) for v in y[:20]})


@pytest.mark.slow
def test_the_readme_commands_run(tmp_path, env):
    """The three commands of README's "Use it on your own images", as written (fewer steps and images)."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Use it on your own images"):].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].split() for line in block.strip().splitlines()]
    assert [c[:3] for c in commands] == [["python", "-m", "diffusion_lib.train"], ["python", "-m", "diffusion_lib.sample"],
                                         ["python", "-m", "diffusion_lib.export"]]
    shapes(tmp_path / "my_images", n=140, size=32)
    shorter = {"--steps": "2", "-n": "4"}
    for cmd in commands:
        cmd = [sys.executable] + [shorter.get(prev, a) for prev, a in zip([""] + cmd, cmd)][1:]
        if "diffusion_lib.sample" in cmd:
            cmd += ["--steps", "5"]
        r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert r.returncode == 0, (cmd, r.stderr)
    assert (tmp_path / "runs/my_images/model_ema.pt").exists()
    assert Image.open(tmp_path / "samples.png").size[0] > 32 and (tmp_path / "my_images.onnx").exists()
