"""One look for every figure: the theme, and one colour per concept, the same in every chapter."""

from __future__ import annotations

import seaborn as sns

__all__ = ["PALETTE", "colours", "set_style"]

_C = sns.color_palette("colorblind", 10)
# each schedule, sampler and model has one colour everywhere in the book
PALETTE: dict[str, tuple[float, float, float]] = {
    "linear": _C[0], "cosine": _C[1], "quadratic": _C[2],
    "spherical": _C[4], "slerp": _C[4], "lin": _C[0],
    "DDPM": _C[3], "DDIM": _C[0], "DPM-Solver++": _C[1],
    "diffusion": _C[0], "diffusion, reference": _C[0], "diffusion, same minutes": _C[9],
    "DCGAN": _C[3], "real test": _C[7], "real": _C[7],
}


def colours(names) -> dict[str, tuple[float, float, float]]:
    """The palette entries for ``names`` (a seaborn ``palette=`` argument)."""
    return {n: PALETTE[n] for n in names}


def set_style() -> None:
    sns.set_theme(style="whitegrid", context="notebook")
