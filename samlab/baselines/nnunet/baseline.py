"""The whole nnU-Net baseline in one call (notebook 03): export, plan, train, predict, evaluate, boxes.

Outside Python, the same trained model can be used with nnU-Net's commands after
``export nnUNet_results=<work_dir>/nnUNet_results nnUNet_extTrainer=<work_dir>/nnunet_trainers``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from samlab.baselines.nnunet.boxes import derive_boxes, write_boxes
from samlab.baselines.nnunet.evaluate import evaluate
from samlab.baselines.nnunet.export import export_dataset, structures_from_dataset_json
from samlab.baselines.nnunet.layout import NnUNetRun, exported_test_cases
from samlab.baselines.nnunet.pipeline import plan_and_preprocess, predict, train
from samlab.baselines.nnunet.profiles import NnUNetProfile, get_profile
from samlab.io import read_json
from samlab.results import write_results

__all__ = ["NnUNetBaseline", "run_baseline"]


@dataclass(frozen=True)
class NnUNetBaseline:
    """What :func:`run_baseline` produced."""

    run: NnUNetRun
    profile: NnUNetProfile
    predictions_dir: Path
    results: pd.DataFrame
    results_path: Path
    boxes_path: Path
    timings: dict[str, float]


def run_baseline(
    source_dir: str | os.PathLike,
    splits: Mapping[str, Sequence[str]] | str | os.PathLike,
    work_dir: str | os.PathLike,
    profile: NnUNetProfile | str = "quick",
    dataset: str | None = None,
    dataset_id: int = 501,
    structures: Mapping[str, Sequence[int]] | None = None,
    orientation: str = "as_stored",
) -> NnUNetBaseline:
    """Export, plan + preprocess, train (resuming), predict the test split, evaluate, derive boxes.

    Writes ``<work_dir>/nnunet_results.parquet`` (tidy schema) and
    ``<work_dir>/nnunet_boxes.csv``. Each step that already finished is skipped on
    a re-run, and an interrupted training continues from its checkpoint. nnU-Net works on the
    files as stored whatever the run's ``orientation`` (recorded in the rows; see
    :func:`samlab.workspace.RunDir.nnunet_predictions` for how notebook 02 re-orients the
    predictions before drawing boxes from them).
    """
    profile = get_profile(profile)
    run = export_dataset(source_dir, splits, work_dir, dataset_id=dataset_id)
    plan_and_preprocess(run, profile)
    train(run, profile, resume=True)
    pred_dir = predict(run, profile)
    structures = dict(structures) if structures is not None else structures_from_dataset_json(run.dataset_json)
    results = evaluate(run, pred_dir, profile, structures=structures, dataset=dataset, orientation=orientation)
    results_path = write_results(results, run.work_dir / "nnunet_results.parquet")
    boxes = derive_boxes(pred_dir, structures, case_ids=exported_test_cases(run), file_ending=run.dataset_json["file_ending"])
    boxes_path = write_boxes(boxes, run.work_dir / "nnunet_boxes.csv")
    timings_file = run.logs_dir / "timings.json"
    timings = read_json(timings_file, "timings file") if timings_file.is_file() else {}
    return NnUNetBaseline(run, profile, pred_dir, results, results_path, boxes_path, timings)
