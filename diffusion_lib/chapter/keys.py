"""Keys: what the library's expensive layers compute, measured by running them, not by reading their source.

A trained model, a sample set and a measurement depend on what the network,
the diffusion maths, the trainer, the data and the instruments *compute*. Each
of these components has a key: the hash of its outputs on a fixed probe,
computed in float64 on fixed inputs and rounded to 6 significant digits, so it
is the same with PyTorch's AVX2 and AVX512 kernels (a test compares them; its
scalar fallback differs) while any change of what the code computes (beyond the
6th digit, in what the probe runs) changes it. A private rename, a function moved between
modules or a reformatting changes no key; an edit to a U-Net block changes
``network``, one to the FID code ``instrument``, and a new training option
``training`` (its default is part of every run's configuration).

    python -m diffusion_lib.chapter.keys        (every component's key and modules, as JSON)

``tools/staleness.py`` builds a chapter's key from these (for the components its
imports reach) and from the source of every other library module it imports
(code without a probe counts by its source: towards stale, never towards
fresh); the evaluation cache (:mod:`diffusion_lib.chapter.evaluate`) keys a
sample set by the network, the diffusion maths and the backend's source. Each
probe executes every function of its component's modules (a test checks it),
except those listed in :data:`UNPROBED` with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import torch
from PIL import Image
from torch import nn

from ..core.errors import DataError
from ..core.files import digest
from ..core.paths import resolve
from ..data.batches import TensorBatches
from ..data.datasets import check_dataset, load_split, random_subset
from ..data.folder import cache_dir, image_files, load_folder
from ..data.images import grid_image, hwc_to_model_range, to_model_range, to_uint8, to_unit_range
from ..diffusion.generate import SamplerSpec, decode, generate
from ..diffusion.guidance import Guided
from ..diffusion.interpolation import lerp, slerp
from ..diffusion.losses import loss_weights, simple_loss, timestep_losses
from ..diffusion.portable_noise import portable_normal
from ..diffusion.samplers import (SPACINGS, TrajectoryRecorder, common_log_snr_grid, ddim_invert, timestep_sequence,
                                  timesteps_at_log_snr)
from ..diffusion.schedules import SCHEDULES, NoiseSchedule
from ..evaluation.classifiers import INSTRUMENTS, ConvClassifier, load_classifier
from ..evaluation.comparison import arm_means, compare_arms, compare_to_base, pooled_variance, t_quantile, verdict
from ..evaluation.floor import against_floor, ratio_growth, wilson, z_value
from ..evaluation.likelihood import discretized_gaussian_log_likelihood, nll_bits_per_dim, prior_kl, vlb_term
from ..evaluation.quality import (QualityMeter, class_statistics, frechet_distance, kid_unbiased, measure_quality,
                                  precision_recall, real_floor)
from ..nets.blocks import group_count, sinusoidal_features
from ..nets.registry import all_finite, arch_fields, build_model, load_model, save_model
from ..nets.unet import geometry_problem
from ..training.config import ModelSection, TrainConfig, load_train_config
from ..training.log import read_metrics, read_summary
from ..training.process import DiffusionProcess
from ..training.run import reuse_verdict, train, training_images, training_labels
from ..training.trainer import ema_initial_weight, ema_warmup_reaches, use_bf16_autocast

__all__ = ["COMPONENTS", "UNPROBED", "component_key", "keys", "KeyUnavailable"]

# component -> the library modules (relative to diffusion_lib/) whose behaviour its probe measures
COMPONENTS: dict[str, tuple[str, ...]] = {
    "network": ("nets/blocks.py", "nets/unet.py", "nets/concat_unet.py", "nets/additive_unet.py", "nets/registry.py"),
    "diffusion": ("diffusion/schedules.py", "diffusion/losses.py", "diffusion/samplers.py", "diffusion/generate.py",
                  "diffusion/interpolation.py", "diffusion/portable_noise.py"),
    "training": ("training/trainer.py", "training/process.py", "training/config.py", "training/run.py"),
    "data": ("data/datasets.py", "data/mnist.py", "data/cifar10.py", "data/images.py", "data/batches.py",
             "data/folder.py"),
    "instrument": ("evaluation/classifiers.py", "evaluation/quality.py", "evaluation/floor.py",
                   "evaluation/comparison.py"),
    "likelihood": ("evaluation/likelihood.py",),
    # the conditional network and its training are in the network and training modules, but only this probe runs
    # them: a change there makes stale the chapters that guide (chapter 10), not those of unconditional models
    "guidance": ("diffusion/guidance.py",),
}

# functions of the components' modules that no probe runs, and why that cannot hide a change of results
UNPROBED: dict[str, str] = {
    "registry.fingerprint": "decides whether a saved run is reused, not what it computes (float32, machine-dependent)",
    "registry.same_function": "compares two fingerprints",
    "classifiers.train_classifier": "the instruments' weights are committed; their digest is in the probe",
    "classifiers._augment": "used only by train_classifier",
    "classifiers._split": "used only by train_classifier",
    "classifiers.calibrate": "used only by train_classifier",
    "classifiers.save_classifier": "used only by train_classifier",
    "classifiers.classifier_accuracy": "reports the instrument's test accuracy, stored with its weights",
    "classifiers.main": "the program that trains the instruments",
    "classifiers.get_classifier": "load_classifier (probed) when the committed weights exist, else train_classifier",
    "mnist._missing_message": "an error message",
    "images.save_grid": "writes a PNG of grid_image, which the probe runs",
    "run._StopFlag._handle": "a stop signal: the run stops and resumes bitwise (tests), it computes nothing else",
    "run.TrainingRun._interrupted": "the message of a stopped run",
    "run.TrainingRun.build.<locals>.<lambda>": "silences the ranks other than 0 under torchrun",
}


class KeyUnavailable(RuntimeError):
    """A component's key cannot be computed here (its data or instrument is missing)."""


# ---------------------------------------------------------------------------------------------- summaries
DIGITS = 6


def _q(v: float) -> str:
    """``v`` to :data:`DIGITS` significant digits (0 below 1e-9): the same on machines whose float64 rounding
    differs."""
    return "nan" if math.isnan(v) else "0" if abs(v) < 1e-9 else f"{v:.{DIGITS}g}"


def _summary(x: Any) -> Any:
    """A tensor as its shape and dtype and, for floats, mean, RMS and 4 fixed projections (rounded); exact otherwise."""
    if isinstance(x, (list, tuple)):
        return [_summary(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _summary(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if isinstance(x, float):
        return _q(x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return [type(x).__name__, _summary({f.name: getattr(x, f.name) for f in dataclasses.fields(x)})]
    if not isinstance(x, torch.Tensor):
        return x if isinstance(x, (int, str, bool, type(None))) else repr(x)
    if not x.is_floating_point():
        return [list(x.shape), str(x.dtype), hashlib.sha256(x.contiguous().cpu().numpy().tobytes()).hexdigest()[:16]]
    v = x.detach().double().cpu().flatten()
    proj = torch.randn(v.numel(), 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    stats = [v.mean(), v.square().mean().sqrt(), *(v @ proj / max(1, v.numel()) ** 0.5)] if v.numel() else []
    return [list(x.shape), str(x.dtype), *(_q(float(s)) for s in stats)]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _float64(module: nn.Module) -> nn.Module:
    """``module`` computing in float64 even where the library casts its input to float32 (convolutions and matrix
    products are summed in a different order on different CPUs; in float64 that stays far below the 6th digit)."""
    def cast(_mod: nn.Module, args: tuple) -> tuple:
        return tuple(a.double() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    for m in module.modules():
        if not list(m.children()):
            m.register_forward_pre_hook(cast)
    return module.double()


class _Toy(nn.Module):
    """A small stand-in for a U-Net (eps from x and t), so that the other components' keys do not move with it."""

    def __init__(self, channels: int = 1, image_size: int = 8, noise_steps: int = 20) -> None:
        super().__init__()
        self.config = SimpleNamespace(channels=channels, image_size=image_size, noise_steps=noise_steps)
        self.conv = nn.Conv2d(channels + 1, channels, 3, padding=1)
        torch.nn.init.normal_(self.conv.weight, std=0.2, generator=_gen(1))
        torch.nn.init.normal_(self.conv.bias, std=0.1, generator=_gen(2))
        _float64(self)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = (t.to(x.dtype) / self.config.noise_steps)[:, None, None, None].expand(-1, 1, *x.shape[2:])
        return torch.tanh(self.conv(torch.cat([x, tt], 1)))


# ---------------------------------------------------------------------------------------------- probes
NETWORKS = (  # what the project builds: the assignment's U-Net, with and without attention, and the RGB U-Net
    {"arch": "concat", "image_size": 28, "channels": 1, "base_channels": 16, "channel_mults": (1, 2, 2),
     "num_res_blocks": 2, "time_dim": 16, "attention": True, "groups": 8, "dropout": 0.1},
    {"arch": "concat", "image_size": 16, "channels": 3, "base_channels": 8, "channel_mults": (1, 2),
     "num_res_blocks": 1, "time_dim": 8, "attention": False},
    {"arch": "additive", "image_size": 16, "channels": 3, "base_channels": 16, "channel_mults": (1, 2),
     "num_res_blocks": 1, "attn_resolutions": (8,), "dropout": 0.1},
)


def _probe_network(tmp: Path) -> Any:
    out: list[Any] = [sinusoidal_features(torch.arange(0, 1000, 97), 16).double(), group_count(24, 8),
                      geometry_problem(28, (1, 2, 2, 2)), sorted(arch_fields("concat"))]
    for i, cfg in enumerate(NETWORKS):
        torch.manual_seed(i)
        model = _float64(build_model(cfg)).eval()
        out += [model.config.to_dict(), model.num_parameters, all_finite(model), model.state_dict()]  # the init
        # then every weight moved off its initial value: a layer initialised to zero (the last convolution of a
        # residual block) would otherwise hide what comes before it
        g = _gen(100 + i)
        for p in model.parameters():
            p.data += 0.1 * torch.randn(p.shape, generator=g)
        x = torch.randn(2, cfg["channels"], cfg["image_size"], cfg["image_size"], generator=_gen(i))
        t = torch.tensor([0, 999])
        out += [model(x, t), model.embed_time(t), model.time_module.state_dict()]
        save_model(tmp / f"net{i}.pt", model)
        loaded, meta = load_model(tmp / f"net{i}.pt")
        out += [meta, _float64(loaded)(x, t)]
    return out


def _probe_diffusion(tmp: Path) -> Any:
    T = 20
    out: list[Any] = []
    x0 = torch.rand(3, 1, 8, 8, generator=_gen(0), dtype=torch.float64) * 2 - 1
    noise = torch.randn(3, 1, 8, 8, generator=_gen(1), dtype=torch.float64)
    t = torch.tensor([0, 7, T - 1])
    model = _Toy(noise_steps=T)
    for name in SCHEDULES:
        s = NoiseSchedule.from_name(name, 1000)
        out += [name, s.num_steps, {k: v for k, v in s.state_dict().items()}, s.extra_repr()]
        s = NoiseSchedule.from_name(name, T)
        x_t = s.q_sample(x0, t, noise)
        out += [x_t, s.q_step(x0, t, noise), s.predict_x0(x_t, t, noise), s.predict_eps(x_t, t, x0),
                s.posterior_mean_variance(x0, x_t, t)]
        for weighting in ("uniform", "min_snr"):
            out += [loss_weights(s, t, weighting, 5.0), simple_loss(model, s, x0, t, noise, weighting=weighting)]
        out.append(timestep_losses(model, s, x0, [0, 10, T - 1], generator=_gen(2)))
        out.append([timestep_sequence(1000, 10, sp, log_snr=s.log_snr if sp == "logsnr" else None) for sp in SPACINGS])
    s = NoiseSchedule.from_name("cosine", T)
    logs = [NoiseSchedule.from_name(n, 1000).log_snr for n in SCHEDULES]
    grid = common_log_snr_grid(logs, 6)
    out += [grid, timesteps_at_log_snr(logs[0], grid)]
    specs = [SamplerSpec("ddpm", T), SamplerSpec("ddpm", T, variance="beta"), SamplerSpec("ddim", 5),
             SamplerSpec("ddim", 5, eta=1.0, spacing="quadratic"), SamplerSpec("ddim", 4, timesteps=(19, 12, 5, 0)),
             SamplerSpec("dpm++2m", 5), SamplerSpec("dpm++2m", 5, spacing="uniform"),
             SamplerSpec.from_mapping({"method": "ddim", "steps": 3, "eta": 0.5, "spacing": "trailing"}, T)]
    x_T = torch.randn(2, 1, 8, 8, generator=_gen(3), dtype=torch.float64)
    for i, spec in enumerate(specs):
        rec = TrajectoryRecorder(None if i % 2 else [19, 12, 0])
        out += [spec.name, spec.run(model, s, x_T, generator=_gen(4), callback=rec), rec.t, rec.x, rec.x0]
    out += [SamplerSpec.mapping_problems({"method": "x", "steps": 0}, T), specs[0].problems(T)]
    out.append(ddim_invert(model, s, x0, steps=5))
    out.append(decode(model, s, specs[2], x_T, batch_size=1))
    samples, _seconds = generate(model, s, specs[5], 3, seed=5, batch_size=2)
    out.append(samples)
    a, b, w = x_T[:1].expand(5, -1, -1, -1), x_T[1:].expand(5, -1, -1, -1), torch.linspace(0, 1, 5)
    out += [lerp(a, b, w), slerp(a, b, w), slerp(a, a.clone(), w), portable_normal(7, 16).tolist()]
    return out


def _probe_training(tmp: Path) -> Any:
    (tmp / "train.yaml").write_text("train:\n  steps: 7\n")
    every_key = {**TrainConfig().to_dict(), "lr_decay": "cosine", "warmup_steps": 2,  # every key's rule runs
                 "model": {**TrainConfig().to_dict()["model"], "arch": "additive", "attn_resolutions": [14]}}
    out: list[Any] = [TrainConfig().to_dict(), TrainConfig().model_config(),
                      load_train_config(tmp / "train.yaml", every_key).to_dict(),
                      use_bf16_autocast(torch.device("cpu"), True, False, log=lambda *_: None),
                      ema_warmup_reaches(0.999), ema_initial_weight(0.999, 500, True)]
    x = torch.rand(4, 1, 8, 8, generator=_gen(0), dtype=torch.float64) * 2 - 1
    settings = [{}, {"warmup_steps": 2, "lr_decay": "cosine", "total_steps": 5, "grad_clip": 0.05, "ema_decay": 0.9,
                     "ema_warmup": True, "loss_weighting": "min_snr", "weight_decay": 0.01},
                {"ema_decay": None, "lr": 1e-2}]
    for i, kw in enumerate(settings):
        torch.manual_seed(i)
        p = DiffusionProcess(8, 1, 20, "linear", _Toy(), device="cpu", **kw)
        losses = []
        for step in range(4):
            t = torch.randint(0, 20, (4,), generator=_gen(10 + step))
            noise = torch.randn(4, 1, 8, 8, generator=_gen(20 + step), dtype=torch.float64)
            losses.append(p.train_step(x, t, noise))
            out.append([p.trainer.lr, p.trainer.last_grad_norm])
        out += [losses, p.noise_steps, p.add_noise(x, torch.tensor([1, 2, 3, 4]))[0].shape,
                {k: v for k, v in p.eval_model.state_dict().items() if torch.is_tensor(v)},
                p.loss(x, torch.tensor([0, 5, 10, 19]), torch.ones_like(x)),
                p.sample(2, generator=_gen(30), x_T=torch.randn(2, 1, 8, 8, generator=_gen(31), dtype=torch.float64)),
                p.loss_per_timestep(x, [0, 19], generator=_gen(32))]
        state = p.state_dict()
        q = DiffusionProcess(8, 1, 20, "linear", _Toy(), device="cpu", **kw)
        q.load_state_dict(state)
        out.append({k: v for k, v in q.eval_model.state_dict().items() if torch.is_tensor(v)})
    return out + _probe_training_run(tmp)


@contextlib.contextmanager
def _training_program() -> Iterator[list[Any]]:
    """Around runs of the training program: the float32 network it trains, and what it feeds the trainer
    (``[x, t, noise]``, and the labels of a conditional model) collected in the list it yields."""
    fed: list[Any] = []
    original = DiffusionProcess.train_step

    def recorded(self: DiffusionProcess, x: torch.Tensor, t: Any = None, noise: Any = None, labels: Any = None) -> float:
        fed.append([x, t, noise] + ([] if labels is None else [labels]))
        return original(self, x, t, noise, labels)

    deterministic = torch.are_deterministic_algorithms_enabled()
    DiffusionProcess.train_step = recorded  # type: ignore[method-assign]
    torch.set_default_dtype(torch.float32)  # the program's network, as it trains it
    try:
        yield fed
    except DataError as exc:
        raise KeyUnavailable(f"the MNIST training images cannot be read ({str(exc).splitlines()[0]})") from exc
    finally:
        DiffusionProcess.train_step = original  # type: ignore[method-assign]
        torch.use_deterministic_algorithms(deterministic)
        torch.set_default_dtype(torch.float64)


def _probe_training_run(tmp: Path) -> Any:
    """What the training program feeds the trainer (batches, steps, noise, learning rates) through a run that is
    continued, found complete and started again. What the trainer computes from them is the probe above; the
    float32 network's numbers are not recorded (they differ between CPUs in the 7th digit)."""
    cfg = TrainConfig(dataset="mnist", data_root="data", noise_steps=20, steps=3, batch_size=4, train_subset=12,
                      warmup_steps=1, lr_decay="none", sample_every=2, sample_n=2, checkpoint_every=2,
                      snapshot_every=2, out_dir=str(tmp / "run"), device="cpu", deterministic=True, hflip=True,
                      model=ModelSection(base_channels=8, channel_mults=(1, 2), time_dim=8, attention=False))
    quiet = lambda *_: None  # noqa: E731
    with _training_program() as fed:
        first = train(cfg, progress=False, log=quiet)
        longer = dataclasses.replace(cfg, steps=5)
        verdicts = [reuse_verdict(longer), reuse_verdict(dataclasses.replace(cfg, lr=1e-3))]
        resumed = train(longer, resume=True, progress=False, log=quiet)
        again = train(longer, resume=True, progress=False, log=quiet)
        now = reuse_verdict(longer)  # what the run can stand for after it was continued: recorded as before
        verdicts += [None if now is None else now[1], now is None]
        fresh = train(cfg, fresh=True, progress=False, log=quiet)
    rows = [{k: r[k] for k in ("step", "lr")} for r in read_metrics(resumed.metrics_path)]
    summary = read_summary(Path(cfg.out_dir) / "summary.json")
    out = [training_images(cfg), fed, rows, [r.steps for r in (first, resumed, again, fresh)],
           [r.resumed_from for r in (first, resumed, again, fresh)],
           {k: summary[k] for k in ("steps", "images_seen", "parameters", "precision")},
           {k: v for k, v in summary["config"].items() if k != "out_dir"},
           sorted(p.name for p in Path(cfg.out_dir).rglob("*") if "old-" not in str(p))]
    return out + [str(v).replace(str(tmp), "<tmp>") for v in verdicts]


def _probe_data(tmp: Path) -> Any:
    out: list[Any] = []
    try:
        for name in ("mnist", "cifar10"):
            out.append(check_dataset(name))
            for train in (True, False):
                out.append(load_split(name, "data", train=train))
            out.append(random_subset(name, 5, seed=3, root="data", skip=2))
    except DataError as exc:
        raise KeyUnavailable(f"the datasets cannot be read ({str(exc).splitlines()[0]}); run `make data`") from exc
    img = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4) * 5
    out += [to_model_range(img), to_uint8(to_model_range(img)), hwc_to_model_range(img.permute(0, 2, 3, 1)),
            to_unit_range(to_model_range(img)), grid_image(to_model_range(img), nrow=1)]
    b = TensorBatches(torch.arange(10)[:, None], 3, seed=4)
    drawn = [b.next() for _ in range(5)]
    state = b.state_dict()
    later = [b.next() for _ in range(3)]
    b2 = TensorBatches(torch.arange(10)[:, None], 3, seed=4)
    b2.load_state_dict(state)
    out += [len(b), drawn, later, [b2.next() for _ in range(3)]]
    return out + _probe_folder(tmp)


def _probe_folder(tmp: Path) -> Any:
    """A folder of images with two class subfolders: PNGs of fixed pixels (what is hashed: PNG decoding and
    Pillow's resampling are exact integer arithmetic), a JPEG and a WebP (their shapes), a damaged file."""
    g = _gen(9)
    folder = tmp / "images"
    for i, (cls, size, mode) in enumerate([("cats", (12, 9), "RGB"), ("cats", (9, 9), "L"), ("dogs", (7, 13), "RGBA"),
                                           ("dogs", (10, 10), "RGB")]):
        pixels = torch.randint(0, 256, (size[1], size[0], len(mode)), generator=g, dtype=torch.uint8).numpy()
        (folder / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode).save(folder / cls / f"{i}.png")
    cache, saved = tmp / "cache", os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)  # never the user's cache
    try:
        out: list[Any] = [str(cache_dir()).replace(str(tmp), "<tmp>")]
        for size, channels in ((8, 3), (6, 1)):
            out += [load_folder(folder, size, channels, progress=False) for _ in range(2)]  # decoded, then cached
        out.append(load_split("folder", folder, image_size=8, channels=3))
        Image.new("RGB", (20, 10), (200, 10, 10)).save(folder / "cats" / "x.jpg")
        Image.new("RGB", (10, 20), (10, 200, 10)).save(folder / "x.webp")  # not in a subfolder: no classes
        images, labels, names = load_folder(folder, 8, 3, progress=False)
        out += [images.shape, labels, names]
        (folder / "dogs" / "broken.png").write_bytes(b"\x89PNG not really")
        empty = tmp / "empty"
        empty.mkdir()
        for bad in (lambda: load_folder(folder, 8, 3, progress=False), lambda: image_files(empty),
                    lambda: load_split("folder", folder, train=False), lambda: load_folder(folder, 8, 2)):
            try:
                bad()
            except DataError as exc:
                out.append(str(exc).replace(str(tmp), "<tmp>"))
    finally:
        if saved is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = saved
    return out


def _probe_instrument(tmp: Path) -> Any:
    out: list[Any] = []
    for name, inst in INSTRUMENTS.items():  # the committed instruments: their weights and what they compute
        if not resolve(inst.path).exists():
            raise KeyUnavailable(f"the {name} instrument {inst.path} is missing")
        clf, acc = load_classifier(inst.path, dataset=name)
        x = torch.rand(6, *clf.image_shape, generator=_gen(len(name))) * 2 - 1
        _float64(clf)
        out += [name, digest(resolve(inst.path)), acc, clf(x), clf.features(x)]
    # the measurements, through a small instrument of the same class (a float64 one of the real size would take a
    # minute) and more images than features, so that no covariance is singular: the square root of a singular one
    # turns float64 rounding into differences in the 9th digit
    torch.manual_seed(0)
    clf = _float64(ConvClassifier((1, 8, 8), (4,), 6, global_pool=False)).eval()
    real, other = (torch.rand(2, 60, 1, 8, 8, generator=_gen(5)) * 2 - 1)
    fake = (other + 0.3 * torch.randn(other.shape, generator=_gen(6))).clamp(-1, 1)
    meter = QualityMeter(clf, real, n_boot=20)
    a, b = meter.measure(fake), meter.measure(other)
    floor = against_floor(a, b)
    out += [tuple(floor.ratio), a.row(), a.replicates, a.hist, a.labels, a.fid, a.kid, a.precision, a.recall, meter.difference(a, b),
            class_statistics(clf, fake), measure_quality(fake, real, clf, n_boot=3).row(), floor,
            ratio_growth(floor, against_floor(b, a))]
    class Echo:  # a meter that returns what it is asked to measure: which real images make the floor
        def measure(self, x: torch.Tensor) -> torch.Tensor:
            return x

    try:
        out.append(real_floor(Echo(), 5, "mnist", "data", seed=3))  # type: ignore[arg-type]
    except DataError as exc:
        raise KeyUnavailable(f"the MNIST training images cannot be read ({str(exc).splitlines()[0]})") from exc
    fa, fb = torch.randn(30, 4, generator=_gen(7), dtype=torch.float64), torch.randn(30, 4, generator=_gen(8),
                                                                                      dtype=torch.float64)
    out += [frechet_distance(fa, fb + 0.5), kid_unbiased(fa, fb), precision_recall(fa, fb), z_value(0.9),
            wilson(0.97, 200)]
    values = {"base": [3.0, 3.4, 2.9], "wide": [2.1, 2.6, 2.4], "lr": [3.3, 3.1, 3.8]}
    diffs = compare_to_base(values, "base", apart=("lr",))
    out += [pooled_variance(values), t_quantile(0.975, 6), arm_means(values), compare_arms(values, [("wide", "lr")]),
            diffs, [verdict(d, "FID") for d in diffs.values()]]
    return out


def _probe_likelihood(tmp: Path) -> Any:
    s = NoiseSchedule.from_name("linear", 20)
    x0 = (torch.randint(0, 256, (3, 1, 8, 8), generator=_gen(0)).double() / 127.5 - 1)
    est = nll_bits_per_dim(_Toy(), s, x0, k=4, generator=_gen(1), batch_size=2)
    noise = torch.randn(x0.shape, generator=_gen(2), dtype=torch.float64)
    return [est.per_image, est.prior, est.decoder, est.diffusion, est.mean, est.se, est.interval(),
            prior_kl(s, x0), vlb_term(_Toy(), s, x0, torch.tensor([0, 3, 19]), noise),
            discretized_gaussian_log_likelihood(x0, x0 * 0.9, torch.full_like(x0, 0.1))]


def _probe_guidance(tmp: Path) -> Any:
    """The conditional U-Net (labels, "no label", their errors), guided predictions through a sampler, and a
    conditional training run (what it feeds the trainer: batches, labels after dropout, steps, noise)."""
    cfg = {**NETWORKS[0], "arch": "conditional", "num_classes": 3, "p_uncond": 0.25}
    torch.manual_seed(7)
    model = _float64(build_model(cfg)).eval()
    g = _gen(107)
    for p in model.parameters():
        p.data += 0.1 * torch.randn(p.shape, generator=g)
    x = torch.randn(3, 1, 28, 28, generator=_gen(8))
    t, y = torch.tensor([0, 500, 999]), torch.tensor([0, 2, 3])
    out: list[Any] = [model.config.to_dict(), model.null_label, model(x, t), model(x, t, y), model(x, t, torch.tensor(1)),
                      model.embed_time(t), model.embed_label(t, y)]
    s = NoiseSchedule.from_name("linear", 1000)
    for w, batched in ((0, True), (1, True), (2.5, True), (2.5, False)):
        guided = Guided(model, torch.tensor([1, 0, 2]) if not batched else 1, w, batched)
        out += [guided(x, t), SamplerSpec("ddim", 3).run(guided, s, x)]
    plain = build_model(NETWORKS[0])
    errors = [lambda: model(x, t, torch.tensor([0, 1])), lambda: plain(x, t, y), lambda: Guided(plain, 0, 1.0),
              lambda: Guided(model, 3, 1.0), lambda: Guided(model, 0, -1.0),
              lambda: build_model({**cfg, "num_classes": 1}), lambda: build_model({**cfg, "p_uncond": 0.0})]
    for bad in errors:
        try:
            bad()
            out.append("no error")
        except ValueError as exc:
            out.append(str(exc))
    b = TensorBatches(torch.arange(10)[:, None], 3, seed=4, labels=torch.arange(10) % 3)
    out += [[b.next_labelled() for _ in range(4)], b.next()]
    run = TrainConfig(dataset="mnist", data_root="data", noise_steps=20, steps=3, batch_size=4, train_subset=12,
                      warmup_steps=1, sample_n=2, checkpoint_every=2, out_dir=str(tmp / "run"), device="cpu",
                      deterministic=True, model=ModelSection(arch="conditional", base_channels=8, channel_mults=(1, 2),
                                                             time_dim=8, attention=False))
    with _training_program() as fed:
        result = train(run, progress=False, log=lambda *_: None)
        out += [training_labels(run), fed, load_model(result.model_path)[0].config.to_dict()]
    return out


PROBES: dict[str, Callable[[Path], Any]] = {
    "network": _probe_network, "diffusion": _probe_diffusion, "training": _probe_training, "data": _probe_data,
    "instrument": _probe_instrument, "likelihood": _probe_likelihood, "guidance": _probe_guidance,
}


def probe(component: str) -> Any:
    """What ``component`` computes on its fixed probe, summarised (see :func:`_summary`)."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:  # the caller's random state (CPU and CUDA) is left as it was
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())), tempfile.TemporaryDirectory() as tmp:
            return _summary(PROBES[component](Path(tmp)))
    finally:
        torch.set_default_dtype(dtype)


def component_key(component: str) -> str:
    """The key of one component: the hash of its probe's summary (with PyTorch's version)."""
    text = json.dumps([torch.__version__.split("+")[0], probe(component)], sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def keys(components: tuple[str, ...] = tuple(COMPONENTS)) -> dict[str, str]:
    """Every component's key; a component whose key cannot be computed maps to ``unavailable: <why>``."""
    out = {}
    for c in components:
        try:
            out[c] = component_key(c)
        except KeyUnavailable as exc:
            out[c] = f"unavailable: {exc}"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("components", nargs="*", choices=[[], *COMPONENTS], help="default: all")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # the probes are small; one thread is enough and never competes with a job
    print(json.dumps({"keys": keys(tuple(args.components or COMPONENTS)), "modules": COMPONENTS}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
