"""Which paired comparisons a run's results allow, and running them through :mod:`samlab.stats`.

Why separate from the tests themselves: *planning* (oracle vs nnU-Net boxes, expanded vs
tight, En/Decoder vs decoder, k vs k', …) depends only on which conditions exist; the
per-pair test rows, corrections and effect sizes are the one engine in :mod:`samlab.stats`
(:func:`samlab.stats.test_row`), so the notebooks and the report cannot disagree.

Differences are always ``a − b``, where ``a`` is the variant and ``b`` the reference
(nnU-Net boxes vs oracle boxes, +5 px vs none, fine-tuned vs nnU-Net, En/Decoder vs decoder,
PEFT vs vanilla, box-prompted vs automatic, more shots vs fewer).
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..stats import DEFAULT_MIN_N, DEFAULT_ON, adjust_rows, correct_quickly, pair_up, row_stars, test_row
from .conditions import (CONDITION_COLUMNS, LEVELS, MATCH_COLUMNS, LOWER_IS_BETTER, MEAN_ROW, PELVIC_BACKBONES, _DEFAULT_INITS,
                         condition_key, condition_label, conditions, level_of, mean_metric, select)

# =========================================================================== comparisons


@dataclass
class Comparison:
    """One paired comparison: condition ``a`` (the variant) against ``b`` (the reference)."""

    family: str
    a: dict[str, Any]
    b: dict[str, Any]
    label_a: str = ""
    label_b: str = ""

    def __post_init__(self) -> None:
        self.label_a = self.label_a or condition_label(self.a)
        self.label_b = self.label_b or condition_label(self.b)

    @property
    def name(self) -> str:
        return f"{self.label_a} vs {self.label_b}"


def _find(conds: Sequence[Mapping[str, Any]], base: Mapping[str, Any], **changes: Any) -> dict[str, Any] | None:
    target = {**base, **changes}
    for cond in conds:
        if all(cond[c] == target[c] for c in MATCH_COLUMNS):
            return dict(cond)
    return None


def _factor_contrasts(conds: Sequence[dict[str, Any]], prefix: str) -> list[Comparison]:
    """The 18-config paper's contrasts, each holding everything else fixed: scope, PEFT method, initial weights."""
    out: list[Comparison] = []
    for c in conds:
        if c["scope"] == "encoder_decoder" and (p := _find(conds, c, scope="decoder")):
            out.append(Comparison(f"{prefix}: En/Decoder vs decoder only", c, p))
    for c in conds:
        for variant, reference in (("adapter", "vanilla"), ("lora", "vanilla"), ("lora", "adapter")):
            if c["peft"] == variant and (p := _find(conds, c, peft=reference)):
                out.append(Comparison(f"{prefix}: PEFT method", c, p))
    inits = pd.unique(pd.Series([c["init"] for c in conds], dtype=object)).tolist()
    if len(inits) > 1:
        base = next((i for i in _DEFAULT_INITS if i in inits), inits[0])
        for c in conds:
            if c["init"] != base and (p := _find(conds, c, init=base)):
                out.append(Comparison(f"{prefix}: initial weights", c, p))
    return out


def plan_comparisons(frame: pd.DataFrame) -> tuple[list[Comparison], list[str]]:
    """Every comparison the results allow (see the module docstring), and notes on what is absent.

    The plan depends only on which conditions exist, never on their values, except "best
    fine-tuned configuration vs nnU-Net", which by construction picks the highest mean Dice.
    """
    conds = conditions(frame)
    notes: list[str] = []
    plan: list[Comparison] = []
    by_source: dict[str, list[dict[str, Any]]] = {}
    for c in conds:
        by_source.setdefault(c["source"], []).append(c)
    nnunet_refs = [c for c in conds if c["method"] == "nnunet" and int(c["shots"]) < 0]

    # ---- zero-shot (pelvic paper): prompt source, expansion, per-component, points, backbones, vs nnU-Net
    zs = by_source.get("zero_shot", [])
    for c in zs:
        prompt = c["prompt"]
        if (m := re.fullmatch(r"oracle_(.+)", prompt)) and (p := _find(zs, c, prompt=f"nnunet_{m[1]}")):
            plan.append(Comparison("zero-shot: nnU-Net vs oracle boxes (pelvic Fig. 3)", p, c))
        if (m := re.fullmatch(r"(.+)\+(\d+)px", prompt)) and (p := _find(zs, c, prompt=m[1])):
            plan.append(Comparison("zero-shot: expanded vs tight box", c, p))
        if "_component_boxes" in prompt and (p := _find(zs, c, prompt=prompt.replace("_component_boxes", "_box"))):
            plan.append(Comparison("zero-shot: one box per component vs one box", c, p))
        if "_part_boxes" in prompt and (p := _find(zs, c, prompt=prompt.replace("_part_boxes", "_box"))):
            plan.append(Comparison("zero-shot: one box per convex part vs one box", c, p))
        if (m := re.fullmatch(r"(.+)_points", prompt)) and (p := _find(zs, c, prompt=f"{m[1]}_box")):
            plan.append(Comparison("zero-shot: points vs box", c, p))
        if prompt in ("oracle_box", "oracle_box+5px"):
            for ref in nnunet_refs:
                plan.append(Comparison("zero-shot vs nnU-Net (pelvic Fig. 1)", c, ref))
    backbones = list(dict.fromkeys(c["backbone"] for c in zs))
    for first, second in itertools.combinations(backbones, 2):
        for c in zs:
            if c["backbone"] == first and (p := _find(zs, c, backbone=second)):
                plan.append(Comparison("zero-shot: backbone", p, c))
    if not zs:
        notes.append("no zero-shot results: pelvic Table 1 / Figs 1 and 3 and the prompt comparisons are skipped")
    if not nnunet_refs:
        notes.append("no nnU-Net results: every comparison with the nnU-Net benchmark is skipped")

    # ---- fine-tuning: pelvic refinement vs nnU-Net / vs off-the-shelf; 18-config grid contrasts
    ft = by_source.get("finetune", [])
    for c in ft:
        if c["backbone"] in PELVIC_BACKBONES and c["method"] != "nnunet":
            for ref in nnunet_refs:
                plan.append(Comparison("refined vs nnU-Net (pelvic Fig. 4)", c, ref))
            if c["mode"] == "automatic":  # prompt-free: no off-the-shelf model answers without a prompt
                continue
            before = [z for z in zs if z["backbone"] == c["backbone"]]
            match = next((z for z in before if z["prompt"] == c["prompt"]), None) or next(
                (z for z in before if z["prompt"] == "oracle_box"), None)
            if match:
                plan.append(Comparison("refined vs off-the-shelf (pelvic Fig. 5)", c, match))
    tuned = [c for c in ft if c["method"] != "nnunet"]
    plan += _factor_contrasts(tuned, "fine-tuning")
    automatic = [c for c in tuned if c["mode"] == "automatic"]
    for c in tuned:  # the same configuration trained with box prompts vs without (the paper's two modes)
        if c["mode"] == "box" and automatic and (p := _find(automatic, c, prompt=automatic[0]["prompt"])):
            plan.append(Comparison("fine-tuning: box prompts vs automatic", c, p))
    points = [c for c in tuned if c["mode"] == "point"]
    for c in tuned:  # the paper's interactive variants (18-config Fig. 10): one configuration, box vs click prompts
        if c["mode"] == "box" and points and (p := _find(points, c, prompt=points[0]["prompt"])):
            plan.append(Comparison("fine-tuning: box vs point prompts (18-config Fig. 10)", c, p))
    for mode in dict.fromkeys(c["mode"] for c in tuned):  # one best per mode: never box against automatic
        same_mode = [c for c in tuned if c["mode"] == mode]
        best = max(same_mode, key=lambda c: np.nan_to_num(mean_metric(frame, c), nan=-np.inf))
        if nnunet_refs and best["backbone"] not in PELVIC_BACKBONES:
            for ref in nnunet_refs:
                plan.append(Comparison("fine-tuning: best configuration vs nnU-Net (18-config Fig. 4, right)", best, ref))
    if not ft:
        notes.append("no fine-tuning results: pelvic Fig. 4, the grid figure and its contrasts are skipped")
    # ---- phase 2 of the pre-training scenarios (notebook 08): the same configuration from each starting weight
    # (the 18-config paper's Figs 6-8: SupSAM / MedSAM / SSLSAM against the original weights)
    plan += _factor_contrasts([c for c in by_source.get("pretraining", []) if c["method"] != "nnunet"],
                              "pre-training phase 2")

    # ---- few-shot: contrasts within each k, more shots vs fewer, SAM vs nnU-Net at the same k
    fs = by_source.get("fewshot", [])
    fs_tuned = [c for c in fs if c["method"] != "nnunet"]
    plan += _factor_contrasts(fs_tuned, "few-shot")
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for c in fs:
        groups.setdefault(tuple(c[k] for k in CONDITION_COLUMNS if k not in ("shots", "source")), []).append(c)
    for key, members in groups.items():
        members = sorted(members, key=lambda c: int(c["shots"]))
        for smaller, larger in zip(members, members[1:]):
            plan.append(Comparison("few-shot: more training images", larger, smaller))
        full = next((c for c in ft if tuple(c[k] for k in CONDITION_COLUMNS if k not in ("shots", "source")) == key), None)
        if full and members:
            plan.append(Comparison("few-shot: more training images", full, members[-1],
                                   label_a=condition_label(full) + " (full)"))
    for k in sorted({int(c["shots"]) for c in fs}):
        refs = [c for c in fs if c["method"] == "nnunet" and int(c["shots"]) == k]
        at_k = [c for c in fs_tuned if int(c["shots"]) == k]
        if refs and at_k:
            best = max(at_k, key=lambda c: np.nan_to_num(mean_metric(frame, c), nan=-np.inf))
            for ref in refs:
                plan.append(Comparison("few-shot: best configuration vs nnU-Net (18-config Fig. 9)", best, ref))

    # ---- interactive: contrasts per prompt type, fine-tuned vs off-the-shelf, prompt types against each other
    it = by_source.get("interactive", [])
    it_tuned = [c for c in it if c["scope"] or c["peft"]]
    it_plain = [c for c in it if not (c["scope"] or c["peft"]) and c["method"] != "nnunet"]
    plan += _factor_contrasts(it_tuned, "interactive")
    for c in it_tuned:
        p = next((z for z in it_plain if z["backbone"] == c["backbone"] and z["prompt"] == c["prompt"]
                  and z["shots"] == c["shots"]), None)
        if p:
            plan.append(Comparison("interactive: fine-tuned vs off-the-shelf (18-config Fig. 10)", c, p))
    prompt_groups: dict[tuple, list[dict[str, Any]]] = {}
    for c in it:
        prompt_groups.setdefault(tuple(c[k] for k in MATCH_COLUMNS if k != "prompt"), []).append(c)
    for members in prompt_groups.values():
        for first, second in itertools.combinations(sorted(members, key=lambda c: c["prompt"]), 2):
            if _differ_in_one_part(first["prompt"], second["prompt"]):
                plan.append(Comparison("interactive: prompt type", first, second))

    # de-duplicate (a comparison can be reached by two rules)
    seen, unique = set(), []
    for comp in plan:
        key = (condition_key(comp.a), condition_key(comp.b))
        if key not in seen:
            seen.add(key)
            unique.append(comp)
    return unique, notes


def _differ_in_one_part(first: str, second: str) -> bool:
    """Prompts like ``box_noisy|oracle`` name several factors (prompt kind | output selection):
    compare two of them only when exactly one factor differs (box vs point at the same selection,
    or two selections of the same prompt), so each contrast answers one question."""
    a, b = first.split("|"), second.split("|")
    if len(a) != len(b):
        return True
    return sum(x != y for x, y in zip(a, b)) == 1


def paired_comparison(
    frame: pd.DataFrame,
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    metrics: Sequence[str] | None = None,
    *,
    label_a: str = "a",
    label_b: str = "b",
    test: str = "ttest",
    correction: str = "holm",
    alpha: float = 0.05,
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
    unmatched: str = "raise",
    structure_mean: bool = True,
    min_n: int = DEFAULT_MIN_N,
) -> tuple[pd.DataFrame, list[str]]:
    """Paired comparison of two conditions per metric and structure (plus the mean over structures).

    Pairs are matched on ``dataset, subject, slice, structure`` (:func:`samlab.stats.pair_up`);
    ``unmatched="raise"`` refuses any key without a partner or with duplicates (ValueError naming
    an example), ``"intersect"`` tests only the keys both have and says how many it dropped.
    3D rows (``slice == -1``) and 2D rows are tested separately (column ``level``); the unit of a
    per-structure row is the subject in 3D and the slice in 2D (the 18-config paper's per-image
    protocol), column ``unit``. Each row carries both tests, their Holm/BH adjustment over the
    structures of that metric and level, and ``p``/``significant``/``stars`` from the chosen
    ``test`` and ``correction``, and ``test`` naming the test behind ``p``. Rows with fewer
    than ``min_n`` pairs, and 2D rows whose slices come from fewer than ``min_n`` subjects
    (column ``subjects``; :func:`samlab.stats.test_row` says why), are reported (n, difference,
    effect sizes, CI) but not tested: p NaN, no star, not significant. Structures with fewer than 2
    complete pairs (no CI either) are left out (noted). The ``(mean)`` row tests each subject's mean over structures (and slices): one
    hypothesis with the subject as the unit (adjusted = raw).
    """
    if unmatched not in ("raise", "intersect"):
        raise ValueError(f"unmatched must be 'raise' or 'intersect', got {unmatched!r}")
    if test not in ("ttest", "wilcoxon"):
        raise ValueError(f"test must be 'ttest' or 'wilcoxon', got {test!r}")
    if correction not in ("holm", "fdr_bh"):
        raise ValueError(f"correction must be 'holm' or 'fdr_bh', got {correction!r}")
    notes: list[str] = []
    rows_a, rows_b = select(frame, a), select(frame, b)
    for rows, label, cond in ((rows_a, label_a, a), (rows_b, label_b, b)):
        if rows.empty:
            raise ValueError(f"condition {label!r} {dict(cond)} matches no results rows")
    available = [m for m in pd.unique(rows_a["metric"]) if m in set(rows_b["metric"])]
    wanted = list(metrics) if metrics is not None else available
    use = [m for m in wanted if m in available]
    if not use:
        raise ValueError(f"{label_a!r} and {label_b!r} share none of the metrics {wanted} (shared: {available})")
    on = list(DEFAULT_ON)  # includes "metric": one pair_up call matches every metric at once
    levels_a, levels_b = set(level_of(rows_a)), set(level_of(rows_b))
    common_levels = [lv for lv in LEVELS if lv in levels_a and lv in levels_b]
    if not common_levels:
        raise ValueError(f"{label_a!r} has only {sorted(levels_a)} rows and {label_b!r} only {sorted(levels_b)} rows: "
                         "3D volumes and 2D slices cannot be paired")
    if len(common_levels) < len(levels_a | levels_b):  # e.g. fine-tuned (2D + 3D rows) vs nnU-Net (3D only)
        notes.append(f"{label_a} vs {label_b}: compared on {'/'.join(common_levels)} rows only, the level both have")
    combined = pd.concat([rows_a.assign(_cond="a"), rows_b.assign(_cond="b")], ignore_index=True)
    combined = combined[combined["metric"].isin(use).to_numpy() & np.isin(level_of(combined), common_levels)]
    if unmatched == "intersect":
        keys = [set(map(tuple, combined[combined["_cond"] == c][on].itertuples(index=False))) for c in ("a", "b")]
        common = keys[0] & keys[1]
        dropped = len(keys[0] | keys[1]) - len(common)
        if dropped:
            notes.append(f"{label_a} vs {label_b}: {dropped} unmatched key(s) dropped (intersect)")
            combined = combined[[tuple(k) in common for k in combined[on].itertuples(index=False)]]
    all_pairs = pair_up(combined, "_cond", "a", "b", on=on).dropna(subset=["value_a", "value_b"])
    all_pairs["level"] = level_of(all_pairs)
    combined_levels = level_of(combined)
    by_key = dict(list(all_pairs.groupby(["metric", "level", "structure"], sort=False)))
    empty = all_pairs.iloc[:0]
    tables = []
    for metric in use:
        for level in LEVELS:
            part = combined[(combined["metric"] == metric).to_numpy() & (combined_levels == level)]
            if part.empty:
                continue
            unit = "subject" if level == "3d" else "slice"
            rows = []
            for structure in pd.unique(part["structure"]):
                sub = by_key.get((metric, level, structure), empty)
                if len(sub) < 2:
                    notes.append(f"{label_a} vs {label_b} ({metric}, {level}, {structure}): {len(sub)} complete "
                                 "pair(s), not tested")
                    continue
                subjects = sub.groupby(["dataset", "subject"]).ngroups if unit == "slice" else None
                rows.append({"metric": metric, "level": level, "structure": structure, "unit": unit,
                             **test_row(sub["value_a"].to_numpy(), sub["value_b"].to_numpy(), n_resamples,
                                         confidence, seed, test, min_n, subjects)})
            if not rows:
                continue
            table = pd.DataFrame(rows)
            adjust_rows(table)
            pairs = all_pairs[(all_pairs["metric"] == metric) & (all_pairs["level"] == level)
                              & all_pairs["structure"].isin(table["structure"])]
            # one row with the subject as the unit at both levels: its structures (and slices) averaged
            means = pairs.groupby(["dataset", "subject"], sort=False)[["value_a", "value_b"]].mean()
            if structure_mean and (table["structure"].nunique() > 1 or unit == "slice") and len(means) >= 2:
                mean_row = pd.DataFrame([{"metric": metric, "level": level, "structure": MEAN_ROW, "unit": "subject",
                                          **test_row(means["value_a"].to_numpy(), means["value_b"].to_numpy(),
                                                      n_resamples, confidence, seed, test, min_n)}])
                adjust_rows(mean_row)
                table = pd.concat([table, mean_row], ignore_index=True)
            tables.append(table)
    if not tables:
        raise ValueError(f"{label_a!r} vs {label_b!r}: no structure has 2 or more complete pairs")
    out = pd.concat(tables, ignore_index=True)
    out.insert(0, "b", label_b)
    out.insert(0, "a", label_a)
    key = "t" if test == "ttest" else "w"
    out["p_is"] = f"p_{key}_{'holm' if correction == 'holm' else 'bh'}"
    out["p"] = out[out["p_is"].iloc[0]]
    out["significant"] = (out["p"] <= alpha) & out["tested"]
    out["stars"] = [row_stars(p, tested) for p, tested in zip(out["p"], out["tested"])]
    lower = out["metric"].isin(LOWER_IS_BETTER)
    a_better = np.where(lower, out["mean_diff"] < 0, out["mean_diff"] > 0)
    out["better"] = np.where(out["significant"], np.where(a_better, "a", "b"), "")
    return out, notes


def run_comparisons(frame: pd.DataFrame, plan: Sequence[Comparison], *, metrics: Sequence[str] | None = None,
                    test: str = "ttest", correction: str = "holm", alpha: float = 0.05, n_resamples: int = 10000,
                    confidence: float = 0.95, seed: int = 0, unmatched: str = "skip",
                    min_n: int = DEFAULT_MIN_N) -> tuple[pd.DataFrame, list[str]]:
    """Run a comparison plan; refused comparisons are skipped with a note naming the reason.

    Adds family-wise adjusted p-values (``p_family_holm``, ``p_family_bh``, of the chosen test)
    over all structure rows of one family, metric and level (and separately over its ``(mean)`` rows):
    a family is one question ("does box expansion help?") asked of several conditions.
    """
    if unmatched not in ("skip", "intersect"):
        raise ValueError(f"unmatched must be 'skip' or 'intersect', got {unmatched!r}")
    notes: list[str] = []
    tables = []
    for comp in plan:
        try:
            table, extra = paired_comparison(
                frame, comp.a, comp.b, metrics, label_a=comp.label_a, label_b=comp.label_b, test=test,
                correction=correction, alpha=alpha, n_resamples=n_resamples, confidence=confidence, seed=seed,
                unmatched="raise" if unmatched == "skip" else "intersect", min_n=min_n)
        except ValueError as exc:
            notes.append(f"skipped [{comp.family}] {comp.name}: {exc}")
            continue
        notes += extra
        table.insert(0, "comparison", comp.name)
        table.insert(0, "family", comp.family)
        tables.append(table)
    if not tables:
        return pd.DataFrame(), notes
    table = pd.concat(tables, ignore_index=True)
    key = "p_t" if test == "ttest" else "p_w"
    table["p_family_holm"] = np.nan
    table["p_family_bh"] = np.nan
    groups = table.groupby([table["family"], table["metric"], table["level"], table["structure"] == MEAN_ROW],
                           sort=False).groups
    for index in groups.values():
        raw = table.loc[index, key].to_numpy(dtype=float)
        table.loc[index, "p_family_holm"] = correct_quickly(raw, "holm")
        table.loc[index, "p_family_bh"] = correct_quickly(raw, "fdr_bh")
    return table, notes

