"""The dataset manifest: one row per case and per slice, written atomically.

Why a manifest: every later notebook (and every reader of a results table) must
be able to say exactly which files, which slices and which split a number came
from, and a run must be able to prove its inputs did not change (SHA-256 of
every file). One flat table serves all of that and is trivially filtered in
pandas.

Columns (:data:`BASE_COLUMNS`, then one ``n_<label>`` voxel-count column per
label, then any extra columns the caller adds):

``dataset, subject, case_id, split, slice, image_path, label_path, shape,
spacing, image_sha256, label_sha256``

``slice`` is -1 for a row describing a whole volume (or a 2D image whose position
in its volume is unknown) and the z index for a slice row. ``shape`` and
``spacing`` are ``"x"``-joined strings (``"35x52x34"``, ``"3x1.2x1.2"``) so one
column serves 2D and 3D rows in CSV; :func:`parse_tuple` reads them back.
Counts of labels absent from a data set's label map are missing (``<NA>``), not 0.

Curation adds :data:`PRESENT_COLUMN` (``present_structures``): the evaluation
structures (a structure may join several labels) with at least one voxel in the
case or slice, ``";"``-joined in the structures' order, ``""`` when none is. A
structure missing from it is *absent* there and is not scored (see
:mod:`samlab.metrics`); :func:`parse_structures` reads the list back.
It also adds :data:`ORIENTATION_COLUMN` and :data:`INTENSITY_COLUMN`: the
orientation the volume was sliced in (``slice`` indexes that orientation) and
the intensity profile of the model inputs.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from samlab.data.readers import Slice2D, Volume
from samlab.io import atomic_path

__all__ = [
    "BASE_COLUMNS",
    "PRESENT_COLUMN",
    "ORIENTATION_COLUMN",
    "INTENSITY_COLUMN",
    "count_column",
    "label_counts",
    "present_structures",
    "format_structures",
    "parse_structures",
    "format_tuple",
    "parse_tuple",
    "volume_rows",
    "slice2d_row",
    "build_manifest",
    "write_manifest",
    "read_manifest",
]

BASE_COLUMNS: tuple[str, ...] = (
    "dataset",
    "subject",
    "case_id",
    "split",
    "slice",
    "image_path",
    "label_path",
    "shape",
    "spacing",
    "image_sha256",
    "label_sha256",
)

_COUNT_PREFIX = "n_"

#: Manifest column listing the evaluation structures present in a case or slice.
PRESENT_COLUMN = "present_structures"

#: Manifest columns recording how curation oriented the volume before slicing (``as_stored``, ``RAS``, ``LPS``)
#: and which intensity profile clips it (``percentile_nonzero``, ..., ``ct_window:<low>,<high>``): slice indices
#: and model inputs depend on both, so every row says which were used.
ORIENTATION_COLUMN = "orientation"
INTENSITY_COLUMN = "intensity"


def count_column(label_name: str) -> str:
    """Column holding the voxel count of one label (``"posterior hippocampus"`` -> ``n_posterior_hippocampus``)."""
    return _COUNT_PREFIX + re.sub(r"[^0-9a-zA-Z]+", "_", label_name).strip("_").lower()


def label_counts(labels: np.ndarray, label_map: Mapping[str, int]) -> dict[str, int]:
    """Voxel count of every label of the map (0 for labels absent from this array)."""
    hist = np.bincount(np.asarray(labels, dtype=np.uint8).ravel(), minlength=256)
    return {count_column(name): int(hist[value]) for name, value in label_map.items()}


def present_structures(labels: np.ndarray, structures: Mapping[str, Sequence[int]]) -> list[str]:
    """Names of the structures with at least one voxel in ``labels`` (a structure is a union of label values)."""
    arr = np.asarray(labels)
    return [name for name, values in structures.items() if np.isin(arr, tuple(values)).any()]


def format_structures(names: Sequence[str]) -> str:
    """``["bladder", "bone"]`` -> ``"bladder;bone"`` (``""`` for none); names must not contain ``;``."""
    bad = [n for n in names if ";" in n]
    if bad:
        raise ValueError(f"structure name(s) {bad} contain ';', the separator of {PRESENT_COLUMN}")
    return ";".join(names)


def parse_structures(text: Any) -> list[str]:
    """Inverse of :func:`format_structures` (``""`` or a missing value -> ``[]``)."""
    if text is None or (isinstance(text, float) and np.isnan(text)) or str(text) == "":
        return []
    return str(text).split(";")


def format_tuple(values: Sequence[float] | None) -> str:
    """``(35, 52, 34)`` -> ``"35x52x34"``; ``None`` -> ``""``."""
    if values is None:
        return ""
    return "x".join(format(float(v), "g") if not float(v).is_integer() else str(int(v)) for v in values)


def parse_tuple(text: Any) -> tuple[float, ...] | None:
    """Inverse of :func:`format_tuple` (integers come back as ``int``)."""
    if text is None or (isinstance(text, float) and np.isnan(text)) or str(text) == "":
        return None
    out = []
    for part in str(text).split("x"):
        val = float(part)
        out.append(int(val) if val.is_integer() and "." not in part and "e" not in part.lower() else val)
    return tuple(out)


def volume_rows(
    volume: Volume,
    *,
    dataset: str,
    subject: str,
    split: str,
    image_sha256: str = "",
    label_sha256: str = "",
    include_slices: bool = True,
    slice_extra: Mapping[str, Sequence[Any]] | None = None,
    volume_extra: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Manifest rows of one volume: the whole volume (``slice = -1``), then each z-slice.

    ``slice_extra`` adds per-slice columns (one value per z, e.g. whether the
    slice survives cleaning); ``volume_extra`` adds columns to the volume row.
    """
    common = {
        "dataset": dataset,
        "subject": subject,
        "case_id": volume.case_id,
        "split": split,
        "image_path": "" if volume.path is None else str(volume.path),
        "label_path": "" if volume.label_path is None else str(volume.label_path),
        "spacing": format_tuple(volume.spacing),
        "image_sha256": image_sha256,
        "label_sha256": label_sha256,
    }
    rows = [{**common, "slice": -1, "shape": format_tuple(volume.labels.shape),
             **label_counts(volume.labels, volume.label_map), **(volume_extra or {})}]
    if include_slices:
        nz = volume.labels.shape[0]
        for key, values in (slice_extra or {}).items():
            if len(values) != nz:
                raise ValueError(f"slice_extra[{key!r}] has {len(values)} values for {nz} slices of {volume.case_id!r}")
        plane = format_tuple(volume.labels.shape[1:])
        for z in range(nz):
            row = {**common, "slice": z, "shape": plane, **label_counts(volume.labels[z], volume.label_map)}
            for key, values in (slice_extra or {}).items():
                row[key] = values[z]
            rows.append(row)
    return rows


def slice2d_row(
    sl: Slice2D,
    *,
    dataset: str,
    split: str,
    image_sha256: str = "",
    label_sha256: str = "",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest row of one 2D image (``slice`` = its index in the source volume, or -1)."""
    return {
        "dataset": dataset,
        "subject": sl.subject,
        "case_id": sl.case_id,
        "split": split,
        "slice": sl.slice_index,
        "image_path": "" if sl.image_path is None else str(sl.image_path),
        "label_path": "" if sl.mask_path is None else str(sl.mask_path),
        "shape": format_tuple(sl.mask.shape),
        "spacing": format_tuple(sl.spacing),
        "image_sha256": image_sha256,
        "label_sha256": label_sha256,
        **label_counts(sl.mask, sl.label_map),
        **(extra or {}),
    }


def build_manifest(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows -> a DataFrame with the base columns first, then counts, then extras."""
    df = pd.DataFrame(list(rows))
    if df.empty:
        return pd.DataFrame(columns=list(BASE_COLUMNS))
    missing = [c for c in BASE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest rows lack column(s) {missing}")
    counts = [c for c in df.columns if c.startswith(_COUNT_PREFIX) and c not in BASE_COLUMNS]
    extras = [c for c in df.columns if c not in BASE_COLUMNS and c not in counts]
    df = df[list(BASE_COLUMNS) + counts + extras]
    df["slice"] = df["slice"].astype("int64")
    for c in counts:
        df[c] = df[c].astype("Int64")
    return df.reset_index(drop=True)


def write_manifest(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the manifest as CSV (or Parquet for a ``.parquet`` path) atomically.

    The table goes to a temporary file in the same folder, is flushed to disk and
    then renamed over ``path``: a crash or an exception mid-write leaves the
    previous manifest untouched and no partial file behind.
    """
    path = Path(path)
    missing = [c for c in BASE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: manifest lacks column(s) {missing}")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ValueError(f"{path}: manifest must end in .csv or .parquet")
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    return path


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest written by :func:`write_manifest`, checking its columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found (run notebook 01 / curate first)")
    if path.suffix.lower() == ".parquet":
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path, dtype={"subject": str, "case_id": str, "split": str, "shape": str, "spacing": str,
                                      "image_sha256": str, "label_sha256": str, PRESENT_COLUMN: str,
                                      ORIENTATION_COLUMN: str, INTENSITY_COLUMN: str},
                         keep_default_na=False)
    missing = [c for c in BASE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a samlab manifest, missing column(s) {missing}")
    for c in df.columns:
        if c.startswith(_COUNT_PREFIX):
            df[c] = pd.to_numeric(df[c].replace("", pd.NA), errors="raise").astype("Int64")
    df["slice"] = df["slice"].astype("int64")
    return df
