"""The training recipe's options: learning-rate decay, EMA warm-up, Min-SNR weighting."""

import math
import time

import pytest
import torch

from diffusion_lib import DiffusionModel, DiffusionProcess, NoiseSchedule
from diffusion_lib.core.config import from_dict
from diffusion_lib.core.errors import ConfigError
from diffusion_lib.diffusion.losses import loss_weights, simple_loss
from diffusion_lib.training.config import TrainConfig
from diffusion_lib.training.run import _config_changes, train
from torch.optim.swa_utils import AveragedModel

from diffusion_lib.training.trainer import (ema_avg_fn, ema_decay_at, ema_initial_weight, ema_warmup_reaches,
                                            lr_factor)


def test_cosine_decay_warms_up_then_falls_to_zero_after_the_last_step():
    f = lr_factor(warmup_steps=10, decay="cosine", total_steps=110)
    assert f(0) == pytest.approx(0.1) and f(8) == pytest.approx(0.9)
    assert f(9) == pytest.approx(1.0)  # the warm-up's last step: full rate
    assert f(59) == pytest.approx(0.5 * (1 + math.cos(math.pi * 50 / 101)))
    assert 0 < f(109) < 1e-3  # the rate of the last (110th) update: small, but it still learns
    assert f(110) == pytest.approx(0.0, abs=1e-12) and f(500) == pytest.approx(0.0, abs=1e-12)
    values = [f(s) for s in range(9, 111)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_no_decay_is_the_old_warm_up_exactly():
    f = lr_factor(warmup_steps=4)
    assert [f(s) for s in range(6)] == [min(1.0, (s + 1) / 4) for s in range(6)]
    with pytest.raises(ValueError, match="unknown learning-rate decay"):
        lr_factor(4, "linear", 10)


def test_ema_warm_up_follows_its_formula_and_without_it_the_decay_is_fixed():
    for warmup in (False, True):
        ema, p = [torch.zeros(3)], [torch.ones(3)]
        ema_avg_fn(0.9, warmup)(ema, p, torch.tensor(5))
        d = min(0.9, 6 / 15) if warmup else 0.9
        assert torch.allclose(ema[0], torch.full((3,), 1 - d))


@pytest.mark.parametrize("warmup", [False, True])
def test_the_initial_weight_is_what_the_averaged_model_keeps_of_the_first_network(warmup):
    # A one-parameter network: 1 at the first step, 0 at every later one, so what the
    # average holds after `steps` updates is exactly the weight of the first network.
    net = torch.nn.Linear(1, 1, bias=False)
    ema = AveragedModel(net, multi_avg_fn=ema_avg_fn(0.99, warmup), use_buffers=True)
    steps = 300
    for step in range(steps):
        with torch.no_grad():
            net.weight.fill_(1.0 if step == 0 else 0.0)
        ema.update_parameters(net)
    held = ema.module.weight.item()
    assert held == pytest.approx(ema_initial_weight(0.99, steps, warmup), rel=1e-4, abs=1e-12)
    if warmup:
        assert held < 1e-6 < 0.99 ** (steps - 1)  # the warm-up forgets the first network much faster
    else:
        assert held == pytest.approx(0.99 ** (steps - 1), rel=1e-4)


def test_the_warm_up_reaches_the_decay_after_the_stated_number_of_updates():
    for decay in (0.995, 0.998, 0.9999):
        n = ema_warmup_reaches(decay)
        assert ema_decay_at(n, decay, True) == pytest.approx(decay)
        assert ema_decay_at(0.9 * n, decay, True) < decay
        assert ema_decay_at(0.9 * n, decay, False) == decay


def test_min_snr_weights_cap_the_low_noise_steps_and_keep_the_high_noise_ones():
    s = NoiseSchedule.from_name("linear", 1000)
    t = torch.tensor([0, 100, 500, 999])
    w = loss_weights(s, t, "min_snr", gamma=5.0)
    snr = s.log_snr[t].exp()
    assert torch.allclose(w, torch.minimum(snr, torch.tensor(5.0)) / snr)
    assert w[0] < 1e-3 and w[-1] == 1.0  # SNR ~ 1e4 at t = 0, ~ 4e-5 at t = T - 1
    assert torch.equal(loss_weights(s, t), torch.ones(4))


def test_weighted_loss_is_the_weighted_mean_of_per_sample_errors():
    torch.manual_seed(0)
    s = NoiseSchedule.from_name("linear", 100)
    model = DiffusionModel(28, 1, noise_steps=100, base_channels=8, channel_mults=(1, 2), time_dim=8, attention=False)
    with torch.no_grad():  # a network that is not all zeros, so the errors differ between samples
        model.out_conv.weight.normal_(0, 0.1)
    x0, noise = torch.rand(6, 1, 28, 28) * 2 - 1, torch.randn(6, 1, 28, 28)
    t = torch.tensor([0, 5, 20, 50, 80, 99])
    with torch.no_grad():
        err = (model(s.q_sample(x0, t, noise), t) - noise).pow(2).flatten(1).mean(1)
        w = loss_weights(s, t, "min_snr", 5.0)
        got = simple_loss(model, s, x0, t, noise, weighting="min_snr", gamma=5.0)
        assert got == pytest.approx(float((w * err).mean()), rel=1e-5)
        assert simple_loss(model, s, x0, t, noise) == pytest.approx(float(err.mean()), rel=1e-5)


def test_recipe_options_are_validated_and_a_cosine_run_of_another_length_is_another_run(tiny_train):
    with pytest.raises(ConfigError) as e:
        from_dict(TrainConfig, tiny_train(lr_decay="step", loss_weighting="snr"))
    assert "lr_decay" in str(e.value) and "loss_weighting" in str(e.value)
    with pytest.raises(ConfigError, match="warmup_steps"):
        from_dict(TrainConfig, tiny_train(lr_decay="cosine", steps=5, warmup_steps=5))
    const = from_dict(TrainConfig, tiny_train())
    assert _config_changes({**const.to_dict(), "steps": 6}, const) == []  # constant rate: a longer run continues
    cos = from_dict(TrainConfig, tiny_train(lr_decay="cosine"))
    assert _config_changes({**cos.to_dict(), "steps": 6}, cos) == ["steps: 6 -> 12"]


def test_a_run_with_every_recipe_option_trains_and_ends_at_zero_learning_rate(tiny_train):
    cfg = from_dict(TrainConfig, tiny_train(lr_decay="cosine", ema_warmup=True, loss_weighting="min_snr",
                                            min_snr_gamma=5.0, ema_decay=0.99))
    res = train(cfg, progress=False, log=lambda *_: None)
    rows = [line.split(",") for line in res.metrics_path.read_text().splitlines()]
    head = rows[0]
    lr = [float(r[head.index("lr")]) for r in rows[1:]]
    assert len(lr) == cfg.steps and lr[-1] == pytest.approx(0.0, abs=1e-12) and max(lr) == pytest.approx(cfg.lr)
    loss = [float(r[head.index("loss")]) for r in rows[1:]]
    assert all(math.isfinite(v) for v in loss)


def test_default_process_keeps_l_simple():
    p = DiffusionProcess(28, 1, model=DiffusionModel(28, 1, noise_steps=50, base_channels=8, channel_mults=(1, 2),
                                                     time_dim=8, attention=False), noise_steps=50, device="cpu")
    assert p.loss_weighting == "uniform"


def test_snapshots_keep_the_ema_weights_along_the_run(tiny_train):
    from diffusion_lib.nets.registry import load_model

    cfg = from_dict(TrainConfig, tiny_train(snapshot_every=4, ema_decay=0.9))
    res = train(cfg, progress=False, log=lambda *_: None)
    snaps = sorted((res.out_dir / "snapshots").glob("ema_*.pt"))
    assert [p.name for p in snaps] == ["ema_000004.pt", "ema_000008.pt"]  # the last step is model_ema.pt
    m4, meta4 = load_model(snaps[0])
    m_end, _ = load_model(res.out_dir / "model_ema.pt")
    assert meta4["steps"] == 4
    w4, w_end = (dict(m.named_parameters())["stem.weight"] for m in (m4, m_end))
    assert not torch.equal(w4, w_end)
    # a snapshot setting does not change the run: the same configuration without it is a resumable change
    assert _config_changes({**cfg.to_dict(), "snapshot_every": 0}, cfg) == []


def test_measured_samples_are_cached_under_everything_they_depend_on(tiny_train, monkeypatch):
    import diffusion_lib.chapter.evaluate as ev
    from diffusion_lib.diffusion.generate import SamplerSpec

    cfg = from_dict(TrainConfig, tiny_train(steps=4))
    res = train(cfg, progress=False, log=lambda *_: None)
    calls = []
    real = ev.generate
    monkeypatch.setattr(ev, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    spec = SamplerSpec("ddim", 3)
    x1, s1 = ev.sample_run(res.out_dir, spec, 5, seed=1)
    x2, s2 = ev.sample_run(res.out_dir, spec, 5, seed=1)
    assert len(calls) == 1 and torch.equal(x1, x2) and s1 == s2  # the second call read the cache
    ev.sample_run(res.out_dir, spec, 5, seed=2)  # another x_T
    ev.sample_run(res.out_dir, SamplerSpec("ddim", 4), 5, seed=1)  # another sampler
    assert len(calls) == 3
    (res.out_dir / "model_ema.pt").write_bytes((res.out_dir / "model_ema.pt").read_bytes())  # same weights
    ev.sample_run(res.out_dir, spec, 5, seed=1)
    assert len(calls) == 3
    for f in (res.out_dir / "eval_cache").glob("*.pt"):
        f.write_bytes(b"damaged")
    x3, _ = ev.sample_run(res.out_dir, spec, 5, seed=1)
    assert len(calls) == 4 and torch.equal(x3, x1)  # a damaged entry is drawn again
    time.sleep(0.05)
    since = time.time()
    time.sleep(0.05)
    ev.sample_run(res.out_dir, spec, 5, seed=1)  # read from the cache: kept
    removed = ev.prune_unused(res.out_dir, since)  # the other two (seed 2, DDIM-4) were not used since
    assert len(calls) == 4 and len(removed) == 2 and len(list((res.out_dir / "eval_cache").glob("*.pt"))) == 1
    ev.sample_run(res.out_dir, spec, 5, seed=1)
    assert len(calls) == 4
