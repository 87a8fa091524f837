"""The training program: outputs, checkpoints, resume, interruption, bad input."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from diffusion_lib.nets.registry import load_model, save_model
from diffusion_lib.training.checkpoint import load_checkpoint
from diffusion_lib.core.config import from_dict
from diffusion_lib.training.config import TrainConfig
from diffusion_lib.core.errors import CheckpointError, ConfigError, DataError, NonFiniteLossError
from diffusion_lib.training.log import METRIC_COLUMNS, read_metrics
from diffusion_lib.training.run import train

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "DIFFUSION_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def cfg_of(d):
    return from_dict(TrainConfig, d)


def write_cfg(tmp_path, d, name="train.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump({"train": d}))
    return p


def run_cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "diffusion_lib.train", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, **kw)


def test_outputs_of_a_short_run(tiny_train):
    d = tiny_train(sample_every=6)
    res = train(cfg_of(d), progress=False, log=lambda *_: None)
    out = Path(d["out_dir"])
    rows = read_metrics(out / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert list(rows[0]) == METRIC_COLUMNS
    assert all(r["images_per_s"] > 0 for r in rows)
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_000006.png", "step_000012.png"]
    ck = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ck["step"] == 12 and {"model", "ema", "optimizer"} <= set(ck["process"])
    assert "torch" in ck["rng"] and ck["config"]["seed"] == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["images_seen"] == 12 * 16
    model, meta = load_model(res.model_path)
    assert meta["schedule"] == "linear" and meta["steps"] == 12


def test_sample_n_zero_draws_no_grid(tiny_train):
    d = tiny_train(sample_every=6, sample_n=0)
    res = train(cfg_of(d), progress=False, log=lambda *_: None)
    assert res.steps == 12 and res.model_path.exists()
    assert not list(Path(d["out_dir"]).glob("samples/*.png"))


def test_model_export_round_trip(tmp_path):
    from diffusion_lib import DiffusionModel

    m = DiffusionModel(28, 1, base_channels=8, channel_mults=(1, 2), time_dim=8)
    torch.nn.init.normal_(m.out_conv.weight, std=0.05)
    save_model(tmp_path / "m.pt", m, note="x")
    m2, meta = load_model(tmp_path / "m.pt")
    x, t = torch.randn(3, 1, 28, 28), torch.tensor([1, 500, 999])
    assert meta == {"note": "x"}
    assert torch.equal(m.eval()(x, t), m2(x, t))


def test_resume_in_process_equals_uninterrupted(tiny_train, tmp_path):
    full = tiny_train(deterministic=True)
    train(cfg_of(full), progress=False, log=lambda *_: None)
    part = {**full, "out_dir": str(tmp_path / "part")}
    train(cfg_of({**part, "steps": 8}), progress=False, log=lambda *_: None)
    notes = []
    res = train(cfg_of(part), resume=True, progress=False, log=notes.append)
    assert res.resumed_from == 8 and any("resumed from step 8" in n for n in notes)
    _assert_same_run(Path(full["out_dir"]), tmp_path / "part")


def _assert_same_run(a: Path, b: Path):
    ca, cb = load_checkpoint(a / "checkpoints/last.pt"), load_checkpoint(b / "checkpoints/last.pt")
    assert ca["step"] == cb["step"]
    for part in ("model", "ema"):
        sa, sb = ca["process"][part], cb["process"][part]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), (part, k)
    ra, rb = read_metrics(a / "metrics.csv"), read_metrics(b / "metrics.csv")
    assert [r["step"] for r in rb] == list(range(1, ca["step"] + 1))  # no step logged twice
    for x, y in zip(ra, rb):
        assert [x[k] for k in ("step", "loss", "grad_norm", "lr")] == [y[k] for k in ("step", "loss", "grad_norm", "lr")]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    base = {"steps": 60, "batch_size": 16, "train_subset": 512, "noise_steps": 50,
            "model": {"base_channels": 8, "channel_mults": [1, 2], "time_dim": 8, "attention": False},
            "checkpoint_every": 5, "device": "cpu", "threads": 1, "deterministic": True, "seed": 11}
    ref = write_cfg(tmp_path, {**base, "out_dir": str(tmp_path / "ref")}, "ref.yaml")
    assert run_cli(["--config", str(ref), "--no-progress"]).returncode == 0
    killed = write_cfg(tmp_path, {**base, "out_dir": str(tmp_path / "killed")}, "killed.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "diffusion_lib.train", "--config", str(killed), "--no-progress"],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    last = tmp_path / "killed/checkpoints/last.pt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(random.uniform(0.05, 0.6))  # a random step after the first checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    step_at_kill = load_checkpoint(last)["step"] if last.exists() else None
    r = run_cli(["--config", str(killed), "--resume", "--no-progress"])
    assert r.returncode == 0, r.stderr
    assert step_at_kill is None or step_at_kill < 60
    _assert_same_run(tmp_path / "ref", tmp_path / "killed")


def _signal_a_long_run(tmp_path, sig):
    """Start a long CPU training run, send ``sig`` once steps are running; return (returncode, stderr)."""
    base = {"steps": 5000, "batch_size": 16, "train_subset": 512, "noise_steps": 50,
            "model": {"base_channels": 8, "channel_mults": [1, 2], "time_dim": 8, "attention": False},
            "checkpoint_every": 1000, "device": "cpu", "out_dir": str(tmp_path / "run")}
    cfg = write_cfg(tmp_path, base)
    proc = subprocess.Popen([sys.executable, "-m", "diffusion_lib.train", "--config", str(cfg), "--no-progress"],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "run").exists() and time.time() < deadline:  # the run writes its folder, then trains
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_writes_checkpoint_and_says_how_to_resume(tmp_path, sig):
    code, err = _signal_a_long_run(tmp_path, sig)
    assert code == 130, err
    assert "--resume" in err and f"interrupted by signal {int(sig)}" in err
    ck = load_checkpoint(tmp_path / "run/checkpoints/last.pt")
    assert 0 < ck["step"] < 5000
    assert read_metrics(tmp_path / "run/metrics.csv")[-1]["step"] == ck["step"]


def test_cli_bad_config_one_message_nothing_written(tmp_path):
    cfg = write_cfg(tmp_path, {"stepz": 10, "lr": -1, "out_dir": str(tmp_path / "out")})
    r = run_cli(["--config", str(cfg)])
    assert r.returncode == 2
    assert r.stderr.startswith("error: invalid training configuration")
    assert "did you mean 'steps'" in r.stderr and "lr: must be in (0, 1)" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_cli_unknown_schedule(tmp_path):
    cfg = write_cfg(tmp_path, {"schedule": "sigmoid", "out_dir": str(tmp_path / "out")})
    r = run_cli(["--config", str(cfg)])
    assert r.returncode == 2 and "schedule: must be one of ['cosine', 'linear', 'quadratic']" in r.stderr


def test_existing_run_needs_resume_or_fresh(tiny_train):
    d = tiny_train(steps=4)
    train(cfg_of(d), progress=False, log=lambda *_: None)
    out = Path(d["out_dir"])
    before = {p: p.read_bytes() for p in [out / "checkpoints/last.pt", out / "model_ema.pt", out / "metrics.csv"]}
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg_of(d), progress=False, log=lambda *_: None)
    assert all(p.read_bytes() == b for p, b in before.items())
    # a finished run resumed is left alone
    notes = []
    train(cfg_of(d), resume=True, progress=False, log=notes.append)
    assert any("already complete" in n for n in notes)
    assert all(p.read_bytes() == b for p, b in before.items())
    # --fresh moves the old run aside, never deletes it
    train(cfg_of(d), fresh=True, progress=False, log=lambda *_: None)
    (old,) = out.glob("old-*")
    for p, b in before.items():
        assert (old / p.relative_to(out)).read_bytes() == b


def test_results_without_checkpoints_are_protected(tiny_train):
    """A fresh clone has the committed results but no checkpoints: training must not overwrite them."""
    d = tiny_train(steps=4)
    train(cfg_of(d), progress=False, log=lambda *_: None)
    out = Path(d["out_dir"])
    import shutil

    shutil.rmtree(out / "checkpoints")
    model = (out / "model_ema.pt").read_bytes()
    with pytest.raises(ConfigError, match="results of an earlier run"):
        train(cfg_of(d), progress=False, log=lambda *_: None)
    notes = []  # --resume on a finished run that can be reused: nothing to do
    train(cfg_of(d), resume=True, progress=False, log=notes.append)
    assert any("already complete" in n for n in notes)
    summary = json.loads((out / "summary.json").read_text())
    summary["fingerprint"] = [v + 1.0 for v in summary["fingerprint"]]  # as if the model code had changed
    (out / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match="cannot be reused .*model code has changed"):
        train(cfg_of(d), resume=True, progress=False, log=lambda *_: None)
    assert (out / "model_ema.pt").read_bytes() == model


def test_resume_with_a_different_run_is_refused(tiny_train):
    d = tiny_train(steps=4)
    train(cfg_of(d), progress=False, log=lambda *_: None)
    with pytest.raises(ConfigError, match="schedule"):
        train(cfg_of({**d, "schedule": "cosine"}), resume=True, progress=False, log=lambda *_: None)
    # more steps is a legitimate continuation
    res = train(cfg_of({**d, "steps": 6}), resume=True, progress=False, log=lambda *_: None)
    assert res.steps == 6


def test_truncated_checkpoint_falls_back_to_previous(tiny_train):
    d = tiny_train(steps=8, checkpoint_every=4)
    train(cfg_of(d), progress=False, log=lambda *_: None)
    ck = Path(d["out_dir"]) / "checkpoints"
    data = (ck / "last.pt").read_bytes()
    (ck / "last.pt").write_bytes(data[: len(data) // 2])
    notes = []
    res = train(cfg_of({**d, "steps": 10}), resume=True, progress=False, log=notes.append)
    assert res.resumed_from == 4
    assert any("truncated" in n for n in notes) and any("previous good checkpoint" in n for n in notes)


def test_foreign_checkpoint_is_a_clear_error(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a diffusion_lib/checkpoint/v1 file"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip at all")
    with pytest.raises(CheckpointError, match="truncated or is not a file this project can read"):
        load_checkpoint(tmp_path / "junk.pt")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_train, monkeypatch):
    from diffusion_lib.training.process import DiffusionProcess

    d = tiny_train(steps=10, checkpoint_every=4)
    real = DiffusionProcess.loss

    def poisoned(self, x0, t=None, noise=None, labels=None):
        loss = real(self, x0, t, noise, labels)
        return loss * float("nan") if self.trainer.step == 6 else loss

    monkeypatch.setattr(DiffusionProcess, "loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="step 7") as err:
        train(cfg_of(d), progress=False, log=lambda *_: None)
    assert "learning rate" in str(err.value)
    assert load_checkpoint(Path(d["out_dir"]) / "checkpoints/last.pt")["step"] == 4


def test_missing_dataset_names_the_four_files(tmp_path, monkeypatch, tiny_train):
    monkeypatch.setenv("DIFFUSION_SHARED_DATA", str(tmp_path / "nowhere"))
    d = tiny_train(data_root=str(tmp_path / "empty"))
    with pytest.raises(DataError) as err:
        train(cfg_of(d), progress=False, log=lambda *_: None)
    msg = str(err.value)
    for name in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]:
        assert name in msg
    assert str(tmp_path / "empty" / "MNIST" / "raw") in msg
    assert not Path(d["out_dir"]).exists()


def test_shared_folder_is_found_beside_any_folder_above(tmp_path, monkeypatch):
    from diffusion_lib.data import mnist, offline as data

    for var in ("DIFFUSION_SHARED", "DIFFUSION_SHARED_DATA"):
        monkeypatch.delenv(var, raising=False)
    checkout = tmp_path / "ci" / "work" / "main"
    checkout.mkdir(parents=True)
    monkeypatch.setattr(data, "project_root", lambda: checkout)
    monkeypatch.setenv("PWD", str(checkout))
    assert data.shared_dir() is None and data.shared_data_dir() is None
    with pytest.raises(DataError, match="No offline folder was found; looked for: .*work/shared"):
        mnist.load_mnist(checkout / "data")
    (tmp_path / "ci" / "shared" / "data").mkdir(parents=True)  # two levels up
    assert data.shared_dir() == tmp_path / "ci" / "shared"
    (tmp_path / "ci" / "work" / "shared" / "spec").mkdir(parents=True)  # beside wins
    assert data.shared_dir() == tmp_path / "ci" / "work" / "shared"
    assert data.shared_data_dir() is None  # that one has no data folder
    monkeypatch.setenv("DIFFUSION_SHARED", str(tmp_path / "ci" / "shared"))
    assert data.shared_data_dir() == tmp_path / "ci" / "shared" / "data"


def test_corrupt_dataset_file_names_file_and_checksum(tmp_path, tiny_train):
    from diffusion_lib.data.mnist import MNIST_FILES, prepare_mnist

    root = prepare_mnist(tmp_path / "data")  # copies the four files from the shared folder
    f = root / "MNIST/raw/train-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(DataError) as err:
        train(cfg_of(tiny_train(data_root=str(root))), progress=False, log=lambda *_: None)
    msg = str(err.value)
    assert "train-labels-idx1-ubyte.gz" in msg and MNIST_FILES["train-labels-idx1-ubyte.gz"] in msg
    assert "make data" in msg


def test_fresh_data_folder_loads_offline(tmp_path, monkeypatch):
    """A new clone's first `make data` under DIFFUSION_OFFLINE=1: copy, verify, extract, load."""
    from diffusion_lib.data.mnist import load_mnist

    monkeypatch.setenv("DIFFUSION_OFFLINE", "1")
    x, y = load_mnist(tmp_path / "fresh", train=False)
    assert x.shape == (10000, 28, 28) and y[:5].tolist() == [7, 2, 1, 0, 4]
    raw = tmp_path / "fresh" / "MNIST" / "raw"
    assert (raw / "t10k-images-idx3-ubyte").stat().st_size == 7_840_016 and not list(raw.glob("*.tmp"))


def test_mnist_loads_offline_with_known_statistics():
    from diffusion_lib.data.mnist import load_mnist

    x, y = load_mnist("data", train=True)
    assert x.shape == (60000, 28, 28) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert (x.float() / 255).mean().item() == pytest.approx(0.130660, abs=1e-5)
    xt, yt = load_mnist("data", train=False)
    assert xt.shape == (10000, 28, 28) and yt[:5].tolist() == [7, 2, 1, 0, 4]


def test_batches_resume_exactly():
    from diffusion_lib.data.batches import TensorBatches

    imgs = torch.arange(100, dtype=torch.uint8).view(100, 1, 1)
    a = TensorBatches(imgs, 16, seed=1)
    seq = [a.next() for _ in range(9)]  # crosses an epoch boundary (6 batches per epoch)
    b = TensorBatches(imgs, 16, seed=1)
    for _ in range(4):
        b.next()
    c = TensorBatches(imgs, 16, seed=99)
    c.load_state_dict(b.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(seq[4:], [c.next() for _ in range(5)]))
    assert torch.equal(torch.sort(torch.cat(seq[:6]).flatten()).values.unique(), torch.cat(seq[:6]).flatten().unique())


def test_disk_full_errors_before_touching_the_old_checkpoint(tiny_train, monkeypatch):
    import collections
    import shutil as sh

    d = tiny_train(steps=4, checkpoint_every=2)
    train(cfg_of(d), progress=False, log=lambda *_: None)
    ck = Path(d["out_dir"]) / "checkpoints"
    before = {p.name: p.read_bytes() for p in ck.iterdir()}
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(CheckpointError, match="not enough disk space"):
        train(cfg_of({**d, "steps": 6}), resume=True, progress=False, log=lambda *_: None)
    assert {p.name: p.read_bytes() for p in ck.iterdir()} == before  # nothing replaced, no temp files left


def _run_whose_code_changed(tiny_train):
    """A finished 4-step run whose summary records another fingerprint, as if the model code had changed."""
    d = tiny_train(steps=4)
    train(cfg_of(d), progress=False, log=lambda *_: None)
    out = Path(d["out_dir"])
    summary = json.loads((out / "summary.json").read_text())
    summary["fingerprint"] = [v + 1.0 for v in summary["fingerprint"]]
    (out / "summary.json").write_text(json.dumps(summary))
    return d, out, summary


def test_a_model_whose_code_changed_is_retrained_never_relabelled(tiny_train):
    """With checkpoints on disk and a fingerprint that no longer matches, resuming would stamp old weights as new."""
    from diffusion_lib.chapter.runs import train_or_reuse

    d, out, summary = _run_whose_code_changed(tiny_train)
    old_model = (out / "model_ema.pt").read_bytes()
    with pytest.raises(ConfigError, match="cannot be reused .*model code has changed"):
        train(cfg_of(d), resume=True, progress=False, log=lambda *_: None)
    notes = []
    train_or_reuse(cfg_of(d), log=notes.append)
    assert any("from scratch" in n for n in notes), notes
    (old,) = out.glob("old-*")
    assert (old / "model_ema.pt").read_bytes() == old_model  # moved aside, not lost
    fresh = json.loads((out / "summary.json").read_text())
    assert fresh["fingerprint"] != summary["fingerprint"] and fresh["steps"] == 4


def test_a_committed_run_whose_steps_grew_trains_again_when_it_has_no_checkpoint(tiny_train):
    """A clone holds a chapter's finished runs without their checkpoints (they are not committed): when the chapter
    asks for more steps there is nothing to continue, so the run trains from scratch, the old one moved aside."""
    import shutil

    from diffusion_lib.chapter.runs import train_or_reuse

    d = tiny_train(steps=4)
    train(cfg_of(d), progress=False, log=lambda *_: None)
    out = Path(d["out_dir"])
    shutil.rmtree(out / "checkpoints")
    notes = []
    train_or_reuse(cfg_of({**d, "steps": 6}), log=notes.append)
    assert any("from scratch" in n for n in notes), notes
    assert json.loads((out / "summary.json").read_text())["steps"] == 6
    (old,) = out.glob("old-*")
    assert json.loads((old / "summary.json").read_text())["steps"] == 4


def test_a_compacted_run_is_reused_as_stored_and_measures_its_stored_weights(tiny_train):
    """Chapters 05 and 07 commit their runs in float16: half the bytes, snapshots too, the fingerprint taken again
    from the stored weights, reused without training, and compacting twice changes nothing."""
    from diffusion_lib.chapter.committed import compact
    from diffusion_lib.chapter.runs import train_or_reuse
    from diffusion_lib.nets.registry import fingerprint

    d = tiny_train(steps=4, snapshot_every=2)
    train(cfg_of(d), progress=False, log=lambda *_: None)
    out = Path(d["out_dir"])
    full, _ = load_model(out / "model_ema.pt")
    size, recorded = (out / "model_ema.pt").stat().st_size, json.loads((out / "summary.json").read_text())
    compact(out)
    for f in (out / "model_ema.pt", out / "snapshots" / "ema_000002.pt"):
        stored = torch.load(f, weights_only=True)["state_dict"]
        assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}, f
    assert (out / "model_ema.pt").stat().st_size < 0.6 * size
    half, _ = load_model(out / "model_ema.pt")  # float32 parameters holding the float16 values
    for k, a in full.state_dict().items():
        assert torch.equal(half.state_dict()[k], a.half().to(a.dtype)), k
    summary = json.loads((out / "summary.json").read_text())
    assert summary["weights"] == "float16"
    assert summary["fingerprint"] == fingerprint(half) != recorded["fingerprint"]
    files = lambda: {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "eval_cache" not in p.parts}  # noqa: E731
    before = files()
    compact(out)
    notes = []
    train_or_reuse(cfg_of(d), log=notes.append)
    assert any("Reusing" in n for n in notes), notes
    assert files() == before  # nothing trained or rewritten


def test_compacting_refuses_a_run_its_summary_does_not_describe(tiny_train):
    """A run whose weights no longer compute what its summary records is not relabelled with a new fingerprint."""
    from diffusion_lib.chapter.committed import compact

    d, out, summary = _run_whose_code_changed(tiny_train)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(CheckpointError, match="no longer computes what"):
        compact(out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
