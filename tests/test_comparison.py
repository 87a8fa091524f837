"""Comparing arms trained with several seeds: pooled variance, t intervals, and what the sentences may say."""

import pytest
import torch

from diffusion_lib.evaluation.comparison import Difference, compare_arms, pooled_variance, t_quantile, verdict


def test_t_quantiles_match_the_tables():
    for df, q in [(1, 12.7062), (2, 4.3027), (6, 2.4469), (12, 2.1788), (30, 2.0423)]:
        assert t_quantile(0.975, df) == pytest.approx(q, abs=2e-4)


def test_pooled_variance_and_degrees_of_freedom():
    var, df = pooled_variance({"a": [1.0, 3.0], "b": [10.0, 14.0, 12.0], "c": [5.0]})
    assert df == 3 and var == pytest.approx((2.0 + 8.0) / 3)
    with pytest.raises(ValueError, match="two or more runs"):
        pooled_variance({"a": [1.0], "b": [2.0]})


def test_interval_covers_the_true_difference_about_95_percent_of_the_time():
    g = torch.Generator().manual_seed(0)
    hits, trials = 0, 400
    for _ in range(trials):
        runs = {"a": (10 + torch.randn(3, generator=g)).tolist(), "b": (11 + torch.randn(3, generator=g)).tolist(),
                "c": (20 + torch.randn(3, generator=g)).tolist()}
        (d,) = compare_arms(runs, [("b", "a")])
        hits += d.lo <= 1.0 <= d.hi
    assert 0.92 <= hits / trials <= 0.98


def test_verdict_says_only_what_the_interval_supports():
    tie = Difference("cosine", "linear", -0.4, -1.2, 0.4)
    assert not tie.real and "indistinguishable" in verdict(tie, "FID")
    win = Difference("cosine", "linear", -2.0, -3.0, -1.0)
    assert win.real and verdict(win, "FID").startswith("cosine is better than linear")
    assert verdict(win, "precision", lower_is_better=False).startswith("cosine is worse than linear")
