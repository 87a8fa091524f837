"""Classifier-free guidance: the conditional U-Net, its training (label dropout, resume) and guided sampling."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_lib import DiffusionModel
from diffusion_lib.core.errors import ConfigError
from diffusion_lib.diffusion.generate import SamplerSpec, generate
from diffusion_lib.diffusion.guidance import Guided
from diffusion_lib.diffusion.schedules import NoiseSchedule
from diffusion_lib.nets.concat_unet import ConditionalModel
from diffusion_lib.nets.inference import FastModel
from diffusion_lib.nets.registry import load_model, save_model
from diffusion_lib.sample import main as sample_main
from diffusion_lib.training.config import TrainConfig
from diffusion_lib.training.process import DiffusionProcess
from diffusion_lib.training.run import train

from test_train import _assert_same_run

SMALL = {"image_size": 28, "channels": 1, "base_channels": 8, "channel_mults": (1, 2), "time_dim": 8,
         "attention": False, "noise_steps": 50}


def _trained_looking(model: torch.nn.Module) -> torch.nn.Module:
    """Every weight moved off its initial value (the last convolution starts at zero: the output would be 0)."""
    g = torch.Generator().manual_seed(5)
    for p in model.parameters():
        p.data += 0.05 * torch.randn(p.shape, generator=g)
    return model.eval()


@pytest.fixture
def conditional():
    torch.manual_seed(0)
    return _trained_looking(ConditionalModel(**SMALL, num_classes=10))


def test_w_0_is_the_unconditional_prediction_and_w_1_the_conditional_one(conditional):
    x, t, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 10, 30, 49]), torch.tensor([3, 3, 3, 3])
    uncond, cond = conditional(x, t, torch.full((4,), 10)), conditional(x, t, y)
    assert torch.equal(Guided(conditional, 3, 0.0)(x, t), uncond)
    assert torch.equal(conditional(x, t), uncond)  # no label given: "no label"
    assert torch.equal(Guided(conditional, 3, 1.0)(x, t), cond)
    assert not torch.allclose(uncond, cond)  # the label changes the prediction
    for w in (0.0, 1.0, 2.5):  # the formula, computed by hand, agrees with both ways of batching it
        by_hand = uncond + w * (cond - uncond)
        for batched in (True, False):
            guided = Guided(conditional, 3, w, batched=batched)
            guided.w = w if w not in (0.0, 1.0) else w + 1e-12  # force the general formula at 0 and 1 too
            torch.testing.assert_close(guided(x, t), by_hand, rtol=1e-5, atol=1e-5)


def test_guided_sampling_runs_in_every_sampler_and_one_seed_gives_one_sample(conditional):
    s = NoiseSchedule.from_name("linear", 50)
    for spec in (SamplerSpec("ddpm", 50), SamplerSpec("ddim", 5), SamplerSpec("dpm++2m", 5)):
        a, _ = generate(Guided(conditional, 7, 3.0), s, spec, 3, seed=1, batch_size=2)
        b, _ = generate(Guided(conditional, 7, 3.0), s, spec, 3, seed=1, batch_size=2)
        c, _ = generate(Guided(conditional, 2, 3.0), s, spec, 3, seed=1, batch_size=2)
        assert a.shape == (3, 1, 28, 28) and torch.equal(a, b) and not torch.equal(a, c)


def test_an_unconditional_model_never_passes_through_guidance(tmp_path, capsys):
    """The unconditional path is the samplers' own: the command gives generate()'s images bit for bit, and asking
    an unconditional model for a label is one message and no file."""
    torch.manual_seed(1)
    plain = _trained_looking(DiffusionModel(**SMALL))
    save_model(tmp_path / "plain.pt", plain, schedule="linear", noise_steps=50)
    with pytest.raises(ValueError, match="unconditional: it takes no class label"):
        plain(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="needs a conditional model"):
        Guided(plain, 0, 2.0)
    out = tmp_path / "a.npz"
    assert sample_main([str(tmp_path / "plain.pt"), "-n", "3", "--steps", "4", "--backend", "eager", "--npz", str(out),
                        "--no-progress"]) == 0
    want, _ = generate(FastModel(plain), NoiseSchedule.from_name("linear", 50), SamplerSpec("ddim", 4), 3, seed=0)
    assert np.array_equal(np.load(out)["images"], want.numpy())
    for args, message in ((["--label", "3"], "trained without labels"), (["--guidance", "2"], "trained without labels")):
        assert sample_main([str(tmp_path / "plain.pt"), "--npz", str(tmp_path / "b.npz"), "--no-progress"] + args) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "b.npz").exists()


def test_the_command_draws_a_requested_class_of_a_conditional_model(conditional, tmp_path, capsys):
    save_model(tmp_path / "cond.pt", conditional, schedule="linear", noise_steps=50)
    base = [str(tmp_path / "cond.pt"), "-n", "2", "--steps", "3", "--backend", "eager", "--no-progress"]
    assert sample_main(base + ["--label", "4", "--guidance", "2", "--npz", str(tmp_path / "a.npz")]) == 0
    want, _ = generate(FastModel(Guided(conditional, 4, 2.0)), NoiseSchedule.from_name("linear", 50),
                       SamplerSpec("ddim", 3), 2)
    assert np.array_equal(np.load(tmp_path / "a.npz")["images"], want.numpy())
    for args, message in ((["--label", "10"], "label must be a class of this model, 0 to 9"),
                          (["--guidance", "2"], "--guidance needs --label"),
                          (["--label", "1", "--guidance", "-1"], "guidance scale w must be a number >= 0")):
        assert sample_main(base + args + ["--npz", str(tmp_path / "b.npz")]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "b.npz").exists()


def _conditional_run(tiny_train, **kw) -> TrainConfig:
    from diffusion_lib.core.config import from_dict

    return from_dict(TrainConfig, tiny_train(model={"arch": "conditional"}, deterministic=True, **kw), source="test")


def test_training_shows_a_tenth_of_the_images_without_their_label(tiny_train, monkeypatch):
    fed = []
    original = DiffusionProcess.train_step

    def recorded(self, x, t=None, noise=None, labels=None):
        fed.append(labels.clone())
        return original(self, x, t, noise, labels)

    monkeypatch.setattr(DiffusionProcess, "train_step", recorded)
    res = train(_conditional_run(tiny_train, steps=40), progress=False, log=lambda *_: None)
    labels = torch.cat(fed)
    assert len(fed) == 40 and labels.min() >= 0 and labels.max() <= 10
    assert 0.04 < (labels == 10).double().mean() < 0.18  # 640 draws of p_uncond = 0.1
    model, _ = load_model(res.model_path)
    assert isinstance(model, ConditionalModel) and model.config.num_classes == 10 and model.config.p_uncond == 0.1


def test_a_conditional_run_resumes_bitwise(tiny_train, tmp_path):
    full = _conditional_run(tiny_train)
    train(full, progress=False, log=lambda *_: None)
    import dataclasses

    part = dataclasses.replace(full, out_dir=str(tmp_path / "part"))
    train(dataclasses.replace(part, steps=8), progress=False, log=lambda *_: None)
    assert train(part, resume=True, progress=False, log=lambda *_: None).resumed_from == 8
    _assert_same_run(Path(full.out_dir), tmp_path / "part")


def _folder(root: Path, classes: list[str], n: int = 12) -> Path:
    g = np.random.default_rng(0)
    for i in range(n):
        sub = root / classes[i % len(classes)] if classes else root
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(g.integers(0, 256, (10, 10), dtype=np.uint8), "L").save(sub / f"{i}.png")
    return root


def test_a_folder_s_subfolders_are_its_classes_and_a_folder_without_them_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    from diffusion_lib.core.config import from_dict

    def cfg(root: Path, out: str) -> TrainConfig:
        return from_dict(TrainConfig, {"dataset": "folder", "data_root": str(root), "image_size": 8, "channels": 1,
                                       "steps": 2, "batch_size": 4, "warmup_steps": 1, "noise_steps": 20,
                                       "checkpoint_every": 0, "out_dir": str(tmp_path / f"run-{out}"), "device": "cpu",
                                       "model": {"arch": "conditional", "base_channels": 8, "channel_mults": [1, 2],
                                                 "time_dim": 8, "attention": False}}, source="test")

    res = train(cfg(_folder(tmp_path / "shapes", ["circles", "squares", "stars"]), "ok"), progress=False,
                log=lambda *_: None)
    assert load_model(res.model_path)[0].config.num_classes == 3
    with pytest.raises(ConfigError, match="needs classes.*one subfolder per class"):
        train(cfg(_folder(tmp_path / "flat", []), "flat"), progress=False, log=lambda *_: None)
    assert not (tmp_path / "run-flat").exists()


def test_the_training_program_trains_a_conditional_model_on_a_folder_with_classes(tmp_path, monkeypatch, capsys):
    from diffusion_lib.training.cli import main as train_main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    args = ["--image-size", "8", "--steps", "2", "--device", "cpu", "--no-progress", "--conditional"]
    shapes = _folder(tmp_path / "shapes", ["discs", "squares"], n=130)  # the default batch is 128 images
    assert train_main(["--data", str(shapes), "--out-dir", str(tmp_path / "run")] + args) == 0
    assert load_model(tmp_path / "run" / "model_ema.pt")[0].config.num_classes == 2
    assert train_main(["--data", str(_folder(tmp_path / "flat", [])), "--out-dir", str(tmp_path / "run2")] + args) == 2
    assert "one subfolder per class" in capsys.readouterr().err and not (tmp_path / "run2").exists()


def test_labelled_batches_keep_each_image_with_its_label_across_epochs_and_a_restore():
    from diffusion_lib.data.batches import TensorBatches

    images = torch.arange(30)[:, None, None, None].expand(30, 1, 2, 2).to(torch.uint8)
    labels = torch.arange(30) * 7 % 10  # a function of the image
    b = TensorBatches(images, 4, seed=1, labels=labels)
    drawn = [b.next_labelled() for _ in range(10)]  # more than an epoch (7 batches of 4)
    state = b.state_dict()
    later = [b.next_labelled() for _ in range(5)]
    again = TensorBatches(images, 4, seed=1, labels=labels)
    again.load_state_dict(state)
    resumed = [again.next_labelled() for _ in range(5)]
    for x, y in drawn + later:
        assert torch.equal(y, x[:, 0, 0, 0].long() * 7 % 10)
    assert all(torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]) for a, c in zip(later, resumed))
    plain = TensorBatches(images, 4, seed=1)
    assert torch.equal(plain.next(), drawn[0][0])  # labels change nothing in what is drawn
    with pytest.raises(ValueError, match="without labels"):
        plain.next_labelled()
    with pytest.raises(ValueError, match="30 images but labels"):
        TensorBatches(images, 4, seed=1, labels=labels[:5])
