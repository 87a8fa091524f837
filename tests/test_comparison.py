"""Comparing arms trained with several seeds: pooled variance, t intervals, and what the sentences may say."""

import pytest
import torch

from diffusion_lib.evaluation.comparison import (Difference, compare_arms, compare_to_base, pooled_variance, t_quantile,
                                                 verdict)


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


def test_arms_apart_are_compared_on_their_own_spread_and_leave_the_others_alone():
    values = {"base": [10.0, 12.0], "a": [11.0, 13.0], "b": [9.0, 10.0], "blob": [400.0, 500.0]}
    d = compare_to_base(values, "base", apart=["blob"])
    assert set(d) == {"a", "b", "blob"}
    pooled = {k: v for k, v in values.items() if k != "blob"}
    for arm in ("a", "b"):  # exactly what the pooled comparison without the blob gives
        assert d[arm] == compare_arms(pooled, [(arm, "base")])[0]
    assert d["blob"] == compare_arms({"blob": values["blob"], "base": values["base"]}, [("blob", "base")])[0]
    with_blob = compare_to_base(values, "base")  # pooled with the blob, the other intervals are far wider
    assert with_blob["a"].hi - with_blob["a"].lo > 10 * (d["a"].hi - d["a"].lo)
