"""A training run, as a configuration describes it, in named phases.

Trains a :class:`~diffusion_lib.training.process.DiffusionProcess` and writes to ``out_dir``:

- ``metrics.csv``: one row per step (step, loss, grad_norm, lr, images_per_s, elapsed_s);
- ``samples/step_NNNNNN.png``: EMA samples from the same x_T every ``sample_every`` steps and at the end (none when
  ``sample_n`` is 0);
- ``checkpoints/last.pt`` (+ ``prev.pt``): model, EMA, optimizer, step, RNG states, data position, config;
- ``model_ema.pt``: the final EMA weights, what later chapters load;
- ``snapshots/ema_NNNNNN.pt``: the EMA weights every ``snapshot_every`` steps (quality over training);
- ``summary.json``: steps, time, throughput, device, and the model's fingerprint.

The phases (:class:`TrainingRun`): **prepare** decides what to do with what is
already in ``out_dir`` (continue it, move it aside, or refuse); **build** makes
the device, data, model and optimiser; **restore** loads the newest usable
checkpoint; **loop** trains, sampling and checkpointing as configured; **finish**
writes the last checkpoint, grid, model and summary.

What survives an interruption: SIGINT or SIGTERM finishes the current step (or
stops the sample grid being drawn), writes ``metrics.csv`` and then a checkpoint,
and exits with status 130. ``kill -9`` at any instant leaves at least one
complete checkpoint, and every row of ``metrics.csv`` up to it. ``--resume``
then continues from the newest usable checkpoint; on the CPU with
``deterministic: true`` the resumed run's weights, optimizer state,
``metrics.csv`` (all but the timing columns), ``summary.json`` (all but the
timing fields) and sample grids are bitwise those of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import os
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

from ..core.config import from_dict
from ..core.devices import device_name, resolve_device, seed_everything
from ..core.errors import CheckpointError, ConfigError, TrainingInterrupted
from ..core.files import remove_stale_temp_files
from ..core.paths import resolve
from ..data.batches import TensorBatches
from ..data.datasets import load_split
from ..data.images import save_grid, to_model_range
from ..nets.fast import use_fast_concat
from ..nets.registry import build_model, fingerprint, load_model, same_function, save_model
from .checkpoint import restore_newest, save_checkpoint
from .config import TrainConfig
from .distributed import Distributed
from .log import metrics_row, read_metrics, read_summary, write_metrics, write_summary
from .process import DiffusionProcess
from .trainer import use_bf16_autocast

__all__ = ["train", "TrainingRun", "TrainResult", "reuse_verdict", "training_images", "training_labels", "CONTINUABLE",
           "STALE"]

# keys that may change between a run and its resumption
_RESUMABLE_CHANGES = {"steps", "sample_every", "sample_n", "checkpoint_every", "snapshot_every", "device", "threads",
                      "out_dir", "data_root", "compile", "channels_last"}
_RESULT_FILES = ("metrics.csv", "model_ema.pt", "summary.json", "samples", "snapshots")


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


def training_images(cfg: TrainConfig) -> torch.Tensor:
    """The training set as one uint8 tensor (N, C, H, W), cut to ``train_subset`` when set."""
    images = load_split(cfg.dataset, cfg.data_root, train=True, image_size=cfg.image_size, channels=cfg.channels)[0]
    return images[: cfg.train_subset] if cfg.train_subset else images


def training_labels(cfg: TrainConfig) -> tuple[torch.Tensor, int]:
    """The training labels (int64, (N,)), cut like :func:`training_images`, and the number of classes of the whole
    training set; an image folder's labels are its (sorted) subfolders, and it needs at least two."""
    labels = load_split(cfg.dataset, cfg.data_root, train=True, image_size=cfg.image_size, channels=cfg.channels)[1]
    classes = int(labels.max()) + 1
    if classes < 2:
        raise ConfigError(f"a conditional model (model.arch: conditional) needs classes, but the {cfg.dataset} "
                          f"images in {cfg.data_root} have one; put them in one subfolder per class")
    return (labels[: cfg.train_subset] if cfg.train_subset else labels), classes


def _config_changes(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """The keys (other than resumable ones) in which a stored configuration differs from ``cfg``."""
    with contextlib.suppress(ConfigError):  # fill in defaults for keys added since the configuration was written
        saved = from_dict(TrainConfig, saved, source="stored configuration").to_dict()
    now = cfg.to_dict()
    # a decaying learning rate is a function of the run's length: another length is another run
    resumable = _RESUMABLE_CHANGES - ({"steps"} if cfg.lr_decay != "none" else set())
    return [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in now
            if k not in resumable and saved.get(k) != now[k]]


# why a finished run cannot stand for a configuration: continue it, or start over
CONTINUABLE = ("missing", "steps")  # no finished run yet, or too few steps: --resume continues the checkpoints
STALE = ("config", "fingerprint")  # other parameters, or other model code: only a fresh run is right


def reuse_verdict(cfg: TrainConfig) -> Optional[tuple[str, str]]:
    """``(kind, why)`` when the run in ``cfg.out_dir`` cannot stand for ``cfg`` now, or None when it can.

    A run is reused only when it is complete, was trained with the same configuration (resumable keys aside) for at
    least ``cfg.steps`` steps, and its saved weights still compute, under the current model code, the function its
    recorded fingerprint describes. ``kind`` is one of :data:`CONTINUABLE` or :data:`STALE`.
    """
    out = resolve(cfg.out_dir)
    if not (out / "summary.json").is_file() or not (out / "model_ema.pt").is_file():
        return "missing", f"{out} holds no finished run"
    summary = read_summary(out / "summary.json")
    changes = _config_changes(summary.get("config", {}), cfg)
    if changes:
        return "config", f"the run in {out} was trained with another configuration ({', '.join(changes)})"
    if summary.get("steps", 0) < cfg.steps:
        return "steps", f"the run in {out} has {summary.get('steps', 0)} of {cfg.steps} steps"
    saved_fp = summary.get("fingerprint")
    if not saved_fp:
        return "fingerprint", (f"the run in {out} records no model fingerprint, so it cannot show the model code "
                               "is unchanged")
    if not same_function(fingerprint(load_model(out / "model_ema.pt")[0]), saved_fp):
        return "fingerprint", (f"the model code has changed since the run in {out} was trained: with its saved "
                               "weights the network no longer computes what it computed then")
    return None


def archive_old_run(out: Path) -> Optional[Path]:
    """Move a previous run (checkpoints and results) aside, never deleting it, before a fresh start."""
    items = [p for p in (out / "checkpoints", *(out / name for name in _RESULT_FILES)) if p.exists()]
    if not items:
        return None
    dest = out / f"old-{time.strftime('%Y%m%d-%H%M%S')}"
    dest.mkdir(parents=True, exist_ok=True)
    for p in items:
        shutil.move(str(p), str(dest / p.name))
    return dest


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps (main thread only); a second one stops at once."""

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


class _GridInterrupted(Exception):
    """A stop signal arrived while a sample grid was being drawn."""


class TrainingRun:
    """One run of the training program; :func:`train` calls its phases in order."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, fresh: bool = False, progress: bool = True,
                 log: Callable[[str], None] = print) -> None:
        if resume and fresh:
            raise ConfigError("--resume and --fresh exclude each other")
        self.cfg, self.resume, self.fresh, self.progress, self.log = cfg, resume, fresh, progress, log
        self.out = resolve(cfg.out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.metrics_path = self.out / "metrics.csv"
        self.rows: list[dict[str, float]] = []
        self.elapsed0 = self.train_s = 0.0
        self.resumed_from: Optional[int] = None
        self.stop: Optional[_StopFlag] = None

    def prepare(self) -> Optional[TrainResult]:
        """Decide what to do with ``out_dir``; returns the result when the run is already complete."""
        cfg, out = self.cfg, self.out
        if out.exists() and not out.is_dir():
            raise ConfigError(f"out_dir {out} is a file, not a folder")
        has_ckpt = any((self.ckpt_dir / n).exists() for n in ("last.pt", "prev.pt"))
        finished = any((out / name).exists() for name in ("model_ema.pt", "summary.json"))
        leftovers = any((out / name).exists() for name in _RESULT_FILES)  # e.g. rows of a run killed early
        verdict = reuse_verdict(cfg) if self.resume and finished else None
        if self.resume and finished and verdict is None:
            summary = read_summary(out / "summary.json")
            self.log(f"the run in {out} is already complete ({summary['steps']} steps); nothing to do")
            return TrainResult(out, int(summary["steps"]), float(summary["train_seconds"]),
                               float(summary["wall_seconds"]), float(summary["images_per_s"]), str(summary["device"]),
                               out / "model_ema.pt", self.metrics_path, int(summary["steps"]))
        if verdict is not None and (verdict[0] in STALE or not has_ckpt):
            # continuing would stamp weights trained by other code, or with other parameters, as this run's
            raise ConfigError(f"{out} already holds the results of an earlier run that cannot be reused "
                              f"({verdict[1]}) and cannot be continued; pass --fresh to start over (the old run is "
                              "moved aside into an old-<time> folder, not deleted)")
        if not (self.resume or self.fresh) and (has_ckpt or leftovers):
            what = "a training run" if has_ckpt else "the results of an earlier run"
            raise ConfigError(f"{out} already holds {what}; pass --resume to continue it, or --fresh to start over "
                              "(the old run is moved aside into an old-<time> folder, not deleted)")
        existing = next(p for p in (out, *out.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot create or write out_dir {out}: {existing} is not a writable folder")
        return None

    def build(self) -> None:
        """Device, data, model, optimiser: everything that can fail on bad input fails here, before any write."""
        cfg = self.cfg
        self.dd = dd = Distributed.from_env()
        if dd.enabled and cfg.batch_size % dd.world_size:
            raise ConfigError(f"batch_size {cfg.batch_size} (the global batch) must be divisible by the "
                              f"{dd.world_size} ranks")
        if not dd.is_main:  # rank 0 alone talks and writes
            self.log, self.progress = (lambda *_: None), False
        self.device = device = dd.device(resolve_device(cfg.device))
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        images = training_images(cfg)
        # a conditional model learns the classes of its training images (label dropout: see _draw_batch)
        labels, classes = training_labels(cfg) if cfg.model.arch == "conditional" else (None, 0)
        seed_everything(cfg.seed)
        self.process = self._process(classes)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.batches = TensorBatches(images, cfg.batch_size, seed=cfg.seed, device=device, labels=labels)

    def _process(self, classes: int) -> DiffusionProcess:
        """The configured network (told ``classes`` labels when it is conditional) in a process with the
        configuration's trainer; DDP and ``torch.compile`` wrap only its training forward pass."""
        cfg, dd, device = self.cfg, self.dd, self.device
        model_config = cfg.model_config()
        if classes:
            model_config["num_classes"] = classes
        model = use_fast_concat(build_model(model_config))  # the same function, less work: nets/fast.py
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)

        def wrap(m: torch.nn.Module) -> torch.nn.Module:
            m = dd.wrap(m, device)
            return torch.compile(m) if cfg.compile else m

        return DiffusionProcess(
            cfg.image_size, cfg.channels, cfg.noise_steps, cfg.schedule, model,
            lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps, lr_decay=cfg.lr_decay,
            total_steps=cfg.steps, grad_clip=cfg.grad_clip, ema_decay=cfg.ema_decay or None,
            ema_warmup=cfg.ema_warmup, loss_weighting=cfg.loss_weighting, min_snr_gamma=cfg.min_snr_gamma,
            autocast=use_bf16_autocast(device, cfg.amp, cfg.amp_cpu, self.log),
            wrap=wrap, agree=dd.all_true, device=device,
        )

    def restore(self) -> None:
        """Continue from the newest usable checkpoint (``--resume``), or move an old run aside (``--fresh``)."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create out_dir {self.out}: {exc.strerror or exc}") from exc
        main = self.dd.is_main
        if main:  # rank 0 alone changes files; under DDP the others wait, then read what it chose
            for folder in (self.out, self.ckpt_dir, self.out / "samples", self.out / "snapshots"):
                for p in remove_stale_temp_files(folder):
                    self.log(f"removed {p.name}, left by an interrupted write")
        if self.resume:
            if not main:
                self.dd.barrier()
            state = restore_newest(self.ckpt_dir, self._apply, self.log, move_aside=main)
            if main:
                self.dd.barrier()
            if state is not None:
                self.elapsed0, self.train_s = float(state["elapsed_s"]), float(state["train_s"])
                self.resumed_from = self.process.trainer.step
                if self.metrics_path.exists():  # drop rows logged after the checkpoint: no step is logged twice
                    self.rows = [r for r in read_metrics(self.metrics_path) if r["step"] <= self.resumed_from]
                self.log(f"resumed from step {self.resumed_from} in {self.ckpt_dir}")
        elif self.fresh and main:
            moved = archive_old_run(self.out)
            if moved:
                self.log(f"the previous run was moved to {moved}")

    def _apply(self, state: dict[str, Any]) -> None:
        """Load one checkpoint's state: :class:`CheckpointError` when it does not fit (another model, a damaged entry:
        the next checkpoint is tried), :class:`ConfigError` when it belongs to a run with other parameters."""
        if not isinstance(state["config"], dict) or not isinstance(state["process"], dict):
            raise CheckpointError("its configuration or training state is not a mapping")
        try:
            float(state["elapsed_s"]), float(state["train_s"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"its clock entries are damaged ({exc})") from exc
        changes = _config_changes(state["config"], self.cfg)
        if changes:
            raise ConfigError(f"cannot resume the run in {self.ckpt_dir}: its configuration differs "
                              f"({', '.join(changes)}). Use the original parameters, another out_dir, or --fresh "
                              "to start over.")
        self.process.load_state_dict(state["process"])
        try:
            self.batches.load_state_dict(state["data"])
            torch.set_rng_state(state["rng"]["torch"])
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"its data position or random state is damaged ({exc})") from exc
        if self.device.type == "cuda" and state["rng"].get("cuda") is not None:
            with contextlib.suppress(RuntimeError):
                torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)

    def loop(self) -> None:
        """Train to ``cfg.steps``, drawing grids and writing checkpoints as configured."""
        cfg, dd, process = self.cfg, self.dd, self.process
        self._t_start = time.perf_counter()
        step = process.trainer.step
        if self._grid_due(step) and not self._grid_path(step).exists():  # a grid the interruption cut short
            self._grid_or_stop(step)
        bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", disable=not self.progress,
                   mininterval=0.5 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
        smooth = None
        try:
            while process.trainer.step < cfg.steps:
                t0 = time.perf_counter()
                x, t, noise, y = self._draw_batch()
                labelled = {} if y is None else {"labels": dd.shard(y)}
                loss = dd.mean(process.train_step(dd.shard(x), dd.shard(t), dd.shard(noise), **labelled), self.device)
                dt = time.perf_counter() - t0
                self.train_s += dt
                step = process.trainer.step
                self.rows.append(metrics_row(step=step, loss=loss, grad_norm=process.trainer.last_grad_norm,
                                             lr=process.trainer.lr, images_per_s=x.shape[0] / dt,
                                             elapsed_s=self._clock()))
                smooth = loss if smooth is None else 0.98 * smooth + 0.02 * loss
                bar.update(1)
                bar.set_postfix(loss=f"{smooth:.4f}", refresh=False)
                if cfg.snapshot_every and step % cfg.snapshot_every == 0 and step < cfg.steps and dd.is_main:
                    save_model(self.out / "snapshots" / f"ema_{step:06d}.pt", process.eval_model, schedule=cfg.schedule,
                               noise_steps=cfg.noise_steps, dataset=cfg.dataset, steps=step, config=cfg.to_dict())
                if self._grid_due(step):
                    self._grid_or_stop(step)
                if dd.any(self.stop.signal is not None):
                    self._checkpoint()
                    raise self._interrupted(f"after step {step}")
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                    self._checkpoint()
        finally:
            bar.close()

    def _draw_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """The global batch, its randomness and (for a conditional model) its labels, drawn identically on every rank;
        label dropout replaces each label by "no label" with probability ``p_uncond``."""
        cfg = self.cfg
        x, y = self.batches.next_labelled() if self.batches.labels is not None else (self.batches.next(), None)
        x = to_model_range(x)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if cfg.hflip:  # a random half of the batch mirrored left-right
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        t = torch.randint(0, cfg.noise_steps, (x.shape[0],), device=self.device)
        noise = torch.randn_like(x)
        if y is not None:
            net = self.process.model.config
            y = torch.where(torch.rand(x.shape[0], device=x.device) < net.p_uncond, net.num_classes, y)
        return x, t, noise, y

    def finish(self) -> TrainResult:
        """The last checkpoint, the last grid, the EMA model and the summary."""
        cfg, dd, process = self.cfg, self.dd, self.process
        self._checkpoint()
        try:
            self._grid(process.trainer.step)
        except _GridInterrupted:
            raise self._interrupted(f"while drawing the final samples (step {process.trainer.step})") from None
        wall = self._clock()
        seen = process.trainer.step * cfg.batch_size
        ips = seen / self.train_s if self.train_s > 0 else float("nan")
        in_sync = dd.in_sync(process.model)
        model_path = self.out / "model_ema.pt"
        result = TrainResult(self.out, process.trainer.step, self.train_s, wall, ips, self.device.type, model_path,
                             self.metrics_path, self.resumed_from)
        if not dd.is_main:
            dd.barrier()
            return result
        save_model(model_path, process.eval_model, schedule=cfg.schedule, noise_steps=cfg.noise_steps,
                   dataset=cfg.dataset, steps=process.trainer.step, config=cfg.to_dict())
        write_summary(self.out / "summary.json", self._summary(result, seen, in_sync))
        dd.barrier()
        self.log(f"trained {process.trainer.step} steps: {self.train_s / 60:.1f} min of training steps, "
                 f"{wall / 60:.1f} min wall with sampling and checkpoints ({ips:.0f} images/s on "
                 f"{device_name(self.device)}); EMA weights: {model_path}")
        return result

    def _summary(self, result: TrainResult, seen: int, in_sync: bool) -> dict[str, Any]:
        """What ``summary.json`` records of a finished run (its model already saved)."""
        process, tail = self.process, [r["loss"] for r in self.rows[-100:]]
        return {
            "steps": process.trainer.step,
            "images_seen": seen,
            "train_seconds": round(self.train_s, 2),
            "wall_seconds": round(result.wall_seconds, 2),
            "images_per_s": round(result.images_per_s, 2),
            "device": self.device.type,
            "device_name": device_name(self.device),
            "torch": torch.__version__,
            "precision": "bf16 autocast, float32 weights" if process.trainer.autocast else "float32",
            "parameters": process.model.num_parameters,
            "ranks": self.dd.world_size,
            "ranks_in_sync": in_sync,
            "final_loss_mean_100": sum(tail) / max(1, len(tail)),
            "fingerprint": fingerprint(load_model(result.model_path)[0]),
            "config": self.cfg.to_dict(),
        }

    def _clock(self) -> float:
        """Wall seconds of the run so far, across interruptions."""
        return self.elapsed0 + time.perf_counter() - self._t_start

    def _checkpoint(self) -> None:
        """``metrics.csv`` first, then the checkpoint: the rows up to any checkpoint on disk are always on disk."""
        if not self.dd.is_main:
            return
        write_metrics(self.metrics_path, self.rows)
        save_checkpoint(self.ckpt_dir / "last.pt", {
            "step": self.process.trainer.step,
            "config": self.cfg.to_dict(),
            "process": self.process.state_dict(),
            "data": self.batches.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None},
            "elapsed_s": self._clock(),
            "train_s": self.train_s,
        })

    def _grid_due(self, step: int) -> bool:
        return bool(self.cfg.sample_every) and step > 0 and step % self.cfg.sample_every == 0 and step < self.cfg.steps

    def _grid_path(self, step: int) -> Path:
        return self.out / "samples" / f"step_{step:06d}.png"

    def _grid(self, step: int) -> None:
        """EMA samples from the same x_T (and per-step noise) at every sample point; a stop signal cuts it short."""
        if not self.dd.is_main or not self.cfg.sample_n:
            return

        def check(_info: Any) -> None:  # only without DDP: the other ranks would wait for rank 0 forever
            if self.stop is not None and self.stop.signal is not None and not self.dd.enabled:
                raise _GridInterrupted

        gen = torch.Generator().manual_seed(self.cfg.seed + 1)
        x = self.process.sample(self.cfg.sample_n, generator=gen, callback=check)
        save_grid(self._grid_path(step), x, nrow=min(8, self.cfg.sample_n))

    def _grid_or_stop(self, step: int) -> None:
        try:
            self._grid(step)
        except _GridInterrupted:
            self._checkpoint()
            raise self._interrupted(f"while drawing the samples of step {step}") from None

    def _interrupted(self, when: str) -> TrainingInterrupted:
        return TrainingInterrupted(
            f"training interrupted by signal {self.stop.signal} {when}; checkpoint written to "
            f"{self.ckpt_dir / 'last.pt'}. Resume with:\n"
            "  python -m diffusion_lib.train --config <the same file> --resume"
        )


def train(cfg: TrainConfig, *, resume: bool = False, fresh: bool = False, progress: bool = True,
          log: Callable[[str], None] = print) -> TrainResult:
    """Train as configured; see the module docstring for what is written where.

    ``resume`` continues from ``out_dir/checkpoints`` (a finished run is left as it
    is); ``fresh`` moves an earlier run in ``out_dir`` aside and starts over.
    Without either, an ``out_dir`` that already holds a run is an error, so no
    result is ever overwritten by accident.
    """
    run = TrainingRun(cfg, resume=resume, fresh=fresh, progress=progress, log=log)
    done = run.prepare()
    if done is not None:
        return done
    run.build()
    run.restore()
    with _StopFlag() as run.stop:
        run.loop()
        return run.finish()
