"""Noise schedules and the quantities derived from them.

A schedule is a pure function ``T -> betas`` (float64, shape ``(T,)``).
:class:`NoiseSchedule` turns betas into every coefficient the forward process,
the loss and the samplers need, once, in float64, and stores them as float32
buffers so that ``.to(device)`` moves them with the module.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

__all__ = [
    "linear_betas",
    "cosine_betas",
    "quadratic_betas",
    "SCHEDULES",
    "get_betas",
    "extract",
    "NoiseSchedule",
]


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Linear betas from ``beta_start`` to ``beta_end`` (Ho et al. 2020, sec. 4)."""
    _check_steps(T)
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)


def quadratic_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Betas linear in sqrt(beta): ``linspace(sqrt(b0), sqrt(bT), T) ** 2``."""
    _check_steps(T)
    return np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17), betas clipped at ``max_beta``.

    alpha_bar(t) = f(t) / f(0) with f(t) = cos(((t / T) + s) / (1 + s) * pi / 2) ** 2,
    and beta_t = 1 - alpha_bar(t + 1) / alpha_bar(t).
    """
    _check_steps(T)
    steps = np.arange(T + 1, dtype=np.float64) / T
    f = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = 1.0 - alpha_bar[1:] / alpha_bar[:-1]
    return np.clip(betas, 0.0, max_beta)


SCHEDULES: dict[str, Callable[[int], np.ndarray]] = {
    "linear": linear_betas,
    "cosine": cosine_betas,
    "quadratic": quadratic_betas,
}


def _check_steps(T: int) -> None:
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 2:
        raise ValueError(f"noise_steps must be an integer >= 2, got {T!r}")


def get_betas(name: str, T: int) -> np.ndarray:
    """The float64 betas of schedule ``name`` over ``T`` steps."""
    if name not in SCHEDULES:
        valid = ", ".join(sorted(SCHEDULES))
        raise ValueError(f"unknown noise schedule {name!r}; valid schedules: {valid}")
    return SCHEDULES[name](T)


def extract(a: torch.Tensor, t: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Gather ``a[t]`` per batch element and reshape to ``(B, 1, 1, ...)`` to broadcast over ``shape``."""
    out = a.gather(0, t.to(a.device).long())
    return out.reshape(t.shape[0], *((1,) * (len(shape) - 1)))


class NoiseSchedule(nn.Module):
    """All per-timestep coefficients of a schedule, as float32 buffers.

    Index ``t`` runs over ``0 .. T-1``; ``t = 0`` is the least noisy step (the
    paper's t = 1).
    """

    betas: torch.Tensor
    alphas: torch.Tensor
    alpha_bar: torch.Tensor
    alpha_bar_prev: torch.Tensor
    sqrt_alpha_bar: torch.Tensor
    sqrt_one_minus_alpha_bar: torch.Tensor
    sqrt_recip_alpha_bar: torch.Tensor
    sqrt_recipm1_alpha_bar: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance_clipped: torch.Tensor
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor
    log_snr: torch.Tensor

    def __init__(self, betas: np.ndarray | torch.Tensor, name: str = "custom") -> None:
        super().__init__()
        b = torch.as_tensor(np.asarray(betas, dtype=np.float64))
        if b.ndim != 1 or len(b) < 2:
            raise ValueError("betas must be a 1-D array with at least 2 entries")
        if not bool(((b > 0) & (b < 1)).all()):
            raise ValueError("every beta must lie in (0, 1)")
        self.name = name
        alphas = 1.0 - b
        ab = torch.cumprod(alphas, dim=0)
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        # q(x_{t-1} | x_t, x_0), eqs. 6-7 of Ho et al. 2020
        post_var = b * (1.0 - ab_prev) / (1.0 - ab)
        # post_var[0] is 0; clip its log to post_var[1] as improved-diffusion does
        post_log_var = torch.log(torch.cat([post_var[1:2], post_var[1:]]))
        derived = {
            "betas": b,
            "alphas": alphas,
            "alpha_bar": ab,
            "alpha_bar_prev": ab_prev,
            "sqrt_alpha_bar": ab.sqrt(),
            "sqrt_one_minus_alpha_bar": (1.0 - ab).sqrt(),
            "sqrt_recip_alpha_bar": (1.0 / ab).sqrt(),
            "sqrt_recipm1_alpha_bar": (1.0 / ab - 1.0).sqrt(),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": post_log_var,
            "posterior_mean_coef1": b * ab_prev.sqrt() / (1.0 - ab),
            "posterior_mean_coef2": (1.0 - ab_prev) * alphas.sqrt() / (1.0 - ab),
            "log_snr": torch.log(ab) - torch.log1p(-ab),
        }
        for key, value in derived.items():
            self.register_buffer(key, value.float(), persistent=False)

    @classmethod
    def from_name(cls, name: str, T: int = 1000) -> "NoiseSchedule":
        """Build the schedule called ``name`` (see :data:`SCHEDULES`) over ``T`` steps."""
        return cls(get_betas(name, T), name=name)

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])

    def extra_repr(self) -> str:
        return f"name={self.name!r}, T={self.num_steps}"

    def q_step(self, x_prev: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One forward step, x_t ~ q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I) (Ho et al. eq. 2)."""
        return extract(self.alphas, t, x_prev.shape).sqrt() * x_prev + extract(self.betas, t, x_prev.shape).sqrt() * noise

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) = N(sqrt(ab_t) x_0, (1 - ab_t) I) (Ho et al. eq. 4)."""
        return (
            extract(self.sqrt_alpha_bar, t, x0.shape) * x0
            + extract(self.sqrt_one_minus_alpha_bar, t, x0.shape) * noise
        )

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t), eq. 4 solved for x_0."""
        return (
            extract(self.sqrt_recip_alpha_bar, t, x_t.shape) * x_t
            - extract(self.sqrt_recipm1_alpha_bar, t, x_t.shape) * eps
        )

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """eps = (x_t - sqrt(ab_t) x_0) / sqrt(1 - ab_t), eq. 4 solved for eps."""
        return (extract(self.sqrt_recip_alpha_bar, t, x_t.shape) * x_t - x0) / extract(
            self.sqrt_recipm1_alpha_bar, t, x_t.shape
        )

    def posterior_mean_variance(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0) (Ho et al. eqs. 6-7)."""
        mean = (
            extract(self.posterior_mean_coef1, t, x_t.shape) * x0
            + extract(self.posterior_mean_coef2, t, x_t.shape) * x_t
        )
        var = extract(self.posterior_variance, t, x_t.shape)
        log_var = extract(self.posterior_log_variance_clipped, t, x_t.shape)
        return mean, var, log_var
