"""The training objective and its per-timestep analysis."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.devices import randn
from .schedules import NoiseSchedule

__all__ = ["LOSS_WEIGHTINGS", "loss_weights", "simple_loss", "timestep_losses"]

LOSS_WEIGHTINGS = ("uniform", "min_snr")


def loss_weights(schedule: NoiseSchedule, t: torch.Tensor, weighting: str = "uniform",
                 gamma: float = 5.0) -> torch.Tensor:
    """Per-sample weights of the noise-prediction error at timesteps ``t``, shape ``(B,)``.

    ``uniform``: 1 (L_simple). ``min_snr``: min(SNR_t, gamma) / SNR_t, the Min-SNR-gamma
    weighting of Hang et al. (2023, eq. 7 written for an eps-prediction target): it
    keeps the eps loss at high noise and down-weights the low-noise steps, where
    SNR_t > gamma and the eps target says little about the image.
    """
    if weighting == "uniform":
        return torch.ones(t.shape, device=t.device)
    if weighting == "min_snr":
        snr = schedule.log_snr[t].exp()
        return snr.clamp(max=gamma) / snr
    raise ValueError(f"unknown loss weighting {weighting!r}; valid: {', '.join(LOSS_WEIGHTINGS)}")


def simple_loss(model: nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                *, autocast: bool = False, weighting: str = "uniform", gamma: float = 5.0) -> torch.Tensor:
    """L_simple = ||eps - eps_theta(sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps, t)||^2, batch mean (Ho et al. eq. 14).

    With ``autocast`` the network runs under bf16 autocast; the loss itself is
    computed in float32. ``weighting`` other than ``"uniform"`` weights each
    sample's error (see :func:`loss_weights`); the target stays the noise.
    """
    x_t = schedule.q_sample(x0, t, noise)
    with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=autocast):
        eps = model(x_t, t)
    if weighting == "uniform":
        return F.mse_loss(eps.float(), noise)
    per_sample = (eps.float() - noise).pow(2).flatten(1).mean(1)
    return (loss_weights(schedule, t, weighting, gamma) * per_sample).mean()


@torch.no_grad()
def timestep_losses(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    timesteps: Sequence[int],
    *,
    generator: Optional[torch.Generator] = None,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """Noise-prediction and x_0-reconstruction errors of ``model`` at fixed timesteps.

    For every t in ``timesteps`` and every image of ``x0`` (fresh noise for each),
    computes the per-image mean squared error of the eps prediction and of the
    implied x_0 = (x_t - sqrt(1 - ab_t) eps_theta) / sqrt(ab_t) (clipped to [-1, 1]).

    Returns a dict with ``t`` (len(timesteps),), ``eps_mse`` and ``x0_mse``
    (len(timesteps), N), on the CPU.
    """
    was_training = model.training
    model.eval()
    device = x0.device
    eps_rows, x0_rows = [], []
    try:
        for t in timesteps:
            eps_t, x0_t = [], []
            for start in range(0, x0.shape[0], batch_size):
                xb = x0[start:start + batch_size]
                tt = torch.full((xb.shape[0],), int(t), device=device, dtype=torch.long)
                noise = randn(xb.shape, generator=generator, device=device)
                x_t = schedule.q_sample(xb, tt, noise)
                eps = model(x_t, tt).float()
                x0_hat = schedule.predict_x0(x_t, tt, eps).clamp(-1.0, 1.0)
                eps_t.append((eps - noise).pow(2).flatten(1).mean(1).cpu())
                x0_t.append((x0_hat - xb).pow(2).flatten(1).mean(1).cpu())
            eps_rows.append(torch.cat(eps_t))
            x0_rows.append(torch.cat(x0_t))
    finally:
        model.train(was_training)
    return {"t": torch.as_tensor(list(timesteps)), "eps_mse": torch.stack(eps_rows), "x0_mse": torch.stack(x0_rows)}
