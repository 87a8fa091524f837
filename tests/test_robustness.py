"""Nothing lost, nothing unclear: kill the training program anywhere, feed it bad files, interrupt it twice.

The kill-anywhere test runs the training program through ``tests/fault_harness.py``,
whose fault points wrap what the program calls: it SIGKILLs itself at the N-th point
it reaches (inside every write of a checkpoint round, and after every step), is
resumed, and must end with every artifact equal to an uninterrupted run's.
"""

import hashlib
import os
import random
import resource
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from diffusion_lib.core.errors import CheckpointError, NonFiniteLossError
from diffusion_lib.core.files import save_tagged
from diffusion_lib.nets.registry import MODEL_FORMAT, load_model
from diffusion_lib.training.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from diffusion_lib.training.log import read_metrics, read_summary

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "DIFFUSION_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
for var in ("DIFFUSION_KILL_AT", "DIFFUSION_FAULT_LOG"):
    ENV.pop(var, None)

TINY = {"steps": 24, "batch_size": 16, "train_subset": 256, "noise_steps": 20, "device": "cpu", "threads": 1,
        "deterministic": True, "seed": 5, "checkpoint_every": 4, "sample_every": 8, "sample_n": 4,
        "model": {"base_channels": 8, "channel_mults": [1, 2], "time_dim": 8, "attention": False}}
TIMING_COLUMNS = {"images_per_s", "elapsed_s"}
TIMING_FIELDS = {"train_seconds", "wall_seconds", "images_per_s"}


def write_cfg(folder: Path, out: Path, **over) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"{out.name}.yaml"
    p.write_text(yaml.safe_dump({"train": {**TINY, **over, "out_dir": str(out)}}))
    return p


HARNESS = [sys.executable, str(ROOT / "tests" / "fault_harness.py"), "diffusion_lib.train"]  # python -m, with faults


def cli(*args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*HARNESS, *map(str, args), "--no-progress"], cwd=ROOT,
                          env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=600, **kw)


def tree_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _equal_states(a, b, where="") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _equal_states(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _equal_states(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def assert_same_artifacts(ref: Path, run: Path) -> None:
    """Every artifact of ``run`` equals ``ref``'s, timing columns and fields aside; no litter left."""
    ca, cb = load_checkpoint(ref / "checkpoints/last.pt"), load_checkpoint(run / "checkpoints/last.pt")
    for c in (ca, cb):  # the runs differ in where they write, by construction
        c["config"].pop("out_dir")
    for key in ("step", "process", "data", "rng", "config"):
        _equal_states(ca[key], cb[key], key)
    ma, mb = load_model(ref / "model_ema.pt")[0].state_dict(), load_model(run / "model_ema.pt")[0].state_dict()
    _equal_states(ma, mb, "model_ema")
    ra, rb = read_metrics(ref / "metrics.csv"), read_metrics(run / "metrics.csv")
    assert [r["step"] for r in rb] == list(range(1, TINY["steps"] + 1))
    assert [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in ra] == \
        [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rb]
    sa, sb = read_summary(ref / "summary.json"), read_summary(run / "summary.json")
    for summary in (sa, sb):
        summary["config"].pop("out_dir")
    assert {k: v for k, v in sa.items() if k not in TIMING_FIELDS} == {k: v for k, v in sb.items() if k not in TIMING_FIELDS}
    assert tree_digest(ref / "samples") == tree_digest(run / "samples")
    assert not [p for p in run.rglob("*.tmp")], "a killed write left a temporary file behind"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, and the names of the fault points it passes through."""
    base = tmp_path_factory.mktemp("kill")
    log = base / "faults.log"
    r = cli("--config", write_cfg(base, base / "ref"), env={"DIFFUSION_FAULT_LOG": str(log)})
    assert r.returncode == 0, r.stderr
    points = [line.split("\t", 1)[1] for line in log.read_text().splitlines()]
    return base, base / "ref", points


def test_the_fault_points_cover_every_write(reference):
    _, _, points = reference
    names = set(points)
    for what in ("last.pt", "metrics.csv", "model_ema.pt", "summary.json", "step_000008.png"):
        for stage in ("written, not synced", "synced, not renamed", "done"):
            assert f"write {what}: {stage}" in names, (what, stage)
    assert "move last.pt to prev.pt" in names
    assert points.count("training step done") == TINY["steps"]


def _kill_and_resume(base: Path, ref_points: list[str], k: int) -> tuple[int, str]:
    out = base / f"k{k:03d}"
    cfg = write_cfg(base / "cfg", out)
    killed = cli("--config", cfg, env={"DIFFUSION_KILL_AT": str(k)})
    assert killed.returncode == -signal.SIGKILL, (k, ref_points[k - 1], killed.returncode, killed.stderr[-2000:])
    resumed = cli("--config", cfg, "--resume")
    assert resumed.returncode == 0, (k, ref_points[k - 1], resumed.stderr[-3000:])
    assert_same_artifacts(base / "ref", out)
    return k, ref_points[k - 1]


@pytest.mark.slow
def test_kill_anywhere_then_resume_equals_the_uninterrupted_run(reference):
    base, _, points = reference
    rng = random.Random(2026)
    # every kind of point at least once (its first occurrence after the first checkpoint), then random ones
    first_ckpt = points.index("write last.pt: done") + 1
    kinds = {}
    for i, name in enumerate(points[first_ckpt:], start=first_ckpt + 1):
        kinds.setdefault(name.split(":")[-1] if name.startswith("write") else name, i)
    chosen = sorted(set(kinds.values()) | {1, 2, len(points)} | set(rng.sample(range(1, len(points) + 1), 26)))
    assert len(chosen) >= 30
    with ThreadPoolExecutor(max_workers=2) as pool:  # two single-threaded runs at a time on a 2-core machine
        done = list(pool.map(lambda k: _kill_and_resume(base, points, k), chosen))
    assert len(done) == len(chosen)


# ----------------------------------------------------------------------------- bad input, one message each
def _message_case(tmp_path: Path, setup) -> tuple[subprocess.CompletedProcess, dict, dict]:
    """Run the CLI on what ``setup`` prepares; return the result and the tree digests before and after."""
    args, watch = setup(tmp_path)
    before = tree_digest(watch) if watch.exists() else {}
    r = cli(*args)
    after = tree_digest(watch) if watch.exists() else {}
    return r, before, after


def _finished_run(tmp_path: Path, **over) -> tuple[Path, Path]:
    out = tmp_path / "run"
    cfg = write_cfg(tmp_path / "cfg", out, **{"steps": 8, "sample_every": 0, **over})
    assert cli("--config", cfg).returncode == 0
    return cfg, out


def _binary_config(tmp_path):
    p = tmp_path / "binary.yaml"
    p.write_bytes(bytes(range(256)) * 4)
    return ["--config", p], tmp_path


def _empty_config(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("")
    return ["--config", p], tmp_path


def _empty_train_section(tmp_path):
    p = tmp_path / "empty_train.yaml"
    p.write_text("profile: cpu\ntrain:\n")
    return ["--config", p], tmp_path


def _huge_seed(tmp_path):
    return ["--config", write_cfg(tmp_path, tmp_path / "out", seed=2**70)], tmp_path


def _out_dir_not_creatable(tmp_path):
    return ["--config", write_cfg(tmp_path, Path("/proc/no/such/run"))], tmp_path


def _data_root_is_a_file(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    return ["--config", write_cfg(tmp_path, tmp_path / "out", data_root=str(f))], tmp_path


def _corrupt_metrics(tmp_path):
    cfg, out = _finished_run(tmp_path, steps=8, checkpoint_every=4)
    (out / "summary.json").unlink()  # unfinished: resume must read the metrics
    (out / "metrics.csv").write_text("step,loss\n1,oops\n")
    return ["--config", cfg, "--resume"], out


def _summary_is_a_list(tmp_path):
    cfg, out = _finished_run(tmp_path)
    (out / "summary.json").write_text("[1, 2, 3]")
    return ["--config", cfg, "--resume"], out


def _summary_not_json(tmp_path):
    cfg, out = _finished_run(tmp_path)
    (out / "summary.json").write_text("{not json")
    return ["--config", cfg, "--resume"], out


BAD_INPUTS = [
    (_binary_config, "is not a text file", "binary.yaml"),
    (_empty_config, "holds no training configuration (it is empty)", "empty.yaml"),
    (_empty_train_section, "holds no training configuration (its train: section is empty)", "empty_train.yaml"),
    (_huge_seed, "seed: must be an integer in [0, 2**63)", "out.yaml"),
    (_out_dir_not_creatable, "out_dir /proc/no/such/run", "/proc/no/such/run"),
    (_data_root_is_a_file, "is a file, not a folder", "a_file"),
    (_corrupt_metrics, "metrics.csv is damaged", "metrics.csv"),
    (_summary_is_a_list, "summary.json is damaged (it holds a list", "summary.json"),
    (_summary_not_json, "summary.json is damaged", "summary.json"),
]


@pytest.mark.parametrize("setup,needle,names", BAD_INPUTS, ids=[s.__name__.strip("_") for s, _, _ in BAD_INPUTS])
def test_bad_input_one_message_nonzero_exit_nothing_changed(tmp_path, setup, needle, names):
    r, before, after = _message_case(tmp_path, setup)
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    err = r.stderr.strip()
    assert err.startswith("error: ") and needle in err and names in err, err
    assert before == after


def test_a_checkpoint_that_does_not_fit_falls_back_and_keeps_the_good_one(tmp_path):
    ref = write_cfg(tmp_path / "cfg", tmp_path / "ref", steps=12, sample_every=0)
    assert cli("--config", ref).returncode == 0
    assert cli("--config", write_cfg(tmp_path / "cfg8", tmp_path / "run", steps=8, sample_every=0)).returncode == 0
    cfg = write_cfg(tmp_path / "cfg12", tmp_path / "run", steps=12, sample_every=0)
    ck = tmp_path / "run/checkpoints"
    state = load_checkpoint(ck / "last.pt")
    state["process"]["model"].pop("stem.weight")  # as after a change to the model's code
    save_tagged(ck / "last.pt", CHECKPOINT_FORMAT, {k: v for k, v in state.items() if k != "format"})
    r = cli("--config", cfg, "--resume")
    assert r.returncode == 0, r.stderr
    assert "does not fit this model" in r.stdout and "previous good checkpoint" in r.stdout
    assert list(ck.glob("last.pt.unusable-*")), "the unusable checkpoint is kept aside, not deleted"
    assert load_checkpoint(ck / "last.pt")["step"] == 12
    ra, rb = read_metrics(tmp_path / "ref/metrics.csv"), read_metrics(tmp_path / "run/metrics.csv")
    assert [r["loss"] for r in ra] == [r["loss"] for r in rb]


def test_a_checkpoint_missing_an_entry_falls_back(tmp_path):
    cfg, out = _finished_run(tmp_path, steps=8, checkpoint_every=4)
    (out / "summary.json").unlink()
    state = load_checkpoint(out / "checkpoints/last.pt")
    save_tagged(out / "checkpoints/last.pt", CHECKPOINT_FORMAT,
                {k: v for k, v in state.items() if k not in ("format", "data")})
    r = cli("--config", cfg, "--resume")
    assert r.returncode == 0, r.stderr
    assert "lacks data" in r.stdout and "previous good checkpoint" in r.stdout


def test_a_truncated_last_checkpoint_never_replaces_the_good_previous_one(tmp_path):
    cfg, out = _finished_run(tmp_path, steps=8, checkpoint_every=4)
    (out / "summary.json").unlink()
    ck = out / "checkpoints"
    data = (ck / "last.pt").read_bytes()
    (ck / "last.pt").write_bytes(data[: len(data) // 3])
    cfg12 = write_cfg(tmp_path / "cfg12", out, steps=12, sample_every=0, checkpoint_every=4)
    r = cli("--config", cfg12, "--resume")
    assert r.returncode == 0, r.stderr
    # the truncated file was moved aside; the good prev.pt was rotated only by good checkpoints
    assert list(ck.glob("last.pt.unusable-*"))
    assert load_checkpoint(ck / "prev.pt")["step"] == 8 and load_checkpoint(ck / "last.pt")["step"] == 12


def test_a_forged_model_file_without_its_architecture(tmp_path):
    save_tagged(tmp_path / "forged.pt", MODEL_FORMAT, {"state_dict": {}})
    with pytest.raises(CheckpointError, match="lacks unet"):
        load_model(tmp_path / "forged.pt")


def test_disk_write_failing_mid_checkpoint_is_one_message(tmp_path):
    cfg = write_cfg(tmp_path / "cfg", tmp_path / "run", steps=8, sample_every=0, checkpoint_every=4)
    limit = 64 * 1024  # smaller than a checkpoint, larger than metrics.csv

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = subprocess.run([sys.executable, "-m", "diffusion_lib.train", "--config", str(cfg), "--no-progress"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300, preexec_fn=small_files)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "could not write" in r.stderr and "last.pt" in r.stderr
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_a_second_ctrl_c_stops_at_once_with_one_message(tmp_path):
    cfg = write_cfg(tmp_path / "cfg", tmp_path / "run", steps=100000, sample_every=0, checkpoint_every=0)
    proc = subprocess.Popen([sys.executable, "-m", "diffusion_lib.train", "--config", str(cfg), "--no-progress"],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "run").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and ("interrupted twice" in err or "interrupted by signal" in err), err


def test_sigterm_during_the_final_samples_stops_promptly_and_resumes(tmp_path):
    """The final grid of a 1000-step model takes a while; SIGTERM must not wait for it, nor exit 0."""
    out = tmp_path / "run"
    log = tmp_path / "faults.log"
    cfg = write_cfg(tmp_path / "cfg", out, steps=4, sample_every=0, checkpoint_every=0, noise_steps=1000,
                    sample_n=64)
    proc = subprocess.Popen([*HARNESS, "--config", str(cfg), "--no-progress"],
                            cwd=ROOT, env={**ENV, "DIFFUSION_FAULT_LOG": str(log)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and "write last.pt: done" in log.read_text()):
        time.sleep(0.02)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert time.time() - t0 < 10 and "while drawing the final samples" in err
    assert not (out / "model_ema.pt").exists()
    r = cli("--config", cfg, "--resume")
    assert r.returncode == 0, r.stderr
    assert (out / "model_ema.pt").exists() and (out / "samples/step_000004.png").exists()


def test_leftover_temporary_files_are_cleaned_on_resume(tmp_path):
    cfg, out = _finished_run(tmp_path, steps=8, checkpoint_every=4)
    (out / "summary.json").unlink()
    litter = out / "checkpoints" / ".last.pt.abc123.tmp"
    litter.write_bytes(b"x" * 1000)
    r = cli("--config", cfg, "--resume")
    assert r.returncode == 0 and not litter.exists()


def test_a_truncated_extracted_mnist_file_is_re_extracted(tmp_path):
    from diffusion_lib.data.mnist import load_mnist, prepare_mnist

    root = prepare_mnist(tmp_path / "data")
    f = root / "MNIST/raw/t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:5000])
    x, _ = load_mnist(tmp_path / "data", train=False)
    assert x.shape == (10000, 28, 28) and f.stat().st_size == 7_840_016


# ----------------------------------------------------------------------------- in-process guards
def test_an_infinite_gradient_with_a_finite_loss_stops_before_any_write(tiny_train):
    from diffusion_lib.core.config import from_dict
    from diffusion_lib.training.config import TrainConfig
    from diffusion_lib.training.run import TrainingRun

    d = tiny_train(steps=10, checkpoint_every=2)
    run = TrainingRun(from_dict(TrainConfig, d), progress=False, log=lambda *_: None)
    assert run.prepare() is None
    run.build()
    run.restore()
    calls = {"n": 0}

    def poison(grad):
        calls["n"] += 1
        return grad * float("inf") if run.process.trainer.step == 5 else grad

    run.process.model.stem.weight.register_hook(poison)
    from diffusion_lib.training.run import _StopFlag

    with pytest.raises(NonFiniteLossError, match="gradient norm became inf at step 6"):
        with _StopFlag() as run.stop:
            run.loop()
    ck = load_checkpoint(Path(d["out_dir"]) / "checkpoints/last.pt")
    assert ck["step"] == 4
    for part in ("model", "ema"):
        assert all(torch.isfinite(v).all() for v in ck["process"][part].values() if v.is_floating_point())
    assert all(torch.isfinite(p).all() for p in run.process.model.parameters())  # not updated in memory either
    assert not (Path(d["out_dir"]) / "model_ema.pt").exists()


def test_a_non_finite_model_is_never_written(tmp_path):
    from diffusion_lib import DiffusionModel
    from diffusion_lib.nets.registry import save_model

    m = DiffusionModel(28, 1, base_channels=8, channel_mults=(1, 2), time_dim=8)
    with torch.no_grad():
        m.stem.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="not all finite"):
        save_model(tmp_path / "m.pt", m)
    assert not (tmp_path / "m.pt").exists()


def test_samplers_and_train_step_reject_the_wrong_image_size():
    from diffusion_lib import DiffusionModel, DiffusionProcess
    from diffusion_lib.diffusion.samplers import ddim_sample, ddpm_sample

    p = DiffusionProcess(28, 1, 50, model=DiffusionModel(28, 1, noise_steps=50, base_channels=8, channel_mults=(1, 2)),
                         device="cpu")
    wrong = torch.randn(2, 1, 32, 32)
    for call in (lambda: p.train_step(wrong), lambda: p.sample(2, x_T=wrong),
                 lambda: ddim_sample(p.model, p.schedule, wrong, steps=3),
                 lambda: ddpm_sample(p.model, p.schedule, wrong), lambda: p.add_noise(wrong, torch.tensor([1, 2]))):
        with pytest.raises(ValueError, match="1x28x28"):
            call()
