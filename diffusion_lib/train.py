"""The standalone training program.

    python -m diffusion_lib.train --config params/cpu/03_train.yaml [--resume | --fresh]

Trains a :class:`~diffusion_lib.process.DiffusionProcess` with EMA weights
(``torch.optim.swa_utils``), gradient clipping and LR warm-up, and writes to
``out_dir``:

- ``metrics.csv``: one row per step (step, loss, grad_norm, lr, images_per_s, elapsed_s);
- ``samples/step_NNNNNN.png``: EMA samples from the same x_T every ``sample_every`` steps;
- ``checkpoints/last.pt`` (+ ``prev.pt``): model, EMA, optimizer, step, RNG states, config;
- ``model_ema.pt``: the final EMA weights, what later chapters load;
- ``summary.json``: steps, time, throughput, device.

A Ctrl-C (SIGINT) or SIGTERM finishes the current step, writes a checkpoint and
exits with status 130; ``--resume`` continues exactly where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import platform
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from tqdm import tqdm

from .checkpoint import find_resume_checkpoint, save_checkpoint, save_model
from .config import TrainConfig, from_dict, load_train_config
from .data import TensorBatches, load_cifar10, load_mnist, to_model_range
from .distributed import Distributed
from .errors import ConfigError, DiffusionError, TrainingInterrupted
from .process import DiffusionProcess
from .models import build_model
from .utils import atomic_write_text, cpu_has_native_bf16, project_root, resolve_device, seed_everything
from .viz import save_grid

__all__ = ["train", "finished_run", "TrainResult", "main", "METRIC_COLUMNS", "read_metrics", "device_name"]

METRIC_COLUMNS = ["step", "loss", "grad_norm", "lr", "images_per_s", "elapsed_s"]
# keys that may change between a run and its resumption
_RESUMABLE_CHANGES = {"steps", "sample_every", "sample_n", "checkpoint_every", "device", "threads", "out_dir", "data_root",
                      "compile", "channels_last"}


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    train_seconds: float
    wall_seconds: float
    images_per_s: float
    device: str
    model_path: Path
    metrics_path: Path
    resumed_from: Optional[int]


def device_name(device: torch.device) -> str:
    """A human-readable name of the device (GPU model or CPU model and thread count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name} ({torch.get_num_threads()} threads)"


def use_bf16_autocast(cfg: TrainConfig, device: torch.device, log: Callable[[str], None] = print) -> bool:
    """Whether the training forward pass runs under bf16 autocast: ``amp`` on CUDA, ``amp_cpu`` on a CPU with native bf16."""
    if device.type == "cuda":
        return cfg.amp
    if device.type == "cpu" and cfg.amp_cpu:
        if cpu_has_native_bf16():
            return True
        log("amp_cpu: this CPU has no native bf16 (AVX512-BF16 or AMX); training in float32")
    return False


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a metrics CSV as dicts of floats (``step`` as int)."""
    with open(path, newline="") as fh:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in row.items()} for row in csv.DictReader(fh)]


def _write_metrics(path: Path, rows: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (r[k] if k == "step" else f"{r[k]:.6g}") for k in METRIC_COLUMNS})
    atomic_write_text(path, buf.getvalue())


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps (main thread only)."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def training_images(cfg: TrainConfig) -> torch.Tensor:
    """The training set as one uint8 tensor (N, C, H, W), cut to ``train_subset`` when set."""
    if cfg.dataset == "cifar10":
        images = load_cifar10(cfg.data_root, train=True)[0].permute(0, 3, 1, 2).contiguous()
    else:
        images = load_mnist(cfg.data_root, train=True)[0].unsqueeze(1)
    return images[: cfg.train_subset] if cfg.train_subset else images


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else project_root() / p


def _normalized(saved: dict[str, Any]) -> dict[str, Any]:
    """A stored configuration with the current defaults filled in (keys added since it was written)."""
    try:
        return from_dict(TrainConfig, saved, source="stored configuration").to_dict()
    except ConfigError:
        return saved


def _check_same_run(saved: dict[str, Any], cfg: TrainConfig, ckpt_dir: Path) -> None:
    now, saved = cfg.to_dict(), _normalized(saved)
    diffs = [k for k in now if k not in _RESUMABLE_CHANGES and saved.get(k) != now[k]]
    if diffs:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in diffs)
        raise ConfigError(
            f"cannot resume the run in {ckpt_dir}: its configuration differs ({detail}). "
            "Use the original parameters, another out_dir, or --fresh to start over."
        )


_RESULT_FILES = ("metrics.csv", "model_ema.pt", "summary.json", "samples")


def _archive_old_run(out: Path) -> Optional[Path]:
    """Move a previous run (checkpoints and results) aside, never deleting it, before a fresh start."""
    items = [out / "checkpoints", *(out / name for name in _RESULT_FILES)]
    items = [p for p in items if p.exists()]
    if not items:
        return None
    dest = out / f"old-{time.strftime('%Y%m%d-%H%M%S')}"
    dest.mkdir(parents=True, exist_ok=True)
    for p in items:
        shutil.move(str(p), str(dest / p.name))
    return dest


def finished_run(cfg: TrainConfig) -> Optional[dict[str, Any]]:
    """The summary of a completed run of ``cfg`` in its out_dir (same run identity, enough steps), else None."""
    out = _resolve(cfg.out_dir)
    if not (out / "summary.json").is_file() or not (out / "model_ema.pt").is_file():
        return None
    summary = json.loads((out / "summary.json").read_text())
    saved, now = _normalized(summary.get("config", {})), cfg.to_dict()
    same = all(saved.get(k) == now[k] for k in now if k not in _RESUMABLE_CHANGES)
    return summary if same and summary.get("steps", 0) >= cfg.steps else None


def train(cfg: TrainConfig, *, resume: bool = False, fresh: bool = False, progress: bool = True,
          log=print) -> TrainResult:
    """Train as configured; see the module docstring for what is written where.

    ``resume`` continues from ``out_dir/checkpoints`` (a finished run is left as it
    is); ``fresh`` moves an earlier run in ``out_dir`` aside and starts over.
    Without either, an ``out_dir`` that already holds a run is an error, so no
    result is ever overwritten by accident.
    """
    if resume and fresh:
        raise ConfigError("--resume and --fresh exclude each other")
    out = _resolve(cfg.out_dir)
    ckpt_dir = out / "checkpoints"
    has_ckpt = (ckpt_dir / "last.pt").exists() or (ckpt_dir / "prev.pt").exists()
    has_results = any((out / name).exists() for name in _RESULT_FILES)
    state = None
    if resume and has_ckpt:
        state, notes = find_resume_checkpoint(ckpt_dir)
        for n in notes:
            log(n)
        _check_same_run(state["config"], cfg, ckpt_dir)
        done = finished_run(cfg)
        if state["step"] >= cfg.steps and done is not None:
            log(f"the run in {out} is already complete ({state['step']} steps); nothing to do")
            return _result_from_summary(out, done, resumed_from=state["step"])
    elif not fresh and (has_ckpt or has_results):
        what = "a training run" if has_ckpt else "the results of an earlier run"
        raise ConfigError(
            f"{out} already holds {what}; pass --resume to continue it, or --fresh to start over "
            "(the old run is moved aside into an old-<time> folder, not deleted)"
        )

    # everything that can fail on bad input happens before anything is written
    dd = Distributed.from_env()
    if dd.enabled and cfg.batch_size % dd.world_size:
        raise ConfigError(f"batch_size {cfg.batch_size} (the global batch) must be divisible by the "
                          f"{dd.world_size} ranks")
    if not dd.is_main:  # rank 0 alone talks and writes
        log, progress = (lambda *_: None), False
    device = dd.device(resolve_device(cfg.device))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    images = training_images(cfg)
    seed_everything(cfg.seed)
    model = build_model(cfg.unet_kwargs())
    process = DiffusionProcess(
        cfg.image_size, cfg.channels, cfg.noise_steps, cfg.schedule, model,
        lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps,
        grad_clip=cfg.grad_clip, ema_decay=cfg.ema_decay or None, device=device,
    )
    process.amp = use_bf16_autocast(cfg, device, log)
    if cfg.channels_last:
        process.model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    process.train_model = dd.wrap(process.model, device)
    if cfg.compile:
        process.train_model = torch.compile(process.train_model)
    process.loss_is_finite = dd.all_finite
    batches = TensorBatches(images, cfg.batch_size, seed=cfg.seed, device=device)
    metrics_path = out / "metrics.csv"
    rows: list[dict[str, float]] = []
    elapsed0, train_s0 = 0.0, 0.0
    resumed_from = None
    if state is not None:
        process.load_state_dict(state["process"])
        batches.load_state_dict(state["data"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            with contextlib.suppress(RuntimeError):
                torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        elapsed0, train_s0 = float(state["elapsed_s"]), float(state["train_s"])
        resumed_from = process.step
        if metrics_path.exists():  # drop rows logged after the checkpoint: no step is logged twice
            rows = [r for r in read_metrics(metrics_path) if r["step"] <= process.step]
        log(f"resumed from step {process.step} in {ckpt_dir}")
    elif fresh and dd.is_main:
        moved = _archive_old_run(out)
        if moved:
            log(f"the previous run was moved to {moved}")

    if dd.is_main:
        out.mkdir(parents=True, exist_ok=True)
    sample_gen_seed = cfg.seed + 1  # the same x_T for every periodic grid
    t_start = time.perf_counter()
    train_s = train_s0

    def snapshot() -> dict[str, Any]:
        return {
            "step": process.step,
            "config": cfg.to_dict(),
            "process": process.state_dict(),
            "data": batches.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
            "elapsed_s": elapsed0 + time.perf_counter() - t_start,
            "train_s": train_s,
        }

    def checkpoint() -> None:
        if dd.is_main:
            save_checkpoint(ckpt_dir / "last.pt", snapshot())
            _write_metrics(metrics_path, rows)

    def sample_grid(tag: str) -> None:
        if not dd.is_main:
            return
        gen = torch.Generator().manual_seed(sample_gen_seed)
        x = process.sample(cfg.sample_n, generator=gen)
        save_grid(out / "samples" / f"{tag}.png", x, nrow=min(8, cfg.sample_n))

    mininterval = 0.5 if sys.stderr.isatty() else 30.0
    bar = tqdm(total=cfg.steps, initial=process.step, desc="train", unit="step", disable=not progress,
               mininterval=mininterval, dynamic_ncols=True)
    smooth = None
    with _StopFlag() as stop:
        try:
            while process.step < cfg.steps:
                t0 = time.perf_counter()
                # the global batch and its randomness, drawn identically on every rank
                x = to_model_range(batches.next())
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                if cfg.hflip:  # a random half of the batch mirrored left-right
                    flip = torch.rand(x.shape[0], device=x.device) < 0.5
                    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                t = torch.randint(0, cfg.noise_steps, (x.shape[0],), device=device)
                noise = torch.randn_like(x)
                loss = dd.mean(process.train_step(dd.shard(x), dd.shard(t), dd.shard(noise)), device)
                dt = time.perf_counter() - t0
                train_s += dt
                rows.append({"step": process.step, "loss": loss, "grad_norm": process.last_grad_norm,
                             "lr": process.lr, "images_per_s": x.shape[0] / dt,
                             "elapsed_s": elapsed0 + time.perf_counter() - t_start})
                smooth = loss if smooth is None else 0.98 * smooth + 0.02 * loss
                bar.update(1)
                bar.set_postfix(loss=f"{smooth:.4f}", refresh=False)
                step = process.step
                if cfg.sample_every and step % cfg.sample_every == 0 and step < cfg.steps:
                    sample_grid(f"step_{step:06d}")
                if dd.any(stop.signal is not None):
                    checkpoint()
                    raise TrainingInterrupted(
                        f"training interrupted by signal {stop.signal} after step {step}; "
                        f"checkpoint written to {ckpt_dir / 'last.pt'}. Resume with:\n"
                        f"  python -m diffusion_lib.train --config <the same file> --resume"
                    )
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                    checkpoint()
        finally:
            bar.close()
        checkpoint()
        sample_grid(f"step_{process.step:06d}")

    wall = elapsed0 + time.perf_counter() - t_start
    seen = process.step * cfg.batch_size
    ips = seen / train_s if train_s > 0 else float("nan")
    in_sync = dd.in_sync(process.model)
    if not dd.is_main:
        dd.barrier()
        return TrainResult(out, process.step, train_s, wall, ips, device.type, out / "model_ema.pt", metrics_path,
                           resumed_from)
    model_path = save_model(out / "model_ema.pt", process.eval_model, schedule=cfg.schedule,
                            noise_steps=cfg.noise_steps, dataset=cfg.dataset, steps=process.step,
                            config=cfg.to_dict())
    summary = {
        "steps": process.step,
        "images_seen": seen,
        "train_seconds": round(train_s, 2),
        "wall_seconds": round(wall, 2),
        "images_per_s": round(ips, 2),
        "device": device.type,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "precision": "bf16 autocast, float32 weights" if process.amp else "float32",
        "parameters": model.num_parameters,
        "ranks": dd.world_size,
        "ranks_in_sync": in_sync,
        "final_loss_mean_100": sum(r["loss"] for r in rows[-100:]) / max(1, len(rows[-100:])),
        "config": cfg.to_dict(),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    dd.barrier()
    log(f"trained {process.step} steps: {train_s / 60:.1f} min of training steps, {wall / 60:.1f} min wall with "
        f"sampling and checkpoints ({ips:.0f} images/s on {summary['device_name']}); EMA weights: {model_path}")
    return TrainResult(out, process.step, train_s, wall, ips, device.type, model_path, metrics_path, resumed_from)


def _result_from_summary(out: Path, summary: dict[str, Any], resumed_from: Optional[int]) -> TrainResult:
    return TrainResult(out, int(summary["steps"]), float(summary["train_seconds"]), float(summary["wall_seconds"]),
                       float(summary["images_per_s"]), str(summary["device"]), out / "model_ema.pt",
                       out / "metrics.csv", resumed_from)


def _parse(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m diffusion_lib.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="YAML file (a training config, or a chapter file with a train: section)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue from out_dir/checkpoints/last.pt (or prev.pt)")
    g.add_argument("--fresh", action="store_true", help="start over; old checkpoints are moved aside")
    p.add_argument("--steps", type=int, help="override the number of steps")
    p.add_argument("--out-dir", help="override out_dir")
    p.add_argument("--device", help="override the device (auto, cpu, cuda)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = _parse(argv)
    overrides = {k: v for k, v in {"steps": args.steps, "out_dir": args.out_dir, "device": args.device}.items()
                 if v is not None}
    try:
        cfg = load_train_config(args.config, overrides)
        train(cfg, resume=args.resume, fresh=args.fresh, progress=not args.no_progress)
    except TrainingInterrupted as exc:
        print(f"\n{exc}".replace("<the same file>", args.config), file=sys.stderr)
        return exc.exit_code
    except DiffusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:  # e.g. a CUDA device asked for on a machine without one
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
