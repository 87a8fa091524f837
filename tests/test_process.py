"""DiffusionProcess: device handling, training objective, sampling, per-timestep losses."""

import math

import pytest
import torch

from diffusion_lib import DiffusionModel, DiffusionProcess, NonFiniteLossError
from diffusion_lib.diffusion.generate import SamplerSpec
from diffusion_lib.diffusion.samplers import ddim_sample, ddpm_sample
from diffusion_lib.diffusion.samplers import TrajectoryRecorder


def tiny_process(**kw):
    model = DiffusionModel(28, 1, noise_steps=kw.get("noise_steps", 100), base_channels=8,
                           channel_mults=(1, 2), time_dim=8, attention=False)
    return DiffusionProcess(28, 1, model=model, device="cpu", **kw)


def test_add_noise_returns_the_noise_it_used():
    p = tiny_process(noise_steps=100)
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    t = torch.randint(0, 100, (6,))
    xt, noise = p.add_noise(x, t)
    assert torch.allclose(p.schedule.predict_x0(xt, t, noise), x, atol=1e-4)


def test_overfits_one_fixed_batch():
    """With x_0, t and the noise all held fixed, the model must be able to fit eps exactly."""
    torch.manual_seed(0)
    p = tiny_process(noise_steps=100, lr=3e-3, ema_decay=None)
    g = torch.Generator().manual_seed(7)
    x = torch.rand(16, 1, 28, 28, generator=g) * 2 - 1
    t = torch.randint(0, 100, (16,), generator=g)
    noise = torch.randn(16, 1, 28, 28, generator=g)
    losses = [p.train_step(x, t, noise) for _ in range(120)]
    assert losses[0] > 0.9  # a zero-initialised output layer predicts eps = 0 first
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_train_step_returns_float_and_updates_ema():
    p = tiny_process(ema_decay=0.5)
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    loss = p.train_step(x)
    assert isinstance(loss, float) and math.isfinite(loss)
    p.train_step(x)
    w = dict(p.model.named_parameters())["stem.weight"]
    we = dict(p.trainer.ema.module.named_parameters())["stem.weight"]
    assert not torch.equal(w, we)  # EMA lags the raw weights
    assert p.trainer.step == 2


def test_warmup_ramps_learning_rate():
    p = tiny_process(lr=1e-3, warmup_steps=4)
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    lrs = []
    for _ in range(6):
        p.train_step(x)
        lrs.append(p.trainer.lr)
    assert lrs[0] == pytest.approx(5e-4) and lrs[2] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-3)


def test_non_finite_loss_stops_without_updating():
    p = tiny_process()
    before = {k: v.clone() for k, v in p.model.state_dict().items()}
    x = torch.full((4, 1, 28, 28), float("nan"))
    with pytest.raises(NonFiniteLossError, match="step 1"):
        p.train_step(x)
    assert all(torch.equal(before[k], v) for k, v in p.model.state_dict().items())


def test_sample_shape_range_and_trajectory():
    p = tiny_process(noise_steps=20)
    rec = TrajectoryRecorder(keep_t=[19, 10, 0])
    x = p.sample(3, generator=torch.Generator().manual_seed(0), callback=rec)
    assert x.shape == (3, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert rec.t == [19, 10, 0] and rec.x[-1].shape == (3, 1, 28, 28)


def test_sampling_is_reproducible_with_a_generator():
    p = tiny_process(noise_steps=10)
    a = p.sample(2, generator=torch.Generator().manual_seed(5))
    b = p.sample(2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize("method, steps, eta, spacing", [("ddpm", None, 0.0, ""), ("ddim", 5, 0.0, ""),
                                                          ("ddim", 4, 1.0, "quadratic"), ("dpm++2m", 5, 0.0, "")])
def test_sample_reaches_every_sampler_as_its_spec_runs_it(method, steps, eta, spacing):
    p = tiny_process(noise_steps=20)
    x_T = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    got = p.sample(2, method=method, steps=steps, eta=eta, spacing=spacing, x_T=x_T,
                   generator=torch.Generator().manual_seed(2))
    spec = SamplerSpec(method, 20 if steps is None else steps, eta, spacing)
    want = spec.run(p.eval_model, p.schedule, x_T, generator=torch.Generator().manual_seed(2)).clamp(-1, 1)
    assert torch.equal(got, want)
    if method == "ddpm":  # the default is the assignment's sampler, Algorithm 2
        plain = ddpm_sample(p.eval_model, p.schedule, x_T, generator=torch.Generator().manual_seed(2)).clamp(-1, 1)
        assert torch.equal(p.sample(2, x_T=x_T, generator=torch.Generator().manual_seed(2)), plain)


def test_sample_passes_its_options_to_the_sampler():
    p = tiny_process(noise_steps=20, ema_decay=None)
    g = torch.Generator().manual_seed(0)
    for w in p.model.parameters():  # off its initial weights: a zero last layer predicts eps = 0, which clipping hides
        w.data += 0.05 * torch.randn(w.shape, generator=g)
    x_T = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    unclipped = ddim_sample(p.eval_model, p.schedule, x_T, steps=5, clip_x0=False).clamp(-1, 1)
    assert torch.equal(p.sample(2, method="ddim", steps=5, x_T=x_T, clip_x0=False), unclipped)
    assert not torch.equal(p.sample(2, method="ddim", steps=5, x_T=x_T), unclipped)
    assert p.sample(2, method="dpm++2m", x_T=x_T).shape == x_T.shape  # 50 steps by default, or T when fewer


def test_sample_rejects_a_sampler_it_cannot_run():
    p = tiny_process(noise_steps=20)
    for kw, message in (({"method": "euler", "steps": 5}, r"method: unknown sampler 'euler'"),
                        ({"method": "ddim", "steps": 50}, r"steps: sampling steps must be integers in \[1, 20\]"),
                        ({"eta": 1.0}, "eta: ddpm takes none"), ({"method": "dpm++2m", "eta": 0.5}, "eta: dpm"),
                        ({"spacing": "trailing"}, "spacing: DDPM visits every step")):
        with pytest.raises(ValueError, match=message):
            p.sample(2, **kw)


class _ExactGaussianEps(torch.nn.Module):
    """The optimal eps-predictor for data N(mu, s^2 I): E[eps | x_t] in closed form."""

    def __init__(self, schedule, mu, s):
        super().__init__()
        self.schedule, self.mu, self.s = schedule, mu, s

    def forward(self, x, t):
        ab = self.schedule.alpha_bar[t].view(-1, 1, 1, 1)
        var = ab * self.s**2 + (1 - ab)
        return (1 - ab).sqrt() * (x - ab.sqrt() * self.mu) / var


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_ddpm_with_exact_model_reproduces_data_moments(variance):
    from diffusion_lib import NoiseSchedule

    sched = NoiseSchedule.from_name("linear", 1000)  # ab_T ~ 4e-5: x_T ~ N(0, I) holds
    mu, s = 0.3, 0.2
    model = _ExactGaussianEps(sched, mu, s)
    gen = torch.Generator().manual_seed(0)
    x = ddpm_sample(model, sched, torch.randn(4000, 1, 4, 4, generator=gen), variance=variance,
                    clip_x0=False, generator=gen)
    assert x.mean().item() == pytest.approx(mu, abs=0.01)
    assert x.std().item() == pytest.approx(s, rel=0.08 if variance == "beta" else 0.03)


def test_loss_per_timestep_shapes_and_trend():
    p = tiny_process(noise_steps=100)
    x0 = torch.rand(10, 1, 28, 28) * 2 - 1
    out = p.loss_per_timestep(x0, [0, 50, 99], generator=torch.Generator().manual_seed(0))
    assert out["eps_mse"].shape == (3, 10) and out["x0_mse"].shape == (3, 10)
    # an untrained (zero-output) model: eps error ~1 everywhere, x0 error grows with t
    assert out["eps_mse"].mean().item() == pytest.approx(1.0, abs=0.15)
    assert out["x0_mse"][0].mean() < out["x0_mse"][2].mean()


def test_model_for_other_image_size_rejected():
    with pytest.raises(ValueError, match="built for"):
        DiffusionProcess(32, 3, model=DiffusionModel(28, 1, base_channels=8), device="cpu")
