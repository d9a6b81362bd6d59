"""Figures of notebook 06: Dice by prompt kind and selection rule (Figure-10 analogue), the paired
differences per structure (Figures 7/8 analogue), and the panels of a scripted session."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from .session import InteractiveSegmenter, SegmentationState
from .simulate import PROMPT_KINDS, SELECTIONS
from .summary import difference_table, with_prompt_parts

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_prompt_comparison", "plot_difference_heatmap", "plot_session", "plot_clicks_to_target"]


def plot_prompt_comparison(results: pd.DataFrame, metric: str = "dice") -> Figure:
    """Figure-10 analogue: mean metric (95 % CI over measurements) per prompt kind, hue = selection rule."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = with_prompt_parts(results, metric)
    models = list(pd.unique(frame["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models) + 1, 3.8), sharey=True, squeeze=False)
    order = [s for s in SELECTIONS if s in set(frame["selection"])]
    for ax, model in zip(axes[0], models):
        sns.barplot(data=frame[frame["model"] == model], x="kind", y="value", hue="selection", hue_order=order,
                    order=[k for k in PROMPT_KINDS if k in set(frame["kind"])], errorbar=("ci", 95), ax=ax)
        ax.set_title(model)
        ax.set_xlabel("prompt")
        ax.set_ylabel("Dice (2D)" if metric == "dice" else metric)
        ax.set_ylim(0, 1)
        if ax is not axes[0][-1]:
            ax.get_legend().remove()
        else:
            ax.legend(title="mask chosen by", fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def plot_difference_heatmap(results: pd.DataFrame, metric: str = "dice") -> Figure:
    """Figures-7/8 analogue: green = the first condition better, red = worse (mean paired difference)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    table = difference_table(results, metric)
    if table.empty:
        raise ValueError("nothing to contrast: need both prompt kinds or both multimask selection rules")
    fig, ax = plt.subplots(figsize=(1.6 * table.shape[1] + 3, 0.45 * table.shape[0] + 1.8))
    limit = max(float(np.nanmax(np.abs(table.to_numpy()))), 0.05)
    sns.heatmap(table, cmap="RdYlGn", center=0, vmin=-limit, vmax=limit, annot=True, fmt="+.2f", ax=ax,
                cbar_kws={"label": f"mean difference in {metric}"})
    ax.set_ylabel("")
    ax.tick_params(axis="x", rotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.tight_layout()
    return fig


def plot_session(segmenter: InteractiveSegmenter, states: Sequence[SegmentationState],
                 ncols: int = 4) -> Figure:
    """One panel per step of a (scripted) session: image, ground truth (green), mask (orange), prompt."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    nrows = max(1, int(np.ceil(len(states) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols, 3.1 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, (ax, state) in enumerate(zip(axes.flat, states)):
        image = segmenter.image[state.slice_index]
        gt = np.isin(segmenter.labels[state.slice_index], segmenter.structures[state.structure])
        ax.imshow(image, cmap="gray", interpolation="nearest")
        rgba = np.zeros((*gt.shape, 4))
        rgba[state.mask] = (1.0, 0.55, 0.0, 0.5)
        ax.imshow(rgba, interpolation="nearest")
        if gt.any():
            ax.contour(gt.astype(float), levels=[0.5], colors=["lime"], linewidths=1.0)
        for x, y, fg in state.points:
            ax.plot(x, y, "*" if fg else "X", color="lime" if fg else "red", markersize=11, markeredgecolor="black")
        if state.box is not None:
            x0, y0, x1, y1 = state.box
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="yellow", linewidth=1.2))
        ax.set_title(f"{i + 1}. {state.structure}: Dice {state.dice:.2f}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_clicks_to_target(curve: pd.DataFrame, targets: Sequence[float] = (0.85, 0.90)) -> Figure:
    """The clicks-to-target curve: 3D Dice relative to the per-slice oracle against prompts spent.

    ``curve``: :func:`samlab.interactive.corrective3d.clicks_curve` (``dataset, backbone, kind,
    structure, n_prompts, relative_dice, n_cases``). One panel per correction kind, one line per
    structure; dashed lines at the NoC targets. The title names model, volumes and dataset.
    """
    import matplotlib.pyplot as plt

    from ..viz import MIN_FONT, structure_colors

    kinds = list(pd.unique(curve["kind"]))
    structures = list(pd.unique(curve["structure"]))
    colors = structure_colors(structures)
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.0 * len(kinds) + 2.2, 3.8), sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for k, structure in enumerate(structures):
            part = curve[(curve["kind"] == kind) & (curve["structure"] == structure)].sort_values("n_prompts")
            ax.plot(part["n_prompts"], part["relative_dice"], color=colors[structure], marker="os^Dv<>p"[k % 8],
                    markersize=4, linestyle=("-", "--", ":", "-.")[k % 4],
                    label=f"{structure.replace('_', ' ')} (n = {int(part['n_cases'].max())})")
        for t, style in zip(targets, (":", "--")):
            ax.axhline(t, color="0.3", linestyle=style, linewidth=1)
            ax.text(1, t, f" {t:.2f} x oracle", va="bottom", fontsize=MIN_FONT, color="0.3")
        ax.set_title(f"corrections: {kind}", fontsize=MIN_FONT + 2)
        ax.set_xlabel("prompts spent (the 3D box = 1)")
        ax.set_xticks(sorted(pd.unique(curve["n_prompts"])))
    axes[0][0].set_ylabel("3D Dice / per-slice-oracle 3D Dice")
    axes[0][-1].legend(fontsize=MIN_FONT, bbox_to_anchor=(1.01, 1), loc="upper left")
    models = ", ".join(pd.unique(curve["backbone"]).astype(str))
    datasets = ", ".join(d for d in pd.unique(curve["dataset"]).astype(str) if d)
    n = int(curve["n_cases"].max()) if len(curve) else 0
    fig.suptitle(f"Clicks to target: {models}, n = {n} volume{'s' if n != 1 else ''}"
                 + (f", {datasets}" if datasets else ""), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig
