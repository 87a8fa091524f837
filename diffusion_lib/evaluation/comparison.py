"""Comparing arms that were each trained with several seeds, and saying only what the intervals support.

Each arm (a schedule, a recipe, a sampler) gives one number per training seed
(e.g. FID-MNIST of its samples). The spread between seeds of the same arm
includes everything that differs between two runs: the initialisation, the data
order, the samples drawn to measure it. Pooled over all arms (the one-way
analysis of variance), it gives the standard error of a difference between two
arms' means and a t interval with the pooled degrees of freedom. A difference
is called real only when that interval excludes zero; otherwise the two arms are
"indistinguishable at this budget".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import scipy.stats
import torch

__all__ = ["Difference", "pooled_variance", "t_quantile", "arm_means", "compare_arms", "compare_to_base", "verdict"]


@dataclass(frozen=True)
class Difference:
    """``a - b`` of two arms' means, its interval, and whether the interval excludes zero."""

    a: str
    b: str
    diff: float
    lo: float
    hi: float

    @property
    def real(self) -> bool:
        return self.lo > 0 or self.hi < 0


def pooled_variance(values: Mapping[str, Sequence[float]]) -> tuple[float, int]:
    """The within-arm variance pooled over arms, and its degrees of freedom (runs minus arms)."""
    ss, df = 0.0, 0
    for v in values.values():
        x = torch.tensor(list(v), dtype=torch.float64)
        if len(x) > 1:
            ss += float(((x - x.mean()) ** 2).sum())
            df += len(x) - 1
    if df == 0:
        raise ValueError("a pooled variance needs at least one arm with two or more runs")
    return ss / df, df


def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 0.5) of Student's t with ``df`` degrees of freedom (SciPy's)."""
    if not 0.5 < p < 1:
        raise ValueError(f"p must lie in (0.5, 1), got {p}")
    return float(scipy.stats.t.ppf(p, df))


def arm_means(values: Mapping[str, Sequence[float]], level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """Each arm's mean over its runs with a t interval from the pooled variance: ``arm -> (mean, lo, hi)``."""
    var, df = pooled_variance(values)
    t = t_quantile(0.5 + level / 2, df)
    out = {}
    for a, v in values.items():
        m, half = sum(v) / len(v), t * math.sqrt(var / len(v))
        out[a] = (m, m - half, m + half)
    return out


def compare_arms(values: Mapping[str, Sequence[float]], pairs: Sequence[tuple[str, str]],
                 level: float = 0.95) -> list[Difference]:
    """The difference of means for each ``(a, b)`` in ``pairs``, with a t interval from the pooled variance."""
    var, df = pooled_variance(values)
    t = t_quantile(0.5 + level / 2, df)
    out = []
    for a, b in pairs:
        na, nb = len(values[a]), len(values[b])
        diff = sum(values[a]) / na - sum(values[b]) / nb
        half = t * math.sqrt(var * (1 / na + 1 / nb))
        out.append(Difference(a, b, diff, diff - half, diff + half))
    return out


def compare_to_base(values: Mapping[str, Sequence[float]], base: str, apart: Sequence[str] = (),
                    level: float = 0.95) -> dict[str, Difference]:
    """Every arm of ``values`` against ``base``, keyed by arm.

    The arms share one pooled variance, except those in ``apart``: arms measured on
    another scale (say, a run whose samples are not digits, with a spread of its
    own), each compared with ``base`` on the spread of the two alone, so that they
    neither widen nor narrow the other arms' intervals.
    """
    pooled = {a: v for a, v in values.items() if a not in apart}
    out = {d.a: d for d in compare_arms(pooled, [(a, base) for a in pooled if a != base], level)}
    for a in apart:
        out[a] = compare_arms({a: values[a], base: values[base]}, [(a, base)], level)[0]
    return out


def verdict(d: Difference, metric: str = "", lower_is_better: bool = True, what: str = "at this budget") -> str:
    """A sentence that says what the interval of ``d`` supports, and no more (``metric`` named when given)."""
    rng = f"{d.diff:+.3g} [{d.lo:.3g}, {d.hi:.3g}]"
    in_metric = f" in {metric}" if metric else ""
    if not d.real:
        return f"{d.a} and {d.b} are indistinguishable{in_metric} {what} ({rng})"
    better = (d.diff < 0) == lower_is_better
    return f"{d.a} is {'better' if better else 'worse'} than {d.b}{in_metric} ({rng})"
