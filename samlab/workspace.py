"""The run-directory contract between notebooks.

Why a contract: every notebook reads its inputs from the run directory and
writes its outputs there, so any notebook can be rerun alone (or on a cluster
node) without in-memory state from another. This module is the only place that
knows the folder layout::

    runs/<profile>/
      run.json                 written by the runner
      data/raw/<dataset>/      the phantom (or nothing, when raw_dir points at real data)
      curation/                manifest.csv, splits.json, dataset.json   (notebook 01)
      nnunet/                  nnU-Net work folders, predictions/, nnunet_boxes.csv (notebook 03)
      results/*.parquet        tidy results (every notebook)
      figures/                 PNG + PDF figures
      cache/embeddings/        image-embedding cache
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .data.splits import LeakageError, find_leaks, read_splits_json
from .io import read_json, write_json_atomic
from .paths import resolve_run_dir


class MissingStageError(FileNotFoundError):
    """An input another notebook writes is absent; the message says which notebook to run."""


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def at(cls, run_dir: str | os.PathLike) -> "RunDir":
        root = resolve_run_dir(run_dir)
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    def _sub(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def data(self) -> Path:
        return self._sub("data")

    @property
    def curation(self) -> Path:
        return self._sub("curation")

    @property
    def results(self) -> Path:
        return self._sub("results")

    @property
    def figures(self) -> Path:
        return self._sub("figures")

    @property
    def nnunet(self) -> Path:
        return self._sub("nnunet")

    @property
    def embedding_cache(self) -> Path:
        return self._sub("cache") / "embeddings"

    # ------------------------------------------------------------------ curation record
    def write_dataset_info(self, raw_dir: str | os.PathLike, structures: Mapping[str, Sequence[int]], name: str,
                           resample_labels: bool = False, *, orientation: str = "as_stored",
                           intensity: str = "percentile_nonzero",
                           ct_window: str | Sequence[float] | None = None) -> Path:
        """Record which raw dataset the run uses, which evaluation structures it defines, whether labels on
        another grid are resampled onto their image, the orientation the volumes are sliced in and the
        intensity profile of the model inputs (later notebooks must read the cases as curation did, and a
        result is traceable to both)."""
        info = {"raw_dir": str(Path(raw_dir).resolve()), "dataset": name,
                "structures": {k: [int(v) for v in vals] for k, vals in structures.items()},
                "resample_labels": bool(resample_labels), "orientation": orientation, "intensity": intensity,
                "ct_window": ct_window if ct_window is None or isinstance(ct_window, str)
                else [float(v) for v in ct_window]}
        return write_json_atomic(self.curation / "dataset.json", info)

    def dataset_info(self) -> dict[str, Any]:
        path = self.root / "curation" / "dataset.json"
        if not path.is_file():
            raise MissingStageError(
                f"{path} not found: run notebooks/01_data_curation.ipynb with run_dir={self.root} first "
                "(or `samlab run params/quick.yaml`)"
            )
        return read_json(path, "run dataset record")

    def splits(self) -> dict[str, list[str]]:
        """The run's train/val/test case ids, checked for leakage before any notebook uses them.

        Why checked here too: ``splits.json`` is a plain file a user may edit or copy from another
        run. The case-level check is :func:`~samlab.data.splits.read_splits_json`'s (no case in two
        splits); the patient-level one uses the ``subject`` column of the curation manifest, when
        present, so two scans of one patient in train and test are a :class:`LeakageError` naming
        both files, as curation itself would have refused.
        """
        path = self.root / "curation" / "splits.json"
        if not path.is_file():
            raise MissingStageError(f"{path} not found: run notebooks/01_data_curation.ipynb with run_dir={self.root} first")
        splits = read_splits_json(path)
        manifest = self.root / "curation" / "manifest.csv"
        if manifest.is_file():
            subjects = _subjects_of(manifest)
            unknown = sorted(c for ids in splits.values() for c in ids if c not in subjects)
            patient = {c: subjects.get(c, c) for ids in splits.values() for c in ids}
            leaks = find_leaks(splits, patient)
            if leaks:
                items = "; ".join(f"{p}: " + ", ".join(f"{s} {[c for c in splits[s] if patient[c] == p]}" for s in where)
                                  for p, where in list(leaks.items())[:5])
                raise LeakageError(leaks, f" ({items}) -- {path} against the subjects of {manifest}; "
                                          "re-run notebook 01 (curation splits by patient)")
            if unknown:
                raise ValueError(f"{path}: case(s) {unknown[:5]} ({len(unknown)} in all) are not in {manifest}; "
                                 "the splits come from another curation -- re-run notebook 01")
        return splits

    def load_cases(self, split: str = "test", max_cases: int | None = None, clip_percentiles: bool = True) -> list:
        """Read the volumes of one split (``all`` = every case), oriented and intensity-prepared as curated.

        Each volume is re-oriented as notebook 01 chose (``orientation`` in the
        dataset record; ``as_stored`` for runs curated before the setting existed)
        and, with ``clip_percentiles``, clipped under its intensity profile (default
        MedSAM's 0.5/99.5 percentiles of the non-zero voxels) before the per-slice
        min-max the predictor applies.
        """
        from dataclasses import replace

        from .data.orientation import reorient_volume
        from .data.preprocess import apply_intensity_profile
        from .data.readers import read_case, read_raw_dataset

        info = self.dataset_info()
        splits = self.splits()
        if split == "all":
            case_ids = sorted({c for ids in splits.values() for c in ids})
        elif split not in splits:
            raise ValueError(f"split {split!r} not in {self.root / 'curation' / 'splits.json'} ({list(splits)})")
        else:
            case_ids = list(splits[split])
        if max_cases is not None:
            case_ids = case_ids[:max_cases]
        dataset = read_raw_dataset(info["raw_dir"], resample_labels=bool(info.get("resample_labels", False)))
        cases = []
        for case_id in case_ids:
            volume = read_case(dataset, case_id, allow_empty=True)  # curation keeps all-absent cases
            volume = reorient_volume(volume, info.get("orientation", "as_stored"))
            if clip_percentiles:
                image = apply_intensity_profile(volume.image, info.get("intensity", "percentile_nonzero"),
                                                window=info.get("ct_window"))
                volume = replace(volume, image=image.astype(np.float32))
            cases.append(volume)
        return cases

    def orientation(self) -> str:
        """The orientation notebook 01 sliced the volumes in (``as_stored`` for runs curated before the setting)."""
        return str(self.dataset_info().get("orientation", "as_stored"))

    def nnunet_predictions(self, case_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """nnU-Net's predicted label volumes for these cases (notebook 03), or ``{}`` if it has not run.

        nnU-Net trains and predicts on the files as stored, so its predictions are re-oriented
        here as curation re-orients the cases (:meth:`load_cases`): with ``orientation: RAS`` a
        prediction read as stored would put its boxes on the wrong voxels of the re-oriented slices.
        """
        pointer = self.root / "nnunet" / "baseline.json"
        if not pointer.is_file():
            return {}
        return read_prediction_volumes(read_json(pointer, "nnU-Net baseline record")["predictions_dir"], case_ids,
                                       orientation=self.orientation())

    def structures(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v) for k, v in self.dataset_info()["structures"].items()}


def _subjects_of(manifest: Path) -> dict[str, str]:
    """case id -> patient from a curation manifest (only the two columns are read: the manifest may list every slice)."""
    import pandas as pd

    try:
        frame = pd.read_csv(manifest, usecols=["case_id", "subject"], dtype=str, keep_default_na=False)
    except ValueError as exc:  # a missing column
        raise ValueError(f"{manifest}: not a samlab manifest ({exc}); re-run notebook 01") from None
    return dict(zip(frame["case_id"], frame["subject"]))


def default_structures(raw_dir: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Evaluation structures of a raw dataset: ``samlab_structures`` in dataset.json if present,
    else one structure per non-background label. A missing or malformed dataset.json is an
    :class:`~samlab.io.InputFileError` naming the file (and the line and column of a JSON error)."""
    meta = read_json(Path(raw_dir) / "dataset.json", "dataset.json")
    if "samlab_structures" in meta:
        return {k: tuple(int(v) for v in vals) for k, vals in meta["samlab_structures"].items()}
    labels = meta.get("labels", {})
    pairs = [(k, v) for k, v in labels.items()]
    if pairs and all(str(k).isdigit() for k, _ in pairs):  # MSD spelling {"0": "background"}
        pairs = [(v, int(k)) for k, v in pairs]
    return {str(name): (int(value),) for name, value in pairs if int(value) != 0}


def read_prediction_volumes(directory: str | os.PathLike, case_ids: Sequence[str], ending: str = ".nii.gz",
                            orientation: str = "as_stored") -> dict[str, np.ndarray]:
    """Label volumes ``<case_id><ending>`` found in ``directory`` (missing cases are simply absent),
    re-oriented from each file's own geometry to ``orientation`` (:mod:`samlab.data.orientation`)."""
    import SimpleITK as sitk

    from .data.orientation import reorient_array
    from .data.readers import as_label_array

    found = {}
    for case_id in case_ids:
        path = Path(directory) / f"{case_id}{ending}"
        if path.is_file():
            image = sitk.ReadImage(str(path))
            array = as_label_array(sitk.GetArrayFromImage(image), path)
            spacing_zyx = tuple(reversed(image.GetSpacing()))
            found[case_id] = reorient_array(array, spacing_zyx, image.GetOrigin(), image.GetDirection(),
                                            orientation)[0]
    return found
