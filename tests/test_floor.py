"""A sample set read against the real-vs-real floor: Wilson intervals, excess, ratio and its growth with N."""

import math

import pytest
import torch

from diffusion_lib.evaluation.floor import against_floor, ratio_growth, wilson, z_value
from diffusion_lib.evaluation.quality import QualityReport


def _report(fid: float, replicates: torch.Tensor, n: int = 400) -> QualityReport:
    return QualityReport(n=n, estimates={"FID": fid}, intervals={"FID": (fid - 1, fid + 1)}, entropy=2.3,
                         confidence=0.9, confident_share=0.8, classes_covered=10, hist=[n // 10] * 10,
                         labels=torch.zeros(n, dtype=torch.long), replicates={"FID": replicates})


def test_wilson_matches_the_textbook_values():
    lo, hi = wilson(0.5, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.4038, 0.5962)
    lo, hi = wilson(0.0, 100)  # the normal approximation would give [0, 0]
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(z_value() ** 2 / (100 + z_value() ** 2))
    assert wilson(0.9, 2000)[0] < 0.9 < wilson(0.9, 2000)[1]
    assert z_value() == pytest.approx(1.959964, abs=1e-6)


@pytest.mark.parametrize("p, n", [(1.2, 10), (0.5, 0)])
def test_wilson_rejects_what_is_not_a_share(p, n):
    with pytest.raises(ValueError):
        wilson(p, n)


def test_excess_and_ratio_come_from_the_paired_replicates():
    g = torch.Generator().manual_seed(0)
    floor_reps = 1.0 + 0.1 * torch.randn(200, generator=g, dtype=torch.float64)
    rep_reps = 2 * floor_reps + 0.05 * torch.randn(200, generator=g, dtype=torch.float64)  # paired: shares the draw
    vs = against_floor(_report(2.0, rep_reps), _report(1.0, floor_reps))
    assert vs.excess.value == pytest.approx(1.0) and vs.ratio.value == pytest.approx(2.0)
    half = z_value() * float((rep_reps - floor_reps).std())
    assert (vs.excess.lo, vs.excess.hi) == pytest.approx((1.0 - half, 1.0 + half))
    assert vs.ratio.lo * vs.ratio.hi == pytest.approx(4.0)  # symmetric on a log scale
    # pairing removes the shared draw: the ratio's interval is far narrower than the replicates' own spread implies
    assert vs.log_ratio_se == pytest.approx(float(torch.log(rep_reps / floor_reps).std()))
    assert vs.log_ratio_se < 0.5 * float(torch.log(rep_reps).std())


def test_a_floor_of_another_n_or_meter_is_one_clear_error():
    reps = torch.ones(200, dtype=torch.float64)
    with pytest.raises(ValueError, match="share N"):
        against_floor(_report(2.0, reps, n=400), _report(1.0, reps, n=2000))
    with pytest.raises(ValueError, match="same meter"):
        against_floor(_report(2.0, reps), _report(1.0, reps[:100]))


def test_growth_of_the_ratio_adds_the_two_independent_errors():
    g = torch.Generator().manual_seed(1)
    f_small = 2.0 + 0.3 * torch.randn(200, generator=g, dtype=torch.float64)
    small = against_floor(_report(4.0, 2 * f_small + 0.2 * torch.randn(200, generator=g, dtype=torch.float64)),
                          _report(2.0, f_small))
    f_large = 0.5 + 0.05 * torch.randn(200, generator=g, dtype=torch.float64)
    large = against_floor(_report(1.5, 3 * f_large + 0.1 * torch.randn(200, generator=g, dtype=torch.float64), 2000),
                          _report(0.5, f_large, 2000))
    growth = ratio_growth(small, large)
    assert growth.value == pytest.approx(1.5)
    se = math.hypot(small.log_ratio_se, large.log_ratio_se)
    assert math.log(growth.hi / growth.value) == pytest.approx(z_value() * se)
    assert growth.lo < growth.value < growth.hi
    same = ratio_growth(small, small)
    assert same.value == pytest.approx(1.0) and same.lo < 1 < same.hi
