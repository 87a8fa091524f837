"""One shape for every interval the report gives: an estimate and its bounds.

Every measurement in the book is an :class:`Interval`: a metric with its bootstrap
interval, a paired difference (a :class:`Difference`, which names what it
compares), a mean over runs or paths, a share with its Wilson interval, the
likelihood bound over images. It unpacks as ``value, lo, hi``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Interval", "Difference", "z_value", "normal_interval", "wilson"]


@dataclass(frozen=True)
class Interval:
    """An estimate and its interval."""

    value: float
    lo: float
    hi: float

    def __iter__(self):
        return iter((self.value, self.lo, self.hi))

    def __format__(self, spec: str) -> str:
        """``value [lo, hi]``, each number formatted by ``spec`` (a sign, as in ``+.3g``, for the value only)."""
        bounds = spec.lstrip("+- ")
        return f"{self.value:{spec}} [{self.lo:{bounds}}, {self.hi:{bounds}}]"


@dataclass(frozen=True)
class Difference(Interval):
    """``a - b`` of two measurements (arms, samplers, models) and its interval."""

    a: str = ""
    b: str = ""

    @property
    def real(self) -> bool:
        """Whether the interval excludes zero: only then is the difference called real."""
        return self.lo > 0 or self.hi < 0


def z_value(level: float = 0.95) -> float:
    """The two-sided standard normal quantile for ``level`` (1.96 for 95%)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + level / 2, dtype=torch.float64)))


def normal_interval(estimate: float, replicates: torch.Tensor, level: float = 0.95) -> Interval:
    """``estimate`` plus or minus z times the standard deviation of its replicates (bootstrap, or per-item values
    divided by the square root of their number)."""
    half = z_value(level) * float(replicates.double().std())
    return Interval(estimate, estimate - half, estimate + half)


def wilson(p: float, n: int, level: float = 0.95) -> Interval:
    """A share ``p`` of ``n`` independent samples with its Wilson score interval (sound near 0 and 1)."""
    if n <= 0:
        raise ValueError(f"a share needs at least one sample, got n = {n}")
    if not 0 <= p <= 1:
        raise ValueError(f"a share lies in [0, 1], got {p}")
    z = z_value(level)
    scale = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z / scale * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))
