"""Typed, frozen configuration built from YAML, validated before any work starts.

Every problem in a parameter file (unknown key, wrong type, value out of range)
is collected into one :class:`~diffusion_lib.errors.ConfigError` whose message
lists them all, with a "did you mean" suggestion for misspelt keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from .errors import ConfigError
from .schedules import SCHEDULES

__all__ = ["ModelSection", "TrainConfig", "load_yaml", "load_train_config", "from_dict", "positive",
           "non_negative", "rule", "check_chapter_parameters"]

DATASETS = {"mnist": (28, 1), "cifar10": (32, 3)}
ARCH_NAMES = ("concat", "additive")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def _check(rule: Callable[[Any], bool], text: str) -> dict[str, Any]:
    return {"rule": rule, "text": text}


def positive() -> dict[str, Any]:
    """Field metadata: the value must be > 0."""
    return _check(lambda v: v > 0, "must be > 0")


def non_negative() -> dict[str, Any]:
    """Field metadata: the value must be >= 0."""
    return _check(lambda v: v >= 0, "must be >= 0")


def rule(predicate: Callable[[Any], bool], text: str) -> dict[str, Any]:
    """Field metadata: ``predicate(value)`` must hold; ``text`` says what is expected."""
    return _check(predicate, text)


@dataclass(frozen=True)
class ModelSection:
    """The U-Net's hyper-parameters (see :class:`diffusion_lib.unet.DiffusionModel`)."""

    base_channels: int = field(default=32, metadata=positive())
    channel_mults: tuple[int, ...] = field(
        default=(1, 2, 2), metadata=_check(lambda v: len(v) > 0 and all(m > 0 for m in v), "must be positive integers"))
    num_res_blocks: int = field(default=1, metadata=positive())
    time_dim: int = field(default=32, metadata=_check(lambda v: v >= 2, "must be >= 2"))
    dropout: float = field(default=0.0, metadata=_check(lambda v: 0 <= v < 1, "must be in [0, 1)"))
    attention: bool = True
    groups: int = field(default=8, metadata=positive())
    # "concat": one time embedding concatenated to every block (MNIST, the assignment's rule);
    # "additive": per-block additive time conditioning with attention at attn_resolutions (RGB)
    arch: str = field(default="concat", metadata=_check(lambda v: v in ARCH_NAMES, f"must be one of {list(ARCH_NAMES)}"))
    attn_resolutions: tuple[int, ...] = field(
        default=(), metadata=_check(lambda v: all(r > 0 for r in v), "must be positive integers"))


@dataclass(frozen=True)
class TrainConfig:
    """The training program's configuration (``python -m diffusion_lib.train --config FILE``)."""

    dataset: str = field(default="mnist", metadata=_check(lambda v: v in DATASETS, f"must be one of {sorted(DATASETS)}"))
    data_root: str = "data"
    image_size: int = field(default=28, metadata=positive())
    channels: int = field(default=1, metadata=positive())
    noise_steps: int = field(default=1000, metadata=_check(lambda v: v >= 2, "must be >= 2"))
    schedule: str = field(default="linear", metadata=_check(lambda v: v in SCHEDULES, f"must be one of {sorted(SCHEDULES)}"))
    model: ModelSection = field(default_factory=ModelSection)
    steps: int = field(default=1000, metadata=positive())
    batch_size: int = field(default=128, metadata=positive())
    lr: float = field(default=2e-4, metadata=_check(lambda v: 0 < v < 1, "must be in (0, 1)"))
    weight_decay: float = field(default=0.0, metadata=non_negative())
    warmup_steps: int = field(default=100, metadata=non_negative())
    grad_clip: float = field(default=1.0, metadata=non_negative())
    ema_decay: float = field(default=0.999, metadata=_check(lambda v: 0 <= v < 1, "must be in [0, 1)"))
    seed: int = field(default=0, metadata=non_negative())
    train_subset: int = field(default=0, metadata=non_negative())  # 0: the whole training set
    sample_every: int = field(default=0, metadata=non_negative())  # 0: only at the end
    sample_n: int = field(default=16, metadata=positive())
    checkpoint_every: int = field(default=500, metadata=non_negative())  # 0: only at the end
    out_dir: str = "results/quick/03_train"
    device: str = field(default="auto", metadata=_check(lambda v: bool(_DEVICE_RE.match(v)), "must be auto, cpu, cuda or cuda:N"))
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
        return _to_plain(dataclasses.asdict(self))

    def unet_kwargs(self) -> dict[str, Any]:
        """The model's configuration, as :func:`diffusion_lib.models.build_model` takes it."""
        m = dataclasses.asdict(self.model)
        m["channel_mults"] = tuple(m["channel_mults"])
        if m["arch"] == "concat":
            m.pop("attn_resolutions")
            m.pop("arch")
        else:
            m["attn_resolutions"] = tuple(m["attn_resolutions"])
            m.pop("attention")
            m.pop("time_dim")
        return dict(image_size=self.image_size, channels=self.channels, noise_steps=self.noise_steps, **m)

    def _cross_checks(self) -> list[str]:
        problems = []
        want = DATASETS.get(self.dataset)
        if want and (self.image_size, self.channels) != want:
            problems.append(f"dataset {self.dataset!r} has {want[1]}-channel {want[0]}x{want[0]} images, "
                            f"but image_size={self.image_size}, channels={self.channels}")
        factor = 2 ** (len(self.model.channel_mults) - 1)
        if self.image_size % factor:
            problems.append(f"image_size {self.image_size} cannot be halved {len(self.model.channel_mults) - 1} times "
                            f"(model.channel_mults={list(self.model.channel_mults)}); use a multiple of {factor}")
        if self.train_subset and self.train_subset < self.batch_size:
            problems.append(f"train_subset ({self.train_subset}) is smaller than batch_size ({self.batch_size})")
        return problems


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str, problems: list[str]) -> Any:
    """Check ``value`` against the annotation ``tp``; return the coerced value or None (problem noted)."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            problems.append(f"{key}: expected a list, got {value!r}")
            return None
        items = [_coerce(v, inner, f"{key}[{i}]", problems) for i, v in enumerate(value)]
        return None if any(i is None for i in items) else tuple(items)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    problems.append(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return None


def _build(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{prefix.rstrip('.') or 'the file'}: expected a mapping of keys to values, got {data!r}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(fields)}"
            problems.append(f"unknown key {name!r}{hint}")
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{name}.", problems)
            continue
        coerced = _coerce(value, tp, name, problems)
        if coerced is None:
            continue
        meta = fields[key].metadata
        if "rule" in meta and not meta["rule"](coerced):
            problems.append(f"{name}: {meta['text']}, got {value!r}")
            continue
        kwargs[key] = coerced
    if any(v is None for v in kwargs.values()):
        return None
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - every field has a default
        problems.append(str(exc))
        return None


def from_dict(cls: type, data: dict[str, Any], source: str = "configuration") -> Any:
    """Build dataclass ``cls`` from ``data``, raising one ConfigError listing every problem."""
    problems: list[str] = []
    obj = _build(cls, data, "", problems)
    if obj is not None and hasattr(obj, "_cross_checks"):
        problems += obj._cross_checks()
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"invalid {source}:\n{lines}")
    return obj


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with one clear error for a missing, unreadable or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameter file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values, not {type(data).__name__}")
    return data


def load_train_config(path: str | Path, overrides: Optional[dict[str, Any]] = None) -> TrainConfig:
    """The training configuration in ``path``.

    A chapter's parameter file keeps the training keys under ``train:`` beside the
    chapter's own parameters; a plain training file has them at the top level.
    """
    data = load_yaml(path)
    section = data["train"] if "train" in data else data
    if overrides:
        section = {**(section or {}), **overrides}
    return from_dict(TrainConfig, section, source=f"training configuration in {path}")


# ---------------------------------------------------------------------------- chapter parameters
_SAMPLER_METHODS = ("ddpm", "ddim", "dpm++2m")


def _type_ok(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if default is None:
        return True
    return isinstance(value, type(default))


def _steps_problems(name: str, value: Any, T: int) -> list[str]:
    items = value if isinstance(value, list) else [value]
    bad = [v for v in items if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= T]
    return [f"{name}: sampling steps must be integers in [1, {T}] (T = {T}), got {bad}"] if bad else []


def _sampler_problems(name: str, value: Any, T: int) -> list[str]:
    if not isinstance(value, dict):
        return [f"{name}: expected a mapping with method, steps and eta"]
    problems = []
    unknown = set(value) - {"method", "steps", "eta", "spacing"}
    if unknown:
        problems.append(f"{name}: unknown key(s) {sorted(unknown)}; valid: method, steps, eta, spacing")
    method = value.get("method", "ddim")
    if method not in _SAMPLER_METHODS:
        problems.append(f"{name}.method: unknown sampler {method!r}; valid: {', '.join(_SAMPLER_METHODS)}")
    problems += _steps_problems(f"{name}.steps", value.get("steps", 50), T)
    if method == "ddpm" and value.get("steps", T) != T:
        problems.append(f"{name}: DDPM runs all T = {T} steps; use method ddim with eta 1 for fewer")
    eta = value.get("eta", 0.0)
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
        problems.append(f"{name}.eta: must be in [0, 1], got {eta!r}")
    return problems


def check_chapter_parameters(declared: dict[str, Any], given: dict[str, Any], source: str,
                             noise_steps: int = 1000) -> None:
    """Validate a chapter's parameter file against the names and defaults of its ``parameters`` cell.

    Unknown names (with a "did you mean"), values of the wrong type, and values out of
    range for the names the project uses across chapters (training and GAN
    sections, schedules, samplers, step counts, eta, sample counts) are reported
    together in one :class:`ConfigError`.
    """
    from .gan import GANConfig
    from .samplers import SPACINGS

    problems: list[str] = []
    T = noise_steps
    for key, value in given.items():
        if key not in declared:
            close = difflib.get_close_matches(key, list(declared), n=1, cutoff=0.6)
            problems.append(f"unknown parameter {key!r}" + (f"; did you mean {close[0]!r}?" if close else
                                                            f"; the chapter's parameters are {', '.join(declared)}"))
            continue
        if not _type_ok(value, declared[key]):
            problems.append(f"{key}: expected {type(declared[key]).__name__} like the chapter's default "
                            f"{declared[key]!r}, got {value!r}")
            continue
        if key == "train":
            try:
                T = from_dict(TrainConfig, value, source="train section").noise_steps
            except ConfigError as exc:
                problems += [line.strip()[2:] for line in str(exc).splitlines()[1:]]
        elif key == "gan":
            try:
                from_dict(GANConfig, value, source="gan section")
            except ConfigError as exc:
                problems += ["gan." + line.strip()[2:] for line in str(exc).splitlines()[1:]]
        elif key in ("schedules", "schedule"):
            bad = [s for s in (value if isinstance(value, list) else [value]) if s not in SCHEDULES]
            if bad:
                problems.append(f"{key}: unknown schedule(s) {bad}; valid: {', '.join(sorted(SCHEDULES))}")
        elif key.endswith("_sampler"):
            problems += _sampler_problems(key, value, T)
        elif key in ("ddim_steps", "dpm_steps", "invert_steps"):
            problems += _steps_problems(key, value, T)
        elif key == "etas":
            bad = [e for e in value if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 <= e <= 1]
            if bad:
                problems.append(f"etas: eta must lie in [0, 1], got {bad}")
        elif key == "spacing" and value not in SPACINGS:
            problems.append(f"spacing: unknown step spacing {value!r}; valid: {', '.join(SPACINGS)}")
        elif key == "loss_t":
            bad = [t for t in value if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < T]
            if bad:
                problems.append(f"loss_t: timesteps must be integers in [0, {T - 1}], got {bad}")
        elif (key.startswith("n_") or key in ("batch_size", "loss_images", "loss_repeats")) \
                and isinstance(value, int) and value <= 0:
            problems.append(f"{key}: must be > 0, got {value}")
    if problems:
        raise ConfigError(f"invalid parameters in {source}:\n" + "\n".join(f"  - {p}" for p in problems))
