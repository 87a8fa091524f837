"""A chapter's parameters: checked against its ``parameters`` cell before anything runs, and turned into values.

A chapter declares each parameter with its default and, where a value can be wrong in more ways than its type,
the rule that checks it, as the annotation papermill reads::

    n_eval: "count" = 64
    ddim_steps: "steps" = [5, 10, 20]
    train: "train" = {"steps": 400, ...}

:data:`RULES` holds every rule a chapter can name. :func:`check_chapter_parameters` checks a parameter file against
the declared names, the defaults' types and the declared rules; every problem is reported together in one
:class:`ConfigError`.
"""

from __future__ import annotations

import contextlib
import difflib
from typing import Any, Callable

from ..core.config import from_dict, problems_of
from ..core.errors import ConfigError
from ..diffusion.generate import SamplerSpec
from ..diffusion.samplers import SPACINGS, bad_eta, bad_steps
from ..diffusion.schedules import SCHEDULES
from ..evaluation.gan import GANConfig
from ..nets.inference import BACKENDS
from ..training.config import TrainConfig
from .recipe import merged

__all__ = ["RULES", "check_chapter_parameters", "sampler"]


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


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _each(ok: Callable[[Any, int], bool], text: str) -> Callable[[str, Any, int, dict], list[str]]:
    """A rule every item of the value (or the value itself) must pass, given T; ``text`` says what is expected."""
    def check(key: str, value: Any, T: int, given: dict) -> list[str]:
        bad = [v for v in _items(value) if not ok(v, T)]
        shown = bad if isinstance(value, list) else bad[:1] and bad[0]
        return [f"{key}: {text.format(T=T, last=T - 1)}, got {shown!r}"] if bad else []
    return check


def _one_of(valid: Any, what: str) -> Callable[[str, Any, int, dict], list[str]]:
    def check(key: str, value: Any, T: int, given: dict) -> list[str]:
        bad = [v for v in _items(value) if v not in valid]
        return [f"{key}: unknown {what} {', '.join(map(repr, bad))}; valid: {', '.join(valid)}"] if bad else []
    return check


def _config(cls: type, section: str) -> Callable[[str, Any, int, dict], list[str]]:
    """A section that must build configuration ``cls`` (a training run, a GAN)."""
    def check(key: str, value: Any, T: int, given: dict) -> list[str]:
        try:
            from_dict(cls, value, source=f"{key} {section}")
        except ConfigError as exc:
            return [f"{key}.{p}" for p in problems_of(exc)]
        return []
    return check


def _sampler(key: str, value: Any, T: int, given: dict) -> list[str]:
    return [f"{key}.{p}" if p.split(":")[0] in ("method", "steps", "eta", "spacing", "variance") else f"{key}: {p}"
            for p in SamplerSpec.mapping_problems(value, T)]


def _seeds(key: str, value: Any, T: int, given: dict) -> list[str]:
    if len(value) < 2 or len(set(value)) < len(value):
        return [f"{key}: at least two different training seeds are needed to measure the spread between runs, "
                f"got {value}"]
    return []


def _recipe(key: str, value: Any, T: int, given: dict) -> list[str]:
    arms = given.get("arms", {})  # its type is checked against the chapter's default
    return _recipe_problems(value, arms if isinstance(arms, dict) else {}, given.get("combined", []))


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# the rules a chapter names in its parameters cell: (parameter, its value, T, every given parameter) -> problems
RULES: dict[str, Callable[[str, Any, int, dict], list[str]]] = {
    "count": _each(lambda v, T: v > 0, "must be > 0"),
    "scales": _each(lambda v, T: v >= 0, "must be >= 0"),
    "steps": _each(lambda v, T: not bad_steps(v, T), "sampling steps must be integers in [1, {T}] (T = {T})"),
    "timesteps": _each(lambda v, T: _integer(v) and 0 <= v < T, "timesteps must be integers in [0, {last}]"),
    "etas": _each(lambda v, T: not bad_eta(v), "eta must lie in [0, 1]"),
    "seeds": _seeds,
    "schedules": _one_of(sorted(SCHEDULES), "schedule"),
    "spacings": _one_of(SPACINGS, "step spacing"),
    "backend": _one_of(BACKENDS, "sampling backend"),
    "sampler": _sampler,
    "train": _config(TrainConfig, "section"),
    "gan": _config(GANConfig, "section"),
    "recipe": _recipe,
}


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


def check_chapter_parameters(declared: dict[str, tuple[Any, str | None]], given: dict[str, Any], source: str) -> None:
    """Validate parameters ``given`` against the chapter's ``declared`` ones (name -> (default, rule or None)): the
    names, the defaults' types and the declared rules, with T from the parameter declared ``train``; one error lists
    every problem."""
    problems = [f"the chapter declares an unknown rule {rule!r} for {name}; the rules are {', '.join(RULES)}"
                for name, (_, rule) in declared.items() if rule is not None and rule not in RULES]
    T = 1000
    trained = [n for n, (_, rule) in declared.items() if rule == "train" and isinstance(given.get(n), dict)]
    if trained:
        with contextlib.suppress(ConfigError):  # its problems are reported by its rule, below
            T = from_dict(TrainConfig, given[trained[0]]).noise_steps
    for key, value in given.items():
        default, rule = declared.get(key, (None, None))
        if key not in declared:
            close = difflib.get_close_matches(key, list(declared), n=1, cutoff=0.6)
            problems.append(f"unknown parameter {key!r}" + (f"; did you mean {close[0]!r}?" if close else
                                                            f"; the chapter's parameters are {', '.join(declared)}"))
        elif not _type_ok(value, default):
            problems.append(f"{key}: expected {type(default).__name__} like the chapter's default {default!r}, "
                            f"got {value!r}")
        elif rule in RULES:
            problems += RULES[rule](key, value, T, given)
    if problems:
        raise ConfigError(f"invalid parameters in {source}:\n" + "\n".join(f"  - {p}" for p in problems))
