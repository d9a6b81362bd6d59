"""The report's figures: pelvic Figs 1, 3, 4, the fine-tuning grid, few-shot, interactive, forest plots.

Why separate from :mod:`samlab.viz`: viz draws a given table; this module decides *which*
rows each paper figure shows (level, backbone, comparison) and builds its title from them.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .comparisons import Comparison
from ..stats import DEFAULT_MIN_N
from .conditions import (GRID_LEVELS, MEAN_ROW, PELVIC_LEVELS, _BACKBONE_NAMES, _BACKBONE_ORDER, LEVEL_NAMES,
                         condition_label, conditions, data_description, data_sources, family_levels, is_phantom, level_of,
                         modes_text, pick_level, prompt_name, recipe_text, select, structure_name)

# =========================================================================== figures


def _long_for(frame: pd.DataFrame, conds: Sequence[tuple[str, Mapping[str, Any]]], metrics: Sequence[str],
              level: str = "3d") -> pd.DataFrame:
    part = frame[frame["metric"].isin(metrics).to_numpy() & (level_of(frame) == level)]
    pieces = [select(part, cond)[["structure", "metric", "value"]].assign(condition=label) for label, cond in conds]
    data = pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame()
    return data.assign(structure=[structure_name(x) for x in data["structure"]]) if len(data) else data


def _stars(comparisons: pd.DataFrame, name: str, level: str = "3d") -> dict[tuple[str, str], str]:
    """Stars per (metric, structure display name): only rows where a test ran carry any (see stats.row_stars)."""
    if comparisons.empty:
        return {}
    rows = comparisons[(comparisons["comparison"] == name) & (comparisons["structure"] != MEAN_ROW)
                       & (comparisons["level"] == level)]
    return {(r.metric, structure_name(r.structure)): r.stars for r in rows.itertuples(index=False) if r.stars}


def _n_text(values: pd.Series, unit: str) -> str:
    """``n = 6 volumes`` or ``n = 4–6 volumes`` from the n column of the rows a figure shows."""
    low, high = int(values.min()), int(values.max())
    return f"n = {low}{f'–{high}' if high != low else ''} {unit}"


def tests_text(rows: pd.DataFrame, min_n: int = DEFAULT_MIN_N, marks: str = "stars") -> str:
    """Which tests gave the ``marks`` (stars, filled markers) of ``rows`` (comparison rows), from their ``test`` column."""
    tested = rows[rows["tested"].astype(bool)] if "tested" in rows else rows
    # untested for its subjects alone: enough pairs, but slices of too few volumes
    clustered = "subjects" in rows and bool(((rows["subjects"] < min_n) & (rows["n"] >= min_n)).any())
    why = f"n < {min_n} pairs" + (f" or slices of < {min_n} subjects" if clustered else "")
    if tested.empty:
        return f"not tested: every comparison has {why}, so no {marks}"
    names = ", ".join(dict.fromkeys(str(t) for t in tested["test"]))
    untested = len(rows) - len(tested)
    text = f"{marks}: {names}, adjusted"
    return text + (f"; {untested} row(s) with {why} not tested" if untested else "")


def _summary_text(rows: pd.DataFrame) -> str:
    """``PelvisPhantom (synthetic phantom), box prompts, n = 6 subjects`` from summary rows."""
    datasets = [d for text in pd.unique(rows["dataset"]) for d in str(text).split(", ")] if "dataset" in rows else []
    data = ", ".join(f"{d} ({'synthetic phantom' if is_phantom(d) else 'real'})" for d in dict.fromkeys(datasets))
    parts = [data, modes_text(rows), recipe_text(rows), _n_text(rows["n"], "subjects") if len(rows) else ""]
    return ", ".join(p for p in parts if p)



def preferred_backbone(backbones: Sequence[str]) -> str | None:
    for b in ("medsam_vit_b", "litemedsam"):
        if b in backbones:
            return b
    return backbones[0] if backbones else None


def paired_figure(frame: pd.DataFrame, comparisons: pd.DataFrame, plan: Mapping[str, Comparison], family: str,
                  title: str, pick: str | None = None, min_n: int = DEFAULT_MIN_N):
    """Box plots + stars for one comparison of ``family``: the plain single box of backbone ``pick`` first.

    The title states what the rows hold (dataset, phantom or real, mode, n) and which test gave
    the stars; rows with fewer than ``min_n`` pairs get no star and no box (points only).
    """
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
    shown = pd.concat([select(frame, comp.a), select(frame, comp.b)])
    shown = shown[level_of(shown) == level]
    return plot_paired_structures(
        data, [comp.label_b, comp.label_a], metrics, stars=_stars(comparisons, name, level), min_n=min_n,
        title=f"{title}\n{name}\n{data_sources(shown)}; "
              f"{modes_text(shown)}\n{LEVEL_NAMES[level]}, {_n_text(rows['n'], 'pairs')} per structure; "
              f"{tests_text(rows, min_n)}")


def figure_sam_vs_nnunet(frame: pd.DataFrame, min_n: int = DEFAULT_MIN_N):
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
    shown = pd.concat([select(frame, c) for _, c in members])
    shown = shown[level_of(shown) == "3d"]
    return plot_paired_structures(data, [m[0] for m in members], ("dice", "hd95"), min_n=min_n,
                                  title="Off-the-shelf SAM family vs nnU-Net (pelvic Fig. 1)\n"
                                        f"{data_description(shown)}; no test drawn (paired tests: comparisons.csv)")


def hide_small_intervals(rows: pd.DataFrame, min_n: int, ci_label: str) -> tuple[pd.DataFrame, str]:
    """Blank the bootstrap interval of every mean summarising fewer than ``min_n`` values.

    Why: a percentile bootstrap over 2-4 values pretends to a precision it does not have, so
    the mean-with-CI charts (grid, few-shot, interactive) draw the mean alone there and say so
    in the title line this returns ('' when every row has enough values).
    """
    small = rows["n"] < min_n
    if not small.any():
        return rows, ""
    rows = rows.copy()
    rows.loc[small, ["ci_low", "ci_high"]] = np.nan
    return rows, f"\n(no {ci_label} drawn where n < {min_n})"


def figure_grid(summary: pd.DataFrame, source: str, title: str, metric: str = "dice", ci_label: str = "95 % CI",
                min_n: int = DEFAULT_MIN_N, mode: str | None = None):
    """Grouped bars of the grid's mean metric; a bar summarising fewer than ``min_n`` subjects gets no
    error bar (a bootstrap interval from 2-4 values pretends to a precision it does not have).

    ``mode`` picks the rows of one training mode (``automatic``, ``box``, ``point``); by default the
    automatic rows when the results hold them (the 18-config study's Figure 4 is prompt-free), else the
    box rows, else the first mode found. The title says which mode it shows, read from the rows."""
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
    if mode is None:
        mode = next((m for m in ("automatic", "box") if (rows["mode"] == m).any()), rows["mode"].iloc[0])
    rows = rows[rows["mode"] == mode]
    if rows.empty:
        return None
    if rows.duplicated(["backbone", "scope", "peft"]).any():  # several inits/prompts: one panel of the first
        first = rows.iloc[0]
        rows = rows[(rows["init"] == first["init"]) & (rows["prompt"] == first["prompt"])]
    refs = summary[(summary["method"] == "nnunet") & (summary["structure"] == MEAN_ROW) & (summary["metric"] == metric)
                   & (summary["shots"] == (rows["shots"].iloc[0] if source == "fewshot" else -1))
                   & (summary["level"] == level)]  # a 3D nnU-Net score is no reference line for 2D bars
    reference = {r.label: r.mean for r in refs.itertuples(index=False)}
    if source == "fewshot":
        title += f", k = {int(rows['shots'].iloc[0])}"
    title = f"{title}, {LEVEL_NAMES[level]}\n{_summary_text(rows)}"
    if not reference and ((summary["method"] == "nnunet") & (summary["level"] != level)).any():
        title += f"\n(nnU-Net has no {level.upper()} rows: no reference line)"
    rows, note = hide_small_intervals(rows, min_n, ci_label)
    title += note
    order = [b for b in _BACKBONE_ORDER if b in set(rows["backbone"])] + \
        [b for b in pd.unique(rows["backbone"]) if b not in _BACKBONE_ORDER]
    return plot_grid_summary_bars(rows, metric=metric, reference=reference, backbone_order=order,
                                  backbone_names=_BACKBONE_NAMES, title=title, ci_label=ci_label)


def figure_fewshot(summary: pd.DataFrame, metric: str = "dice", ci_label: str = "95 % CI",
                   min_n: int = DEFAULT_MIN_N):
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
    sam, note = hide_small_intervals(sam, min_n, ci_label)
    if len(ref):
        ref, ref_note = hide_small_intervals(ref, min_n, ci_label)
        note = note or ref_note
    return plot_shots_curve(sam, metric=metric, reference=ref if len(ref) else None,
                            title=f"Few-shot fine-tuning (18-config Figs 9 and 12), {LEVEL_NAMES[level]}\n"
                                  f"{_summary_text(sam)}{note}", ci_label=ci_label)


def figure_interactive(summary: pd.DataFrame, metric: str = "dice", ci_label: str = "95 % CI",
                       min_n: int = DEFAULT_MIN_N):
    from ..viz import plot_condition_bars

    if summary.empty:
        return None
    it = summary[(summary["source"] == "interactive") & (summary["structure"] == MEAN_ROW) & (summary["metric"] == metric)]
    it, level = pick_level(it, GRID_LEVELS)
    if it.empty:
        return None
    it = it.assign(config=[condition_label({**r, "prompt": ""}) for r in it.to_dict("records")],
                   prompt_shown=[prompt_name(p) for p in it["prompt"]])
    it, note = hide_small_intervals(it, min_n, ci_label)
    return plot_condition_bars(it, metric=metric, x="config", hue="prompt_shown",
                               title=f"Interactive prompting (18-config Fig. 10), {LEVEL_NAMES[level]}\n"
                                     f"{_summary_text(it)}{note}", ci_label=ci_label)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.replace("nnU-Net", "nnunet").lower()).strip("_")[:60]


def short_comparison(name: str) -> str:
    """``"MedSAM + oracle box +5 px vs MedSAM + oracle box"`` -> ``"MedSAM: oracle box +5 px vs oracle box"``:
    the parts both sides share are said once, so a forest plot's labels fit beside it."""
    if " vs " not in name:
        return name
    a, b = (side.split(" + ") for side in name.split(" vs ", 1))
    common = 0
    while common < min(len(a), len(b)) - 1 and a[common] == b[common]:
        common += 1
    if not common:
        return name
    return f"{' + '.join(a[:common])}: {' + '.join(a[common:])} vs {' + '.join(b[common:])}"


def forest_figures(comparisons: pd.DataFrame, metric: str = "dice", few: int = 3,
                   confidence: float = 0.95, min_n: int = DEFAULT_MIN_N, data: str | None = None) -> dict[str, Any]:
    """One forest plot (one panel) per family: per structure when it has ≤ ``few`` comparisons, else
    one line per comparison on the mean over structures (the per-structure rows stay in
    comparisons.csv). Labels are shortened (:func:`short_comparison`), structures named for readers,
    and the title says the data (``data``, e.g. :func:`data_sources` of the compared rows: a phantom
    difference must not read as a real one), n and the test (filled markers: significant; open: not,
    or not tested)."""
    from ..viz import plot_forest

    out = {}
    if comparisons.empty:
        return out
    rows = comparisons[comparisons["metric"] == metric]
    rows = rows.assign(comparison=[short_comparison(c) for c in rows["comparison"]],
                       structure=[structure_name(x) for x in rows["structure"]])
    xlabel = f"mean paired difference in {metric} (a − b), {100 * confidence:g} % bootstrap CI"
    on = f", {data}" if data else ""
    for family, part in rows.groupby("family", sort=False):
        part, level = pick_level(part, family_levels(family))
        name = f"effects_{_slug(family.split('(')[0])}"
        unit = "pairs"
        if part["comparison"].nunique() <= few:
            out[name] = plot_forest(part, xlabel=xlabel, title=f"{family}, {LEVEL_NAMES[level]}{on}\n"
                                    f"{_n_text(part['n'], unit)}; {tests_text(part, min_n, 'filled markers')}")
            continue
        means = part[part["structure"] == structure_name(MEAN_ROW)]
        if means.empty:  # one structure only: its rows are the means
            means = part
        out[name] = plot_forest(means, xlabel=xlabel, y="comparison", hue=None,
                                title=f"{family}, {LEVEL_NAMES[level]}{on}\n(mean per subject over structures; "
                                      f"per structure: comparisons.csv)\n{_n_text(means['n'], 'subjects')}; "
                                      f"{tests_text(means, min_n, 'filled markers')}")
    return out


def report_figures(frame: pd.DataFrame, comparisons: pd.DataFrame, summary: pd.DataFrame,
                   plan: Mapping[str, Comparison], rank_metric: str, params: Any) -> dict[str, Any]:
    """Every figure of the report by output name (None where its results or comparisons are absent).

    Titles name the paper figure; what the rows hold (mode, recipe, dataset, n, test) is
    appended by each builder from the rows it draws, never written here.
    """
    from ..viz import plot_forest

    ci, min_n = f"{100 * params.confidence:g} % CI", params.min_n
    zero_shot_backbones = list(pd.unique(frame[frame["source"] == "zero_shot"]["backbone"]))
    paired = {
        "pelvic_fig3_prompt_source": ("zero-shot: nnU-Net vs oracle boxes (pelvic Fig. 3)",
                                      "MedSAM-family sensitivity to the box source (pelvic Fig. 3)",
                                      preferred_backbone(zero_shot_backbones)),
        "pelvic_fig4_refined_vs_nnunet": ("refined vs nnU-Net (pelvic Fig. 4)", "Refined LiteMedSAM vs nnU-Net (pelvic Fig. 4)", None),
        "zeroshot_box_expansion": ("zero-shot: expanded vs tight box", "Box expanded by a margin vs the tight box", None),
        "zeroshot_component_boxes": ("zero-shot: one box per component vs one box",
                                     "One box per connected component vs one box around everything", None),
        "zeroshot_part_boxes": ("zero-shot: one box per convex part vs one box",
                                "One box per near-convex part of each component vs one box around everything", None),
    }
    figures: dict[str, Any] = {"pelvic_fig1_sam_vs_nnunet": figure_sam_vs_nnunet(frame, min_n)}
    for name, (family, title, pick) in paired.items():
        figures[name] = paired_figure(frame, comparisons, plan, family, title, pick, min_n)
    figures.update({
        "finetune_fig4_grid": figure_grid(summary, "finetune", "Fine-tuning grid (18-config Fig. 4)", rank_metric, ci,
                                          min_n),
        "finetune_fig4_best_vs_nnunet": None,
        "finetune_fig9_fewshot_grid": figure_grid(summary, "fewshot", "Few-shot, smallest k (18-config Fig. 9)",
                                                  rank_metric, ci, min_n),
        "finetune_fig12_fewshot_curve": figure_fewshot(summary, rank_metric, ci, min_n),
        "finetune_fig10_interactive": figure_interactive(summary, rank_metric, ci, min_n),
    })
    grid_modes = set(summary[summary["source"] == "finetune"]["mode"]) if len(summary) else set()
    prompted = [m for m in ("box", "point") if m in grid_modes]
    # finetune_fig4_grid shows the automatic grid when there is one, else the first mode; each other
    # prompt mode gets a figure of its own
    for mode in prompted if "automatic" in grid_modes else prompted[1:]:
        figures[f"finetune_fig4_grid_{mode}"] = figure_grid(
            summary, "finetune", f"Fine-tuning grid, {mode} prompts (18-config Fig. 4 layout)", rank_metric, ci,
            min_n, mode=mode)
    if len(comparisons):
        data = data_sources(frame)
        best = comparisons[comparisons["family"].str.startswith("fine-tuning: best configuration")
                           & (comparisons["metric"] == rank_metric)]
        best, _ = pick_level(best, GRID_LEVELS) if len(best) else (best, "")
        if len(best):
            best = best.assign(structure=[structure_name(x) for x in best["structure"]])
            figures["finetune_fig4_best_vs_nnunet"] = plot_forest(
                best, xlabel=f"{rank_metric}: best fine-tuned SAM − nnU-Net ({ci})",
                title=f"Best fine-tuned configuration vs nnU-Net (18-config Fig. 4, right), {data}\n"
                      f"{_n_text(best['n'], 'pairs')}; {tests_text(best, min_n, 'filled markers')}")
        figures.update(forest_figures(comparisons, rank_metric, confidence=params.confidence, min_n=min_n,
                                      data=data))
    return figures
