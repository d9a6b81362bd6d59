"""Paired statistics for the study's results: tests, effect sizes, corrections, bootstrap CIs.

Every comparison in the study is paired: two methods (or prompts, backbones, …)
scored on the *same* subjects, slices and structures. So the unit of analysis is
the per-pair difference ``a - b``, and everything here works on matched pairs
taken from the long results table (:mod:`samlab.results`):

* :func:`pair_up` matches the rows of two conditions and refuses to guess when
  they do not match one to one (a missing partner or a duplicate would silently
  turn a paired test into a different one);
* :func:`paired_test` runs the two-sided paired t-test (the pelvic zero-shot
  paper's test) or the Wilcoxon signed-rank test, with an effect size — Cohen's
  d_z for the t-test, the matched-pairs rank-biserial correlation for Wilcoxon;
* :func:`correct_pvalues` adjusts a family of p-values (Holm or Benjamini-Hochberg,
  statsmodels);
* :func:`bootstrap_ci` gives a bootstrap (BCa, scipy) interval for the mean
  paired difference, which does not assume normal differences;
* :func:`compare` puts it together: one row per structure with means, the
  difference and its CI, the test, adjusted p and the star notation of the pelvic
  paper's figures (``*`` p ≤ 0.05, ``**`` ≤ 0.01, ``***`` ≤ 0.001, ``****`` ≤ 0.0001,
  ``ns`` otherwise).

The tests themselves are scipy's (``ttest_rel``, ``wilcoxon`` with its default
``zero_method="wilcox"``, which drops zero differences as R's ``wilcox.test``
does, ``binomtest`` for the sign test), corrections are statsmodels'.

**Refusing to overclaim.** A test needs at least ``min_n`` pairs (:data:`DEFAULT_MIN_N`
= 5): below it a row still carries n, the mean difference, the effect size and the
bootstrap CI, but p is NaN, the ``test`` column says ``not tested (n < 5)`` and no star
is printed. When every difference is equal (zero variance: the t statistic is ±inf
and scipy returns p = 0) the exact two-sided sign test answers instead (n = 5 pairs
all in one direction: p = 2/32 = 0.0625); identical pairs give p = 1. Every row
names the test behind its p-value.

Conventions: differences are ``a - b`` throughout, so a positive mean difference,
t, d_z or rank-biserial r means ``a`` scored higher. A p-value is significant when
``p ≤ alpha``, the same inclusive threshold as the stars; a NaN p (not tested) is
never significant and gets no star.
"""
from __future__ import annotations

import contextlib
import gc
import inspect
import math
import warnings
from typing import Any, Iterable, Iterator, Literal, Sequence

import numpy as np
import pandas as pd
import scipy.stats
from statsmodels.stats.multitest import multipletests

__all__ = [
    "DEFAULT_ON",
    "DEFAULT_MIN_N",
    "TEST_NAMES",
    "rank_biserial",
    "not_tested_label",
    "STAR_THRESHOLDS",
    "paired_test",
    "pair_up",
    "correct_pvalues",
    "bootstrap_ci",
    "p_to_stars",
    "compare",
    "quiet",
    "correct_quickly",
    "test_row",
    "row_stars",
    "adjust_rows",
]

#: Columns that identify one measurement apart from the condition being compared.
DEFAULT_ON: tuple[str, ...] = ("dataset", "subject", "slice", "structure", "metric")

#: (threshold, label), most significant first; a p-value gets the first label whose threshold it does not exceed.
STAR_THRESHOLDS: tuple[tuple[float, str], ...] = (
    (1e-4, "****"),
    (1e-3, "***"),
    (1e-2, "**"),
    (5e-2, "*"),
)

_TESTS = ("ttest", "wilcoxon")

#: Fewest pairs a paired test is run on (below it: effect size and CI only, "not tested").
DEFAULT_MIN_N = 5
#: Human name of each test, as tables and figures print it.
TEST_NAMES = {"ttest": "paired t", "wilcoxon": "Wilcoxon signed-rank"}
SIGN_TEST = "sign test (exact)"
_CORRECTIONS = ("holm", "fdr_bh", "bonferroni")
_BOOTSTRAP_TAKES_RNG = "rng" in inspect.signature(scipy.stats.bootstrap).parameters


# --------------------------------------------------------------------------- helpers


def _as_vector(x: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of numbers: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _paired_arrays(a: Any, b: Any, nan_policy: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate two paired samples; drop or refuse pairs with NaN; refuse infinities and n < 2."""
    x, y = _as_vector(a, "a"), _as_vector(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must have the same length (they are paired), got {x.size} and {y.size}")
    if nan_policy not in ("raise", "omit"):
        raise ValueError(f"nan_policy must be 'raise' or 'omit', got {nan_policy!r}")
    nan = np.isnan(x) | np.isnan(y)
    if nan.any():
        if nan_policy == "raise":
            where = np.flatnonzero(nan)[:5].tolist()
            raise ValueError(
                f"{int(nan.sum())} pair(s) contain NaN (positions {where}…); "
                "pass nan_policy='omit' to drop them"
            )
        x, y = x[~nan], y[~nan]
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("a and b must be finite (found inf)")
    if x.size < 2:
        raise ValueError(f"a paired test needs at least 2 complete pairs, got {x.size}")
    return x, y


# --------------------------------------------------------------------------- tests


def _sign_test(d: np.ndarray) -> tuple[float, float]:
    """Exact two-sided sign test of the non-zero differences: (number positive, p); p = 1 when all are 0."""
    nonzero = d[d != 0]
    positive = int((nonzero > 0).sum())
    if nonzero.size == 0:
        return 0.0, 1.0
    return float(positive), float(scipy.stats.binomtest(positive, int(nonzero.size), 0.5).pvalue)


def _wilcoxon_label(d: np.ndarray) -> str:
    """Which null distribution scipy's ``method="auto"`` uses (scipy >= 1.15): exact without ties or
    zeros (n <= 50), an exact permutation over all 2^n sign flips with ties or zeros (n <= 13), else
    the normal approximation."""
    nonzero = np.abs(d[d != 0])
    clean = np.unique(nonzero).size == nonzero.size and nonzero.size == d.size
    if d.size <= 50 and clean:
        return "Wilcoxon signed-rank (exact)"
    if d.size <= 13:
        return "Wilcoxon signed-rank (exact permutation)"
    return "Wilcoxon signed-rank (normal approx.)"


def rank_biserial(d: np.ndarray) -> float:
    """Matched-pairs rank-biserial r = (W+ - W-) / (W+ + W-) over the non-zero differences (Kerby 2014)."""
    nonzero = d[d != 0]
    if nonzero.size == 0:
        return 0.0
    ranks = scipy.stats.rankdata(np.abs(nonzero))
    plus, minus = ranks[nonzero > 0].sum(), ranks[nonzero < 0].sum()
    return float((plus - minus) / (plus + minus))


def paired_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    test: Literal["ttest", "wilcoxon"] = "ttest",
    nan_policy: Literal["raise", "omit"] = "raise",
    min_n: int = DEFAULT_MIN_N,
    subjects: int | None = None,
) -> dict[str, Any]:
    """Two-sided paired test of ``a`` against ``b`` (element i of each is one pair).

    Returns ``test, test_used, tested, n, statistic, df, p, mean_diff, median_diff, effect,
    effect_name``. For the t-test, ``statistic`` is t (df = n - 1) and ``effect`` Cohen's
    d_z = mean(d) / sd(d) with d = a - b (= t / sqrt(n)). For Wilcoxon, ``statistic`` is
    scipy's two-sided W = min(W+, W-) (R reports W+ as V), ``df`` is NaN, and ``effect`` the
    matched-pairs rank-biserial r (:func:`rank_biserial`). ``test_used`` names what gave ``p``:

    * fewer than ``min_n`` pairs: ``"not tested (n < min_n)"``, statistic and p NaN (the
      effect is still reported) -- two or three pairs cannot support a claim either way;
    * pairs that are slices of fewer than ``min_n`` subjects (``subjects``, the number of
      volumes the pairs come from; None when each pair is its own subject): not tested either,
      ``"not tested (slices of k subjects < min_n)"``. Slices of one volume are not independent
      samples: 24 slices of 2 volumes would give a t-test with 23 degrees of freedom and stars
      that only say those two volumes differ;
    * all differences equal (zero variance: t would be ±inf and p 0): the exact two-sided
      **sign test** (``"sign test (exact)"``, statistic = number of positive differences,
      p = 2 · 0.5^n when all n agree; all differences 0 gives p = 1);
    * otherwise ``"paired t"`` or ``"Wilcoxon signed-rank (exact)"`` / ``"(normal approx.)"``.
    """
    if test not in _TESTS:
        raise ValueError(f"unknown test {test!r}; choose from {list(_TESTS)}")
    if int(min_n) < 2:
        raise ValueError(f"min_n must be >= 2 (a paired test needs at least 2 pairs), got {min_n}")
    x, y = _paired_arrays(a, b, nan_policy)
    d = x - y
    n = int(d.size)
    sd = float(d.std(ddof=1))
    out: dict[str, Any] = {
        "test": test,
        "test_used": TEST_NAMES[test],
        "tested": True,
        "n": n,
        "statistic": math.nan,
        "df": float(n - 1) if test == "ttest" else math.nan,
        "p": math.nan,
        "mean_diff": float(d.mean()),
        "median_diff": float(np.median(d)),
        "effect": 0.0,
        "effect_name": "cohen_dz" if test == "ttest" else "rank_biserial",
    }
    if test == "ttest":
        out["effect"] = float(d.mean() / sd) if sd > 0 else (math.copysign(math.inf, d.mean()) if d.any() else 0.0)
    else:
        out["effect"] = rank_biserial(d)
    if n < min_n:
        out.update(test_used=not_tested_label(min_n), tested=False, df=math.nan)
        return out
    if subjects is not None and subjects < min_n:
        out.update(test_used=not_tested_label(min_n, subjects), tested=False, df=math.nan)
        return out
    tolerance = 1e-9 * max(1.0, float(np.abs(d).max()))  # float noise: 0.35 - 0.1 - 0.25 is not 0
    if np.ptp(d) <= tolerance:  # every difference equal (or all zero): exact sign test, never t = ±inf, p = 0
        d = np.where(np.abs(d) <= tolerance, 0.0, d)
        statistic, p = _sign_test(d)
        out.update(test_used=SIGN_TEST, statistic=statistic, p=p, df=math.nan)
        if not d.any():
            out.update(effect=0.0, mean_diff=0.0 if abs(out["mean_diff"]) <= tolerance else out["mean_diff"])
        elif test == "ttest":
            out["effect"] = math.copysign(math.inf, float(d.mean()))
        return out
    if test == "ttest":
        res = scipy.stats.ttest_rel(x, y)
        out.update(statistic=float(res.statistic), df=float(res.df), p=float(res.pvalue))
    else:
        res = scipy.stats.wilcoxon(x, y, alternative="two-sided")
        out.update(statistic=float(res.statistic), p=float(res.pvalue), test_used=_wilcoxon_label(d))
    return out


def not_tested_label(min_n: int, subjects: int | None = None) -> str:
    """The ``test`` entry of a row with too few pairs (or, for slices, too few subjects) to test."""
    if subjects is not None:
        return f"not tested (slices of {int(subjects)} subject{'s' if subjects != 1 else ''} < {int(min_n)})"
    return f"not tested (n < {int(min_n)})"


# --------------------------------------------------------------------------- pairing


def _describe(key: Any, on: Sequence[str]) -> dict[str, Any]:
    key = key if isinstance(key, tuple) else (key,)
    return {col: (val.item() if isinstance(val, np.generic) else val) for col, val in zip(on, key)}


def pair_up(
    frame: pd.DataFrame,
    by: str,
    a: Any,
    b: Any,
    on: Sequence[str] = DEFAULT_ON,
) -> pd.DataFrame:
    """Match the rows where ``frame[by] == a`` with those where ``frame[by] == b`` on ``on``.

    Returns one row per pair: the ``on`` columns, ``value_a``, ``value_b`` and
    ``diff = value_a - value_b``, sorted by ``on``. Refuses (ValueError, with
    examples) when a key occurs twice within one condition — usually a column
    that also varies (prompt, backbone, seed …) and must be filtered or added to
    ``on`` — or when a key of one condition has no partner in the other.
    """
    on = list(on)
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in [by, *on, "value"] if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}; it has {list(frame.columns)}")
    if by in on:
        raise ValueError(f"the condition column {by!r} cannot also be a matching column in on={on}")
    if a == b:
        raise ValueError(f"a and b are the same condition ({a!r}); nothing to compare")
    available = pd.unique(frame[by]).tolist()
    absent = [c for c in (a, b) if c not in available]
    if absent:
        raise ValueError(f"{by}={absent} not found in the frame; {by} values present: {available[:20]}")

    sides = {}
    for label, cond in (("a", a), ("b", b)):
        rows = frame[frame[by] == cond]
        dup = rows.duplicated(on, keep=False)
        if dup.any():
            dups = rows[dup]
            varying = [
                c
                for c in dups.columns
                if c not in (*on, by, "value") and dups.groupby(on, sort=False)[c].nunique().max() > 1
            ]
            first = dups.iloc[0]
            example = {c: (first[c].item() if isinstance(first[c], np.generic) else first[c]) for c in on}
            hint = (
                f"they differ in {varying}: filter the frame or add those columns to `on`"
                if varying
                else "the rows are exact repeats: drop duplicates first"
            )
            raise ValueError(
                f"{by}={cond!r} has {int(dups.drop_duplicates(on).shape[0])} key(s) with several rows "
                f"over on={on}, e.g. {example}; {hint}"
            )
        sides[label] = rows.set_index(on)["value"]

    joined = pd.concat({"value_a": sides["a"], "value_b": sides["b"]}, axis=1, join="outer")
    only_a = sides["a"].index.difference(sides["b"].index)
    only_b = sides["b"].index.difference(sides["a"].index)
    if len(only_a) or len(only_b):
        parts = []
        if len(only_a):
            parts.append(f"{len(only_a)} with {by}={a!r} but no {b!r}, e.g. {_describe(only_a[0], on)}")
        if len(only_b):
            parts.append(f"{len(only_b)} with {by}={b!r} but no {a!r}, e.g. {_describe(only_b[0], on)}")
        raise ValueError(f"unmatched pairs over on={on}: " + "; ".join(parts))

    paired = joined.sort_index().reset_index()
    paired["diff"] = paired["value_a"] - paired["value_b"]
    return paired[[*on, "value_a", "value_b", "diff"]]


# --------------------------------------------------------------------------- corrections / CIs


def correct_pvalues(
    p: Iterable[float] | np.ndarray,
    method: Literal["holm", "fdr_bh", "bonferroni"] = "holm",
) -> np.ndarray:
    """Adjust a family of p-values (statsmodels ``multipletests``); NaN entries stay NaN and are not counted."""
    if method not in _CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; choose from {list(_CORRECTIONS)}")
    pv = _as_vector(list(p) if not isinstance(p, np.ndarray) else p, "p")
    finite = ~np.isnan(pv)
    if ((pv[finite] < 0) | (pv[finite] > 1)).any():
        bad = pv[finite][(pv[finite] < 0) | (pv[finite] > 1)]
        raise ValueError(f"p-values must lie in [0, 1], got {bad[:5].tolist()}")
    out = np.full(pv.shape, np.nan)
    if finite.any():
        out[finite] = multipletests(pv[finite], method=method)[1]
    return out


def bootstrap_ci(
    diffs: Sequence[float] | np.ndarray,
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """BCa bootstrap confidence interval of the mean paired difference (scipy.stats.bootstrap).

    Reproducible for a given ``seed``. If every difference is the same value the
    bootstrap distribution is that single value, and so is the interval.
    """
    d = _as_vector(diffs, "diffs")
    if not np.isfinite(d).all():
        raise ValueError("diffs must be finite (drop NaN pairs first)")
    if d.size < 2:
        raise ValueError(f"bootstrap_ci needs at least 2 differences, got {d.size}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if np.all(d == d[0]):
        return float(d[0]), float(d[0])
    kwargs: dict[str, Any] = {"n_resamples": int(n_resamples), "confidence_level": confidence, "method": "BCa"}
    if _BOOTSTRAP_TAKES_RNG:
        kwargs["rng"] = np.random.default_rng(seed)
    else:  # scipy < 1.15
        kwargs["random_state"] = np.random.default_rng(seed)
    res = scipy.stats.bootstrap((d,), np.mean, vectorized=True, **kwargs)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def p_to_stars(p: float) -> str:
    """Star notation of the pelvic paper's figures: ``****``/``***``/``**``/``*`` at ≤ 1e-4/1e-3/0.01/0.05, else ``ns``."""
    if p is None or not math.isfinite(p):
        return "ns"
    for threshold, label in STAR_THRESHOLDS:
        if p <= threshold:
            return label
    return "ns"


# --------------------------------------------------------------------------- the table


def compare(
    frame: pd.DataFrame,
    by: str,
    a: Any,
    b: Any,
    metric: str,
    test: Literal["ttest", "wilcoxon"] = "ttest",
    correction: Literal["holm", "fdr_bh", "bonferroni"] | None = "holm",
    group: str | None = "structure",
    on: Sequence[str] = DEFAULT_ON,
    alpha: float = 0.05,
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
    nan_policy: Literal["raise", "omit"] = "raise",
    min_n: int = DEFAULT_MIN_N,
    subject_on: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Compare condition ``a`` with ``b`` (values of column ``by``) on one metric, per ``group``.

    One row per group (e.g. structure), in order of first appearance, with
    ``n, mean_a, mean_b, mean_diff, ci_low, ci_high, statistic, p, p_adj, effect,
    effect_name, significant, stars`` (differences are a - b). The correction runs
    over the groups of this call; to correct over several calls (several metrics
    or comparisons), concatenate the tables and apply :func:`correct_pvalues` to
    their ``p`` column. ``group=None`` gives a single row over all pairs. ``test`` names the
    test behind each row's p (see :func:`paired_test`); groups with fewer than ``min_n`` pairs
    are reported untested (p NaN, no star, not significant). ``subject_on`` (e.g. ``["dataset",
    "subject"]``) names the columns of one subject when the pairs are slices: a group whose pairs
    come from fewer than ``min_n`` subjects is not tested either (:func:`paired_test`).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if test not in _TESTS:
        raise ValueError(f"unknown test {test!r}; choose from {list(_TESTS)}")
    if correction is not None and correction not in _CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; choose from {list(_CORRECTIONS)} or None")
    if "metric" not in frame.columns:
        raise ValueError(f"frame lacks the 'metric' column; it has {list(frame.columns)}")
    if group is not None and group not in on:
        raise ValueError(f"group column {group!r} must be one of the matching columns on={list(on)}")
    subset = frame[frame["metric"] == metric]
    if subset.empty:
        raise ValueError(f"no rows with metric={metric!r}; metrics present: {sorted(pd.unique(frame['metric']))}")
    pairs = pair_up(subset, by, a, b, on)

    if group is None:
        groups = [("all", pairs)]
    else:  # in order of first appearance in the input, not pair_up's sorted order
        by_group = dict(list(pairs.groupby(group, sort=False)))
        groups = [(g, by_group[g]) for g in pd.unique(subset[group]) if g in by_group]
    rows = []
    for name, part in groups:
        try:
            used = part.dropna(subset=["value_a", "value_b"])
            subjects = used.groupby(list(subject_on)).ngroups if subject_on else None
            res = paired_test(part["value_a"], part["value_b"], test=test, nan_policy=nan_policy, min_n=min_n,
                              subjects=subjects)
            ci = bootstrap_ci(used["diff"], n_resamples=n_resamples, confidence=confidence, seed=seed)
        except ValueError as exc:
            raise ValueError(f"{group or 'all'}={name!r}: {exc}") from None
        rows.append(
            {
                group or "group": name,
                "metric": metric,
                "a": a,
                "b": b,
                "test": res["test_used"],
                "tested": res["tested"],
                "n": res["n"],
                "mean_a": float(used["value_a"].mean()),
                "mean_b": float(used["value_b"].mean()),
                "mean_diff": res["mean_diff"],
                "ci_low": ci[0],
                "ci_high": ci[1],
                "statistic": res["statistic"],
                "p": res["p"],
                "effect": res["effect"],
                "effect_name": res["effect_name"],
            }
        )
    table = pd.DataFrame(rows)
    table["p_adj"] = correct_pvalues(table["p"].to_numpy(), correction) if correction else table["p"]
    table["significant"] = table["p_adj"] <= alpha
    table["stars"] = [row_stars(p, tested) for p, tested in zip(table["p_adj"], table["tested"])]
    columns = [group or "group", "metric", "a", "b", "test", "tested", "n", "mean_a", "mean_b", "mean_diff",
               "ci_low", "ci_high", "statistic", "p", "p_adj", "effect", "effect_name", "significant", "stars"]
    return table[columns]


# --------------------------------------------------------------------------- rows of the report


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence scipy's small-sample warnings (n is reported in every row; the reader judges it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            yield


def test_row(a: np.ndarray, b: np.ndarray, n_resamples: int, confidence: float, seed: int,
             test: str = "ttest", min_n: int = DEFAULT_MIN_N, subjects: int | None = None) -> dict[str, Any]:
    """One row of a comparisons table: means, difference, bootstrap CI, t-test and Wilcoxon (the report's engine).

    ``test`` (the test behind the row's stars) only chooses what the ``test`` column names;
    both tests are always in the row. Below ``min_n`` pairs both p-values are NaN.

    ``subjects``: for pairs that are slices, how many subjects they come from (see
    :func:`paired_test`); the row's ``subjects`` column records it (= n when not given).
    """
    with quiet():
        t = paired_test(a, b, "ttest", min_n=min_n, subjects=subjects)
        w = paired_test(a, b, "wilcoxon", min_n=min_n, subjects=subjects)
        low, high = bootstrap_ci(a - b, n_resamples=n_resamples, confidence=confidence, seed=seed)
    chosen = t if test == "ttest" else w
    return {
        "n": t["n"], "subjects": t["n"] if subjects is None else int(subjects),
        "test": chosen["test_used"], "tested": chosen["tested"], "mean_a": float(np.mean(a)),
        "mean_b": float(np.mean(b)), "mean_diff": t["mean_diff"], "ci_low": low, "ci_high": high,
        "t": t["statistic"], "df": t["df"], "p_t": t["p"], "cohen_dz": t["effect"],
        "W": w["statistic"], "p_w": w["p"], "rank_biserial": w["effect"],
    }


def row_stars(p: float, tested: bool) -> str:
    """Stars of a row: ``""`` when no test ran (never ``ns`` either: nothing was asked), else :func:`p_to_stars`."""
    return p_to_stars(p) if tested and p is not None and math.isfinite(p) else ""


def adjust_rows(table: pd.DataFrame) -> None:
    """Holm and BH columns for both tests, over the rows of ``table`` (in place); one p-value stays as it is."""
    for test in ("t", "w"):
        p = table[f"p_{test}"].to_numpy(dtype=float)
        single = len(p) == 1
        table[f"p_{test}_holm"] = p if single else correct_quickly(p, "holm")
        table[f"p_{test}_bh"] = p if single else correct_quickly(p, "fdr_bh")


def correct_quickly(p: np.ndarray, method: str) -> np.ndarray:
    """:func:`correct_pvalues` with the garbage collector frozen (see :func:`frozen_gc`)."""
    with frozen_gc():
        return correct_pvalues(p, method)


@contextlib.contextmanager
def frozen_gc() -> Iterator[None]:
    """Make statsmodels' Holm correction cheap: it calls ``gc.collect()`` on every call (statsmodels
    0.15), which costs ~0.2 s each with pandas/scipy/matplotlib loaded — minutes over a study's
    comparisons. Freezing the objects that already exist (``gc.freeze``, O(1)) leaves that collection
    nothing to scan; ``gc.unfreeze`` hands them back to the collector, so nothing is leaked.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


