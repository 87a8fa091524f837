"""diffusion_lib: DDPM written from scratch, the library behind the report.

The names the assignment imports live at the top level::

    from diffusion_lib import DiffusionModel, DiffusionProcess
"""

from .errors import CheckpointError, ConfigError, DataError, DiffusionError, NonFiniteLossError
from .process import DiffusionProcess, timestep_losses
from .samplers import StepInfo, TrajectoryRecorder, ddpm_sample
from .schedules import SCHEDULES, NoiseSchedule, get_betas
from .unet import DiffusionModel

__all__ = [
    "DiffusionModel",
    "DiffusionProcess",
    "NoiseSchedule",
    "SCHEDULES",
    "get_betas",
    "ddpm_sample",
    "timestep_losses",
    "StepInfo",
    "TrajectoryRecorder",
    "DiffusionError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "NonFiniteLossError",
]

__version__ = "0.1.0"
