"""The arms of a training-recipe study: a base configuration, and each arm as the keys it changes.

A study's parameter file holds ``base`` (a ``train:`` mapping), ``arms`` (name ->
the keys that arm changes, nested like the base) and ``seeds``. Every arm trains
once per seed into ``<artifacts>/<arm>/seed<k>``; the chapter and any script that
trains the arms ahead of it build the same configurations here, so a run trained
by one is reused by the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ..core.config import from_dict
from ..training.config import TrainConfig

__all__ = ["BASE", "merged", "arm_settings", "arm_configs", "flat", "changes", "differences", "recipe_of"]

BASE = "base"  # the arm that changes nothing


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied, nested mappings merged key by key."""
    out = dict(base)
    for k, v in overrides.items():
        out[k] = merged(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def arm_settings(arms: Mapping[str, Mapping[str, Any]], combined: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Every arm's overrides, with the base first and, when ``combined`` names arms, a ``combined`` arm merging them.

    The combined arm keeps the base's number of steps unless one of its arms sets it.
    """
    unknown = [a for a in combined if a not in arms]
    if unknown:
        raise ValueError(f"combined names arms that do not exist: {unknown}; arms: {', '.join(arms)}")
    out: dict[str, dict[str, Any]] = {BASE: {}}
    out.update({name: dict(ov) for name, ov in arms.items() if name != BASE})
    if combined:
        mix: dict[str, Any] = {}
        for a in combined:
            mix = merged(mix, arms[a])
        out["combined"] = mix
    return out


def arm_configs(base: Mapping[str, Any], settings: Mapping[str, Mapping[str, Any]], seeds: Sequence[int],
                art: str | Path) -> dict[tuple[str, int], TrainConfig]:
    """The configuration of every (arm, seed): the base with the arm's keys, its own seed and out_dir."""
    return {(name, seed): from_dict(TrainConfig, merged(base, {**ov, "seed": seed,
                                                                "out_dir": str(Path(art) / name / f"seed{seed}")}),
                                    source=f"recipe arm {name!r}, seed {seed}")
            for name, ov in settings.items() for seed in seeds}


def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level, nested keys dotted (``model.base_channels``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, Mapping) else {f"{prefix}{k}": v})
    return out


def changes(overrides: Mapping[str, Any], base: Mapping[str, Any]) -> list[str]:
    """What an arm changes, as ``key base -> value`` strings (nested keys dotted), the base's defaults filled in."""
    full = flat(from_dict(TrainConfig, dict(base), source="recipe base").to_dict())
    return [f"{k} {full.get(k)} -> {v}" for k, v in flat(overrides).items()]


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The dotted keys in which two configurations differ: key -> (value in ``a``, value in ``b``)."""
    fa, fb = flat(a), flat(b)
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


_NOT_RECIPE = {"steps", "seed", "out_dir", "sample_every", "sample_n", "checkpoint_every", "snapshot_every", "device",
               "threads", "data_root", "train_subset", "compile", "channels_last", "deterministic"}


def recipe_of(cfg: TrainConfig) -> dict[str, Any]:
    """The choices a recipe makes (model, optimiser, EMA, loss, precision), without length, seed and bookkeeping."""
    return {k: v for k, v in cfg.to_dict().items() if k not in _NOT_RECIPE}
