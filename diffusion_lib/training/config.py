"""The training program's configuration: a frozen dataclass built from the ``train:`` section of a YAML file."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..core.config import from_dict, load_yaml, non_negative, positive, rule, to_plain
from ..core.errors import ConfigError
from ..data.datasets import DATASETS
from ..diffusion.losses import LOSS_WEIGHTINGS
from ..diffusion.schedules import SCHEDULES
from ..nets.registry import ARCHS, arch_fields
from ..nets.unet import geometry_problem
from .trainer import LR_DECAYS

__all__ = ["ModelSection", "TrainConfig", "load_train_config"]


@dataclass(frozen=True)
class ModelSection:
    """The network's hyper-parameters; ``arch`` picks the network, and only its own keys reach it."""

    # "concat": one time embedding concatenated to every block (MNIST, the assignment's rule);
    # "additive": per-block additive time conditioning with attention at attn_resolutions (RGB)
    arch: str = field(default="concat", metadata=rule(lambda v: v in ARCHS, f"must be one of {list(ARCHS)}"))
    base_channels: int = field(default=32, metadata=positive())
    channel_mults: tuple[int, ...] = field(
        default=(1, 2, 2), metadata=rule(lambda v: len(v) > 0 and all(m > 0 for m in v), "must be positive integers"))
    num_res_blocks: int = field(default=1, metadata=positive())
    time_dim: int = field(default=32, metadata=rule(lambda v: v >= 2, "must be >= 2"))
    dropout: float = field(default=0.0, metadata=rule(lambda v: 0 <= v < 1, "must be in [0, 1)"))
    attention: bool = True
    groups: int = field(default=8, metadata=positive())
    attn_resolutions: tuple[int, ...] = field(
        default=(), metadata=rule(lambda v: all(r > 0 for r in v), "must be positive integers"))


@dataclass(frozen=True)
class TrainConfig:
    """The training program's configuration (``python -m diffusion_lib.train --config FILE``)."""

    dataset: str = field(default="mnist", metadata=rule(lambda v: v in DATASETS, f"must be one of {sorted(DATASETS)}"))
    data_root: str = "data"
    image_size: int = field(default=28, metadata=positive())
    channels: int = field(default=1, metadata=positive())
    noise_steps: int = field(default=1000, metadata=rule(lambda v: v >= 2, "must be >= 2"))
    schedule: str = field(default="linear", metadata=rule(lambda v: v in SCHEDULES, f"must be one of {sorted(SCHEDULES)}"))
    model: ModelSection = field(default_factory=ModelSection)
    steps: int = field(default=1000, metadata=positive())
    batch_size: int = field(default=128, metadata=positive())
    lr: float = field(default=2e-4, metadata=rule(lambda v: 0 < v < 1, "must be in (0, 1)"))
    weight_decay: float = field(default=0.0, metadata=non_negative())
    warmup_steps: int = field(default=100, metadata=non_negative())
    # after the warm-up: "none" keeps the learning rate constant, "cosine" decays it to 0 at `steps`
    lr_decay: str = field(default="none", metadata=rule(lambda v: v in LR_DECAYS, f"must be one of {list(LR_DECAYS)}"))
    grad_clip: float = field(default=1.0, metadata=non_negative())
    ema_decay: float = field(default=0.999, metadata=rule(lambda v: 0 <= v < 1, "must be in [0, 1)"))
    ema_warmup: bool = False  # EMA decay min(ema_decay, (1 + n) / (10 + n)) after n updates
    # the weight of each sample's noise-prediction error: "uniform" is L_simple (Ho et al.);
    # "min_snr" is min(SNR_t, gamma) / SNR_t (Hang et al. 2023), same target, same network
    loss_weighting: str = field(default="uniform", metadata=rule(lambda v: v in LOSS_WEIGHTINGS,
                                                                 f"must be one of {list(LOSS_WEIGHTINGS)}"))
    min_snr_gamma: float = field(default=5.0, metadata=positive())
    seed: int = field(default=0, metadata=rule(lambda v: 0 <= v < 2**63, "must be an integer in [0, 2**63)"))
    train_subset: int = field(default=0, metadata=non_negative())  # 0: the whole training set
    sample_every: int = field(default=0, metadata=non_negative())  # 0: only at the end
    sample_n: int = field(default=16, metadata=non_negative())  # images per grid; 0: no grids at all
    checkpoint_every: int = field(default=500, metadata=non_negative())  # 0: only at the end
    # EMA weights kept every this many steps in snapshots/ema_<step>.pt, to measure quality over training; 0: none
    snapshot_every: int = field(default=0, metadata=non_negative())
    out_dir: str = "runs/train"  # never inside results/ unless a file says so
    device: str = field(default="auto", metadata=rule(lambda v: bool(re.match(r"^(auto|cpu|cuda(:\d+)?|mps)$", v)),
                                                      "must be auto, cpu, cuda or cuda:N"))
    threads: int = field(default=0, metadata=non_negative())  # 0: PyTorch's default
    deterministic: bool = False
    hflip: bool = False  # random horizontal flips of training images (CIFAR-10, not digits)
    amp: bool = True  # bf16 autocast for the training forward pass on CUDA
    # bf16 autocast on a CPU too, where it runs natively (AVX512-BF16 or AMX); elsewhere it would be
    # emulated and slow, so the run stays in float32 and says so
    amp_cpu: bool = False
    compile: bool = False  # torch.compile the training model (opt-in; on in the gpu profile)
    channels_last: bool = False  # NHWC memory format for model and batches

    def to_dict(self) -> dict[str, Any]:
        return to_plain(dataclasses.asdict(self))

    def model_config(self) -> dict[str, Any]:
        """The network's configuration as :func:`diffusion_lib.nets.registry.build_model` takes it."""
        keep = arch_fields(self.model.arch)
        section = {k: v for k, v in dataclasses.asdict(self.model).items() if k in keep}
        return {"arch": self.model.arch, **section, "image_size": self.image_size, "channels": self.channels,
                "noise_steps": self.noise_steps}

    def _cross_checks(self) -> list[str]:
        problems = []
        want = DATASETS.get(self.dataset)
        if want and want.image_size and (self.image_size, self.channels) != (want.image_size, want.channels):
            problems.append(f"dataset {self.dataset!r} has {want.channels}-channel {want.image_size}x{want.image_size} "
                            f"images, but image_size={self.image_size}, channels={self.channels}")
        if want and not want.image_size and self.channels not in (1, 3):
            problems.append(f"channels must be 1 (grayscale) or 3 (RGB) for an image folder, got {self.channels}")
        shape = geometry_problem(self.image_size, self.model.channel_mults)
        if shape:
            problems.append(shape.replace("channel_mults=", "model.channel_mults="))
        if self.lr_decay == "cosine" and self.steps <= self.warmup_steps:
            problems.append(f"lr_decay cosine needs steps ({self.steps}) > warmup_steps ({self.warmup_steps})")
        if self.train_subset and self.train_subset < self.batch_size:
            problems.append(f"train_subset ({self.train_subset}) is smaller than batch_size ({self.batch_size})")
        return problems


def load_train_config(path: str | Path, overrides: Optional[dict[str, Any]] = None) -> TrainConfig:
    """The training configuration in ``path``: the keys under ``train:`` (a chapter's parameter file) or at the top
    level (a plain training file). An empty file or an empty ``train:`` section is an error, never a default run."""
    data = load_yaml(path)
    section = data["train"] if "train" in data else data
    if not section:
        where = "its train: section is empty" if "train" in data else "it is empty"
        raise ConfigError(f"{path} holds no training configuration ({where}); "
                          "see params/cpu/03_train.yaml for a complete one")
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: the train: section must be a mapping of keys to values")
    if overrides:
        section = {**section, **overrides}
    return from_dict(TrainConfig, section, source=f"training configuration in {path}")
