"""Measuring trained runs the same way: the same x_T, the same sampler, the same instrument and reference.

Chapters that compare models (schedules, recipes, a GAN, samplers) all do this:
load a run's EMA model, draw N samples from the seed's x_T with one sampler and
backend, and measure them with one :class:`~diffusion_lib.evaluation.quality.QualityMeter`.
Because every run starts from the same x_T and the meter resamples every report
with the same indices, two reports are paired and their difference has an
interval (:meth:`~diffusion_lib.evaluation.quality.QualityMeter.difference`).

Samples are a deterministic function of the model's weights, the sampler and
its settings, N, the seed of x_T, the backend, the batch size, the PyTorch
version and the code that builds the network and samples from it, so they are
kept beside the model (``eval_cache/``) under a key made of all of these (the
weights by their SHA-256; the code by the keys of the network and the diffusion
maths, :mod:`~diffusion_lib.chapter.keys`, and the backends by their source):
re-executing a chapter samples only what changed. The cached seconds per image
are those of the run that drew the samples. After it has executed every
chapter of a profile, with no override, the runner removes the sample sets
none of them used (:func:`prune_unused`), so a committed cache (chapter 04's)
holds only the current ones. The key does not name the machine: like a committed model, a
committed sample set is reused where it was not drawn (bf16 and compiled
numerics differ between CPUs in the last bits).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import torch

from ..core.errors import CheckpointError
from ..core.files import digest, load_tagged, save_tagged
from ..core.paths import resolve
from ..diffusion.generate import SamplerSpec, generate
from ..evaluation.quality import QualityMeter, QualityReport
from ..nets.inference import FastModel
from .keys import keys
from .models import load_trained

__all__ = ["Measured", "sample_run", "measure_run", "measure_runs", "prune_unused"]


@dataclass
class Measured:
    """A run's samples, the seconds each cost, and their quality report."""

    samples: torch.Tensor
    seconds_per_image: float
    report: QualityReport


CACHE_FORMAT = "diffusion_lib/samples/v1"


@lru_cache(maxsize=None)
def _code_digest() -> str:
    """What builds networks and samples from them: two component keys and the backends' source."""
    lib = Path(__file__).resolve().parent.parent
    h = hashlib.sha256(json.dumps(keys(("network", "diffusion"))).encode())
    for f in ("nets/inference.py", "nets/fast.py", "nets/onnx.py"):
        h.update(f.encode() + (lib / f).read_bytes())
    return h.hexdigest()


def _cache_file(model_file: Path, spec: SamplerSpec, n: int, seed: int, backend: str, batch_size: int) -> Path:
    key = json.dumps({"weights": digest(model_file), "spec": asdict(spec), "n": n, "seed": seed, "backend": backend,
                      "batch_size": batch_size, "torch": torch.__version__, "code": _code_digest()}, sort_keys=True)
    return model_file.parent / "eval_cache" / f"{model_file.stem}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt"


def sample_run(run_dir: str | Path, spec: SamplerSpec, n: int, *, seed: int = 0, backend: str = "eager",
               device: str | torch.device = "cpu", batch_size: int = 100) -> tuple[torch.Tensor, float]:
    """``n`` samples of the run in ``run_dir`` (or a model file) with ``spec`` from the x_T of ``seed``, cached."""
    path = resolve(run_dir)
    model_file = path if path.is_file() else path / "model_ema.pt"
    batch_size = min(n, batch_size)
    cache = _cache_file(model_file, spec, n, seed, backend, batch_size)
    if cache.exists():
        try:
            obj = load_tagged(cache, CACHE_FORMAT, required=("samples", "seconds_per_image"))
            os.utime(cache)  # used now: prune_unused keeps it
            return obj["samples"], float(obj["seconds_per_image"])
        except CheckpointError:
            pass  # a damaged cache file is drawn again and replaced
    model, schedule, _ = load_trained(model_file, device)
    x, sec = generate(FastModel(model, backend), schedule, spec, n, seed=seed, batch_size=batch_size)
    save_tagged(cache, CACHE_FORMAT, {"samples": x, "seconds_per_image": sec})
    return x, sec


def measure_run(run_dir: str | Path, meter: QualityMeter, spec: SamplerSpec, n: int, *, seed: int = 0,
                backend: str = "eager", device: str | torch.device = "cpu", batch_size: int = 100) -> Measured:
    """``n`` samples of the run in ``run_dir`` with ``spec`` from the x_T of ``seed``, measured by ``meter``."""
    x, sec = sample_run(run_dir, spec, n, seed=seed, backend=backend, device=device, batch_size=batch_size)
    return Measured(x, sec, meter.measure(x))


def measure_runs(runs: Mapping[object, str | Path], meter: QualityMeter, spec: SamplerSpec, n: int,
                 **kw) -> dict[object, Measured]:
    """:func:`measure_run` for every run of ``runs`` (key -> run folder), in order."""
    return {key: measure_run(path, meter, spec, n, **kw) for key, path in runs.items()}


def prune_unused(folder: str | Path, since: float) -> list[Path]:
    """Remove the sample sets under ``folder`` that were neither drawn nor read since ``since`` (a ``time.time()``);
    returns those removed. The runner calls it after executing every chapter of a profile, with no override."""
    unused = [f for f in Path(folder).glob("**/eval_cache/*.pt") if f.stat().st_mtime < since]
    for f in unused:
        f.unlink()
    return unused
