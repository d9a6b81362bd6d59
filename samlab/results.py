"""The one tidy results schema every notebook writes and notebook 07 reads.

One row per measurement. Keeping a single long-format table (instead of one
wide table per notebook) is what lets the statistics and figure code pair any two
methods on matched subjects/slices without knowing which notebook made them.

Two columns exist so that figure titles and table rows can be *read* from the rows
instead of written by hand:

* ``mode`` -- how the model was asked: ``automatic`` (no prompt), ``box``, ``point``,
  or ``none`` (a model that takes no prompt at all, nnU-Net). A producer may set it;
  when it does not (older producers, older parquet files) :func:`to_frame` derives it
  with :func:`derive_mode`: method ``nnunet`` -> ``none``; empty prompt (or ``none``)
  -> ``automatic``; a prompt containing ``point`` -> ``point``; any other prompt -> ``box``.
* ``recipe`` -- the name of the training recipe (optimiser, epochs, schedule) a
  fine-tuned row comes from, ``""`` when none (zero-shot, or a producer that does not
  record it); two rows that differ in recipe are different conditions.
* ``orientation`` -- the orientation the slices were fed in: the run's curation setting
  (``as_stored``, ``RAS``, ``LPS``; :mod:`samlab.data.orientation`), with an in-plane
  transform suffix for the orientation-sensitivity study (``as_stored+rot90``;
  :mod:`samlab.orientation_sensitivity`). SAM-family models are not orientation-invariant,
  so rows of different orientations are different conditions. Results files written before
  the column existed are read as ``as_stored``: curation sliced every volume as stored then.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from .io import atomic_path

#: Column order of the results schema (see DESIGN.md, "Results schema").
COLUMNS: tuple[str, ...] = (
    "dataset",
    "subject",
    "slice",
    "structure",
    "method",
    "backbone",
    "scope",
    "peft",
    "recipe",
    "init",
    "prompt",
    "mode",
    "orientation",  # as_stored / RAS / LPS (+ an in-plane transform in the sensitivity study); old files: as_stored
    "shots",
    "seed",
    "metric",
    "value",
    "unit",
    "empty_prediction",  # the evaluation's prediction was empty (see samlab.metrics): dice/nsd 0, hd95 NaN
)

_DEFAULTS: dict[str, Any] = {
    "slice": -1,
    "backbone": "",
    "scope": "",
    "peft": "",
    "init": "",
    "recipe": "",
    "prompt": "",
    "mode": "",
    "orientation": "as_stored",  # also what results files written before the column existed are read as
    "shots": -1,
    "seed": 0,
    "unit": "",
    "empty_prediction": False,
}

_INT_COLUMNS = ("slice", "shots", "seed")
_BOOL_COLUMNS = ("empty_prediction",)
_UNITS = {"dice": "", "nsd": "", "iou": "", "hd95": "mm", "assd": "mm"}


def metric_unit(metric: str) -> str:
    """The unit a metric is reported in (distances in millimetres, overlaps unitless)."""
    return _UNITS.get(metric, "")


def make_rows(context: Mapping[str, Any], values: Mapping[str, float]) -> list[dict[str, Any]]:
    """Expand one evaluation (``{"dice": 0.9, "hd95": 3.1}``) into schema rows sharing ``context``.

    An empty evaluation (an absent structure, see :mod:`samlab.metrics`) gives no
    rows. A :class:`samlab.metrics.Evaluation` marked ``empty_prediction`` sets that
    column on each of its rows, so callers pass the evaluation through unchanged.
    """
    unknown = set(context) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown results column(s) {sorted(unknown)}; allowed: {list(COLUMNS)}")
    empty = {"empty_prediction": True} if getattr(values, "empty_prediction", False) else {}
    rows = []
    for metric, value in values.items():
        row = {**_DEFAULTS, **context, **empty, "metric": metric, "value": float(value)}
        row.setdefault("unit", metric_unit(metric))
        if not row["unit"]:
            row["unit"] = metric_unit(metric)
        rows.append(row)
    return rows


def derive_mode(method: str, prompt: str) -> str:
    """The ``mode`` of a row whose producer did not set it (see the module docstring)."""
    prompt = str(prompt).strip().lower()
    if str(method) == "nnunet":
        return "none"
    if prompt in ("", "none"):
        return "automatic"
    return "point" if "point" in prompt else "box"


def to_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Build a schema-conformant DataFrame, filling defaults (``mode``: :func:`derive_mode`) and checking columns."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS})
    for column, default in _DEFAULTS.items():
        if column not in frame:
            frame[column] = default
        frame[column] = frame[column].fillna(default)
    missing = [c for c in COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"results rows lack required column(s) {missing}")
    extra = [c for c in frame.columns if c not in COLUMNS]
    if extra:
        raise ValueError(f"results rows have unknown column(s) {extra}; allowed: {list(COLUMNS)}")
    for column in _INT_COLUMNS:
        frame[column] = frame[column].astype("int64")
    for column in _BOOL_COLUMNS:
        frame[column] = _as_bool(frame[column], column)
    frame["value"] = frame["value"].astype("float64")
    for column in COLUMNS:
        if column not in _INT_COLUMNS and column not in _BOOL_COLUMNS and column != "value":
            frame[column] = frame[column].astype(str)
    unset = frame["mode"].isin(["", "nan", "None"])
    if unset.any():
        frame.loc[unset, "mode"] = [derive_mode(m, p) for m, p in zip(frame.loc[unset, "method"], frame.loc[unset, "prompt"])]
    return frame[list(COLUMNS)]


def _as_bool(column: pd.Series, name: str) -> pd.Series:
    """A True/False column; refuses anything else (``astype(bool)`` would read "False" as True)."""
    if pd.api.types.is_bool_dtype(column):
        return column
    ok = column.map(lambda v: isinstance(v, (bool, np.bool_)) or (isinstance(v, (int, np.integer)) and v in (0, 1)))
    if not ok.all():
        found = column[~ok].unique()[:5].tolist()
        raise ValueError(f"results column {name!r} must hold True/False, found {found}")
    return column.astype(bool)


def write_results(frame: pd.DataFrame | Iterable[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Validate and write results to Parquet atomically (a temporary file, then a rename).

    A failure while writing leaves any previous file at ``path`` untouched.
    """
    if not isinstance(frame, pd.DataFrame):
        frame = to_frame(frame)
    else:
        frame = to_frame(frame.to_dict("records"))
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path


def read_results(*paths: str | os.PathLike) -> pd.DataFrame:
    """Read and concatenate results files (or every ``*.parquet`` under a directory)."""
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(p.rglob("*.parquet")))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"results file or directory not found: {p}")
    if not files:
        return to_frame([])
    frames = []
    for f in files:
        try:
            frames.append(pd.read_parquet(f))
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise ValueError(f"cannot read results file {f}: {exc}") from exc
    return to_frame(pd.concat(frames, ignore_index=True).to_dict("records"))
