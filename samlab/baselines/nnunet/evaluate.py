"""Score nnU-Net's test predictions as tidy results rows (Dice, HD95, NSD in mm).

Why its own step: the scores must come from the same metric code as every SAM
condition (``samlab.metrics``) on the test labels the export kept aside, so the
baseline and the SAM variants are compared on one footing.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from samlab.baselines.nnunet.export import structures_from_dataset_json
from samlab.baselines.nnunet.layout import NnUNetRun, exported_test_cases, read_label_file
from samlab.baselines.nnunet.profiles import NnUNetProfile, get_profile
from samlab.results import make_rows, to_frame

__all__ = ["evaluate", "training_length"]


def training_length(profile: NnUNetProfile) -> str:
    """``"3x15 iterations"``: epochs x iterations per epoch, the ``recipe`` of nnU-Net's results rows."""
    return f"{profile.num_epochs}x{profile.num_iterations_per_epoch} iterations"


def evaluate(
    run: NnUNetRun,
    predictions_dir: str | os.PathLike | None = None,
    profile: NnUNetProfile | str = "quick",
    structures: Mapping[str, Sequence[int]] | None = None,
    dataset: str | None = None,
    orientation: str = "as_stored",
) -> pd.DataFrame:
    """Dice, HD95 and NSD of every test case and structure, as tidy results rows.

    Rows carry ``method="nnunet"``, ``prompt="none"``, ``backbone`` = the nnU-Net
    configuration, ``init="scratch"`` and ``recipe`` = how long it trained (``"3x15 iterations"``), so
    every label reads e.g. "nnU-Net (2d) [3x15 iterations]": a smoke-test model is never mistaken for the
    paper's 1000 x 250. Metrics come from
    ``samlab.metrics.evaluate_label_volumes`` on the test labels kept in
    ``labelsTs``, in millimetres from the label file's spacing. Prediction and label are both
    in the stored orientation (nnU-Net trains and predicts on the files as stored); 3D Dice,
    HD95 and NSD do not depend on how the axes are ordered, so the scores hold for any
    curation ``orientation``, which is written into every row so that the rows pair with the
    SAM rows of the same run.
    """
    from samlab.metrics import evaluate_label_volumes

    profile = get_profile(profile)
    pred_dir = Path(predictions_dir) if predictions_dir is not None else run.predictions_dir(profile)
    structures = dict(structures) if structures is not None else structures_from_dataset_json(run.dataset_json)
    ending = run.dataset_json["file_ending"]
    dataset = dataset or run.dataset_name
    rows: list[dict[str, Any]] = []
    for case in exported_test_cases(run):
        gt, spacing = read_label_file(run.labels_ts / f"{case}{ending}")
        pred, pred_spacing = read_label_file(pred_dir / f"{case}{ending}")
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {pred_dir / (case + ending)} has shape {pred.shape}, its label {gt.shape}")
        if not np.allclose(pred_spacing, spacing, rtol=1e-3):
            raise ValueError(f"prediction for {case} has spacing {pred_spacing}, its label {spacing}")
        scores = evaluate_label_volumes(pred, gt, spacing, structures)
        for structure, values in scores.items():
            context = {
                "dataset": dataset,
                "subject": case,
                "slice": -1,
                "structure": structure,
                "method": "nnunet",
                "backbone": profile.configuration,
                "init": "scratch",
                "recipe": training_length(profile),
                "prompt": "none",
                "orientation": orientation,
                "seed": profile.seed,
            }
            rows.extend(make_rows(context, values))
    return to_frame(rows)
