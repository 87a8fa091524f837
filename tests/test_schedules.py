"""Schedules and the forward process against their closed forms."""

import math

import numpy as np
import pytest
import torch

from diffusion_lib import NoiseSchedule, get_betas
from diffusion_lib.diffusion.schedules import SCHEDULES, cosine_betas, linear_betas, quadratic_betas

T = 1000


def test_linear_endpoints_and_spacing():
    b = linear_betas(T)
    assert b.dtype == np.float64 and b.shape == (T,)
    assert b[0] == pytest.approx(1e-4, abs=1e-15) and b[-1] == pytest.approx(0.02, abs=1e-15)
    assert np.allclose(np.diff(b), (0.02 - 1e-4) / (T - 1), rtol=0, atol=1e-15)


def test_quadratic_is_linear_in_sqrt_beta():
    b = quadratic_betas(T)
    assert b[0] == pytest.approx(1e-4, rel=1e-12) and b[-1] == pytest.approx(0.02, rel=1e-12)
    # sqrt(beta) is evenly spaced: the closed form, not linspace(b0**2, bT**2) ** 2
    s = np.sqrt(b)
    assert np.allclose(np.diff(s), (math.sqrt(0.02) - math.sqrt(1e-4)) / (T - 1), atol=1e-14)
    mid = (math.sqrt(1e-4) + (math.sqrt(0.02) - math.sqrt(1e-4)) * 500 / (T - 1)) ** 2
    assert b[500] == pytest.approx(mid, rel=1e-12)


def test_cosine_matches_alpha_bar_closed_form():
    s = 0.008
    b = cosine_betas(T)
    ab = np.cumprod(1 - b)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in [0, 1, 10, 250, 500, 900]:
        assert ab[t] == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert b.max() <= 0.999 and b[-1] == pytest.approx(0.999)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_alpha_bar_monotone_and_in_range(name):
    sched = NoiseSchedule.from_name(name, T)
    ab = sched.alpha_bar.double()
    assert torch.all(ab[1:] < ab[:-1])
    assert 0 < ab[-1] < 1e-3 and ab[0] > 0.99
    assert sched.alpha_bar.dtype == torch.float32
    ab64 = torch.as_tensor(np.cumprod(1 - get_betas(name, T)))
    assert torch.allclose(sched.log_snr.double(), torch.log(ab64 / (1 - ab64)), rtol=1e-5, atol=1e-5)


def test_unknown_schedule_lists_valid_ones():
    with pytest.raises(ValueError) as err:
        get_betas("sigmoidal", T)
    msg = str(err.value)
    assert "sigmoidal" in msg and all(n in msg for n in ["linear", "cosine", "quadratic"])


@pytest.mark.parametrize("bad", [0, 1, -5, 2.5, True])
def test_bad_step_counts_rejected(bad):
    with pytest.raises(ValueError, match="noise_steps"):
        get_betas("linear", bad)


def test_q_sample_moments():
    sched = NoiseSchedule.from_name("linear", T)
    n = 400_000
    for t, x0v in [(0, 0.5), (150, -0.8), (700, 1.0)]:
        x0 = torch.full((n, 1), x0v)
        tt = torch.full((n,), t)
        xt = sched.q_sample(x0, tt, torch.randn_like(x0))
        ab = float(np.cumprod(1 - linear_betas(T))[t])
        # mean sqrt(ab) x0, variance 1 - ab, 5 standard errors of tolerance
        assert xt.mean().item() == pytest.approx(math.sqrt(ab) * x0v, abs=5 * math.sqrt((1 - ab) / n))
        assert xt.var().item() == pytest.approx(1 - ab, abs=5 * (1 - ab) * math.sqrt(2 / n))


def test_posterior_against_direct_gaussian_computation():
    sched = NoiseSchedule.from_name("cosine", T)
    betas = cosine_betas(T)
    ab = np.cumprod(1 - betas)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(5, 1, 3, 3, generator=gen, dtype=torch.float64)
    xt = torch.randn(5, 1, 3, 3, generator=gen, dtype=torch.float64)
    for t in [1, 37, 500, 998]:
        # q(x_{t-1}|x_0) = N(sqrt(ab_{t-1}) x0, (1-ab_{t-1})) times q(x_t|x_{t-1}) = N(sqrt(a_t) x_{t-1}, beta_t):
        # product of Gaussians in x_{t-1}, precision-weighted
        a_t, ab_prev = 1 - betas[t], ab[t - 1]
        prec = 1 / (1 - ab_prev) + a_t / betas[t]
        var = 1 / prec
        mean = var * (math.sqrt(ab_prev) * x0 / (1 - ab_prev) + math.sqrt(a_t) * xt / betas[t])
        tt = torch.full((5,), t)
        m, v, logv = sched.posterior_mean_variance(x0.float(), xt.float(), tt)
        assert torch.allclose(m.double(), mean, atol=2e-5)
        assert v.flatten()[0].item() == pytest.approx(var, rel=1e-5)
        assert logv.flatten()[0].item() == pytest.approx(math.log(var), abs=1e-4)


def test_predict_x0_inverts_q_sample():
    sched = NoiseSchedule.from_name("quadratic", T)
    x0 = torch.rand(8, 1, 4, 4) * 2 - 1
    eps = torch.randn_like(x0)
    t = torch.randint(0, T, (8,))
    xt = sched.q_sample(x0, t, eps)
    assert torch.allclose(sched.predict_x0(xt, t, eps), x0, atol=2e-3)
    assert torch.allclose(sched.predict_eps(xt, t, x0), eps, atol=2e-3)
