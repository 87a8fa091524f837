"""Samplers: pure functions of (model, schedule, x_T, ...).

Every sampler takes an optional ``callback(info)`` called after each step with a
:class:`StepInfo` (step index, timestep, the new ``x`` and the predicted x_0), so
a chapter can record a trajectory without the sampler knowing about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..core.devices import randn
from .schedules import NoiseSchedule, extract

__all__ = [
    "StepInfo",
    "TrajectoryRecorder",
    "bad_steps",
    "bad_eta",
    "SPACINGS",
    "timestep_sequence",
    "timesteps_at_log_snr",
    "common_log_snr_grid",
    "ddpm_sample",
    "ddim_sample",
    "ddim_invert",
    "dpm_solver_pp_2m_sample",
]

SPACINGS = ("uniform", "quadratic", "trailing", "logsnr")


@dataclass
class StepInfo:
    """What a sampler reports after each step."""

    index: int  # 0 for the first (noisiest) step
    t: int  # the timestep just denoised
    x: torch.Tensor  # the sample after this step (x_{t-1})
    x0_pred: torch.Tensor  # the model's estimate of x_0 at this step


Callback = Callable[[StepInfo], None]


class TrajectoryRecorder:
    """A callback that keeps ``x`` (and the x_0 estimate) at the chosen timesteps, on the CPU."""

    def __init__(self, keep_t: list[int] | None = None) -> None:
        self.keep_t = None if keep_t is None else {int(t) for t in keep_t}
        self.t: list[int] = []
        self.x: list[torch.Tensor] = []
        self.x0: list[torch.Tensor] = []

    def __call__(self, info: StepInfo) -> None:
        if self.keep_t is None or info.t in self.keep_t:
            self.t.append(info.t)
            self.x.append(info.x.detach().float().cpu())
            self.x0.append(info.x0_pred.detach().float().cpu())


@torch.no_grad()
def ddpm_sample(model: nn.Module, schedule: NoiseSchedule, x_T: torch.Tensor, *,
                variance: Literal["posterior", "beta"] = "posterior", clip_x0: bool = True,
                generator: Optional[torch.Generator] = None, callback: Optional[Callback] = None,
                progress: bool = False) -> torch.Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), from x_T down to x_0.

    Each step predicts eps, forms x_0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)
    (optionally clipped to [-1, 1]), and draws x_{t-1} from
    N(posterior_mean(x_0, x_t), sigma_t^2 I). Without clipping the mean equals
    Algorithm 2's ``(x_t - beta_t / sqrt(1 - ab_t) eps) / sqrt(alpha_t)``.

    Args:
        variance: ``"posterior"`` uses beta-tilde_t (eq. 7), ``"beta"`` uses beta_t;
            Ho et al. report similar results for both.
        clip_x0: clamp the predicted x_0 to the data range before forming the mean.
        generator: RNG for the per-step noise (x_T is given by the caller).
    Returns:
        x_0, same shape as ``x_T``.
    """
    if variance not in ("posterior", "beta"):
        raise ValueError(f"variance must be 'posterior' or 'beta', got {variance!r}")
    x = x_T.to(schedule.betas.device).float()
    var_table = schedule.posterior_variance if variance == "posterior" else schedule.betas
    steps = range(schedule.num_steps - 1, -1, -1)
    for i, t in enumerate(tqdm(steps, desc="DDPM", disable=not progress, leave=False)):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = model(x, tt).float()
        x0 = schedule.predict_x0(x, tt, eps)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        mean, _, _ = schedule.posterior_mean_variance(x0, x, tt)
        if t > 0:
            z = randn(x.shape, generator=generator, device=x.device)
            x = mean + extract(var_table, tt, x.shape).sqrt() * z
        else:
            x = mean  # no noise at the last step (Algorithm 2, line 3: z = 0 if t = 1)
        if callback is not None:
            callback(StepInfo(index=i, t=t, x=x, x0_pred=x0))
    return x


def bad_steps(steps: object, T: int) -> bool:
    """Whether ``steps`` is not a whole number of sampling steps in [1, T]."""
    return isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= T


def bad_eta(eta: object) -> bool:
    """Whether ``eta`` is not a number in [0, 1]."""
    return isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1


def timestep_sequence(T: int, steps: int, spacing: str = "uniform",
                      log_snr: Optional[torch.Tensor] = None) -> list[int]:
    """The S timesteps a fast sampler visits, strictly decreasing, within ``[0, T-1]``.

    - ``uniform``: ``round(linspace(0, T-1, S))``, from T-1 down to 0;
    - ``quadratic``: tau_i proportional to i^2 (Song et al. 2021, their CIFAR-10 choice): dense
      near t = 0 where detail is decided, sparse at high noise;
    - ``trailing``: ``T - 1, T - 1 - T/S, ...``: always starts at t = T - 1 and leaves the
      last stride to the final jump to x_0;
    - ``logsnr``: evenly spaced in half-log-SNR lambda_t (needs ``log_snr``), the spacing
      Lu et al. (2022) recommend for DPM-Solver: equal steps for the ODE in lambda.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown step spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
    if bad_steps(steps, T):
        raise ValueError(f"the number of sampling steps must be an integer in [1, {T}], got {steps!r}")
    if steps == 1:
        return [T - 1]
    if spacing == "uniform":
        seq = np.round(np.linspace(0, T - 1, steps)).astype(int)
    elif spacing == "quadratic":
        seq = np.round((np.arange(steps) / (steps - 1)) ** 2 * (T - 1)).astype(int)
    elif spacing == "logsnr":
        if log_snr is None:
            raise ValueError("the logsnr spacing needs the schedule's log_snr")
        lam = -np.asarray(log_snr, dtype=np.float64)  # increasing in t
        targets = np.linspace(lam[0], lam[-1], steps)
        seq = np.clip(np.searchsorted(lam, targets), 0, T - 1)
        seq[0], seq[-1] = 0, T - 1
    else:
        seq = np.round(T - np.arange(steps) * T / steps).astype(int)[::-1] - 1
    # rounding can make neighbours collide: keep the i-th entry within [i, T - S + i], where a
    # strictly increasing sequence always fits, then push collisions upwards
    seq = np.clip(seq, np.arange(steps), T - steps + np.arange(steps))
    for i in range(1, steps):
        seq[i] = max(seq[i], seq[i - 1] + 1)
    return [int(t) for t in seq[::-1]]


def timesteps_at_log_snr(log_snr: torch.Tensor, targets: Sequence[float]) -> list[int]:
    """For each target log-SNR (from noisy to clean), the timestep whose log-SNR is nearest, strictly decreasing.

    Two schedules sampled at the same targets visit the same noise levels, whatever
    their timestep indices; neighbours that round to the same step are pushed apart.
    """
    lam = np.asarray(log_snr.detach().cpu(), dtype=np.float64)  # decreasing in t
    T = len(lam)
    seq = np.array([int(np.abs(lam - v).argmin()) for v in targets])
    if len(seq) > T:
        raise ValueError(f"{len(seq)} timesteps do not fit in T = {T}")
    seq = np.clip(seq, np.arange(len(seq))[::-1], T - 1 - np.arange(len(seq)))  # room for a strict order
    for i in range(1, len(seq)):
        seq[i] = min(seq[i], seq[i - 1] - 1)
    return [int(t) for t in seq]


def common_log_snr_grid(log_snrs: Sequence[torch.Tensor], steps: int) -> list[float]:
    """``steps`` log-SNR values evenly spaced over the range every schedule covers, from noisy to clean."""
    lo = max(float(ls.min()) for ls in log_snrs)
    hi = min(float(ls.max()) for ls in log_snrs)
    if lo >= hi:
        raise ValueError("the schedules cover no common range of log-SNR")
    return np.linspace(lo, hi, steps).tolist()


def _sequence(schedule: NoiseSchedule, steps: int, spacing: str,
              timesteps: Optional[Sequence[int]] = None) -> list[int]:
    if timesteps:
        seq = [int(t) for t in timesteps]
        T = schedule.num_steps
        if any(not 0 <= t < T for t in seq) or any(a <= b for a, b in zip(seq, seq[1:])):
            raise ValueError(f"timesteps must decrease strictly within [0, {T - 1}], got {seq}")
        return seq
    return timestep_sequence(schedule.num_steps, steps, spacing,
                             log_snr=schedule.log_snr.cpu() if spacing == "logsnr" else None)


def _alpha_bar(schedule: NoiseSchedule, t: int) -> torch.Tensor:
    """alpha-bar at step t, with alpha-bar = 1 for the clean level t = -1."""
    return schedule.alpha_bar[t] if t >= 0 else torch.ones((), device=schedule.alpha_bar.device)


@torch.no_grad()
def ddim_sample(model: nn.Module, schedule: NoiseSchedule, x_T: torch.Tensor, *, steps: int = 50, eta: float = 0.0,
                spacing: str = "uniform", timesteps: Optional[Sequence[int]] = None, clip_x0: bool = True,
                generator: Optional[torch.Generator] = None, callback: Optional[Callback] = None,
                progress: bool = False) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) over ``steps`` timesteps of the given spacing (or the given ``timesteps``).

    x_{t'} = sqrt(ab_{t'}) x0_hat + sqrt(1 - ab_{t'} - sigma^2) eps_hat + sigma z, with
    sigma = eta sqrt((1 - ab_{t'}) / (1 - ab_t)) sqrt(1 - ab_t / ab_{t'}) (eq. 16).
    ``eta = 0`` is deterministic; ``eta = 1`` with every step is DDPM with the
    posterior variance. When x0_hat is clipped, eps_hat is re-derived from it so the
    update stays consistent.
    """
    if bad_eta(eta):
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    seq = _sequence(schedule, steps, spacing, timesteps)
    x = x_T.to(schedule.betas.device).float()
    for i, t in enumerate(tqdm(seq, desc=f"DDIM-{steps}", disable=not progress, leave=False)):
        t_prev = seq[i + 1] if i + 1 < len(seq) else -1
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        ab, ab_prev = _alpha_bar(schedule, t), _alpha_bar(schedule, t_prev)
        eps = model(x, tt).float()
        x0 = schedule.predict_x0(x, tt, eps)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
            eps = schedule.predict_eps(x, tt, x0)
        sigma = eta * ((1 - ab_prev) / (1 - ab)).sqrt() * (1 - ab / ab_prev).sqrt()
        x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
        if eta > 0 and t_prev >= 0:
            z = randn(x.shape, generator=generator, device=x.device)
            x = x + sigma * z
        if callback is not None:
            callback(StepInfo(index=i, t=t, x=x, x0_pred=x0))
    return x


@torch.no_grad()
def ddim_invert(model: nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, *, steps: int = 50,
                spacing: str = "uniform", callback: Optional[Callback] = None, progress: bool = False) -> torch.Tensor:
    """Deterministic DDIM encoding of data ``x0`` to x_T: the eta = 0 update run upwards.

    Each step from level s to the next level t uses the noise predicted at (x_s, t):
    x_t = sqrt(ab_t) x0_hat + sqrt(1 - ab_t) eps_hat, the usual approximation that
    makes ``ddim_sample(ddim_invert(x0))`` reconstruct x0 as the step count grows.
    """
    seq = _sequence(schedule, steps, spacing)[::-1]  # increasing
    x = x0.to(schedule.betas.device).float()
    prev = -1
    for i, t in enumerate(tqdm(seq, desc=f"DDIM inversion-{steps}", disable=not progress, leave=False)):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        ab_prev, ab = _alpha_bar(schedule, prev), _alpha_bar(schedule, t)
        eps = model(x, tt).float()
        x0_hat = (x - (1 - ab_prev).sqrt() * eps) / ab_prev.sqrt()
        x = ab.sqrt() * x0_hat + (1 - ab).sqrt() * eps
        prev = t
        if callback is not None:
            callback(StepInfo(index=i, t=t, x=x, x0_pred=x0_hat))
    return x


@torch.no_grad()
def dpm_solver_pp_2m_sample(model: nn.Module, schedule: NoiseSchedule, x_T: torch.Tensor, *, steps: int = 20,
                            spacing: str = "logsnr", timesteps: Optional[Sequence[int]] = None, clip_x0: bool = True,
                            callback: Optional[Callback] = None, progress: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): a second-order multistep ODE solver in data space.

    With alpha_t = sqrt(ab_t), sigma_t = sqrt(1 - ab_t), lambda_t = log(alpha_t / sigma_t) and
    h = lambda_t' - lambda_t, each step is
    x_t' = (sigma_t' / sigma_t) x_t - alpha_t' (exp(-h) - 1) D, where D = x0_hat for the first
    step and D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_hat_prev (r = h_prev / h) afterwards. The last
    step, to the clean level, returns the data prediction (first order), so the method costs
    exactly ``steps`` network evaluations.
    """
    seq = _sequence(schedule, steps, spacing, timesteps)
    x = x_T.to(schedule.betas.device).float()
    lam = lambda ab: 0.5 * (ab.log() - (1 - ab).log())  # noqa: E731
    x0_prev, h_prev = None, None
    for i, t in enumerate(tqdm(seq, desc=f"DPM-Solver++(2M)-{steps}", disable=not progress, leave=False)):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        x0 = schedule.predict_x0(x, tt, model(x, tt).float())
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        if i + 1 == len(seq):
            x = x0  # sigma = 0 at the clean level: x_0 is the data prediction
        else:
            t_next = seq[i + 1]
            ab, ab_next = schedule.alpha_bar[t], schedule.alpha_bar[t_next]
            h = lam(ab_next) - lam(ab)
            if x0_prev is None:
                d = x0
            else:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
            x = ((1 - ab_next) / (1 - ab)).sqrt() * x - ab_next.sqrt() * torch.expm1(-h) * d
            x0_prev, h_prev = x0, h
        if callback is not None:
            callback(StepInfo(index=i, t=t, x=x, x0_pred=x0))
    return x
