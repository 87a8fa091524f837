"""A chapter's parameters: checked against its ``parameters`` cell before anything runs, and turned into values.

``check_chapter_parameters`` validates a parameter file against the names and
defaults the chapter declares, and the value rules the project uses across
chapters (training and GAN sections, schedules, samplers, step counts, eta,
sample counts); every problem is reported together in one :class:`ConfigError`.
"""

from __future__ import annotations

import difflib
from typing import Any

from ..core.config import from_dict, problems_of
from ..core.errors import ConfigError
from ..diffusion.generate import SamplerSpec
from ..diffusion.samplers import SPACINGS, bad_eta, bad_steps
from ..diffusion.schedules import SCHEDULES
from ..evaluation.gan import GANConfig
from ..nets.inference import BACKENDS
from ..training.config import TrainConfig
from .recipe import merged

__all__ = ["check_chapter_parameters", "sampler"]


def sampler(params: dict[str, Any], noise_steps: int = 1000) -> SamplerSpec:
    """The :class:`SamplerSpec` a chapter's sampler parameter describes (every key, spacing included)."""
    try:
        return SamplerSpec.from_mapping(params, noise_steps)
    except ValueError as exc:
        raise ConfigError(f"invalid sampler {params!r}: {exc}") from exc


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
    bad = [v for v in items if bad_steps(v, T)]
    return [f"{name}: sampling steps must be integers in [1, {T}] (T = {T}), got {bad}"] if bad else []


def _value_problems(key: str, value: Any, T: int) -> list[str]:
    """The project-wide rules for a parameter called ``key`` (its type already matches the chapter's default)."""
    if key == "gan":
        try:
            from_dict(GANConfig, value, source="gan section")
        except ConfigError as exc:
            return ["gan." + p for p in problems_of(exc)]
    elif key in ("schedules", "schedule"):
        bad = [s for s in (value if isinstance(value, list) else [value]) if s not in SCHEDULES]
        if bad:
            return [f"{key}: unknown schedule(s) {bad}; valid: {', '.join(sorted(SCHEDULES))}"]
    elif key.endswith("_sampler"):
        return [f"{key}.{p}" if p.split(":")[0] in ("method", "steps", "eta", "spacing", "variance") else f"{key}: {p}"
                for p in SamplerSpec.mapping_problems(value, T)]
    elif key in ("ddim_steps", "dpm_steps", "invert_steps", "interp_steps"):
        return _steps_problems(key, value, T)
    elif key == "etas":
        bad = [e for e in value if bad_eta(e)]
        if bad:
            return [f"etas: eta must lie in [0, 1], got {bad}"]
    elif key == "seeds" and (len(value) < 2 or len(set(value)) < len(value)):
        return [f"seeds: at least two different training seeds are needed to measure the spread between runs, "
                f"got {value}"]
    elif key == "sampling_backend" and value not in BACKENDS:
        return [f"sampling_backend: unknown backend {value!r}; valid: {', '.join(BACKENDS)}"]
    elif key in ("spacing", "confirm_spacings"):
        bad = [s for s in (value if isinstance(value, list) else [value]) if s not in SPACINGS]
        if bad:
            return [f"{key}: unknown step spacing {', '.join(map(repr, bad))}; valid: {', '.join(SPACINGS)}"]
    elif key == "loss_t":
        bad = [t for t in value if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < T]
        if bad:
            return [f"loss_t: timesteps must be integers in [0, {T - 1}], got {bad}"]
    elif (key.startswith("n_") or key in ("batch_size", "loss_images", "loss_repeats")) \
            and isinstance(value, int) and value <= 0:
        return [f"{key}: must be > 0, got {value}"]
    return []


def _recipe_problems(base: dict[str, Any], arms: dict[str, Any], combined: Any) -> list[str]:
    """The base recipe and every arm merged into it must be valid training configurations."""
    problems: list[str] = []
    try:
        from_dict(TrainConfig, base, source="base section")
    except ConfigError as exc:
        return ["base." + p for p in problems_of(exc)]
    for name, overrides in arms.items():
        if not isinstance(overrides, dict):
            problems.append(f"arms.{name}: expected a mapping of the keys the arm changes, got {overrides!r}")
            continue
        try:
            from_dict(TrainConfig, merged(base, overrides), source=f"arm {name}")
        except ConfigError as exc:
            problems += [f"arms.{name}.{p}" for p in problems_of(exc)]
    if not isinstance(combined, list) or any(c not in arms for c in combined):
        problems.append(f"combined: must list arms of this study ({', '.join(arms)}), got {combined!r}")
    return problems


def check_chapter_parameters(declared: dict[str, Any], given: dict[str, Any], source: str) -> None:
    """Validate a chapter's parameters ``given`` against its ``declared`` names and defaults; one error lists all."""
    problems: list[str] = []
    T = 1000
    if isinstance(given.get("train"), dict):
        try:
            T = from_dict(TrainConfig, given["train"], source="train section").noise_steps
        except ConfigError as exc:
            problems += problems_of(exc)
    if isinstance(given.get("base"), dict) and isinstance(given.get("arms", {}), dict):  # a recipe study
        problems += _recipe_problems(given["base"], given.get("arms", {}), given.get("combined", []))
    for key, value in given.items():
        if key not in declared:
            close = difflib.get_close_matches(key, list(declared), n=1, cutoff=0.6)
            problems.append(f"unknown parameter {key!r}" + (f"; did you mean {close[0]!r}?" if close else
                                                            f"; the chapter's parameters are {', '.join(declared)}"))
        elif not _type_ok(value, declared[key]):
            problems.append(f"{key}: expected {type(declared[key]).__name__} like the chapter's default "
                            f"{declared[key]!r}, got {value!r}")
        elif key != "train":
            problems += _value_problems(key, value, T)
    if problems:
        raise ConfigError(f"invalid parameters in {source}:\n" + "\n".join(f"  - {p}" for p in problems))
