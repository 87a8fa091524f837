"""Negative log-likelihood in bits per dimension, from the variational bound (Ho et al. 2020, eq. 5).

For 8-bit images scaled to [-1, 1], the bound on -log p(x_0) is

    L = L_T + sum_{t=1}^{T-1} L_t + L_0   (the library's 0-indexed steps)

- ``L_T`` = KL(q(x_{T-1} | x_0) || N(0, I)), the prior term, in closed form;
- ``L_t`` = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) for t >= 1: both Gaussians
  share the posterior variance (the reverse process's fixed variance, as the DDPM
  sampler uses it), so the KL is the squared distance of their means over 2 sigma_t^2;
- ``L_0`` = -log p_theta(x_0 | x_0-level sample): the discretised Gaussian decoder of
  Ho et al. eq. 13 (256 bins of width 2/255, the outer bins open), with the
  clipped posterior variance improved-diffusion uses at the first step.

Evaluating all T terms costs T network evaluations per image. The estimator here
is unbiased with far fewer: ``L_T`` and ``L_0`` exactly, and the sum over
t = 1..T-1 estimated by stratified sampling, one random t in each of ``k`` strata
of consecutive steps, weighted by the stratum's size. Averaged over images, its
standard error covers both the spread between images and the sampling of t.
Bits per dimension are nats / (D ln 2), D = C x H x W.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..core.devices import randn
from ..diffusion.schedules import NoiseSchedule

__all__ = ["NllEstimate", "discretized_gaussian_log_likelihood", "prior_kl", "vlb_term", "nll_bits_per_dim"]

_BIN = 1.0 / 255.0  # half the width of one of the 256 intensity bins in [-1, 1]


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log P(x) per element for data ``x`` on the 256-level grid of [-1, 1] under N(mean, std^2) cut into bins.

    The bins at -1 and +1 extend to -inf and +inf (Ho et al. eq. 13). Float64 and the
    tail-aware difference of normal CDFs keep far-off bins finite.
    """
    x, mean, std = x.double(), mean.double(), std.double()
    upper = torch.where(x > 1 - _BIN, torch.full_like(x, math.inf), (x + _BIN - mean) / std)
    lower = torch.where(x < -1 + _BIN, torch.full_like(x, -math.inf), (x - _BIN - mean) / std)
    ndtr = torch.special.ndtr
    # P = Phi(upper) - Phi(lower), taken in the tail where it does not cancel
    p = torch.where(lower > 0, ndtr(-lower) - ndtr(-upper), ndtr(upper) - ndtr(lower))
    return p.clamp(min=1e-300).log()


def prior_kl(schedule: NoiseSchedule, x0: torch.Tensor) -> torch.Tensor:
    """KL(q(x_{T-1} | x_0) || N(0, I)) per image, in nats (summed over dimensions)."""
    ab = schedule.alpha_bar[-1].double()
    x0 = x0.double()
    kl = 0.5 * (ab * x0.pow(2) + (1 - ab) - 1 - torch.log1p(-ab))
    return kl.flatten(1).sum(1)


def vlb_term(model: nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
    """The bound's term at steps ``t`` (one per image), in nats: the decoder's -log p at t = 0, the KL for t >= 1."""
    x_t = schedule.q_sample(x0, t, noise)
    eps = model(x_t, t).float()
    x0_hat = schedule.predict_x0(x_t, t, eps)
    true_mean, var, _ = schedule.posterior_mean_variance(x0, x_t, t)
    model_mean, _, log_var = schedule.posterior_mean_variance(x0_hat, x_t, t)
    kl = ((true_mean.double() - model_mean.double()).pow(2) / (2 * var.double().clamp(min=1e-30))).flatten(1).sum(1)
    decoder = -discretized_gaussian_log_likelihood(x0, model_mean, (0.5 * log_var).exp()).flatten(1).sum(1)
    return torch.where(t == 0, decoder, kl)


@dataclass
class NllEstimate:
    """Per-image unbiased estimates of the bound, in bits per dimension, and its parts (means over images)."""

    per_image: torch.Tensor  # (N,) bits/dim
    prior: float
    decoder: float
    diffusion: float  # the sum over t = 1..T-1

    @property
    def mean(self) -> float:
        return float(self.per_image.mean())

    @property
    def se(self) -> float:
        return float(self.per_image.std() / math.sqrt(len(self.per_image)))

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        return self.mean - z * self.se, self.mean + z * self.se


@torch.no_grad()
def nll_bits_per_dim(model: nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, *, k: int = 32,
                     generator: Optional[torch.Generator] = None, batch_size: int = 250) -> NllEstimate:
    """Unbiased estimate of the variational bound on -log2 p(x_0) per dimension for 8-bit images ``x0`` in [-1, 1].

    ``k`` strata of t = 1..T-1 (one random step each), plus the exact prior and decoder
    terms: k + 1 network evaluations per image.
    """
    T = schedule.num_steps
    if not 1 <= k <= T - 1:
        raise ValueError(f"k must lie in [1, {T - 1}], got {k}")
    device = schedule.betas.device
    edges = torch.linspace(1, T, k + 1).round().long()  # strata [edges[i], edges[i+1]) of t = 1..T-1
    sizes = (edges[1:] - edges[:-1]).double()
    was_training = model.training
    model.eval()
    dims = x0[0].numel()
    parts = []  # (prior, decoder, diffusion) of each batch
    try:
        for start in range(0, len(x0), batch_size):
            xb = x0[start:start + batch_size].to(device).float()
            b = xb.shape[0]
            zero = torch.zeros(b, dtype=torch.long, device=device)
            dec = vlb_term(model, schedule, xb, zero, randn(xb.shape, generator=generator, device=device))
            diff = torch.zeros(b, dtype=torch.float64, device=device)
            for i in range(k):
                u = torch.rand(b, generator=generator)
                t = (edges[i] + (u * sizes[i]).floor().long()).clamp(max=int(edges[i + 1]) - 1).to(device)
                noise = randn(xb.shape, generator=generator, device=device)
                diff += sizes[i].item() * vlb_term(model, schedule, xb, t, noise)
            parts.append((prior_kl(schedule, xb).cpu(), dec.cpu(), diff.cpu()))
    finally:
        model.train(was_training)
    to_bpd = 1.0 / (dims * math.log(2.0))
    prior, dec, diff = (torch.cat(v) * to_bpd for v in zip(*parts))
    return NllEstimate(per_image=(prior + dec + diff).float(), prior=float(prior.mean()), decoder=float(dec.mean()),
                       diffusion=float(diff.mean()))
