"""Tables and tests on interactive results: mean ± sd per prompt and selection rule, the oracle's
gain over the confidence rule, mean paired differences per structure, and box vs point tests.

They read only the tidy results frame (plus the model entries for the tests), so notebook 06 and a
later report compute the same numbers; the paired tests themselves are :func:`samlab.stats.compare`.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from ..stats import compare
from .models import ModelEntry
from .simulate import PROMPT_KINDS, SELECTIONS, prompt_label

__all__ = ["PAIR_ON", "TEST_COLUMNS", "model_labels", "with_prompt_parts", "selection_gap", "summarize",
           "difference_table", "box_vs_point_tests"]

#: One measurement of the interactive evaluation: a paired test matches box and point on these.
PAIR_ON: tuple[str, ...] = ("dataset", "subject", "slice", "structure", "metric", "seed")
#: The columns :func:`box_vs_point_tests` returns, in order.
TEST_COLUMNS: list[str] = ["model", "selection", "n", "mean_a", "mean_b", "mean_diff", "ci_low", "ci_high", "test", "p",
                           "stars"]


def model_labels(frame: pd.DataFrame) -> pd.Series:
    """The model name per row: the backbone, or ``<backbone>-<scope>-<peft>`` for a fine-tuned model
    (the key :func:`~.models.build_model_entries` gives its entry)."""
    tuned = (frame["scope"] != "") & (frame["peft"] != "")
    return frame["backbone"].where(~tuned, frame["backbone"] + "-" + frame["scope"] + "-" + frame["peft"])


def with_prompt_parts(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of one metric with the prompt label split into ``kind`` and ``selection`` columns and
    a ``model`` column (:func:`model_labels`): the long form every table and figure here groups by."""
    frame = results[results["metric"] == metric].copy()
    parts = frame["prompt"].str.split("|", expand=True)
    frame["kind"], frame["selection"] = parts[0], parts[1]
    frame["model"] = model_labels(frame)
    return frame


def selection_gap(results: pd.DataFrame, kind: str, a: str = "oracle", b: str = "confidence",
                  metric: str = "dice") -> pd.DataFrame:
    """Paired per-measurement difference ``a - b`` of two selection rules for one prompt kind."""
    frame = results[results["metric"] == metric]
    keys = ["dataset", "subject", "slice", "structure", "backbone", "scope", "peft", "init", "seed"]
    left = frame[frame["prompt"] == prompt_label(kind, a)].set_index(keys)["value"]
    right = frame[frame["prompt"] == prompt_label(kind, b)].set_index(keys)["value"]
    joined = pd.concat({a: left, b: right}, axis=1).dropna()
    joined["diff"] = joined[a] - joined[b]
    return joined.reset_index()


def summarize(results: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Mean ± sd per model and prompt kind (rows) x selection rule (columns)."""
    frame = with_prompt_parts(results, metric)
    stats = frame.groupby(["model", "kind", "selection"], sort=False)["value"].agg(["mean", "std", "count"])
    cells = stats.apply(lambda r: f"{r['mean']:.3f} ± {r['std']:.3f}" if r["count"] > 1 else f"{r['mean']:.3f}",
                        axis=1)
    table = cells.unstack("selection")
    return table[[s for s in SELECTIONS if s in table.columns]]


def difference_table(results: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Mean paired differences per structure (rows, plus ``all``) for the contrasts of Figures 7/8.

    Columns: ``box - point`` per selection rule, ``oracle - confidence`` per prompt kind, and
    ``<fine-tuned> - <base>`` per fine-tuned model (confidence selection), each on matched
    (subject, slice, structure, draw) measurements of one model.
    """
    frame = with_prompt_parts(results, metric)
    keys = ["subject", "slice", "structure", "seed"]
    columns: dict[str, pd.Series] = {}
    wide = frame.pivot_table(index=["model", *keys], columns=["kind", "selection"], values="value", aggfunc="first")
    for model in pd.unique(frame["model"]):
        sub = wide.loc[model]
        prefix = f"{model}: " if frame["model"].nunique() > 1 else ""
        for rule in SELECTIONS:
            if ("box_noisy", rule) in sub and ("point_deep", rule) in sub:
                columns[f"{prefix}box − point ({rule})"] = sub[("box_noisy", rule)] - sub[("point_deep", rule)]
        for kind in PROMPT_KINDS:
            if (kind, "oracle") in sub and (kind, "confidence") in sub:
                columns[f"{prefix}oracle − confidence ({kind.split('_')[0]})"] = sub[(kind, "oracle")] - sub[(kind, "confidence")]
    base = frame[(frame["scope"] == "") & (frame["peft"] == "")]
    for model in pd.unique(frame.loc[(frame["scope"] != ""), "model"]):
        tuned = frame[frame["model"] == model]
        backbone = tuned["backbone"].iloc[0]
        ref = base[base["backbone"] == backbone]
        for kind in PROMPT_KINDS:
            t = tuned[tuned["prompt"] == prompt_label(kind, "confidence")].set_index(keys)["value"]
            r = ref[ref["prompt"] == prompt_label(kind, "confidence")].set_index(keys)["value"]
            if len(t) and len(r):
                columns[f"{model} − {backbone} ({kind.split('_')[0]})"] = (t - r).dropna()
    if not columns:
        return pd.DataFrame()
    out = {}
    for name, series in columns.items():
        by = series.groupby(level="structure").mean()
        by["all"] = series.mean()
        out[name] = by
    table = pd.DataFrame(out)
    order = [s for s in pd.unique(frame["structure"]) if s in table.index] + ["all"]
    return table.loc[order]


def box_vs_point_tests(
    results: pd.DataFrame,
    entries: Sequence[ModelEntry],
    selections: Sequence[str] = SELECTIONS,
    metric: str = "dice",
    test: str = "wilcoxon",
    n_resamples: int = 2000,
    seed: int = 0,
    verbose: bool = True,
) -> pd.DataFrame:
    """Paired test of noisy boxes against deep points, per model and selection rule.

    Why per model and rule: the paper's claim (boxes beat points) is about one model keeping its
    masks one way; pooling models or rules would mix unlike measurements. Box and point are paired
    on :data:`PAIR_ON` (the same subject, slice, structure and draw seed) and tested over all pairs
    with :func:`samlab.stats.compare` (``group=None``; BCa bootstrap CI of the mean difference
    box - point with ``n_resamples`` and ``seed``). The pairs are slices, so the test runs only when
    they come from at least 5 subjects (:func:`samlab.stats.paired_test`). A model or rule the test cannot be run for
    (e.g. every pair identical) is left out, with the reason printed when ``verbose``. Returns
    :data:`TEST_COLUMNS`, one row per (model, rule) tested; no rows when the results lack either
    prompt kind.
    """
    kinds = {label.partition("|")[0] for label in pd.unique(results["prompt"])}
    rows = []
    if set(PROMPT_KINDS) <= kinds:
        for entry in entries:
            context = entry.context
            mine = results[(results["backbone"] == context["backbone"]) & (results["scope"] == context.get("scope", ""))
                           & (results["peft"] == context.get("peft", ""))]
            for rule in selections:
                try:
                    row = compare(mine, "prompt", prompt_label("box_noisy", rule), prompt_label("point_deep", rule),
                                  metric, test=test, group=None, on=PAIR_ON, n_resamples=n_resamples, seed=seed,
                                  subject_on=["dataset", "subject"])
                except ValueError as exc:  # e.g. every pair identical
                    if verbose:
                        print(f"{entry.label} {rule}: no test ({exc})")
                    continue
                rows.append(row.assign(model=entry.label, selection=rule))
    if not rows:
        return pd.DataFrame(columns=TEST_COLUMNS)
    return pd.concat(rows)[TEST_COLUMNS].reset_index(drop=True)
