"""Samplers: pure functions of (model, schedule, x_T, ...).

Every sampler takes an optional ``callback(info)`` called after each step with a
:class:`StepInfo` (step index, timestep, the new ``x`` and the predicted x_0), so
a chapter can record a trajectory without the sampler knowing about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional

import torch
from torch import nn
from tqdm import tqdm

from .schedules import NoiseSchedule, extract
from .utils import randn

__all__ = ["StepInfo", "ddpm_sample", "TrajectoryRecorder"]


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
        self.keep_t = None if keep_t is None else set(int(t) for t in keep_t)
        self.t: list[int] = []
        self.x: list[torch.Tensor] = []
        self.x0: list[torch.Tensor] = []

    def __call__(self, info: StepInfo) -> None:
        if self.keep_t is None or info.t in self.keep_t:
            self.t.append(info.t)
            self.x.append(info.x.detach().float().cpu())
            self.x0.append(info.x0_pred.detach().float().cpu())


def _model_eps(model: nn.Module, x: torch.Tensor, t: int) -> torch.Tensor:
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    return model(x, tt).float()


@torch.no_grad()
def ddpm_sample(
    model: nn.Module,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    *,
    variance: Literal["posterior", "beta"] = "posterior",
    clip_x0: bool = True,
    generator: Optional[torch.Generator] = None,
    noise_fn: Optional[Callable[[int, torch.Tensor], torch.Tensor]] = None,
    callback: Optional[Callback] = None,
    progress: bool = False,
) -> torch.Tensor:
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
        noise_fn: ``noise_fn(t, x) -> z`` overrides the per-step noise, e.g. to hold
            it fixed across a batch of interpolation frames.
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
        eps = _model_eps(model, x, t)
        x0 = schedule.predict_x0(x, tt, eps)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        mean, _, _ = schedule.posterior_mean_variance(x0, x, tt)
        if t > 0:
            z = noise_fn(t, x) if noise_fn is not None else randn(x.shape, generator=generator, device=x.device)
            x = mean + extract(var_table, tt, x.shape).sqrt() * z
        else:
            x = mean  # no noise at the last step (Algorithm 2, line 3: z = 0 if t = 1)
        if callback is not None:
            callback(StepInfo(index=i, t=t, x=x, x0_pred=x0))
    return x
