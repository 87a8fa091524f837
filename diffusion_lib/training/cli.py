"""The standalone training program.

    python -m diffusion_lib.train --config params/cpu/03_train.yaml [--resume | --fresh]
    python -m diffusion_lib.train --data path/to/images --image-size 32 --channels 3 --out-dir runs/mine

See :mod:`diffusion_lib.training.run` for what a run writes and what survives an
interruption. Every failure the user can cause or fix (a bad file, missing data,
a damaged checkpoint, a full disk, an interruption) ends in one message and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Optional

import torch

from ..core.errors import ConfigError, DiffusionError, TrainingInterrupted
from ..core.config import from_dict
from .config import TrainConfig, load_train_config
from .distributed import Distributed
from .run import train

__all__ = ["main"]


def _parse(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m diffusion_lib.train", description="Train a diffusion model.")
    p.add_argument("--config", help="YAML file (a training config, or a chapter file with a train: section); "
                   "without it, the defaults with the EMA's warm-up on, which need --data")
    p.add_argument("--data", metavar="DIR", help="train on the PNG, JPEG and WebP images in DIR and its subfolders "
                   "(dataset: folder, data_root: DIR)")
    p.add_argument("--image-size", type=int, help="override image_size (a folder's images are resized and "
                   "centre-cropped to it; the default is MNIST's 28)")
    p.add_argument("--channels", type=int, choices=[1, 3], help="override channels: 1 grayscale (the default), 3 RGB")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue from out_dir/checkpoints/last.pt (or prev.pt)")
    g.add_argument("--fresh", action="store_true", help="start over; old checkpoints are moved aside")
    p.add_argument("--conditional", action="store_true",
                   help="train a class-conditional model (model.arch: conditional) for guidance: MNIST's digits, or "
                        "the subfolders of --data")
    p.add_argument("--steps", type=int, help="override the number of steps")
    p.add_argument("--out-dir", help="override out_dir (default with --data alone: runs/<the folder's name>)")
    p.add_argument("--device", help="override the device (auto, cpu, cuda)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def _same(argv: Optional[list[str]]) -> str:
    """The arguments of this command, without --resume and --fresh (what continues the run)."""
    return shlex.join(a for a in (sys.argv[1:] if argv is None else argv) if a not in ("--resume", "--fresh"))


def _config(args: argparse.Namespace) -> TrainConfig:
    """The run the arguments describe: the file's (or the defaults'), with the command line's overrides."""
    # paths given on the command line are the shell's: relative to the current folder
    here = lambda p: None if p is None else str(Path(p).resolve())  # noqa: E731
    folder = {"dataset": "folder", "data_root": here(args.data)} if args.data is not None else {}
    out_dir = here(args.out_dir or (f"runs/{Path(args.data).resolve().name}" if args.config is None else None))
    overrides = {k: v for k, v in {**folder, "steps": args.steps, "out_dir": out_dir, "device": args.device,
                                   "image_size": args.image_size, "channels": args.channels}.items() if v is not None}
    # without a file: the defaults, with the EMA's warm-up (a short run's average would still hold the random
    # initial weights without it: chapter 05)
    cfg = load_train_config(args.config, overrides) if args.config else from_dict(
        TrainConfig, {"ema_warmup": True, **overrides}, source="the command line")
    if args.conditional:
        if cfg.model.arch not in ("concat", "conditional"):
            raise ConfigError(f"--conditional gives the concat U-Net a label embedding; this configuration "
                              f"trains the {cfg.model.arch!r} network")
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, arch="conditional"))
    return cfg


def main(argv: Optional[list[str]] = None) -> int:
    args = _parse(argv)
    if args.config is None and args.data is None:
        print("error: give --config FILE, or --data DIR to train on a folder of images", file=sys.stderr)
        return 2
    try:
        train(_config(args), resume=args.resume, fresh=args.fresh, progress=not args.no_progress)
    except TrainingInterrupted as exc:
        print(f"\n{exc}".replace("--config <the same file>", _same(argv)), file=sys.stderr)
        return exc.exit_code
    except (DiffusionError, ValueError) as exc:  # ValueError: e.g. a CUDA device asked for on a machine without one
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except torch.cuda.OutOfMemoryError:
        print("error: the device ran out of memory; lower batch_size (or the model's width) in the configuration",
              file=sys.stderr)
        return 2
    except OSError as exc:  # a write that failed (disk full, quota, permissions) outside the checkpoint itself
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"error: could not read or write{where} ({exc.strerror or exc}); the checkpoints on disk are complete",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before training started, or a second Ctrl-C while the first was being handled
        print("\ninterrupted: stopped at once, without writing a new checkpoint; the checkpoints on disk (if any) "
              "are complete. Resume with:\n"
              f"  python -m diffusion_lib.train {_same(argv)} --resume", file=sys.stderr)
        return 130
    finally:
        Distributed.shutdown()
    return 0
