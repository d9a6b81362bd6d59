"""Figure readability rules that a glance at the PNG caught: tick labels that overlap, raw keys in legends."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from samlab.viz import plot_orientation_spread, plot_prompt_budget


def _budget_table() -> pd.DataFrame:
    rows = []
    for structure in ("bladder", "seminal_vesicle"):
        for budget, prompts, dice in (("volume_box", 1.0, 0.6), ("every_5_slices", 3.0, 0.7),
                                      ("every_slice", 11.0, 0.8)):
            rows.append(dict(dataset="PelvisPhantom", model="litemedsam", structure=structure, budget=budget,
                             n_prompts=prompts, dice=dice, hd95=5.0, nsd=0.7, n_cases=2, n_empty=0))
    return pd.DataFrame(rows)


def test_prompt_budget_labels_only_decades_and_threes_on_its_log_axis():
    fig = plot_prompt_budget(_budget_table())
    fig.canvas.draw()
    ax = fig.axes[0]
    major = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    minor = [t.get_text() for t in ax.xaxis.get_minorticklabels() if t.get_text()]
    assert minor == []  # the default log formatter labelled 2, 4, 5, 6 ... between 1 and 11: overlapping text
    assert set(major) <= {"0.1", "0.3", "1", "3", "10", "30", "100"} and {"1", "3", "10"} <= set(major)
    assert ax.get_title() == "bladder (n = 2)" and fig.axes[1].get_title() == "seminal vesicle (n = 2)"
    plt.close(fig)


def test_orientation_legend_names_structures_for_a_reader():
    rows = []
    for structure in ("transition_zone", "bladder"):
        for orientation, value in (("as_stored", 0.8), ("as_stored+rot90", 0.7)):
            rows.append(dict(metric="dice", orientation=orientation, subject="s1", slice=3, structure=structure,
                             value=value, backbone="litemedsam", dataset="PelvisPhantom"))
    fig = plot_orientation_spread(pd.DataFrame(rows))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["transition zone", "bladder", "mean"]
    plt.close(fig)
