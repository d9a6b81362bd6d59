"""Notebook 08: phase-1 pre-training (SSLSAM by MAE, SupSAM by prompt-based supervision) and its figures.

The engine is :mod:`samlab.pretrain` (below the notebook API); phase 2 is notebook 04's grid
(:func:`samlab.finetune.run_grid`) with ``inits`` naming the phase-1 checkpoints. This module only
gathers the slices of a run directory for phase 1 and draws the two figures the notebook shows.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .pretrain.data import UnlabelledSlice, read_image_folder, slices_from_cases, subsample
from .workspace import RunDir

__all__ = ["plot_mae_loss", "plot_reconstructions", "unlabelled_slices"]


def unlabelled_slices(run: RunDir, splits: Sequence[str], extra_image_dirs: Sequence[str] = (),
                      max_slices: int | None = None, seed: int = 0, verbose: bool = True) -> list[UnlabelledSlice]:
    """Non-blank slices of the run's curated volumes in ``splits`` (labels unused) plus image-only folders.

    ``splits`` may name ``train``, ``val``, ``test`` or ``all``; a test volume in phase 1 is said
    aloud (its images, never its labels, are then seen before phase 2 is tested on it).
    """
    names = sorted(set(run.splits())) if "all" in splits else list(dict.fromkeys(splits))
    cases = [case for split in names for case in run.load_cases(split)]
    slices = slices_from_cases(cases)
    for folder in extra_image_dirs:
        slices += read_image_folder(folder)
    chosen = subsample(slices, max_slices, seed=seed)
    if verbose:
        print(f"phase 1 images: {len(chosen)} of {len(slices)} non-blank slices from {len(cases)} curated volumes "
              f"(splits {names}, labels unused)" + (f" and {len(extra_image_dirs)} image folder(s)"
                                                    if extra_image_dirs else ""))
        if "test" in names:
            print("NOTE: test volumes are in phase 1: their images (not labels) are seen before phase 2 is tested on "
                  "them; the paper pre-trains on training images only")
    return chosen


def plot_mae_loss(history: Sequence[dict], title: str = "", norm_pix_loss: bool = False):
    """Reconstruction loss (masked patches) and learning rate per optimiser step."""
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in history]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(steps, [r["loss"] for r in history], marker=".", color="#0072B2", label="loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("MSE on masked patches\n" + ("(per-patch normalised pixels)" if norm_pix_loss else "(input pixels)"))
    twin = ax.twinx()
    twin.plot(steps, [r["lr"] for r in history], color="#E69F00", linestyle="--", label="learning rate")
    twin.set_ylabel("learning rate")
    ax.set_title(title or f"MAE pre-training, {len(history)} steps")
    fig.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_reconstructions(shown: dict[str, np.ndarray], sources: Sequence[str], title: str = ""):
    """One row per slice: masked input, reconstruction (visible patches pasted back), original."""
    import matplotlib.pyplot as plt

    n = len(shown["original"])
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for i in range(n):
        low, high = float(shown["original"][i].min()), float(shown["original"][i].max())
        for j, key in enumerate(("masked", "reconstruction", "original")):
            ax = axes[i, j]
            ax.imshow(shown[key][i], cmap="gray", vmin=low, vmax=high)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title({"masked": f"masked input ({shown['mask'][i].mean():.0%} hidden)",
                              "reconstruction": "reconstruction", "original": "original"}[key], fontsize=9)
        axes[i, 0].set_ylabel(str(sources[i]), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig

