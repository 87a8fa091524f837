"""Benchmark: training from a folder of images against training from MNIST, same model, side by side.

    python -m benchmarks.folder [--config params/cpu/03_train.yaml] [--images 10000] [--steps 60]
                                [--rounds 2] [--out results/bench]

Writes the first ``--images`` MNIST training digits as 28x28 grayscale PNGs into a
temporary folder, decodes it once (timed; the cache goes to a temporary
``XDG_CACHE_HOME``), reads it back from the cache (timed), then trains the
configuration's model for ``--steps`` steps on MNIST and on the folder
(``train_subset`` = ``--images`` for MNIST, so both draw from the same number
of images), alternating, ``--rounds`` times each. Prints and saves
(``results/bench/<device>_folder.json``) the training images/s of every run and
each round's folder / MNIST ratio.
After the cache is read, a folder run and an MNIST run are the same loop over one
uint8 tensor, so their throughput should agree within the spread of the rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from diffusion_lib.core.devices import device_name, resolve_device
from diffusion_lib.core.files import atomic_write_text
from diffusion_lib.data.folder import load_folder
from diffusion_lib.data.mnist import load_mnist
from diffusion_lib.training.config import load_train_config
from diffusion_lib.training.run import train

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="params/cpu/03_train.yaml", help="the model and batch to train")
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="results/bench")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        folder = Path(tmp) / "digits"
        x, y = load_mnist("data", train=True)
        for i in tqdm(range(args.images), desc="writing PNGs", unit="image"):
            (folder / str(int(y[i]))).mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i].numpy()).save(folder / str(int(y[i])) / f"{i:05d}.png")
        t0 = time.perf_counter()
        load_folder(folder, 28, 1)
        decode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_folder(folder, 28, 1)
        cached_s = time.perf_counter() - t0

        base = load_train_config(args.config, {"steps": args.steps, "sample_every": 0, "checkpoint_every": 0,
                                               "snapshot_every": 0, "sample_n": 1})
        runs: dict[str, list[float]] = {"mnist": [], "folder": []}
        for r in range(args.rounds):
            for source in ("mnist", "folder"):
                data = {"dataset": "folder", "data_root": str(folder)} if source == "folder" else \
                    {"train_subset": args.images}
                cfg = dataclasses.replace(base, **data, out_dir=str(Path(tmp) / f"{source}{r}"))
                summary = train(cfg, progress=False, log=lambda *_: None)
                runs[source].append(summary.images_per_s)
                print(f"round {r + 1}: {source:6s} {summary.images_per_s:7.1f} images/s")

    device = resolve_device(base.device)
    result = {"device": device_name(device), "config": args.config, "images": args.images, "steps": args.steps,
              "batch_size": base.batch_size, "decode_seconds": round(decode_s, 2),
              "cached_load_seconds": round(cached_s, 2),
              "images_per_s": {k: [round(v, 1) for v in vs] for k, vs in runs.items()},
              "median_images_per_s": {k: round(statistics.median(vs), 1) for k, vs in runs.items()},
              "torch": torch.__version__}
    paired = [f / m for f, m in zip(runs["folder"], runs["mnist"])]  # each round's two runs ran back to back
    spread = {k: max(vs) / min(vs) - 1 for k, vs in runs.items()}
    print(f"{args.images:,} PNGs decoded in {decode_s:.1f} s, read back from the cache in {cached_s:.2f} s")
    print(f"training: folder / MNIST per round {', '.join(f'{p:.3f}' for p in paired)} (median "
          f"{statistics.median(paired):.3f}); run-to-run spread of MNIST alone {spread['mnist']:.1%}, on "
          f"{result['device']}")
    out = Path(args.out) / f"{device.type}_folder.json"
    atomic_write_text(out, json.dumps({**result, "paired_ratios": [round(p, 3) for p in paired],
                                       "mnist_spread": round(spread["mnist"], 3)}, indent=2) + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
