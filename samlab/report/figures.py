"""The report's figures: pelvic Figs 1, 3, 4, the fine-tuning grid, few-shot, interactive, forest plots.

Why separate from :mod:`samlab.viz`: viz draws a given table; this module decides *which*
rows each paper figure shows (level, backbone, comparison) and builds its title from them.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import pandas as pd

from .comparisons import Comparison
from .conditions import (GRID_LEVELS, MEAN_ROW, PELVIC_LEVELS, _BACKBONE_NAMES, _BACKBONE_ORDER, LEVEL_NAMES,
                         condition_label, conditions, family_levels, level_of, pick_level, select)

# =========================================================================== figures


def _long_for(frame: pd.DataFrame, conds: Sequence[tuple[str, Mapping[str, Any]]], metrics: Sequence[str],
              level: str = "3d") -> pd.DataFrame:
    part = frame[frame["metric"].isin(metrics).to_numpy() & (level_of(frame) == level)]
    pieces = [select(part, cond)[["structure", "metric", "value"]].assign(condition=label) for label, cond in conds]
    return pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame()


def _stars(comparisons: pd.DataFrame, name: str, level: str = "3d") -> dict[tuple[str, str], str]:
    if comparisons.empty:
        return {}
    rows = comparisons[(comparisons["comparison"] == name) & (comparisons["structure"] != MEAN_ROW)
                       & (comparisons["level"] == level)]
    return {(r.metric, r.structure): r.stars for r in rows.itertuples(index=False)}



def preferred_backbone(backbones: Sequence[str]) -> str | None:
    for b in ("medsam_vit_b", "litemedsam"):
        if b in backbones:
            return b
    return backbones[0] if backbones else None


def paired_figure(frame: pd.DataFrame, comparisons: pd.DataFrame, plan: Mapping[str, Comparison], family: str,
                   title: str, pick: str | None = None):
    """Box plots + stars for one comparison of ``family``: the plain single box of backbone ``pick`` first."""
    from ..viz import plot_paired_structures

    if comparisons.empty:
        return None
    fam, level = pick_level(comparisons[comparisons["family"] == family], PELVIC_LEVELS)
    if fam.empty:
        return None
    pretty = _BACKBONE_NAMES.get(pick or "", pick or "")

    def preference(name: str) -> tuple:
        return (bool(pick) and pretty not in name, "component" in name, "points" in name, "+" in name)

    name = sorted(pd.unique(fam["comparison"]), key=preference)[0]
    comp = plan.get(name)
    if comp is None:
        return None
    metrics = [m for m in ("dice", "hd95") if m in set(fam["metric"])]
    data = _long_for(frame, [(comp.label_b, comp.b), (comp.label_a, comp.a)], metrics, level)
    rows = fam[(fam["comparison"] == name) & (fam["structure"] != MEAN_ROW)]
    n = f"n = {rows['n'].min()}" + (f"–{rows['n'].max()}" if rows["n"].max() != rows["n"].min() else "")
    test = "paired t-test" if str(rows["p_is"].iloc[0]).startswith("p_t") else "Wilcoxon signed-rank"
    return plot_paired_structures(data, [comp.label_b, comp.label_a], metrics, stars=_stars(comparisons, name, level),
                                  title=f"{title}\n{name}\n({LEVEL_NAMES[level]}, {n} pairs per structure; "
                                        f"stars: {test}, adjusted over structures)")


def figure_sam_vs_nnunet(frame: pd.DataFrame):
    from ..viz import plot_paired_structures

    conds = conditions(frame)
    refs = [c for c in conds if c["method"] == "nnunet" and int(c["shots"]) < 0]
    zs = [c for c in conds if c["source"] == "zero_shot" and c["prompt"] in ("oracle_box", "oracle_box+5px")]
    if not refs or not zs:
        return None
    picked = []
    for backbone in dict.fromkeys(c["backbone"] for c in zs):  # the paper: MedSAM oracle, LiteMedSAM oracle expanded
        mine = [c for c in zs if c["backbone"] == backbone]
        prefer = "oracle_box" if backbone == "medsam_vit_b" else "oracle_box+5px"
        picked.append(next((c for c in mine if c["prompt"] == prefer), mine[0]))
    members = [(condition_label(c), c) for c in picked] + [(condition_label(refs[0]), refs[0])]
    data = _long_for(frame, members, ("dice", "hd95"), "3d")
    if data.empty:
        return None
    return plot_paired_structures(data, [m[0] for m in members], ("dice", "hd95"),
                                  title="Off-the-shelf SAM family vs nnU-Net (pelvic Fig. 1)")


def figure_grid(summary: pd.DataFrame, source: str, title: str, metric: str = "dice", ci_label: str = "95 % CI"):
    from ..viz import plot_grid_summary_bars

    if summary.empty:
        return None
    rows = summary[(summary["source"] == source) & (summary["structure"] == MEAN_ROW) & (summary["metric"] == metric)
                   & (summary["method"] != "nnunet") & (summary["scope"] != "")]
    rows, level = pick_level(rows, GRID_LEVELS)
    if source == "fewshot" and len(rows):
        rows = rows[rows["shots"] == rows["shots"].min()]
    if rows.empty:
        return None
    if rows.duplicated(["backbone", "scope", "peft"]).any():  # several inits/prompts: one panel of the first
        first = rows.iloc[0]
        rows = rows[(rows["init"] == first["init"]) & (rows["prompt"] == first["prompt"])]
    refs = summary[(summary["method"] == "nnunet") & (summary["structure"] == MEAN_ROW) & (summary["metric"] == metric)
                   & (summary["shots"] == (rows["shots"].iloc[0] if source == "fewshot" else -1))
                   & (summary["level"] == level)]  # a 3D nnU-Net score is no reference line for 2D bars
    reference = {r.label: r.mean for r in refs.itertuples(index=False)}
    if not reference and ((summary["method"] == "nnunet") & (summary["level"] != level)).any():
        title += f" (nnU-Net has no {level.upper()} rows: no reference line)"
    order = [b for b in _BACKBONE_ORDER if b in set(rows["backbone"])] + \
        [b for b in pd.unique(rows["backbone"]) if b not in _BACKBONE_ORDER]
    return plot_grid_summary_bars(rows, metric=metric, reference=reference, backbone_order=order,
                          backbone_names=_BACKBONE_NAMES, title=f"{title}, {LEVEL_NAMES[level]}", ci_label=ci_label)


def figure_fewshot(summary: pd.DataFrame, metric: str = "dice", ci_label: str = "95 % CI"):
    """Mean metric vs k per few-shot configuration; the same configuration on the full training set
    (notebook 04) and nnU-Net at each k / on the full set (dashed), where the results hold them."""
    from ..viz import plot_shots_curve

    if summary.empty:
        return None

    def rows_of(*sources: str) -> pd.DataFrame:
        rows = summary[summary["source"].isin(sources) & (summary["structure"] == MEAN_ROW)
                       & (summary["metric"] == metric)]
        return rows.assign(label=[condition_label(r, with_shots=False) for r in rows.to_dict("records")])

    fs, level = pick_level(rows_of("fewshot"), GRID_LEVELS)
    sam, ref = fs[fs["method"] != "nnunet"], fs[fs["method"] == "nnunet"]
    if sam.empty:
        return None
    full = rows_of("finetune", "nnunet")
    full = full[(full["shots"] < 0) & (full["level"] == level)]
    sam = pd.concat([sam, full[(full["method"] != "nnunet") & full["label"].isin(set(sam["label"]))]], ignore_index=True)
    ref = pd.concat([ref, full[(full["method"] == "nnunet") & full["label"].isin(set(ref["label"]))]], ignore_index=True)
    return plot_shots_curve(sam, metric=metric, reference=ref if len(ref) else None,
                            title=f"Few-shot fine-tuning (18-config Figs 9 and 12), {LEVEL_NAMES[level]}",
                            ci_label=ci_label)


def figure_interactive(summary: pd.DataFrame, metric: str = "dice", ci_label: str = "95 % CI"):
    from ..viz import plot_condition_bars

    if summary.empty:
        return None
    it = summary[(summary["source"] == "interactive") & (summary["structure"] == MEAN_ROW) & (summary["metric"] == metric)]
    it, level = pick_level(it, GRID_LEVELS)
    if it.empty:
        return None
    it = it.assign(config=[condition_label({**r, "prompt": ""}) for r in it.to_dict("records")])
    return plot_condition_bars(it, metric=metric, x="config", hue="prompt",
                               title=f"Interactive prompting (18-config Fig. 10), {LEVEL_NAMES[level]}",
                               ci_label=ci_label)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.replace("nnU-Net", "nnunet").lower()).strip("_")[:60]


def forest_figures(comparisons: pd.DataFrame, metric: str = "dice", few: int = 3,
                    confidence: float = 0.95) -> dict[str, Any]:
    """One forest plot per family: per structure when it has ≤ ``few`` comparisons, else one line
    per comparison on the mean over structures (the per-structure rows stay in comparisons.csv)."""
    from ..viz import plot_forest

    out = {}
    if comparisons.empty:
        return out
    rows = comparisons[comparisons["metric"] == metric]
    xlabel = f"mean paired difference in {metric} (a − b), {100 * confidence:g} % bootstrap CI"
    for family, part in rows.groupby("family", sort=False):
        part, level = pick_level(part, family_levels(family))
        name = f"effects_{_slug(family.split('(')[0])}"
        if part["comparison"].nunique() <= few:
            out[name] = plot_forest(part, xlabel=xlabel, title=f"{family}, {LEVEL_NAMES[level]}")
            continue
        means = part[part["structure"] == MEAN_ROW]
        if means.empty:  # one structure only: its rows are the means
            means = part
        out[name] = plot_forest(means, xlabel=xlabel, y="comparison", hue=None,
                                title=f"{family}, {LEVEL_NAMES[level]}\n(mean per subject over structures; "
                                      "per structure: comparisons.csv)")
    return out

