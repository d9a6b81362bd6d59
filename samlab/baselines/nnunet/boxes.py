"""Box prompts from nnU-Net's predictions (the "nnU-Net" box columns of notebook 02), and their CSV file.

Why from predictions: the pelvic study prompts MedSAM with boxes drawn around a
trained network's output, an average-case prompt, beside boxes from the ground
truth. The boxes use :mod:`samlab.prompts`' own rules so they are exactly the
boxes notebook 02 would draw around these masks.

The file's coordinates are those of the prediction files, i.e. the *stored* orientation
(nnU-Net trains and predicts on the files as stored). Notebook 02 does not read this file: it
draws its boxes from the predictions re-oriented as the run's cases
(:meth:`samlab.workspace.RunDir.nnunet_predictions`), so its nnU-Net boxes are right for any
curation ``orientation``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from samlab.baselines.nnunet.layout import read_label_file
from samlab.io import write_text_atomic

__all__ = ["BOX_COLUMNS", "boxes_from_label_volume", "derive_boxes", "load_boxes", "write_boxes"]

#: Columns of ``nnunet_boxes.csv``. ``component`` is -1 for the whole-structure box,
#: else the index of a connected component on that slice (raster order of first pixel);
#: ``n_pixels`` is the area the box was derived from (lets callers drop specks).
BOX_COLUMNS: tuple[str, ...] = ("case_id", "slice", "structure", "component", "x0", "y0", "x1", "y1", "n_pixels")


def boxes_from_label_volume(
    labels: np.ndarray,
    structures: Mapping[str, Sequence[int]],
    case_id: str,
    min_component_pixels: int = 1,
) -> list[dict[str, Any]]:
    """Per axial slice and structure: the whole-structure box and one box per connected component.

    Uses :mod:`samlab.prompts` (the zero-shot code's own box rules) so the file
    holds exactly the boxes notebook 02 would derive from these predictions:
    ``(x0, y0, x1, y1)`` inclusive pixel coordinates of the ``(y, x)`` slice,
    8-connected components numbered largest first. Components smaller than
    ``min_component_pixels`` get no box of their own (they still count for the
    whole-structure box).
    """
    from samlab import prompts

    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels of {case_id} must be a 3D (z, y, x) volume, got shape {labels.shape}")
    rows: list[dict[str, Any]] = []
    for structure, values in structures.items():
        mask3d = np.isin(labels, np.asarray(list(values)))
        for z in np.flatnonzero(mask3d.any(axis=(1, 2))):
            mask = mask3d[z]
            base = {"case_id": case_id, "slice": int(z), "structure": structure}
            boxes = [(-1, prompts.box_from_mask(mask), int(mask.sum()))]
            components = prompts.connected_components(mask, min_pixels=min_component_pixels)
            boxes += [(k, prompts.box_from_mask(c), int(c.sum())) for k, c in enumerate(components)]
            for component, box, n_pixels in boxes:
                x0, y0, x1, y1 = (int(round(float(v))) for v in box)
                rows.append({**base, "component": component, "x0": x0, "y0": y0, "x1": x1, "y1": y1,
                             "n_pixels": n_pixels})
    return rows


def derive_boxes(
    predictions_dir: str | os.PathLike,
    structures: Mapping[str, Sequence[int]],
    case_ids: Sequence[str] | None = None,
    file_ending: str = ".nii.gz",
    min_component_pixels: int = 1,
) -> pd.DataFrame:
    """Boxes (see :func:`boxes_from_label_volume`) for every predicted case in ``predictions_dir``."""
    pred_dir = Path(predictions_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"predictions folder not found: {pred_dir}")
    if case_ids is None:
        files = [p for p in pred_dir.glob(f"*{file_ending}") if not p.name.startswith(".")]
        case_ids = sorted(p.name[: -len(file_ending)] for p in files)
    if not case_ids:
        raise FileNotFoundError(f"no predictions '*{file_ending}' in {pred_dir}")
    rows: list[dict[str, Any]] = []
    for case in case_ids:
        labels, _ = read_label_file(pred_dir / f"{case}{file_ending}")
        rows.extend(boxes_from_label_volume(labels, structures, case, min_component_pixels))
    frame = pd.DataFrame(rows, columns=list(BOX_COLUMNS))
    return frame.astype({c: "int64" for c in BOX_COLUMNS if c not in ("case_id", "structure")})


def write_boxes(boxes: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a boxes table as CSV atomically (validated first)."""
    boxes = _validate_boxes(boxes, source="boxes")
    path = Path(path)
    write_text_atomic(path, boxes.to_csv(index=False))
    return path


def _validate_boxes(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = [c for c in BOX_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{source} lacks column(s) {missing}; expected {list(BOX_COLUMNS)}")
    frame = frame[list(BOX_COLUMNS)].copy()
    numeric = [c for c in BOX_COLUMNS if c not in ("case_id", "structure")]
    if frame[list(BOX_COLUMNS)].isna().any().any():
        raise ValueError(f"{source} has empty/NaN values")
    try:
        frame[numeric] = frame[numeric].astype("int64")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: columns {numeric} must be integers: {exc}") from exc
    frame["case_id"] = frame["case_id"].astype(str)
    frame["structure"] = frame["structure"].astype(str)
    bad = frame[(frame.x0 > frame.x1) | (frame.y0 > frame.y1) | (frame[["x0", "y0", "slice"]] < 0).any(axis=1)]
    if len(bad):
        raise ValueError(
            f"{source} has {len(bad)} invalid box(es) (x0>x1, y0>y1 or negative), first: {bad.iloc[0].to_dict()}"
        )
    if (frame.component < -1).any():
        raise ValueError(f"{source}: component must be -1 (whole structure) or a component index >= 0")
    return frame.reset_index(drop=True)


def load_boxes(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``nnunet_boxes.csv``: one row per box, columns :data:`BOX_COLUMNS`, inclusive pixel coordinates.

    ``component == -1`` selects the whole-structure box of a slice; ``>= 0`` the
    per-connected-component boxes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"boxes file not found: {path}")
    try:
        frame = pd.read_csv(path, dtype={"case_id": str, "structure": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read boxes file {path}: {exc}") from exc
    return _validate_boxes(frame, source=str(path))
