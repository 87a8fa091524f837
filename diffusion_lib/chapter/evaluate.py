"""Measuring trained runs the same way: the same x_T, the same sampler, the same instrument and reference.

Chapters that compare models (schedules, recipes, a GAN, samplers) all do this:
load a run's EMA model, draw N samples from the seed's x_T with one sampler and
backend, and measure them with one :class:`~diffusion_lib.evaluation.quality.QualityMeter`.
Because every run starts from the same x_T and the meter resamples every report
with the same indices, two reports are paired and their difference has an
interval (:meth:`~diffusion_lib.evaluation.quality.QualityMeter.difference`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from ..diffusion.generate import SamplerSpec, generate
from ..evaluation.quality import QualityMeter, QualityReport
from ..nets.inference import FastModel
from .models import load_trained

__all__ = ["Measured", "measure_run", "measure_runs"]


@dataclass
class Measured:
    """A run's samples, the seconds each cost, and their quality report."""

    samples: torch.Tensor
    seconds_per_image: float
    report: QualityReport


def measure_run(run_dir: str | Path, meter: QualityMeter, spec: SamplerSpec, n: int, *, seed: int = 0,
                backend: str = "eager", device: str | torch.device = "cpu", batch_size: int = 100) -> Measured:
    """``n`` samples of the run in ``run_dir`` with ``spec`` from the x_T of ``seed``, measured by ``meter``."""
    model, schedule, _ = load_trained(run_dir, device)
    x, sec = generate(FastModel(model, backend), schedule, spec, n, seed=seed, batch_size=min(n, batch_size))
    return Measured(x, sec, meter.measure(x))


def measure_runs(runs: Mapping[object, str | Path], meter: QualityMeter, spec: SamplerSpec, n: int,
                 **kw) -> dict[object, Measured]:
    """:func:`measure_run` for every run of ``runs`` (key -> run folder), in order."""
    return {key: measure_run(path, meter, spec, n, **kw) for key, path in runs.items()}
