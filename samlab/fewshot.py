"""Few-shot fine-tuning (notebook 05): k labelled slices from k distinct volumes, several seeds.

The 18-configuration study trains on 5 (and 10, 20) images drawn from distinct
volumes for both training and validation, with its few-shot recipe: up to 1000
epochs, batch 2, no early stopping. This module only adds the sampling and the
learning-curve figure around :func:`samlab.train.train` and
:func:`samlab.finetune.evaluate`, which notebook 04 uses too.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from .data.splits import k_shot_splits
from .train import SliceRecord


def _slice_key(record: SliceRecord) -> str:
    return f"{record.case_id}:{record.z:05d}"


def k_shot_slices(train_pool: Sequence[SliceRecord], val_pool: Sequence[SliceRecord], k: int, seed: int,
                  k_val: int | None = None) -> dict[str, list[SliceRecord]]:
    """``k`` training and ``k_val`` (default ``k``) validation slices, each from a distinct volume.

    Raises a ValueError naming how many volumes exist when a pool is too small (the
    phantom's quick run has 5 training volumes: 10- and 20-shot need real data).
    """
    return k_shot_splits(list(train_pool), list(val_pool), k, seed, volume_of=lambda s: s.case_id,
                         k_val=k_val, key=_slice_key)


def learning_curve(results: pd.DataFrame, metric: str = "dice", level: str = "3d") -> pd.DataFrame:
    """Mean and sd over seeds (of the per-volume mean) of one metric against k, per configuration."""
    frame = results[results["metric"] == metric]
    frame = frame[frame["slice"] == -1] if level == "3d" else frame[frame["slice"] != -1]
    frame = frame.assign(config=frame["backbone"] + "-" + frame["scope"] + "-" + frame["peft"])
    per_seed = frame.groupby(["config", "shots", "seed"])["value"].mean().reset_index()
    return per_seed.groupby(["config", "shots"])["value"].agg(["mean", "std", "count"]).reset_index()


def plot_learning_curve(results: pd.DataFrame, metric: str = "dice", level: str = "3d"):
    """Dice against k per configuration (points = seeds, line = mean), the paper's Figure 12 analogue."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = results[(results["metric"] == metric)]
    frame = frame[frame["slice"] == -1] if level == "3d" else frame[frame["slice"] != -1]
    frame = frame.assign(config=frame["backbone"] + "-" + frame["scope"] + "-" + frame["peft"])
    per_seed = frame.groupby(["config", "shots", "seed"])["value"].mean().reset_index()
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=per_seed, x="shots", y="value", hue="config", marker="o", errorbar="sd", ax=ax)
    sns.stripplot(data=per_seed, x="shots", y="value", hue="config", native_scale=True, dodge=False,
                  alpha=0.5, legend=False, ax=ax)
    ax.set_xlabel("k (training slices, one per volume)")
    ax.set_ylabel(f"{'Dice' if metric == 'dice' else metric.upper()} ({level}, mean over test volumes)")
    ax.set_ylim(0, 1)
    fig.tight_layout()
    return fig
