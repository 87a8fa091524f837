"""A DCGAN for MNIST (Radford et al. 2016), the baseline the diffusion model is compared with.

The assignment refers to a GAN from an earlier assignment; this project has none,
so it builds one here: transposed-convolution generator, strided-convolution
discriminator, BatchNorm in both (none on D's input layer), LeakyReLU in D, the
non-saturating loss, Adam(2e-4, beta1 = 0.5) as in the DCGAN paper.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..core.config import non_negative, positive, rule
from ..core.devices import randn
from ..core.errors import CheckpointError
from ..core.files import load_tagged, save_tagged
from ..data.batches import TensorBatches
from ..data.images import to_model_range, to_uint8

__all__ = ["Generator", "Discriminator", "GANConfig", "GANHistory", "train_gan", "save_gan", "load_gan",
           "train_or_load_gan", "gan_samples"]


class Generator(nn.Module):
    """z (B, z_dim) -> images (B, 1, 28, 28) in [-1, 1]."""

    def __init__(self, z_dim: int = 64, width: int = 64) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.fc = nn.Sequential(nn.Linear(z_dim, 2 * width * 7 * 7, bias=False),
                                nn.BatchNorm1d(2 * width * 7 * 7), nn.ReLU(True))
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),  # 14x14
            nn.ConvTranspose2d(width, 1, 4, 2, 1), nn.Tanh(),  # 28x28
        )
        self.width = width

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(z.shape[0], 2 * self.width, 7, 7))


class Discriminator(nn.Module):
    """images (B, 1, 28, 28) -> logits (B,)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2, True),  # 14x14
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2, True),  # 7x7
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


@dataclass(frozen=True)
class GANConfig:
    """DCGAN settings; build with ``config.from_dict(GANConfig, d)`` to validate them."""

    z_dim: int = field(default=64, metadata=positive())
    width: int = field(default=64, metadata=positive())
    steps: int = field(default=3000, metadata=positive())
    batch_size: int = field(default=64, metadata=positive())
    lr: float = field(default=2e-4, metadata=rule(lambda v: 0 < v < 1, "must be in (0, 1)"))
    beta1: float = field(default=0.5, metadata=rule(lambda v: 0 <= v < 1, "must be in [0, 1)"))
    seed: int = field(default=0, metadata=non_negative())
    snapshot_every: int = field(default=500, metadata=positive())
    snapshot_n: int = field(default=16, metadata=positive())  # images from a fixed z at every snapshot


@dataclass
class GANHistory:
    """Per-step losses and D's outputs, snapshots of G over training, timing."""

    step: list[int] = field(default_factory=list)
    loss_d: list[float] = field(default_factory=list)
    loss_g: list[float] = field(default_factory=list)
    d_real: list[float] = field(default_factory=list)  # mean sigmoid(D(x)) on real images
    d_fake: list[float] = field(default_factory=list)  # mean sigmoid(D(G(z))) on fakes
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)  # step -> uint8 images (snapshot_n, 1, 28, 28)
    train_seconds: float = 0.0
    snapshot_seconds: dict[int, float] = field(default_factory=dict)  # step -> training seconds until then

    def snapshot_images(self, step: int) -> torch.Tensor:
        """The generator's images at a snapshot, in model range."""
        return to_model_range(self.snapshots[step])


def train_gan(images: torch.Tensor, cfg: GANConfig, device: torch.device | str = "cpu", progress: bool = True,
              on_snapshot: Optional[Callable[[int, Generator], None]] = None,
              ) -> tuple[Generator, Discriminator, GANHistory]:
    """Train a DCGAN on uint8 MNIST images (N, 28, 28) with the non-saturating loss."""
    torch.manual_seed(cfg.seed)
    device = torch.device(device)
    G, D = Generator(cfg.z_dim, cfg.width).to(device), Discriminator(cfg.width).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    batches = TensorBatches(images, cfg.batch_size, seed=cfg.seed, device=device)
    fixed_z = randn((cfg.snapshot_n, cfg.z_dim), generator=torch.Generator().manual_seed(cfg.seed + 1), device=device)
    hist = GANHistory()
    ones = torch.ones(cfg.batch_size, device=device)
    zeros = torch.zeros(cfg.batch_size, device=device)
    bar = tqdm(range(1, cfg.steps + 1), desc="GAN", disable=not progress, mininterval=30)
    for step in bar:
        t0 = time.perf_counter()
        real = to_model_range(batches.next())
        z = torch.randn(cfg.batch_size, cfg.z_dim, device=device)
        fake = G(z)
        # discriminator: real -> 1, fake -> 0
        logit_real, logit_fake = D(real), D(fake.detach())
        loss_d = F.binary_cross_entropy_with_logits(logit_real, ones) + \
            F.binary_cross_entropy_with_logits(logit_fake, zeros)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # generator: non-saturating loss, make D call fakes real
        loss_g = F.binary_cross_entropy_with_logits(D(fake), ones)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        hist.train_seconds += time.perf_counter() - t0
        hist.step.append(step)
        hist.loss_d.append(loss_d.item())
        hist.loss_g.append(loss_g.item())
        hist.d_real.append(torch.sigmoid(logit_real).mean().item())
        hist.d_fake.append(torch.sigmoid(logit_fake).mean().item())
        if step % cfg.snapshot_every == 0 or step == cfg.steps:
            G.eval()
            with torch.no_grad():  # kept as 8-bit images, like the data, so a reloaded history is the same
                hist.snapshots[step] = torch.cat([to_uint8(G(z)) for z in fixed_z.split(500)])
            hist.snapshot_seconds[step] = hist.train_seconds
            G.train()
            if on_snapshot is not None:
                on_snapshot(step, G)
    return G.eval(), D.eval(), hist


GAN_FORMAT = "diffusion_lib/gan/v2"  # v2: 8-bit snapshots and their training times


def _older_format(path: str | Path) -> bool:
    """Whether ``path`` holds a GAN in an earlier version of this project's format."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable: not an older format, a damaged file (load_tagged says so)
        return False
    fmt = obj.get("format", "") if isinstance(obj, dict) else ""
    return isinstance(fmt, str) and fmt.startswith("diffusion_lib/gan/") and fmt != GAN_FORMAT


def save_gan(path: str | Path, cfg: GANConfig, G: Generator, D: Discriminator, hist: GANHistory) -> None:
    """Keep a trained GAN with its training history, so a chapter can be re-executed without retraining."""
    save_tagged(path, GAN_FORMAT, {
        "config": asdict(cfg),
        "generator": {k: v.cpu() for k, v in G.state_dict().items()},
        "discriminator": {k: v.cpu() for k, v in D.state_dict().items()},
        "history": {"step": hist.step, "loss_d": hist.loss_d, "loss_g": hist.loss_g, "d_real": hist.d_real,
                    "d_fake": hist.d_fake, "snapshots": {str(k): v for k, v in hist.snapshots.items()},
                    "snapshot_seconds": {str(k): v for k, v in hist.snapshot_seconds.items()},
                    "train_seconds": hist.train_seconds},
    })


def load_gan(path: str | Path, cfg: GANConfig, device: torch.device | str = "cpu",
             ) -> Optional[tuple[Generator, Discriminator, GANHistory]]:
    """The GAN saved at ``path`` if it was trained with ``cfg``, else None."""
    if not Path(path).exists():
        return None
    try:
        obj = load_tagged(path, GAN_FORMAT, required=("config", "generator", "discriminator", "history"))
    except CheckpointError:
        if _older_format(path):  # a GAN saved by an earlier version: train again (the old file is moved aside)
            return None
        raise
    if obj["config"] != asdict(cfg):
        return None
    G, D = Generator(cfg.z_dim, cfg.width), Discriminator(cfg.width)
    try:
        G.load_state_dict(obj["generator"])
        D.load_state_dict(obj["discriminator"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the saved networks do not fit the configuration ({str(exc).splitlines()[0]})")
    h = obj["history"]
    hist = GANHistory(step=h["step"], loss_d=h["loss_d"], loss_g=h["loss_g"], d_real=h["d_real"], d_fake=h["d_fake"],
                      snapshots={int(k): v for k, v in h["snapshots"].items()}, train_seconds=h["train_seconds"],
                      snapshot_seconds={int(k): v for k, v in h["snapshot_seconds"].items()})
    return G.to(device).eval(), D.to(device).eval(), hist


def train_or_load_gan(path: str | Path, images: torch.Tensor, cfg: GANConfig, device: torch.device | str = "cpu",
                      retrain: bool = False, log: Callable[[str], None] = print,
                      ) -> tuple[Generator, Discriminator, GANHistory]:
    """The GAN saved at ``path`` when it was trained with ``cfg`` (and ``retrain`` is off), else one trained now and saved."""
    cached = None if retrain else load_gan(path, cfg, device)
    if cached is not None:
        log(f"Reusing the GAN trained with these parameters in {path} (set retrain=True to train again).")
        return cached
    path = Path(path)
    if path.exists():  # a GAN trained with other settings is kept aside, never overwritten
        aside = path.with_name(f"{path.stem}.old-{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}")
        os.replace(path, aside)
        log(f"The GAN in {path} was trained with other settings; it was moved to {aside.name}.")
    G, D, hist = train_gan(images, cfg, device=device)
    save_gan(path, cfg, G, D, hist)
    return G, D, hist


@torch.no_grad()
def gan_samples(G: Generator, n: int, seed: int, batch_size: int = 500) -> torch.Tensor:
    """``n`` images from the generator, with z drawn from a CPU generator seeded with ``seed``; on the CPU."""
    device = next(G.parameters()).device
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    return torch.cat([G(z[i:i + batch_size]) for i in range(0, n, batch_size)]).cpu()
