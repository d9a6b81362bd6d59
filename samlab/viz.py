"""Figures: label overlays, per-structure plots, consistent style, PNG + PDF output.

One palette for the whole study (seaborn's colour-blind-safe ``colorblind``),
so a structure has the same colour in every figure of every notebook.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

if os.environ.get("MPLBACKEND") is None and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

PALETTE = "colorblind"


#: Smallest font of any figure text (legends, ticks): 8 pt reads in a printed thesis at full width.
MIN_FONT = 8


def set_style() -> None:
    """Seaborn's whitegrid with the colour-blind-safe palette and no text below :data:`MIN_FONT` pt."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    plt.rcParams.update({"legend.fontsize": MIN_FONT + 1, "legend.title_fontsize": MIN_FONT + 1,
                         "xtick.labelsize": MIN_FONT + 1, "ytick.labelsize": MIN_FONT + 1, "image.cmap": "cividis"})


def structure_colors(names: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    colors = sns.color_palette(PALETTE, n_colors=max(len(names), 1))
    return {name: colors[i % len(colors)] for i, name in enumerate(names)}


def save_figure(fig: plt.Figure, path: str | os.PathLike, formats: Sequence[str] = ("png", "pdf"), dpi: int = 120) -> list[Path]:
    """Save one figure in several formats (same stem), each written atomically; returns the written paths.

    Why atomic (:func:`samlab.io.atomic_path`): reruns overwrite the previous figures; an
    interrupted run must leave either the old or the new file, never a truncated PDF that a
    paper build would pick up.
    """
    from .io import atomic_path

    path = Path(path)
    written = []
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        written.append(target)
    return written


def overlay(ax: plt.Axes, image: np.ndarray, masks: Mapping[str, np.ndarray], colors: Mapping[str, tuple],
            alpha: float = 0.45, contour_only: Sequence[str] = ()) -> None:
    """Grey image with coloured filled masks (or contours for names in ``contour_only``)."""
    ax.imshow(image, cmap="gray", interpolation="nearest")
    # Largest first, so nested structures (transition zone in prostate) stay visible on top.
    for name, mask in sorted(masks.items(), key=lambda item: -int(np.count_nonzero(item[1]))):
        if not np.any(mask):
            continue
        color = colors[name]
        if name in contour_only:
            ax.contour(mask.astype(float), levels=[0.5], colors=[color], linewidths=1.5)
        else:
            rgba = np.zeros(mask.shape + (4,))
            rgba[mask.astype(bool)] = (*color, alpha)
            ax.imshow(rgba, interpolation="nearest")
    ax.set_axis_off()


def plot_case_grid(cases: Sequence, structures: Mapping[str, Sequence[int]], n_slices: int = 4,
                   title: str = "") -> plt.Figure:
    """Rows = cases, columns = evenly spaced labelled slices, every structure overlaid."""
    names = list(structures)
    colors = structure_colors(names)
    fig, axes = plt.subplots(len(cases), n_slices, figsize=(3 * n_slices, 3 * len(cases)), squeeze=False)
    for row, case in zip(axes, cases):
        labelled = np.flatnonzero(case.labels.reshape(case.labels.shape[0], -1).any(axis=1))
        picks = labelled[np.linspace(0, len(labelled) - 1, n_slices).round().astype(int)] if len(labelled) else []
        for ax, z in zip(row, picks):
            masks = {n: np.isin(case.labels[z], v) for n, v in structures.items()}
            overlay(ax, case.image[z], masks, colors)
            ax.set_title(f"{case.case_id} z={z}", fontsize=9)
    handles = [matplotlib.patches.Patch(color=colors[n], label=n) for n in names]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(names), 4), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    return fig


def plot_prediction_panels(panels: Sequence[dict], ncols: int = 4) -> plt.Figure:
    """Panels of ``{"image", "gt", "pred", "title"}``: ground truth filled, prediction as a contour."""
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.2 * nrows), squeeze=False)
    colors = {"ground truth": sns.color_palette(PALETTE)[0], "prediction": sns.color_palette(PALETTE)[1]}  # blue / orange
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, panel in zip(axes.flat, panels):
        overlay(ax, panel["image"], {"ground truth": panel["gt"], "prediction": panel["pred"]}, colors,
                contour_only=("prediction",))
        ax.set_title(panel["title"], fontsize=8)
    handles = [matplotlib.patches.Patch(color=c, label=n) for n, c in colors.items()]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_dice_vs_shape(frame: pd.DataFrame) -> plt.Figure:
    """Dice against components per slice and solidity, one point per (case, structure, prompt)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, x, label in zip(axes, ("components_per_slice", "solidity"),
                            ("connected components per slice", "solidity (area / convex hull)")):
        sns.scatterplot(data=frame, x=x, y="value", hue="structure", style="prompt", ax=ax, s=50)
        ax.set_xlabel(label)
        ax.set_ylabel("Dice (3D)")
        ax.set_ylim(-0.02, 1.02)
        if ax is axes[0]:
            if ax.get_legend() is not None:
                ax.get_legend().remove()
        elif not frame.empty:
            ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=MIN_FONT)
    fig.tight_layout()
    return fig


def plot_error_breakdown(pooled: pd.DataFrame, ncols: int = 4) -> plt.Figure:
    """Stacked bars: where each structure's predicted voxels fall, one bar per prompt (see ``error_breakdown``).

    One panel per structure on a grid of ``ncols`` columns (the pelvic set's 8 structures: 2 x 4),
    colours from the colour-blind-safe palette (blue = on target, never a red/green pair).
    """
    regions = ["target", "concavity", "between_components", "elsewhere"]
    palette = sns.color_palette(PALETTE)
    colors = dict(zip(regions, (palette[0], palette[1], palette[4], (0.6, 0.6, 0.6))))
    structures = list(dict.fromkeys(pooled["structure"]))
    ncols = max(1, min(ncols, len(structures)))
    nrows = max(1, -(-len(structures) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols + 1, 3.6 * nrows + 0.6), sharey=True, squeeze=False)
    for ax in axes.flat[len(structures):]:
        ax.set_axis_off()
    for ax, name in zip(axes.flat, structures):
        part = pooled[pooled["structure"] == name]
        bottom = np.zeros(len(part))
        for region in regions:
            values = part[region].fillna(0.0).to_numpy()
            ax.bar(range(len(part)), values, bottom=bottom, color=colors[region], label=region.replace("_", " "))
            bottom += values
        ax.set_xticks(range(len(part)), [str(p).replace("_", " ") for p in part["prompt"]], rotation=60, ha="right",
                      fontsize=MIN_FONT)
        ax.set_title(name.replace("_", " "), fontsize=MIN_FONT + 2)
        ax.set_ylim(0, 1)
    for row in axes:
        row[0].set_ylabel("share of predicted voxels")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=4, fontsize=MIN_FONT + 1, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (3.6 * nrows + 0.6)))
    return fig


def plot_structure_bars(frame: pd.DataFrame, metric: str = "dice", hue: str = "prompt") -> plt.Figure:
    """Mean ± sd of one metric per structure, bars grouped by ``hue``."""
    data = frame[frame["metric"] == metric]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * data["structure"].nunique()), 4))
    sns.barplot(data=data, x="structure", y="value", hue=hue, errorbar="sd", ax=ax)
    ax.set_ylabel(metric.upper() if metric != "dice" else "Dice")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=MIN_FONT, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


#: The in-plane transforms in the order the orientation figure shows them (:mod:`samlab.data.orientation`).
_INPLANE_ORDER = ("identity", "rot90", "rot180", "rot270", "flipud", "fliplr", "transpose", "antitranspose")


def plot_orientation_spread(rows: pd.DataFrame, metric: str = "dice") -> plt.Figure:
    """Per-slice Dice of the same slices under the eight in-plane transforms (notebook 02's last section).

    ``rows`` are the tidy rows of :func:`samlab.orientation_sensitivity.run_orientation_sensitivity`:
    the transform is read from the ``orientation`` column (``as_stored+rot90``; the identity has no
    suffix), the model, dataset and number of slices from the rows themselves. One thin line per
    slice and structure (coloured by structure), the mean per transform in black.
    """
    data = rows[rows["metric"] == metric].copy()
    data["transform"] = [o.split("+", 1)[1] if "+" in o else "identity" for o in data["orientation"]]
    order = [t for t in _INPLANE_ORDER if t in set(data["transform"])]
    x = {t: i for i, t in enumerate(order)}
    names = list(dict.fromkeys(data["structure"]))
    colors = structure_colors(names)
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    for (subject, z, name), part in data.groupby(["subject", "slice", "structure"], sort=False):
        part = part.sort_values("transform", key=lambda s: s.map(x))
        ax.plot(part["transform"].map(x), part["value"], color=colors[name], alpha=0.55, lw=1, marker="o", ms=3)
    means = data.groupby("transform")["value"].mean().reindex(order)
    ax.plot(range(len(order)), means.to_numpy(), color="black", lw=2.2, marker="D", ms=6, label="mean")
    ax.set_xticks(range(len(order)), order, rotation=30)
    ax.set_ylabel("Dice (2D)" if metric == "dice" else metric)
    ax.set_ylim(-0.02, 1.02)
    n_slices = data[["subject", "slice"]].drop_duplicates().shape[0]
    n_lines = data[["subject", "slice", "structure"]].drop_duplicates().shape[0]
    models = ", ".join(map(str, pd.unique(data["backbone"])))
    datasets = ", ".join(map(str, pd.unique(data["dataset"])))
    base = ", ".join(sorted({o.split("+", 1)[0] for o in data["orientation"]}))
    wide = data.pivot_table(index=["subject", "slice", "structure"], columns="transform", values="value")
    spread = float((wide.max(axis=1) - wide.min(axis=1)).max()) if len(wide) else float("nan")
    ax.set_title(f"{models}, oracle box: the same {n_slices} slice(s) of {datasets} ({base}) turned in plane\n"
                 f"n = {n_lines} slice x structure; largest per-slice spread of {metric} {spread:.3f}",
                 fontsize=MIN_FONT + 2)
    handles = [matplotlib.lines.Line2D([], [], color=colors[n], lw=1, label=str(n).replace("_", " ")) for n in names]
    handles.append(matplotlib.lines.Line2D([], [], color="black", lw=2.2, marker="D", label="mean"))
    ax.legend(handles=handles, fontsize=MIN_FONT, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- study figures (notebook 07)
# Added for samlab.report: every function below draws from *precomputed* tables (means, CIs,
# comparison rows), so a figure always shows exactly the numbers of the table written beside it.

#: Colour of the fine-tuning scope, as in the 18-configuration paper's Figure 4 (decoder warm, En/Decoder
#: blue), taken from the colour-blind-safe palette; the PEFT method is told apart by hatching.
SCOPE_COLOR_INDEX = {"decoder": 1, "encoder_decoder": 0}
METHOD_HATCH = {"vanilla": "", "adapter": "//", "lora": ".."}


def save_figure_atomic(fig: plt.Figure, path: str | os.PathLike, formats: Sequence[str] = ("png", "pdf"),
                       dpi: int = 150) -> list[Path]:
    """:func:`save_figure` at the report's resolution (150 dpi); kept for callers of the old name."""
    return save_figure(fig, path, formats, dpi)


def condition_colors(labels: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """One colour-blind-safe colour per condition label, in the order given."""
    return structure_colors(list(labels))


def _star_positions(data: pd.DataFrame, order: Sequence[str]) -> dict[str, float]:
    top = data.groupby("structure")["value"].max()
    span = float(np.nanmax(data["value"]) - np.nanmin(data["value"])) if len(data) else 1.0
    return {s: float(top.get(s, np.nan)) + 0.04 * (span or 1.0) for s in order}


def plot_paired_structures(data: pd.DataFrame, conditions: Sequence[str], metrics: Sequence[str] = ("dice", "hd95"),
                           stars: Mapping[tuple[str, str], str] | None = None, title: str = "",
                           min_n: int = 5) -> plt.Figure:
    """Box plots per structure, one box per condition, one panel per metric (pelvic paper Figs 1, 3, 4).

    ``data`` has columns ``structure, metric, condition, value`` (one row per subject and
    structure). ``stars[(metric, structure)]`` (``*``…``****`` or ``ns``) is printed above each
    structure, as in the paper's figures; pass it only for two-condition comparisons and only
    for rows where a test ran. A panel where any box would summarise fewer than ``min_n``
    values shows the points only (a box of 2 points pretends to a distribution it does not have).
    """
    metrics = [m for m in metrics if m in set(data["metric"])]
    order = list(pd.unique(data["structure"]))
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(6.0, 1.1 * len(order) + 2), 3.4 * len(metrics)),
                             squeeze=False)
    palette = condition_colors(conditions)
    for ax, metric in zip(axes[:, 0], metrics):
        part = data[data["metric"] == metric]
        counts = part.dropna(subset=["value"]).groupby(["structure", "condition"]).size()
        boxes = len(counts) > 0 and int(counts.min()) >= min_n
        with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib's deprecated `vert` to boxplot
            warnings.simplefilter("ignore", matplotlib.MatplotlibDeprecationWarning)
            if boxes:
                sns.boxplot(data=part, x="structure", y="value", hue="condition", order=order,
                            hue_order=list(conditions), palette=palette, ax=ax, fliersize=0, linewidth=0.8,
                            boxprops={"alpha": 0.6})
        # every subject as a point too: with the few subjects of a quick run a box alone hides them
        sns.stripplot(data=part, x="structure", y="value", hue="condition", order=order, hue_order=list(conditions),
                      palette=palette, ax=ax, dodge=True, size=3 if boxes else 5, linewidth=0.5, edgecolor="0.2",
                      legend=False)
        if not boxes:
            # above the panel, not inside it: inside, the note overlapped the points of the last structure
            ax.set_title(f"points only: n < {min_n} per box", loc="right", fontsize=MIN_FONT, color="0.3")
        ax.set_xlabel("")
        ax.set_ylabel(_metric_label(metric))
        ax.tick_params(axis="x", rotation=30)
        if stars:
            ypos = _star_positions(part, order)
            for i, structure in enumerate(order):
                text = stars.get((metric, structure))
                if text and np.isfinite(ypos[structure]):
                    ax.text(i, ypos[structure], text, ha="center", va="bottom", fontsize=MIN_FONT + 1)
            ax.margins(y=0.12)
        legend = ax.get_legend()
        if legend is not None:
            legend.remove()
    handles = [matplotlib.patches.Patch(color=palette[c], label=c) for c in conditions]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(conditions), 3), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.025 * ((len(conditions) - 1) // 3), 1, 0.97 if title else 1))
    return fig


def _metric_label(metric: str) -> str:
    return {"dice": "Dice", "hd95": "HD95 (mm)", "nsd": "NSD", "iou": "IoU"}.get(metric, metric)


def plot_grid_summary_bars(summary: pd.DataFrame, metric: str = "dice", reference: Mapping[str, float] | None = None,
                   backbone_order: Sequence[str] | None = None, backbone_names: Mapping[str, str] | None = None,
                   title: str = "", ci_label: str = "95 % CI") -> plt.Figure:
    """The fine-tuning grid as grouped bars (18-configuration paper, Figure 4, middle).

    ``summary`` has one row per configuration with ``backbone, scope, peft, mean, ci_low,
    ci_high``. Groups = backbones; within a group, decoder-only bars then En/Decoder bars
    (colour = scope), vanilla / Adapter / LoRA told apart by hatching. ``reference`` draws
    dashed horizontal lines (e.g. ``{"nnU-Net": 0.91}``).
    """
    backbones = list(backbone_order or pd.unique(summary["backbone"]))
    backbones = [b for b in backbones if b in set(summary["backbone"])]
    slots = [(s, m) for s in ("decoder", "encoder_decoder") for m in ("vanilla", "adapter", "lora")]
    extra = [(s, m) for s, m in summary[["scope", "peft"]].drop_duplicates().itertuples(index=False)
             if (s, m) not in slots]
    slots += extra
    present = set(map(tuple, summary[["scope", "peft"]].itertuples(index=False)))
    slots = [slot for slot in slots if slot in present]  # no gaps for configurations this run lacks
    width = 0.8 / max(len(slots), 1)
    palette = sns.color_palette(PALETTE)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(backbones) + 2), 4.2))
    for j, (scope, peft) in enumerate(slots):
        rows = summary[(summary["scope"] == scope) & (summary["peft"] == peft)].set_index("backbone")
        xs, ys, lo, hi = [], [], [], []
        for i, backbone in enumerate(backbones):
            if backbone in rows.index:
                row = rows.loc[backbone]
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(row["mean"])
                lo.append(row["mean"] - row["ci_low"] if np.isfinite(row["ci_low"]) else 0.0)
                hi.append(row["ci_high"] - row["mean"] if np.isfinite(row["ci_high"]) else 0.0)
        if not xs:
            continue
        color = palette[SCOPE_COLOR_INDEX.get(scope, 2 + j % 6)]
        ax.bar(xs, ys, width=width * 0.95, color=color, hatch=METHOD_HATCH.get(peft, "xx"), edgecolor="white",
               linewidth=0.5, yerr=[lo, hi], capsize=2, error_kw={"elinewidth": 0.8},
               label=f"{'En/Decoder' if scope == 'encoder_decoder' else scope.capitalize()} + "
                     f"{ {'lora': 'LoRA'}.get(peft, peft.capitalize())}")
    for k, (name, value) in enumerate((reference or {}).items()):
        ax.axhline(value, color="0.2", linestyle=("--", ":", "-.")[k % 3], linewidth=1, label=name)
    names = backbone_names or {}
    ax.set_xticks(range(len(backbones)), [names.get(b, b) for b in backbones])
    return _finish_mean_axes(fig, ax, metric, ci_label, title)



def _finish_mean_axes(fig: plt.Figure, ax: plt.Axes, metric: str, ci_label: str, title: str) -> plt.Figure:
    """Common last steps of the mean-with-CI charts: y label naming the metric and interval, legend outside."""
    ax.set_ylabel(f"mean {_metric_label(metric)} ({ci_label})")
    ax.legend(fontsize=MIN_FONT, bbox_to_anchor=(1.01, 1), loc="upper left")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig

def plot_forest(rows: pd.DataFrame, xlabel: str = "mean difference (a − b)", title: str = "",
                y: str = "structure", hue: str | None = "comparison") -> plt.Figure:
    """Mean paired differences with their bootstrap CIs (a forest plot).

    ``rows`` has ``mean_diff, ci_low, ci_high, significant`` and the columns named by ``y``
    (one line per value) and ``hue`` (one colour per value; ``None``: one colour). Filled
    markers are significant after correction, open markers are not. Use ``y="structure",
    hue="comparison"`` for a few comparisons, ``y="comparison", hue=None`` for many.
    """
    levels = list(pd.unique(rows[y]))
    hues = list(pd.unique(rows[hue])) if hue else [None]
    colors = condition_colors([str(h) for h in hues]) if hue else {"None": sns.color_palette(PALETTE)[0]}
    n = len(hues)
    longest = max((len(str(v)) for v in levels), default=10)
    height = max(2.4, 0.3 * len(levels) * n + 1.3) + 0.2 * (n + 1 if hue else 1)
    fig, ax = plt.subplots(figsize=(6.0 + 0.055 * longest, height))
    step = 0.8 / n
    for k, h in enumerate(hues):
        part = rows if hue is None else rows[rows[hue] == h]
        color = colors[str(h)]
        for i, level in enumerate(levels):
            sub = part[part[y] == level]
            if sub.empty:
                continue
            row = sub.iloc[0]
            yy = i - 0.4 + step * (k + 0.5)
            ax.plot([row["ci_low"], row["ci_high"]], [yy, yy], color=color, linewidth=1.2)
            ax.plot(row["mean_diff"], yy, marker="o", markersize=5, color=color,
                    markerfacecolor=color if bool(row["significant"]) else "white")
    ax.axvline(0.0, color="0.3", linewidth=0.8)
    ax.set_yticks(range(len(levels)), levels, fontsize=MIN_FONT + 1 if longest > 25 else 10)
    ax.set_ylim(len(levels) - 0.5, -0.5)
    ax.set_xlabel(xlabel)
    handles = [matplotlib.lines.Line2D([], [], color=colors[str(h)], marker="o", label=str(h)) for h in hues if hue]
    handles.append(matplotlib.lines.Line2D([], [], color="0.3", marker="o", markerfacecolor="white", linestyle="",
                                           label="open marker: not significant (adjusted p > alpha) or not tested"))
    fig.legend(handles=handles, fontsize=MIN_FONT, loc="lower center", ncol=1, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout(rect=(0, min(0.5, (0.19 * len(handles) + 0.1) / height), 1, 1))
    return fig


def plot_shots_curve(summary: pd.DataFrame, metric: str = "dice", reference: pd.DataFrame | None = None,
                     title: str = "", ci_label: str = "95 % CI") -> plt.Figure:
    """Few-shot performance against the number of training images (18-config paper, Fig. 12).

    ``summary``: ``label, shots, mean, ci_low, ci_high`` (``shots`` < 0 = the full training set,
    drawn at the right end). ``reference`` (same columns, e.g. nnU-Net) is drawn dashed.
    """
    frames = [summary] + ([reference] if reference is not None and len(reference) else [])
    ks = sorted({int(k) for f in frames for k in f["shots"] if int(k) > 0})
    has_full = any((f["shots"] < 0).any() for f in frames)
    positions = {k: i for i, k in enumerate(ks)}
    if has_full:
        positions[-1] = len(ks)
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    labels = list(pd.unique(summary["label"]))
    colors = condition_colors(labels)
    for frame, dashed in ((summary, False), (reference, True)):
        if frame is None or not len(frame):
            continue
        for label, part in frame.groupby("label", sort=False):
            part = part.assign(x=[positions[int(k) if int(k) > 0 else -1] for k in part["shots"]]).sort_values("x")
            color = "0.2" if dashed else colors[label]
            ax.errorbar(part["x"], part["mean"],
                        yerr=[(part["mean"] - part["ci_low"]).fillna(0).clip(lower=0),
                              (part["ci_high"] - part["mean"]).fillna(0).clip(lower=0)],
                        color=color, marker="o", markersize=4, capsize=3, linestyle="--" if dashed else "-",
                        label=label)
    ticks = sorted(positions.items(), key=lambda item: item[1])
    ax.set_xticks([p for _, p in ticks], [("full" if k < 0 else f"{k}-shot") for k, _ in ticks])
    ax.set_xlabel("training images")
    return _finish_mean_axes(fig, ax, metric, ci_label, title)


def plot_condition_bars(summary: pd.DataFrame, metric: str = "dice", x: str = "label", hue: str = "prompt",
                        title: str = "", ci_label: str = "95 % CI") -> plt.Figure:
    """Mean (with its CI) per condition, bars grouped by ``hue`` (18-config paper, Fig. 10: point vs box)."""
    xs = list(pd.unique(summary[x]))
    hues = list(pd.unique(summary[hue]))
    colors = condition_colors(hues)
    width = 0.8 / max(len(hues), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(xs) * max(1, len(hues) / 2) + 2), 4.4))
    for j, h in enumerate(hues):
        part = summary[summary[hue] == h].set_index(x)
        idx = [i for i, v in enumerate(xs) if v in part.index]
        rows = part.loc[[xs[i] for i in idx]]
        lo = (rows["mean"] - rows["ci_low"]).fillna(0).clip(lower=0)
        hi = (rows["ci_high"] - rows["mean"]).fillna(0).clip(lower=0)
        ax.bar([i - 0.4 + width * (j + 0.5) for i in idx], rows["mean"], width=width * 0.95, color=colors[h],
               yerr=[lo, hi], capsize=2, label=h, error_kw={"elinewidth": 0.8})
    ax.set_xticks(range(len(xs)), xs, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(f"mean {_metric_label(metric)} ({ci_label})")
    ax.legend(fontsize=MIN_FONT, title=hue, bbox_to_anchor=(1.01, 1), loc="upper left")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_parameter_counts(table: pd.DataFrame, title: str = "") -> plt.Figure:
    """Trainable parameters of the 18 configurations, ours vs the paper's Table 3 (log scale).

    ``table``: ``config, ours_trainable, paper_trainable_m`` (paper in millions).
    """
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(table) + 1.5))
    y = np.arange(len(table))
    palette = sns.color_palette(PALETTE)
    ax.barh(y - 0.2, table["ours_trainable"], height=0.4, color=palette[0], label="ours (samlab.peft)")
    ax.barh(y + 0.2, table["paper_trainable_m"] * 1e6, height=0.4, color=palette[1], label="paper, Table 3")
    ax.set_xscale("log")
    ax.set_yticks(y, table["config"], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("trainable parameters")
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def _panel_grid(n: int, ncols: int = 4, size: float = 2.9) -> tuple[plt.Figure, np.ndarray]:
    ncols = max(1, min(ncols, n))
    nrows = -(-max(n, 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols + 1.6, size * nrows + 0.6), squeeze=False,
                             sharey=True)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    return fig, axes


def _data_title(table: pd.DataFrame, what: str, n_col: str = "n_cases") -> str:
    """``what``: model(s), n volumes, dataset -- read from the rows (columns model/backbone, dataset, n_col)."""
    models = ", ".join(pd.unique(table["model" if "model" in table else "backbone"]).astype(str))
    datasets = ", ".join(d for d in pd.unique(table["dataset"]).astype(str) if d) if "dataset" in table else ""
    n = int(table[n_col].max()) if n_col in table and len(table) else 0
    return f"{what}: {models}, n = {n} volume{'s' if n != 1 else ''}" + (f", {datasets}" if datasets else "")


def plot_prompt_budget(table: pd.DataFrame, metric: str = "dice", ncols: int = 4) -> plt.Figure:
    """3D ``metric`` against the number of box prompts per volume, one panel per structure (log x).

    ``table``: :func:`samlab.volume_prompting.budget_table` (``model, dataset, structure, budget,
    n_prompts, <metric>, n_cases``). One marker per budget (same colour in every panel); a grey line
    joins a structure's budgets in order of prompts spent.
    """
    structures = list(pd.unique(table["structure"]))
    budgets = list(pd.unique(table["budget"]))
    colors = condition_colors(budgets)
    markers = dict(zip(budgets, "osD^v<>Xp*"))
    fig, axes = _panel_grid(len(structures), ncols)
    for ax, structure in zip(axes.flat, structures):
        rows = table[table["structure"] == structure].sort_values("n_prompts")
        ax.plot(rows["n_prompts"], rows[metric], color="0.75", linewidth=1, zorder=1)
        for _, row in rows.iterrows():
            ax.scatter(row["n_prompts"], row[metric], color=colors[row["budget"]], marker=markers[row["budget"]],
                       s=40, zorder=2, label=row["budget"].replace("_", " "))
        ax.set_xscale("log")
        # Labels on 1, 3, 10, 30, ... only: the log axis' default labels every minor tick on a range below a
        # decade, and those overlap into an unreadable row on a panel this narrow.
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 3.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"{structure.replace('_', ' ')} (n = {int(rows['n_cases'].max())})", fontsize=MIN_FONT + 1)
        ax.set_xlabel("box prompts per volume")
        if metric in ("dice", "nsd"):
            ax.set_ylim(-0.02, 1.02)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"mean 3D {_metric_label(metric)}")
    handles = {h.get_label(): h for ax in axes.flat for h in ax.collections}
    fig.legend(list(handles.values()), list(handles.keys()), fontsize=MIN_FONT, loc="center right")
    fig.suptitle(_data_title(table, f"3D {_metric_label(metric)} against prompts spent"), fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.82, 0.95))
    return fig


def plot_slice_profile(profile: pd.DataFrame, title: str = "", ncols: int = 4) -> plt.Figure:
    """Per-slice Dice against the slice's position in the structure's extent (0 first, 1 last slice).

    ``profile``: :func:`samlab.volume_prompting.slice_profile` (``structure, prompt, position, dice,
    n_slices``); one line per prompt (e.g. one-box propagation vs the per-slice oracle) and panel per
    structure. Where the propagated line drops below the oracle's is where propagation fails.
    """
    structures = list(pd.unique(profile["structure"]))
    prompts = list(pd.unique(profile["prompt"]))
    colors = condition_colors(prompts)
    fig, axes = _panel_grid(len(structures), ncols)
    for ax, structure in zip(axes.flat, structures):
        rows = profile[profile["structure"] == structure]
        for k, prompt in enumerate(prompts):
            part = rows[rows["prompt"] == prompt].sort_values("position")
            ax.plot(part["position"], part["dice"], marker="os^D"[k % 4], color=colors[prompt],
                    linestyle=("-", "--", ":")[k % 3], label=prompt.replace("_", " "))
        ax.set_title(f"{structure.replace('_', ' ')} ({int(rows['n_slices'].sum() // max(len(prompts), 1))} slices)",
                     fontsize=MIN_FONT + 1)
        ax.set_xlabel("position in extent (0 first, 1 last slice)")
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
    for ax in axes[:, 0]:
        ax.set_ylabel("mean per-slice Dice")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=MIN_FONT, loc="center right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.82, 0.95 if title else 1))
    return fig
