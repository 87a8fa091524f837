"""A sampler and its settings as one value (:class:`SamplerSpec`), and batched, timed generation with it."""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any, Optional

import torch
from torch import nn
from tqdm import tqdm

from ..core.devices import synchronize
from .samplers import SPACINGS, Callback, bad_eta, bad_steps, ddim_sample, ddpm_sample, dpm_solver_pp_2m_sample
from .schedules import NoiseSchedule

__all__ = ["METHODS", "SamplerSpec", "generate", "decode"]

METHODS = ("ddpm", "ddim", "dpm++2m")


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler and its settings, as one row of a comparison.

    ``spacing`` empty means the method's default: ``uniform`` for DDIM,
    ``logsnr`` for DPM-Solver++ (DDPM visits every step).
    """

    method: str = "ddim"  # "ddpm", "ddim" or "dpm++2m"
    steps: int = 50
    eta: float = 0.0
    spacing: str = ""
    variance: str = "posterior"  # DDPM only
    timesteps: tuple[int, ...] = ()  # explicit timesteps (DDIM, DPM-Solver++), instead of a spacing

    @classmethod
    def from_mapping(cls, d: dict[str, Any], noise_steps: int = 1000) -> "SamplerSpec":
        """A spec from a parameter file's mapping (``method``, ``steps``, ``eta``, ``spacing``, ``variance``).

        ``steps`` left out is all T for DDPM and 50 (or T when fewer) for the others. Raises ``ValueError``
        listing every problem (see :meth:`problems`).
        """
        problems = cls.mapping_problems(d, noise_steps)
        if problems:
            raise ValueError("; ".join(problems))
        v = cls._filled(d, noise_steps)
        return cls(**{**v, "eta": float(v["eta"]), "timesteps": tuple(v["timesteps"])})

    @classmethod
    def mapping_problems(cls, d: Any, noise_steps: int = 1000) -> list[str]:
        """Everything wrong with a sampler mapping, for a model with ``noise_steps`` steps."""
        if not isinstance(d, dict):
            return ["expected a mapping with method, steps, eta (and optionally spacing)"]
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            return [f"unknown key(s) {unknown}; valid: {', '.join(valid)}"]
        return cls._problems(cls._filled(d, noise_steps), noise_steps)

    @classmethod
    def _filled(cls, d: dict[str, Any], T: int) -> dict[str, Any]:
        """Every field: those ``d`` leaves out at their defaults (``steps``: see :meth:`from_mapping`)."""
        v = {f.name: d.get(f.name, f.default) for f in fields(cls)}
        if "steps" not in d:
            v["steps"] = T if v["method"] == "ddpm" else min(v["steps"], T)
        return v

    @staticmethod
    def _problems(v: dict[str, Any], T: int) -> list[str]:
        problems = []
        method, steps, eta = v["method"], v["steps"], v["eta"]
        if method not in METHODS:
            problems.append(f"method: unknown sampler {method!r}; valid: {', '.join(METHODS)}")
        if bad_steps(steps, T):
            problems.append(f"steps: sampling steps must be integers in [1, {T}] (T = {T}), got {steps!r}")
        elif method == "ddpm" and steps != T:
            problems.append(f"DDPM runs all T = {T} steps; use method ddim with eta 1 for fewer")
        if bad_eta(eta):
            problems.append(f"eta: must be in [0, 1], got {eta!r}")
        elif eta and method in ("ddpm", "dpm++2m"):
            problems.append(f"eta: {method} takes none (DDPM is stochastic at every step, DPM-Solver++ deterministic); "
                            "another eta is method ddim's")
        if v["spacing"] and v["spacing"] not in SPACINGS:
            problems.append(f"spacing: unknown step spacing {v['spacing']!r}; valid: {', '.join(SPACINGS)}")
        elif v["spacing"] and method == "ddpm":
            problems.append("spacing: DDPM visits every step; a spacing is for ddim or dpm++2m")
        if v["variance"] not in ("posterior", "beta"):
            problems.append(f"variance: must be 'posterior' or 'beta', got {v['variance']!r}")
        ts = list(v["timesteps"] or ())
        if ts:
            if method == "ddpm":
                problems.append("timesteps: DDPM visits every step; explicit timesteps are for ddim or dpm++2m")
            if len(ts) != steps or any(not isinstance(t, int) or not 0 <= t < T for t in ts) \
                    or any(a <= b for a, b in zip(ts, ts[1:])):
                problems.append(f"timesteps: must be {steps} integers decreasing strictly within [0, {T - 1}]")
        return problems

    def problems(self, noise_steps: int) -> list[str]:
        """Everything wrong with this spec for a model with ``noise_steps`` steps (empty when it can run)."""
        return self._problems({f.name: getattr(self, f.name) for f in fields(self)}, noise_steps)

    @property
    def name(self) -> str:
        if self.method == "ddpm":
            return f"DDPM-{self.steps}"
        if self.method == "dpm++2m":
            return f"DPM-Solver++(2M)-{self.steps}"
        if self.method == "ddim":
            return f"DDIM-{self.steps} (eta={self.eta:g})"
        return f"{self.method}-{self.steps}"  # not a sampler: named as asked, for its error message

    def run(self, model: nn.Module, schedule: NoiseSchedule, x_T: torch.Tensor, *,
            generator: Optional[torch.Generator] = None, callback: Optional[Callback] = None,
            **options: Any) -> torch.Tensor:
        """Sample from ``x_T`` with this sampler; returns x_0. ``options`` (``clip_x0``, ``progress``) go to it."""
        problems = self.problems(schedule.num_steps)
        if problems:
            raise ValueError(f"sampler {self.name}: " + "; ".join(problems))
        if self.method == "ddpm":
            return ddpm_sample(model, schedule, x_T, variance=self.variance, generator=generator, callback=callback,
                               **options)
        if self.method == "ddim":
            return ddim_sample(model, schedule, x_T, steps=self.steps, eta=self.eta, spacing=self.spacing or "uniform",
                               timesteps=self.timesteps or None, generator=generator, callback=callback, **options)
        return dpm_solver_pp_2m_sample(model, schedule, x_T, steps=self.steps, spacing=self.spacing or "logsnr",
                                       timesteps=self.timesteps or None, callback=callback, **options)


def generate(model: nn.Module, schedule: NoiseSchedule, spec: SamplerSpec, n: int, *, seed: int = 0,
             batch_size: int = 100, progress: bool = False,
             callback: Optional[Callback] = None) -> tuple[torch.Tensor, float]:
    """``n`` samples with ``spec`` in batches of ``batch_size``; returns ``(samples on CPU, seconds per image)``.

    x_T comes from a CPU generator seeded with ``seed``, so every sampler starts
    from the same noise. The clock covers the sampling loops only, after one
    warm-up network evaluation at the same batch size, with the device synchronised.
    ``callback`` is called after every step of every batch (as the samplers call it).
    """
    device = schedule.betas.device
    cfg = model.config
    x_T = torch.randn((n, cfg.channels, cfg.image_size, cfg.image_size), generator=torch.Generator().manual_seed(seed))
    noise_gen = torch.Generator().manual_seed(seed + 1)
    was_training = model.training
    model.eval()
    with torch.no_grad():  # warm-up: allocator, kernels, caches
        warm = x_T[: min(batch_size, n)].to(device)
        model(warm, torch.full((len(warm),), schedule.num_steps - 1, device=device, dtype=torch.long))
    synchronize(device)
    out, seconds = [], 0.0
    bar = tqdm(total=n, desc=spec.name, disable=not progress, leave=False)
    try:
        for i in range(0, n, batch_size):
            t0 = time.perf_counter()
            x = spec.run(model, schedule, x_T[i:i + batch_size].to(device), generator=noise_gen, callback=callback)
            synchronize(device)
            seconds += time.perf_counter() - t0
            out.append(x.clamp(-1, 1).cpu())
            bar.update(x.shape[0])
    finally:
        bar.close()
        model.train(was_training)
    return torch.cat(out), seconds / n


def decode(model: nn.Module, schedule: NoiseSchedule, spec: SamplerSpec, x_T: torch.Tensor, *,
           batch_size: int = 100, generator: Optional[torch.Generator] = None, progress: bool = False) -> torch.Tensor:
    """The images ``spec`` makes from given latents ``x_T`` (any number), in batches; on the CPU, in [-1, 1].

    With a deterministic sampler (DDIM with eta = 0) this is the map from noise to
    images that interpolation and inversion study.
    """
    device = schedule.betas.device
    out = []
    for i in tqdm(range(0, len(x_T), batch_size), desc=f"decode ({spec.name})", disable=not progress, leave=False):
        out.append(spec.run(model, schedule, x_T[i:i + batch_size].to(device), generator=generator).clamp(-1, 1).cpu())
    return torch.cat(out)
