"""The project's exceptions: each carries one message meant for the user."""

from __future__ import annotations

__all__ = [
    "DiffusionError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "NonFiniteLossError",
    "RunFileError",
    "TrainingInterrupted",
]


class DiffusionError(Exception):
    """Base class: the command-line programs print ``error: <message>`` and exit non-zero."""

    exit_code = 2


class ConfigError(DiffusionError, ValueError):
    """A parameter file or argument is invalid (unknown key, wrong type, out of range)."""


class DataError(DiffusionError, FileNotFoundError):
    """A dataset is missing or corrupt."""


class CheckpointError(DiffusionError, RuntimeError):
    """A checkpoint is missing, truncated, foreign or cannot be written."""


class RunFileError(DiffusionError, ValueError):
    """A file a training run wrote (``metrics.csv``, ``summary.json``) is missing or damaged."""


class NonFiniteLossError(DiffusionError, FloatingPointError):
    """The training loss became NaN or infinite."""

    exit_code = 3


class TrainingInterrupted(DiffusionError, KeyboardInterrupt):
    """SIGINT/SIGTERM arrived; a checkpoint was written before stopping."""

    exit_code = 130
