"""Tests of samlab.stats against published reference values and hand computations."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from samlab.results import make_rows, to_frame
from samlab.stats import (
    bootstrap_ci,
    compare,
    correct_pvalues,
    p_to_stars,
    pair_up,
    paired_test,
)

# R's `sleep` data set (Student 1908): extra hours of sleep, the same 10 patients under two drugs.
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]

# R's ?wilcox.test example (Hollander & Wolfe, depression scale before/after therapy):
# wilcox.test(x, y, paired = TRUE, alternative = "greater") -> V = 40, p-value = 0.01953,
# so two-sided p = 0.0390625 (exact, n = 9, no ties or zeros).
HW_X = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30]
HW_Y = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29]

# scipy.stats.wilcoxon docstring example (Fisher's data, height differences):
# wilcoxon(d) -> statistic=24.0, pvalue=0.041259765625.
FISHER_D = [6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75]


# --------------------------------------------------------------------------- paired_test


def test_paired_ttest_sleep_reference():
    # R: t.test(extra ~ group, data = sleep, paired = TRUE)
    #    t = -4.0621, df = 9, p-value = 0.002833, mean difference -1.58
    res = paired_test(SLEEP_1, SLEEP_2, test="ttest")
    assert res["test"] == "ttest"
    assert res["n"] == 10
    assert res["statistic"] == pytest.approx(-4.0621, abs=1e-4)
    assert res["df"] == 9
    assert res["p"] == pytest.approx(0.002833, abs=5e-7)
    assert res["mean_diff"] == pytest.approx(-1.58)
    # Cohen's d_z = mean(d) / sd(d); by hand the squared deviations of the 10
    # differences from -1.58 sum to 13.616, so sd = sqrt(13.616 / 9).
    assert res["effect_name"] == "cohen_dz"
    assert res["effect"] == pytest.approx(-1.58 / math.sqrt(13.616 / 9))
    assert res["effect"] == pytest.approx(res["statistic"] / math.sqrt(10))
    # swapping a and b flips every sign but not p
    flipped = paired_test(SLEEP_2, SLEEP_1)
    assert flipped["statistic"] == pytest.approx(4.0621, abs=1e-4)
    assert flipped["p"] == pytest.approx(res["p"])


def test_wilcoxon_r_reference():
    res = paired_test(HW_X, HW_Y, test="wilcoxon")
    # R's V = W+ = 40; scipy's two-sided statistic is min(W+, W-) = 45 - 40 = 5.
    assert res["statistic"] == 5.0
    assert res["p"] == pytest.approx(2 * 0.01953, abs=1e-5)
    assert res["p"] == pytest.approx(0.0390625)
    # rank-biserial r = (W+ - W-) / (W+ + W-) = (40 - 5) / 45
    assert res["effect_name"] == "rank_biserial"
    assert res["effect"] == pytest.approx(35 / 45)
    assert math.isnan(res["df"])


def test_wilcoxon_scipy_docs_reference():
    res = paired_test(FISHER_D, np.zeros(len(FISHER_D)), test="wilcoxon")
    assert res["statistic"] == 24.0
    assert res["p"] == pytest.approx(0.041259765625)
    # |d| ranks: 48 is 10th and 67 is 14th -> W- = 24, W+ = 120 - 24 = 96.
    assert res["effect"] == pytest.approx((96 - 24) / 120)


def test_identical_pairs_are_no_difference():
    # all five differences are 0: the exact sign test has no non-zero difference, p = 1
    for test in ("ttest", "wilcoxon"):
        res = paired_test([0.9, 0.8, 1.0, 0.7, 0.6], [0.9, 0.8, 1.0, 0.7, 0.6], test=test)
        assert (res["statistic"], res["p"], res["effect"], res["mean_diff"]) == (0.0, 1.0, 0.0, 0.0)
        assert res["test_used"] == "sign test (exact)" and res["tested"]


@pytest.mark.parametrize("test", ["ttest", "wilcoxon"])
def test_zero_variance_pairs_get_the_exact_sign_test_not_p_zero(test):
    # n = 5, every difference +0.1: t would be +inf with p = 0. By hand: all 5 signs positive
    # under H0 (each sign + with probability 1/2): P(5 of 5) = 1/32, two-sided 2/32 = 0.0625.
    a = np.array([0.5, 0.6, 0.7, 0.8, 0.9])
    res = paired_test(a, a - 0.1, test=test)
    assert res["p"] == pytest.approx(2 / 32)
    assert res["test_used"] == "sign test (exact)"
    assert res["statistic"] == 5.0 and math.isfinite(res["statistic"])
    # n = 6 in the other direction: 2 / 64
    b = np.linspace(0.1, 0.6, 6)
    assert paired_test(b, b + 0.25, test=test)["p"] == pytest.approx(2 / 64)


@pytest.mark.parametrize("test", ["ttest", "wilcoxon"])
def test_fewer_than_min_n_pairs_are_not_tested(test):
    # n = 4 < 5: effect size still reported, p NaN, the row says why
    res = paired_test([0.9, 0.8, 0.7, 0.6], [0.8, 0.75, 0.5, 0.6], test=test)
    assert res["n"] == 4 and not res["tested"]
    assert math.isnan(res["p"]) and math.isnan(res["statistic"])
    assert res["test_used"] == "not tested (n < 5)"
    assert res["mean_diff"] == pytest.approx(0.35 / 4)
    assert res["effect"] != 0.0 and math.isfinite(res["effect"])
    # the threshold is a parameter
    assert paired_test([0.9, 0.8, 0.7, 0.6], [0.8, 0.75, 0.5, 0.6], test=test, min_n=4)["tested"]
    with pytest.raises(ValueError, match="min_n must be >= 2"):
        paired_test([1, 2], [2, 3], min_n=1)


@pytest.mark.parametrize("test", ["ttest", "wilcoxon"])
def test_slices_of_fewer_than_min_n_subjects_are_not_tested(test):
    # 12 pairs with a clear effect, but slices of 2 volumes: reported, not tested
    rng = np.random.default_rng(5)
    a = rng.normal(0.8, 0.05, 12)
    b = a - rng.normal(0.1, 0.02, 12)
    res = paired_test(a, b, test=test, subjects=2)
    assert res["n"] == 12 and not res["tested"] and math.isnan(res["p"]) and math.isnan(res["statistic"])
    assert res["test_used"] == "not tested (slices of 2 subjects < 5)"
    assert res["mean_diff"] == pytest.approx(float(np.mean(a - b)))
    assert paired_test(a, b, test=test, subjects=1)["test_used"] == "not tested (slices of 1 subject < 5)"
    # from 5 subjects on (or one subject per pair: subjects=None) the same pairs are tested
    assert paired_test(a, b, test=test, subjects=5)["p"] < 0.001
    assert paired_test(a, b, test=test)["p"] == paired_test(a, b, test=test, subjects=12)["p"]


def test_compare_counts_subjects_of_slice_pairs():
    rows = []
    for subject, slices in (("v1", 6), ("v2", 6)):
        for z in range(slices):
            for cond, shift in (("x", 0.1 + 0.01 * z), ("y", 0.0)):
                rows.append({"dataset": "d", "subject": subject, "slice": z, "structure": "s", "metric": "dice",
                             "cond": cond, "value": 0.5 + shift})
    frame = pd.DataFrame(rows)
    per_slice = compare(frame, "cond", "x", "y", "dice")
    assert per_slice["tested"].all() and per_slice["n"].tolist() == [12]  # the pairs alone: 12 "independent" slices
    by_subject = compare(frame, "cond", "x", "y", "dice", subject_on=["dataset", "subject"])
    assert not by_subject["tested"].any() and by_subject["stars"].tolist() == [""]
    assert by_subject["test"].tolist() == ["not tested (slices of 2 subjects < 5)"]


def test_normal_case_matches_scipy_ttest_rel():
    rng = np.random.default_rng(3)
    a = rng.normal(0.8, 0.05, 12)
    b = a - rng.normal(0.02, 0.03, 12)
    res = paired_test(a, b, "ttest")
    ref = scipy.stats.ttest_rel(a, b)
    assert res["test_used"] == "paired t"
    assert res["statistic"] == pytest.approx(ref.statistic)
    assert res["p"] == pytest.approx(ref.pvalue)
    w = paired_test(a, b, "wilcoxon")
    assert w["test_used"] == "Wilcoxon signed-rank (exact)"
    assert w["p"] == pytest.approx(scipy.stats.wilcoxon(a, b, method="exact").pvalue)


def test_test_row_reports_untested_rows_without_stars():
    from samlab.stats import row_stars, test_row

    a = np.array([0.9, 0.8])
    row = test_row(a, a - 0.1, n_resamples=200, confidence=0.95, seed=0)
    assert row["n"] == 2 and row["test"] == "not tested (n < 5)" and not row["tested"]
    assert math.isnan(row["p_t"]) and math.isnan(row["p_w"])
    assert row["mean_diff"] == pytest.approx(0.1) and row["ci_low"] == pytest.approx(0.1)
    assert row_stars(row["p_t"], row["tested"]) == ""
    five = test_row(np.arange(5.0), np.arange(5.0) - 1, n_resamples=200, confidence=0.95, seed=0, test="wilcoxon")
    assert five["test"] == "sign test (exact)" and five["p_w"] == pytest.approx(0.0625) and five["p_t"] == pytest.approx(0.0625)
    assert row_stars(five["p_w"], five["tested"]) == "ns"


def test_paired_test_input_errors():
    with pytest.raises(ValueError, match="same length"):
        paired_test([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="unknown test 'anova'"):
        paired_test([1, 2, 3], [1, 2, 4], test="anova")
    with pytest.raises(ValueError, match=r"1 pair\(s\) contain NaN"):
        paired_test([1, np.nan, 3, 4], [1, 2, 4, 6])
    with pytest.raises(ValueError, match="at least 2 complete pairs"):
        paired_test([1.0], [2.0])
    with pytest.raises(ValueError, match="finite"):
        paired_test([1, np.inf, 3], [1, 2, 4])


def test_nan_policy_omit_drops_incomplete_pairs():
    a = SLEEP_1 + [np.nan]
    b = SLEEP_2 + [1.0]
    res = paired_test(a, b, nan_policy="omit")
    assert res["n"] == 10
    assert res["statistic"] == pytest.approx(-4.0621, abs=1e-4)


# --------------------------------------------------------------------------- corrections


def test_holm_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # Holm: sort ascending, multiply the i-th smallest (i = 0..m-1) by (m - i),
    # take the running maximum, cap at 1, put back in the original order.
    order = np.argsort(p)
    stepped = np.maximum.accumulate([(len(p) - i) * p[j] for i, j in enumerate(order)])
    expected = np.empty_like(p)
    expected[order] = np.minimum(stepped, 1.0)
    np.testing.assert_allclose(expected, [0.03, 0.06, 0.06, 0.02])  # R: p.adjust(p, "holm")
    np.testing.assert_allclose(correct_pvalues(p, "holm"), expected)


def test_benjamini_hochberg_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # BH: the i-th smallest (1-based rank i) times m / i, running minimum from the largest down.
    m = len(p)
    order = np.argsort(p)
    scaled = [p[j] * m / (i + 1) for i, j in enumerate(order)]
    stepped = np.minimum.accumulate(scaled[::-1])[::-1]
    expected = np.empty_like(p)
    expected[order] = np.minimum(stepped, 1.0)
    np.testing.assert_allclose(expected, [0.02, 0.04, 0.04, 0.02])  # R: p.adjust(p, "BH")
    np.testing.assert_allclose(correct_pvalues(p, "fdr_bh"), expected)


def test_correction_leaves_nan_out_of_the_family():
    out = correct_pvalues([0.01, np.nan, 0.04], "holm")
    np.testing.assert_allclose(out, [0.02, np.nan, 0.04])
    with pytest.raises(ValueError, match="unknown correction"):
        correct_pvalues([0.1], "sidak_typo")
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        correct_pvalues([0.1, 1.5])


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_true_mean_and_matches_t_interval():
    rng = np.random.default_rng(42)
    diffs = rng.normal(loc=0.3, scale=1.0, size=400)
    low, high = bootstrap_ci(diffs, n_resamples=5000, seed=1)
    assert low < 0.3 < high
    assert low < diffs.mean() < high
    # for 400 normal differences the BCa interval is close to the t interval
    t_low, t_high = scipy.stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    assert (high - low) == pytest.approx(t_high - t_low, rel=0.1)
    assert low == pytest.approx(t_low, abs=0.03) and high == pytest.approx(t_high, abs=0.03)


def test_bootstrap_ci_is_reproducible_and_nested():
    diffs = np.array(SLEEP_1) - np.array(SLEEP_2)
    first = bootstrap_ci(diffs, n_resamples=2000, seed=7)
    assert bootstrap_ci(diffs, n_resamples=2000, seed=7) == first
    assert bootstrap_ci(diffs, n_resamples=2000, seed=8) != first
    wide = bootstrap_ci(diffs, n_resamples=2000, confidence=0.99, seed=7)
    assert wide[0] < first[0] < -1.58 < first[1] < wide[1]


def test_bootstrap_ci_degenerate_and_errors():
    assert bootstrap_ci([0.2, 0.2, 0.2]) == (0.2, 0.2)
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_ci([0.1])
    with pytest.raises(ValueError, match="finite"):
        bootstrap_ci([0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([0.1, 0.2], confidence=95)


# --------------------------------------------------------------------------- stars


@pytest.mark.parametrize(
    "p, stars",
    [(0.00001, "****"), (0.0001, "****"), (0.0005, "***"), (0.001, "***"), (0.002833, "**"),
     (0.01, "**"), (0.03, "*"), (0.05, "*"), (0.0500001, "ns"), (0.5, "ns"), (float("nan"), "ns")],
)
def test_p_to_stars(p, stars):
    assert p_to_stars(p) == stars


# --------------------------------------------------------------------------- pairing


def results_frame() -> pd.DataFrame:
    """Long-format results: two methods on 10 subjects; structure 'sleep' and 'fisher'."""
    rows = []
    for i, (x, y) in enumerate(zip(SLEEP_1, SLEEP_2)):
        ctx = {"dataset": "demo", "subject": f"s{i:02d}", "structure": "sleep"}
        rows += make_rows({**ctx, "method": "drug1"}, {"dice": x})
        rows += make_rows({**ctx, "method": "drug2"}, {"dice": y})
    for i, (x, y) in enumerate(zip(HW_X, HW_Y)):
        ctx = {"dataset": "demo", "subject": f"s{i:02d}", "structure": "depression"}
        rows += make_rows({**ctx, "method": "drug1"}, {"dice": x, "hd95": 10 * x})
        rows += make_rows({**ctx, "method": "drug2"}, {"dice": y, "hd95": 10 * y})
    return to_frame(rows)


def test_pair_up_matches_rows():
    frame = results_frame().sample(frac=1.0, random_state=3)  # order must not matter
    pairs = pair_up(frame, "method", "drug1", "drug2")
    assert list(pairs.columns) == ["dataset", "subject", "slice", "structure", "metric", "value_a", "value_b", "diff"]
    assert len(pairs) == 10 + 2 * 9
    sleep = pairs[(pairs["structure"] == "sleep")].sort_values("subject")
    np.testing.assert_allclose(sleep["value_a"], SLEEP_1)
    np.testing.assert_allclose(sleep["diff"], np.array(SLEEP_1) - np.array(SLEEP_2))


def test_pair_up_refuses_missing_partner():
    frame = results_frame()
    drop = frame[(frame["method"] == "drug2") & (frame["subject"] == "s03") & (frame["structure"] == "sleep")]
    with pytest.raises(ValueError, match=r"1 with method='drug1' but no 'drug2', e\.g\. .*'subject': 's03'"):
        pair_up(frame.drop(index=drop.index), "method", "drug1", "drug2")


def test_pair_up_refuses_duplicates_and_names_the_varying_column():
    frame = results_frame()
    extra = frame[frame["method"] == "drug1"].copy()
    extra["prompt"] = "box+5px"
    doubled = pd.concat([frame, extra], ignore_index=True)
    with pytest.raises(ValueError, match=r"method='drug1' has 28 key\(s\) with several rows.*\['prompt'\]"):
        pair_up(doubled, "method", "drug1", "drug2")
    # adding the varying column to `on` is not enough when drug2 has no such prompt ...
    with pytest.raises(ValueError, match="unmatched pairs"):
        pair_up(doubled, "method", "drug1", "drug2", on=("dataset", "subject", "structure", "metric", "prompt"))
    # ... and exact repeats are named as such
    repeated = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="exact repeats"):
        pair_up(repeated, "method", "drug1", "drug2")


def test_pair_up_refuses_unknown_condition_or_column():
    frame = results_frame()
    with pytest.raises(ValueError, match=r"method=\['medsam'\] not found"):
        pair_up(frame, "method", "drug1", "medsam")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['arm'\]"):
        pair_up(frame, "arm", "drug1", "drug2")
    with pytest.raises(ValueError, match="same condition"):
        pair_up(frame, "method", "drug1", "drug1")


# --------------------------------------------------------------------------- compare


def test_compare_per_structure_with_holm():
    table = compare(results_frame(), "method", "drug1", "drug2", metric="dice", n_resamples=2000)
    assert list(table["structure"]) == ["sleep", "depression"]  # order of first appearance
    assert list(table.columns) == [
        "structure", "metric", "a", "b", "test", "tested", "n", "mean_a", "mean_b", "mean_diff", "ci_low",
        "ci_high", "statistic", "p", "p_adj", "effect", "effect_name", "significant", "stars",
    ]
    sleep = table.set_index("structure").loc["sleep"]
    assert sleep["n"] == 10 and sleep["test"] == "paired t"
    assert sleep["statistic"] == pytest.approx(-4.0621, abs=1e-4)
    assert sleep["p"] == pytest.approx(0.002833, abs=5e-7)
    assert sleep["mean_a"] == pytest.approx(np.mean(SLEEP_1))
    assert sleep["mean_b"] == pytest.approx(np.mean(SLEEP_2))
    assert sleep["ci_low"] < -1.58 < sleep["ci_high"] < 0
    depression = table.set_index("structure").loc["depression"]
    p_dep = scipy.stats.ttest_rel(HW_X, HW_Y).pvalue
    # Holm over two p-values: the smaller doubled, the larger max(itself, that)
    p_small, p_large = sorted([sleep["p"], p_dep])
    expected = {sleep["p"]: 2 * p_small, p_dep: max(p_large, 2 * p_small)}
    assert sleep["p_adj"] == pytest.approx(expected[sleep["p"]])
    assert depression["p_adj"] == pytest.approx(expected[p_dep])
    assert sleep["stars"] == p_to_stars(sleep["p_adj"]) == "**"
    assert bool(sleep["significant"]) is True


def test_compare_wilcoxon_without_correction_and_single_group():
    frame = results_frame()
    table = compare(frame, "method", "drug1", "drug2", metric="hd95", test="wilcoxon", correction=None,
                    n_resamples=1000)
    assert len(table) == 1 and table["structure"].iloc[0] == "depression"
    row = table.iloc[0]
    assert row["statistic"] == 5.0 and row["p"] == pytest.approx(0.0390625)
    assert row["p_adj"] == row["p"] and row["stars"] == "*"
    assert row["test"] == "Wilcoxon signed-rank (exact)"
    pooled = compare(frame, "method", "drug1", "drug2", metric="dice", group=None, n_resamples=1000)
    assert list(pooled["group"]) == ["all"] and pooled["n"].iloc[0] == 19


def test_compare_errors_name_the_problem():
    frame = results_frame()
    with pytest.raises(ValueError, match=r"no rows with metric='nsd'; metrics present: \['dice', 'hd95'\]"):
        compare(frame, "method", "drug1", "drug2", metric="nsd")
    small = frame[(frame["structure"] == "sleep") & frame["subject"].isin(["s00"])]
    with pytest.raises(ValueError, match="structure='sleep': a paired test needs at least 2"):
        compare(small, "method", "drug1", "drug2", metric="dice")
    few = compare(frame[frame["subject"].isin(["s00", "s01", "s02"])], "method", "drug1", "drug2", metric="dice",
                  n_resamples=200)
    assert (few["test"] == "not tested (n < 5)").all() and few["p"].isna().all() and few["p_adj"].isna().all()
    assert (few["stars"] == "").all() and not few["significant"].any()
    with pytest.raises(ValueError, match="group column 'backbone'"):
        compare(frame, "method", "drug1", "drug2", metric="dice", group="backbone")
