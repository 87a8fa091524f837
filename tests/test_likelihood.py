"""Bits per dimension from the variational bound, against a case whose expectation has a closed form."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from diffusion_lib import NoiseSchedule
from diffusion_lib.evaluation.likelihood import discretized_gaussian_log_likelihood, nll_bits_per_dim

GRID = torch.arange(256, dtype=torch.float64) / 127.5 - 1


def _pmf(m: float, s: float) -> torch.Tensor:
    """A Gaussian N(m, s^2) cut into the 256 intensity bins (open outer bins)."""
    ndtr = torch.special.ndtr
    edges = torch.cat([torch.tensor([-math.inf]), (GRID[:-1] + GRID[1:]) / 2, torch.tensor([math.inf])])
    return ndtr((edges[1:] - m) / s) - ndtr((edges[:-1] - m) / s)


class LinearEps(nn.Module):
    """eps_hat = a_t x_t + c_t: the exact noise predictor for Gaussian data of mean mu and variance v."""

    def __init__(self, schedule: NoiseSchedule, mu: float, v: float) -> None:
        super().__init__()
        ab = schedule.alpha_bar.double()
        a = (1 - ab).sqrt() / (ab * v + 1 - ab)
        self.register_buffer("a", a.float())
        self.register_buffer("c", (-a * ab.sqrt() * mu).float())

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.a[t].view(-1, 1, 1, 1) * x + self.c[t].view(-1, 1, 1, 1)


def _expected_bound_bits(schedule: NoiseSchedule, model: LinearEps, pmf: torch.Tensor) -> float:
    """E over the data of the bound, per dimension, in bits: everything is linear-Gaussian except the decoder."""
    ab, post_var = schedule.alpha_bar.double(), schedule.posterior_variance.double()
    coef1 = schedule.posterior_mean_coef1.double()
    a, c = model.a.double(), model.c.double()
    mu0 = float((pmf * GRID).sum())
    m2 = float((pmf * GRID**2).sum())
    total = 0.5 * (ab[-1] * m2 + (1 - ab[-1]) - 1 - torch.log1p(-ab[-1]))  # prior
    sa, s1 = ab.sqrt(), (1 - ab).sqrt()
    r = (1 - s1 * a) / sa  # x0_hat = r x_t - s1 c / sa, and x_t = sa x0 + s1 eps
    shift = s1 * c / sa
    for t in range(1, schedule.num_steps):
        k = 1 - r[t] * sa[t]  # x0 - x0_hat = k x0 - r s1 eps + shift
        e2 = k**2 * m2 + (r[t] * s1[t]) ** 2 + shift[t] ** 2 + 2 * k * mu0 * shift[t]
        total += coef1[t] ** 2 * e2 / (2 * post_var[t])
    # decoder at t = 0: the mean is x0_hat; integrate over eps with Gauss-Hermite
    z, w = np.polynomial.hermite_e.hermegauss(80)
    z, w = torch.tensor(z), torch.tensor(w) / math.sqrt(2 * math.pi)
    std = torch.exp(0.5 * schedule.posterior_log_variance_clipped[0].double())
    mean = r[0] * sa[0] * GRID[:, None] + r[0] * s1[0] * z[None, :] - shift[0]
    ll = discretized_gaussian_log_likelihood(GRID[:, None].expand_as(mean), mean, std.expand_as(mean))
    total += -(pmf[:, None] * w[None, :] * ll).sum()
    return float(total) / math.log(2)


@pytest.mark.parametrize("k", [8, 99])
def test_estimator_is_unbiased_for_the_bound_of_gaussian_like_data(k):
    schedule = NoiseSchedule.from_name("linear", 100)
    pmf = _pmf(0.1, 0.35)
    mu0 = float((pmf * GRID).sum())
    v0 = float((pmf * GRID**2).sum()) - mu0**2
    model = LinearEps(schedule, mu0, v0)
    g = torch.Generator().manual_seed(0)
    idx = torch.multinomial(pmf.float(), 3000 * 16, replacement=True, generator=g)
    x0 = GRID[idx].float().view(3000, 1, 4, 4)
    est = nll_bits_per_dim(model, schedule, x0, k=k, generator=g, batch_size=3000)
    expected = _expected_bound_bits(schedule, model, pmf)
    assert abs(est.mean - expected) < 4 * est.se, (est.mean, expected, est.se)
    assert est.se < 0.02 * expected
    assert est.prior + est.decoder + est.diffusion == pytest.approx(est.mean, rel=1e-5)


def test_decoder_bins_sum_to_one_and_outer_bins_are_open():
    x = GRID
    mean, std = torch.full_like(x, 0.2), torch.full_like(x, 0.3)
    p = discretized_gaussian_log_likelihood(x, mean, std).exp()
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-9)
    far = discretized_gaussian_log_likelihood(torch.tensor([1.0]), torch.tensor([-5.0]), torch.tensor([0.01]))
    assert torch.isfinite(far).all()  # a far-off bin is tiny, never -inf or NaN


def test_a_better_model_has_a_lower_bound():
    schedule = NoiseSchedule.from_name("linear", 100)
    pmf = _pmf(0.1, 0.35)
    mu0 = float((pmf * GRID).sum())
    v0 = float((pmf * GRID**2).sum()) - mu0**2
    g = torch.Generator().manual_seed(1)
    x0 = GRID[torch.multinomial(pmf.float(), 500 * 16, replacement=True, generator=g)].float().view(500, 1, 4, 4)
    exact = nll_bits_per_dim(LinearEps(schedule, mu0, v0), schedule, x0, k=99, generator=torch.Generator().manual_seed(2))
    wrong = nll_bits_per_dim(LinearEps(schedule, mu0 + 0.3, 2 * v0), schedule, x0, k=99,
                             generator=torch.Generator().manual_seed(2))
    assert wrong.mean > exact.mean + 5 * exact.se
