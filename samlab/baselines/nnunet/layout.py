"""The nnU-Net run directory: its paths, its manifests, and reading its label files.

Layout of a run directory (one per profile)::

    work_dir/
      samlab_nnunet.json          which dataset this run holds (re-open with NnUNetRun.open)
      nnUNet_raw/DatasetXXX_Name/ imagesTr, labelsTr (train+val), imagesTs, labelsTs (test; labelsTs is ours)
      nnUNet_preprocessed/        nnU-Net's plans, preprocessed data, splits_final.json
      nnUNet_results/             nnU-Net's trained folds and checkpoints
      nnunet_trainers/            makes nnUNetTrainerSamlab findable (nnUNet_extTrainer)
      predictions/<configuration>/  test-set predictions
      logs/                       per-step configs, results, stdout/stderr logs, timings.json

Why one object: every step (export, pipeline, evaluation, boxes) derives its
folders from the same three values, so they cannot disagree about where a file is.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from samlab.baselines.nnunet.profiles import NnUNetProfile
from samlab.io import read_json

__all__ = ["NnUNetError", "NnUNetRun", "PLANS_NAME", "TRAINER_NAME", "exported_test_cases", "read_label_file"]

TRAINER_NAME = "nnUNetTrainerSamlab"
PLANS_NAME = "nnUNetPlans"
MANIFEST = "samlab_nnunet.json"
EXPORT_MANIFEST = "samlab_export.json"


class NnUNetError(RuntimeError):
    """An nnU-Net step failed; the message names the step's log files."""


@dataclass(frozen=True)
class NnUNetRun:
    """Paths of one nnU-Net run directory; everything else is derived from these three values."""

    work_dir: Path
    dataset_id: int
    dataset_name: str  # e.g. "Dataset501_PelvisPhantom"

    @classmethod
    def open(cls, work_dir: str | os.PathLike) -> "NnUNetRun":
        """Re-open a run directory written by :func:`export_dataset`."""
        path = Path(work_dir) / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {work_dir} is not an nnU-Net run directory (run export_dataset)"
            )
        data = read_json(path, "nnU-Net run manifest")
        return cls(Path(work_dir).resolve(), int(data["dataset_id"]), str(data["dataset_name"]))

    @property
    def raw_root(self) -> Path:
        return self.work_dir / "nnUNet_raw"

    @property
    def preprocessed_root(self) -> Path:
        return self.work_dir / "nnUNet_preprocessed"

    @property
    def results_root(self) -> Path:
        return self.work_dir / "nnUNet_results"

    @property
    def trainers_dir(self) -> Path:
        return self.work_dir / "nnunet_trainers"

    @property
    def logs_dir(self) -> Path:
        return self.work_dir / "logs"

    @property
    def raw_dir(self) -> Path:
        return self.raw_root / self.dataset_name

    @property
    def preprocessed_dir(self) -> Path:
        return self.preprocessed_root / self.dataset_name

    @property
    def images_ts(self) -> Path:
        return self.raw_dir / "imagesTs"

    @property
    def labels_ts(self) -> Path:
        """Test labels, kept beside nnU-Net's raw data for evaluation only (nnU-Net never reads them)."""
        return self.raw_dir / "labelsTs"

    @property
    def dataset_json(self) -> dict[str, Any]:
        return read_json(self.raw_dir / "dataset.json", "nnU-Net dataset.json")

    @property
    def export_manifest(self) -> dict[str, Any]:
        return read_json(self.raw_dir / EXPORT_MANIFEST, "samlab export manifest")

    def model_dir(self, profile: NnUNetProfile) -> Path:
        """nnU-Net's training output folder (one per trainer, plans and configuration)."""
        return self.results_root / self.dataset_name / f"{TRAINER_NAME}__{PLANS_NAME}__{profile.configuration}"

    def predictions_dir(self, profile: NnUNetProfile) -> Path:
        return self.work_dir / "predictions" / profile.configuration

    def environment(self, profile: NnUNetProfile, training: bool = False) -> dict[str, str]:
        """The environment nnU-Net's worker process runs with.

        ``nnUNet_n_proc_DA`` is set for training only: nnU-Net's planner also calls
        ``torch.set_num_threads(nnUNet_n_proc_DA)``, which refuses 0.
        """
        import samlab

        env = dict(os.environ)
        env.update(
            nnUNet_raw=str(self.raw_root),
            nnUNet_preprocessed=str(self.preprocessed_root),
            nnUNet_results=str(self.results_root),
            nnUNet_extTrainer=str(self.trainers_dir),
            nnUNet_def_n_proc=str(profile.num_processes),
        )
        if training and profile.num_data_augmentation_processes is not None:
            env["nnUNet_n_proc_DA"] = str(profile.num_data_augmentation_processes)
        else:
            env.pop("nnUNet_n_proc_DA", None)
        if profile.torch_threads is not None:
            env["OMP_NUM_THREADS"] = str(profile.torch_threads)
        package_root = str(Path(samlab.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        return env


def read_label_file(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A 3D label volume ``(z, y, x)`` and its spacing ``(sz, sy, sx)`` in mm; errors name the file."""
    import SimpleITK as sitk

    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"cannot read label file {path}: {exc}") from exc
    array = sitk.GetArrayFromImage(image)
    if array.ndim != 3:
        raise ValueError(f"{path} holds a {array.ndim}D image; expected a 3D label volume")
    return array, tuple(float(s) for s in reversed(image.GetSpacing()))


def exported_test_cases(run: NnUNetRun) -> list[str]:
    """The test case ids this run was exported with (its ``imagesTs``/``labelsTs``)."""
    return list(run.export_manifest["splits"]["test"])
