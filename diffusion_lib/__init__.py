"""diffusion_lib: DDPM written from scratch, the library behind the report.

The names the assignment imports live at the top level::

    from diffusion_lib import DiffusionModel, DiffusionProcess

The package is layered; each layer imports only from the layers above it in
this list (see ``ARCHITECTURE.md``):

- ``core``: errors, atomic files, paths, devices, configuration (PyTorch only);
- ``data`` and ``nets``: the datasets; the U-Nets;
- ``diffusion``: schedules, the loss, the samplers;
- ``training``: the trainer, ``DiffusionProcess``, checkpoints, the training program;
- ``evaluation``: the instruments, FID/KID, nearest neighbours, the GAN baseline;
- ``chapter``: what the report's chapters share.
"""

from .core.errors import CheckpointError, ConfigError, DataError, DiffusionError, NonFiniteLossError
from .diffusion.schedules import SCHEDULES, NoiseSchedule, get_betas
from .nets.concat_unet import DiffusionModel
from .training.process import DiffusionProcess

__all__ = [
    "DiffusionModel",
    "DiffusionProcess",
    "NoiseSchedule",
    "SCHEDULES",
    "get_betas",
    "DiffusionError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "NonFiniteLossError",
]

__version__ = "0.2.0"
