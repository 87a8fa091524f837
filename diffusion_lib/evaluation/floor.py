"""A sample set against the real-vs-real floor at the same N: the excess over it, the ratio to it, and how N moves them.

FID is biased upwards by an amount that shrinks with N, and two sets of real
digits show that bias alone: the floor. So a sampler is read against the floor
measured at its own N with the same meter:

- the *excess* ``FID - floor`` and the *ratio* ``FID / floor``, each with a
  bootstrap interval from the paired replicates (the meter resamples both with
  the same indices); the ratio's interval is taken on a log scale, where it is
  symmetric;
- the *growth* of the ratio between two N, from independent sample sets, so
  their log-scale standard errors add in quadrature;
- the share of samples read confidently, with a Wilson interval (sound near 0
  and 1, where the normal approximation is not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .quality import QualityReport, normal_interval

__all__ = ["AgainstFloor", "Interval", "against_floor", "ratio_growth", "wilson", "z_value"]


@dataclass(frozen=True)
class Interval:
    """An estimate and its interval."""

    value: float
    lo: float
    hi: float

    def __iter__(self):
        return iter((self.value, self.lo, self.hi))


@dataclass(frozen=True)
class AgainstFloor:
    """One report read against the floor at its N."""

    n: int
    fid: float
    floor: float
    excess: Interval
    ratio: Interval
    log_ratio_se: float  # the standard error of log(ratio), from the paired replicates


def z_value(level: float = 0.95) -> float:
    """The two-sided standard normal quantile for ``level`` (1.96 for 95%)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.5 + level / 2, dtype=torch.float64)))


def wilson(p: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a share ``p`` of ``n`` independent samples."""
    if n <= 0:
        raise ValueError(f"a share needs at least one sample, got n = {n}")
    if not 0 <= p <= 1:
        raise ValueError(f"a share lies in [0, 1], got {p}")
    z = z_value(level)
    scale = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z / scale * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def against_floor(report: QualityReport, floor: QualityReport, level: float = 0.95) -> AgainstFloor:
    """``report`` against ``floor`` (real vs real, the same meter and N): excess and ratio with paired intervals."""
    if report.n != floor.n:
        raise ValueError(f"a sample set and its floor must share N, got {report.n} and {floor.n}")
    if floor.fid <= 0 or report.fid <= 0:
        raise ValueError(f"a ratio to the floor needs positive FIDs, got {report.fid} and {floor.fid}")
    a, b = report.replicates["FID"].double(), floor.replicates["FID"].double()
    if a.shape != b.shape:
        raise ValueError("the report and the floor must come from the same meter (paired bootstrap replicates)")
    excess = report.fid - floor.fid
    log_ratio, log_reps = math.log(report.fid / floor.fid), torch.log(a.clamp(min=1e-12) / b.clamp(min=1e-12))
    log_lo, log_hi = normal_interval(log_ratio, log_reps, level)
    return AgainstFloor(report.n, report.fid, floor.fid, Interval(excess, *normal_interval(excess, a - b, level)),
                        Interval(math.exp(log_ratio), math.exp(log_lo), math.exp(log_hi)), float(log_reps.std()))


def ratio_growth(small: AgainstFloor, large: AgainstFloor, level: float = 0.95) -> Interval:
    """How many times larger the ratio to the floor is at ``large``'s N than at ``small``'s (independent sets)."""
    z = z_value(level)
    g = math.log(large.ratio.value / small.ratio.value)
    se = math.hypot(small.log_ratio_se, large.log_ratio_se)
    return Interval(math.exp(g), math.exp(g - z * se), math.exp(g + z * se))
