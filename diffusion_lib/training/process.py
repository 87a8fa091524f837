"""``DiffusionProcess``: the object the assignment asks for, a model trained under the diffusion objective.

It composes three things from the layers below and owns none of their logic:
a :class:`~diffusion_lib.diffusion.schedules.NoiseSchedule` (the forward process
and its coefficients), a network ``model(x_t, t) -> eps`` (by default the
assignment's :class:`~diffusion_lib.nets.concat_unet.DiffusionModel`), and a
:class:`~diffusion_lib.training.trainer.Trainer` (optimizer, warm-up, EMA,
clipping, guards). It moves every input to its own device.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, Optional, Sequence

import torch
from torch import nn

from ..core.devices import randn, resolve_device
from ..diffusion.losses import simple_loss, timestep_losses
from ..diffusion.generate import SamplerSpec
from ..diffusion.samplers import Callback
from ..diffusion.schedules import NoiseSchedule
from ..nets.concat_unet import DiffusionModel
from ..nets.inference import FastModel
from .trainer import Trainer

__all__ = ["DiffusionProcess"]


class DiffusionProcess:
    """DDPM (Ho et al. 2020) around a noise-prediction model.

    Args:
        image_size, channels: the data's shape; used to build the default model
            and the shape of samples.
        noise_steps: T.
        schedule: ``"linear"``, ``"cosine"`` or ``"quadratic"`` (see
            :mod:`diffusion_lib.diffusion.schedules`).
        model: a module ``model(x_t, t) -> eps``; a default
            :class:`~diffusion_lib.nets.concat_unet.DiffusionModel` is built when ``None``.
        loss_weighting, min_snr_gamma: how each sample's noise-prediction error is weighted
            (:func:`~diffusion_lib.diffusion.losses.loss_weights`); ``"uniform"`` is L_simple.
        device: ``"auto"``/``None`` picks CUDA when available.
        model_kwargs: extra arguments for the default model.
        **trainer: the :class:`~diffusion_lib.training.trainer.Trainer`'s settings (``lr``, ``warmup_steps``,
            ``ema_decay``, ...), with its defaults; the training program takes them from its configuration.
    """

    def __init__(self, image_size: int = 28, channels: int = 1, noise_steps: int = 1000, schedule: str = "linear",
                 model: Optional[nn.Module] = None, *, loss_weighting: str = "uniform", min_snr_gamma: float = 5.0,
                 device: str | torch.device | None = None, model_kwargs: Optional[dict[str, Any]] = None,
                 **trainer: Any) -> None:
        self.device = resolve_device(device)
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.schedule = NoiseSchedule.from_name(schedule, noise_steps).to(self.device)
        if model is None:
            model = DiffusionModel(image_size, channels, noise_steps=noise_steps, **(model_kwargs or {}))
        cfg = getattr(model, "config", None)
        if cfg is not None and (cfg.image_size, cfg.channels) != (self.image_size, self.channels):
            raise ValueError(
                f"model was built for {cfg.channels}x{cfg.image_size}x{cfg.image_size} images, "
                f"the process for {self.channels}x{self.image_size}x{self.image_size}"
            )
        self.model = model.to(self.device)
        self.loss_weighting, self.min_snr_gamma = loss_weighting, float(min_snr_gamma)
        self.trainer = Trainer(self.model, **trainer)

    @property
    def noise_steps(self) -> int:
        return self.schedule.num_steps

    def _check_batch(self, x: torch.Tensor) -> torch.Tensor:
        want = (self.channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"expected a batch of {'x'.join(map(str, want))} images (B, C, H, W), "
                             f"got shape {tuple(x.shape)}")
        return x.to(self.device)

    def add_noise(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed-form q(x_t | x_0) (Ho et al. eq. 4): returns ``(x_t, noise)`` with noise ~ N(0, I)."""
        x = self._check_batch(x)
        noise = torch.randn_like(x)
        return self.schedule.q_sample(x, t.to(self.device).long(), noise), noise

    def loss(self, x0: torch.Tensor, t: Optional[torch.Tensor] = None, noise: Optional[torch.Tensor] = None,
             labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """L_simple (Ho et al. eq. 14) on a batch; ``t`` (uniform over ``[0, T)``) and ``noise`` drawn when not given.

        With a ``loss_weighting`` other than ``"uniform"`` each sample's error is weighted. ``labels`` (a
        conditional model only) are the classes the network is told.
        """
        x0 = self._check_batch(x0)
        if t is None:
            t = torch.randint(0, self.noise_steps, (x0.shape[0],), device=self.device)
        if noise is None:
            noise = torch.randn_like(x0)
        net = self.trainer.forward_model
        if labels is not None:
            net = functools.partial(net, y=labels.to(self.device))
        return simple_loss(net, self.schedule, x0, t.to(self.device).long(),
                           noise.to(self.device), autocast=self.trainer.autocast, weighting=self.loss_weighting,
                           gamma=self.min_snr_gamma)

    def train_step(self, x: torch.Tensor, t: Optional[torch.Tensor] = None, noise: Optional[torch.Tensor] = None,
                   labels: Optional[torch.Tensor] = None) -> float:
        """One optimizer step on L_simple (Algorithm 1 of Ho et al.); returns the loss."""
        self.model.train()
        return self.trainer.update(self.loss(x, t, noise, labels))

    @property
    def eval_model(self) -> nn.Module:
        """The EMA weights when kept, else the raw model."""
        return self.trainer.eval_model

    @torch.no_grad()
    def sample(self, n: int, *, method: str = "ddpm", steps: Optional[int] = None, eta: float = 0.0,
               spacing: str = "", use_ema: bool = True, x_T: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None, variance: Literal["posterior", "beta"] = "posterior",
               clip_x0: bool = True, callback: Optional[Callback] = None, progress: bool = False,
               backend: Optional[str] = None) -> torch.Tensor:
        """Draw ``n`` images; returns ``(n, C, H, W)`` in [-1, 1]. By default DDPM ancestral sampling (Algorithm 2).

        ``method`` (``"ddpm"``, ``"ddim"`` or ``"dpm++2m"``), ``steps`` (DDPM: all T; the others: 50, or T when
        that is fewer, when not given), ``eta`` (DDIM's), ``spacing`` and ``variance`` (DDPM's) choose any sampler of
        the library, as a :class:`~diffusion_lib.diffusion.generate.SamplerSpec` describes it; a setting the
        sampler does not take is a ``ValueError`` before anything is drawn. ``backend`` runs the network through
        :class:`~diffusion_lib.nets.inference.FastModel` (e.g. ``"compiled-bf16"``); ``None`` runs the module itself.
        """
        if n <= 0:
            raise ValueError(f"number of samples must be positive, got {n}")
        chosen = {"method": method, "eta": eta, "spacing": spacing, "variance": variance}
        spec = SamplerSpec.from_mapping({**chosen, **({} if steps is None else {"steps": steps})}, self.noise_steps)
        model = self.eval_model if use_ema else self.model
        if x_T is None:
            x_T = randn((n, self.channels, self.image_size, self.image_size), generator=generator, device=self.device)
        x_T = self._check_batch(x_T)
        was_training = model.training
        model.eval()
        net = FastModel(model, backend) if backend else model
        try:
            x = spec.run(net, self.schedule, x_T, generator=generator, callback=callback, clip_x0=clip_x0,
                         progress=progress)
        finally:
            model.train(was_training)
        return x.clamp(-1.0, 1.0)

    def loss_per_timestep(self, x0: torch.Tensor, timesteps: Sequence[int], *, use_ema: bool = True,
                          generator: Optional[torch.Generator] = None) -> dict[str, torch.Tensor]:
        """Per-timestep losses on held-out images; see :func:`~diffusion_lib.diffusion.losses.timestep_losses`."""
        return timestep_losses(self.eval_model if use_ema else self.model, self.schedule,
                               self._check_batch(x0), timesteps, generator=generator)

    def state_dict(self) -> dict[str, Any]:
        return self.trainer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trainer.load_state_dict(state)
