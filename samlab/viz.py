"""Figures: label overlays, per-structure plots, consistent style, PNG + PDF output.

One palette for the whole study (seaborn's colour-blind-safe ``colorblind``),
so a structure has the same colour in every figure of every notebook.
"""
from __future__ import annotations

import os
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


def set_style() -> None:
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)


def structure_colors(names: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    colors = sns.color_palette(PALETTE, n_colors=max(len(names), 1))
    return {name: colors[i % len(colors)] for i, name in enumerate(names)}


def save_figure(fig: plt.Figure, path: str | os.PathLike, formats: Sequence[str] = ("png", "pdf"), dpi: int = 120) -> list[Path]:
    """Save one figure in several formats (same stem); returns the written paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        fig.savefig(target, dpi=dpi, bbox_inches="tight")
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
    colors = {"ground truth": sns.color_palette(PALETTE)[2], "prediction": sns.color_palette(PALETTE)[3]}
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
            ax.get_legend().remove()
        else:
            ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=7)
    fig.tight_layout()
    return fig


def plot_structure_bars(frame: pd.DataFrame, metric: str = "dice", hue: str = "prompt") -> plt.Figure:
    """Mean ± sd of one metric per structure, bars grouped by ``hue``."""
    data = frame[frame["metric"] == metric]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * data["structure"].nunique()), 4))
    sns.barplot(data=data, x="structure", y="value", hue=hue, errorbar="sd", ax=ax)
    ax.set_ylabel(metric.upper() if metric != "dice" else "Dice")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig
