"""Samplers against closed forms: DDIM(eta=1, all steps) = DDPM, inversion, exact-model moments."""

import pytest
import torch

from diffusion_lib import NoiseSchedule
from diffusion_lib.diffusion.samplers import (SPACINGS, TrajectoryRecorder, ddim_invert, ddim_sample, ddpm_sample,
                                              dpm_solver_pp_2m_sample, timestep_sequence)


class ExactGaussianEps(torch.nn.Module):
    """For data x_0 ~ N(mu, s^2 I) the optimal eps-predictor is known in closed form:
    x_t ~ N(sqrt(ab) mu, ab s^2 + 1 - ab), and E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab)."""

    def __init__(self, schedule, mu, s):
        super().__init__()
        self.schedule, self.mu, self.s = schedule, mu, s

    def forward(self, x, t):
        ab = self.schedule.alpha_bar[t].view(-1, 1, 1, 1)
        return (1 - ab).sqrt() * (x - ab.sqrt() * self.mu) / (ab * self.s**2 + 1 - ab)


class RandomConvEps(torch.nn.Module):
    """A fixed, t-dependent nonlinear 'model' to compare samplers step for step."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(1, 1, 3, 3, generator=g) * 0.3)

    def forward(self, x, t):
        # roughly right at high noise (eps ~ x_t) so trajectories stay bounded without clipping
        wt = (t.float() / 1000).view(-1, 1, 1, 1)
        return wt * x + 0.3 * torch.tanh(torch.nn.functional.conv2d(x, self.w, padding=1))


SCHED = NoiseSchedule.from_name("linear", 1000)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [1, 2, 10, 50, 999, 1000])
def test_step_sequences(spacing, steps):
    seq = timestep_sequence(1000, steps, spacing, log_snr=SCHED.log_snr)
    assert len(seq) == steps
    assert all(a > b for a, b in zip(seq, seq[1:]))
    assert 0 <= min(seq) and max(seq) <= 999
    if spacing in ("trailing",) or steps == 1:
        assert seq[0] == 999
    if spacing in ("uniform", "quadratic", "logsnr") and steps > 1:
        assert seq[0] == 999 and seq[-1] == 0


def test_logsnr_spacing_is_even_in_lambda():
    seq = timestep_sequence(1000, 12, "logsnr", log_snr=SCHED.log_snr)
    lam = SCHED.log_snr[seq].double()
    gaps = lam[1:] - lam[:-1]
    assert gaps.std() / gaps.mean() < 0.1


def test_quadratic_spacing_is_dense_near_zero():
    seq = timestep_sequence(1000, 20, "quadratic")[::-1]
    gaps = [b - a for a, b in zip(seq, seq[1:])]
    assert gaps[0] < gaps[-1]


@pytest.mark.parametrize("bad", [0, -1, 1001, 2.5])
def test_bad_step_counts(bad):
    with pytest.raises(ValueError, match="sampling steps"):
        timestep_sequence(1000, bad)


def test_unknown_spacing_and_eta():
    with pytest.raises(ValueError, match="spacing"):
        timestep_sequence(1000, 10, "cubic")
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(RandomConvEps(), SCHED, torch.randn(1, 1, 4, 4), steps=5, eta=1.5)


@pytest.mark.parametrize("clip", [False, True])
def test_ddim_eta1_all_steps_equals_ddpm_posterior_step_for_step(clip):
    model = RandomConvEps()
    x_T = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    rec_a, rec_b = TrajectoryRecorder(), TrajectoryRecorder()
    a = ddpm_sample(model, SCHED, x_T, variance="posterior", clip_x0=clip,
                    generator=torch.Generator().manual_seed(2), callback=rec_a)
    b = ddim_sample(model, SCHED, x_T, steps=1000, eta=1.0, clip_x0=clip,
                    generator=torch.Generator().manual_seed(2), callback=rec_b)
    assert rec_a.t == rec_b.t == list(range(999, -1, -1))
    for xa, xb in zip(rec_a.x, rec_b.x):
        assert torch.allclose(xa, xb, atol=1e-4, rtol=1e-4)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert a.abs().max() < 10  # a meaningful comparison, not two overflowing trajectories


def test_ddim_eta0_is_deterministic():
    model = RandomConvEps()
    x_T = torch.randn(2, 1, 6, 6)
    a = ddim_sample(model, SCHED, x_T, steps=20, eta=0.0, generator=torch.Generator().manual_seed(1))
    b = ddim_sample(model, SCHED, x_T, steps=20, eta=0.0, generator=torch.Generator().manual_seed(99))
    assert torch.equal(a, b)
    c = ddim_sample(model, SCHED, x_T, steps=20, eta=0.5, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a, c)


def test_inversion_then_sampling_reconstructs_with_exact_model():
    sched = NoiseSchedule.from_name("cosine", 1000)
    mu, s = 0.2, 0.5
    model = ExactGaussianEps(sched, mu, s)
    x0 = mu + s * torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    errors = []
    for steps in (10, 100, 500):
        xT = ddim_invert(model, sched, x0, steps=steps)
        rec = ddim_sample(model, sched, xT, steps=steps, eta=0.0, clip_x0=False)
        errors.append((rec - x0).abs().max().item())
    assert errors[-1] < 0.02 and errors[0] > errors[-1]
    # the encoding is (close to) a standard normal, as x_T should be
    xT = ddim_invert(model, sched, x0, steps=500)
    assert abs(xT.mean().item()) < 0.1 and abs(xT.std().item() - 1) < 0.1


@pytest.mark.parametrize("name", ["ddpm", "ddim0", "ddim1", "dpm++10", "dpm++20"])
def test_exact_model_samples_have_data_moments(name):
    mu, s = -0.3, 0.25
    model = ExactGaussianEps(SCHED, mu, s)
    gen = torch.Generator().manual_seed(5)
    x_T = torch.randn(3000, 1, 4, 4, generator=gen)
    run = {
        "ddpm": lambda: ddpm_sample(model, SCHED, x_T, clip_x0=False, generator=gen),
        # first-order DDIM needs many steps on this sharp (s = 0.25) distribution; DPM-Solver++ needs few
        "ddim0": lambda: ddim_sample(model, SCHED, x_T, steps=500, eta=0.0, clip_x0=False),
        "ddim1": lambda: ddim_sample(model, SCHED, x_T, steps=500, eta=1.0, clip_x0=False, generator=gen),
        "dpm++10": lambda: dpm_solver_pp_2m_sample(model, SCHED, x_T, steps=10, clip_x0=False),
        "dpm++20": lambda: dpm_solver_pp_2m_sample(model, SCHED, x_T, steps=20, clip_x0=False),
    }[name]
    x = run()
    assert x.mean().item() == pytest.approx(mu, abs=0.01)
    assert x.std().item() == pytest.approx(s, rel=0.05)


def test_callback_sees_every_step_of_fast_samplers():
    model = RandomConvEps()
    for fn, spacing in ((ddim_sample, "uniform"), (dpm_solver_pp_2m_sample, "logsnr")):
        rec = TrajectoryRecorder()
        fn(model, SCHED, torch.randn(1, 1, 4, 4), callback=rec, steps=7, spacing=spacing)
        assert rec.t == timestep_sequence(1000, 7, spacing, log_snr=SCHED.log_snr)


def test_second_order_beats_first_order_at_equal_steps():
    """On the exact Gaussian model, DPM-Solver++(2M) at 10 steps is closer to the true std than DDIM at 10."""
    mu, s = 0.1, 0.25
    model = ExactGaussianEps(SCHED, mu, s)
    x_T = torch.randn(3000, 1, 4, 4, generator=torch.Generator().manual_seed(8))
    dpm = dpm_solver_pp_2m_sample(model, SCHED, x_T, steps=10, clip_x0=False).std().item()
    ddim = ddim_sample(model, SCHED, x_T, steps=10, eta=0.0, clip_x0=False, spacing="logsnr").std().item()
    assert abs(dpm - s) < abs(ddim - s) / 3


def test_configured_spacing_reaches_the_sampler():
    """A chapter's sampler parameters become a SamplerSpec whole: the spacing is not dropped on the way."""
    from diffusion_lib.chapter.params import sampler

    schedule = NoiseSchedule.from_name("linear", 100)
    for spacing in ("quadratic", "trailing", "logsnr"):
        spec = sampler({"method": "ddim", "steps": 6, "eta": 0.0, "spacing": spacing}, noise_steps=100)
        assert spec.spacing == spacing
        rec = TrajectoryRecorder()
        spec.run(RandomConvEps(), schedule, torch.randn(2, 1, 8, 8), callback=rec)
        assert rec.t == timestep_sequence(100, 6, spacing, log_snr=schedule.log_snr)
    default = sampler({"method": "ddim", "steps": 6}, noise_steps=100)
    rec = TrajectoryRecorder()
    default.run(RandomConvEps(), schedule, torch.randn(2, 1, 8, 8), callback=rec)
    assert rec.t == timestep_sequence(100, 6, "uniform")


def test_chapters_build_samplers_from_parameters_whole():
    """No chapter picks keys out of a sampler parameter by hand (that is how a configured spacing got lost)."""
    import re
    from pathlib import Path

    for py in sorted((Path(__file__).resolve().parent.parent / "chapters").glob("[0-9][0-9]_*.py")):
        assert not re.search(r"SamplerSpec\(\w+\[\"method\"\]", py.read_text()), py.name


def test_a_bad_sampler_mapping_is_one_clear_error():
    from diffusion_lib.chapter.params import sampler
    from diffusion_lib.core.errors import ConfigError

    with pytest.raises(ConfigError, match="spacing: unknown step spacing 'cubic'"):
        sampler({"method": "ddim", "steps": 5, "spacing": "cubic"})
    with pytest.raises(ConfigError, match="unknown key"):
        sampler({"method": "ddim", "steps": 5, "spaceing": "uniform"})


def test_matched_timesteps_visit_the_same_noise_levels_in_every_schedule():
    from diffusion_lib.diffusion.samplers import common_log_snr_grid, timesteps_at_log_snr

    schedules = [NoiseSchedule.from_name(n, 1000) for n in ("linear", "cosine", "quadratic")]
    grid = common_log_snr_grid([s.log_snr for s in schedules], 50)
    assert grid[0] == pytest.approx(max(float(s.log_snr.min()) for s in schedules))  # the noisiest shared level
    matched, uniform = [], torch.tensor(timestep_sequence(1000, 50, "uniform"))
    for s in schedules:
        seq = timesteps_at_log_snr(s.log_snr, grid)
        assert len(seq) == 50 and all(a > b for a, b in zip(seq, seq[1:]))
        matched.append(s.log_snr[torch.tensor(seq)])
    # near t = 0 adjacent steps are far apart in log-SNR, so the match is only as close as the grid of steps allows
    err = (torch.stack(matched) - torch.tensor(grid, dtype=torch.float32)).abs()
    assert err.mean() < 0.1 and err.max() < 0.7
    # uniform spacing in t visits very different noise levels in each schedule: the confound this removes
    spread_uniform = torch.stack([s.log_snr[uniform] for s in schedules]).std(0)
    spread_matched = torch.stack(matched).std(0)
    assert spread_uniform.mean() > 1.0 and spread_matched.mean() < 0.1 * spread_uniform.mean()


def test_explicit_timesteps_are_the_spacing_they_spell_out():
    from diffusion_lib.diffusion.generate import SamplerSpec

    model, x = RandomConvEps(), torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    seq = timestep_sequence(1000, 12, "quadratic")
    a = ddim_sample(model, SCHED, x, steps=12, spacing="quadratic")
    b = SamplerSpec("ddim", 12, timesteps=tuple(seq)).run(model, SCHED, x)
    assert torch.equal(a, b)
    assert SamplerSpec("ddim", 3, timesteps=(5, 7, 1)).problems(1000)  # not decreasing
    assert SamplerSpec("ddim", 2, timesteps=(5, 1, 0)).problems(1000)  # not `steps` of them
    with pytest.raises(ValueError, match="decrease strictly"):
        ddim_sample(model, SCHED, x, steps=2, timesteps=[10, 10])


def test_decode_in_batches_equals_one_batch():
    from diffusion_lib.diffusion.generate import SamplerSpec, decode

    model, x = RandomConvEps(), torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    spec = SamplerSpec("ddim", 10)
    whole = spec.run(model, SCHED, x).clamp(-1, 1)
    assert torch.allclose(decode(model, SCHED, spec, x, batch_size=3), whole, atol=1e-6)
