"""Label checks shared by every reader: stored values to uint8 labels, volume content, mask rules.

Why one place: a label that is silently cast (0.5 -> 0, 254 -> gland or not?)
invents a wrong segmentation, so every format goes through the same refusals.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from samlab.data.readers.base import DataValidationError, MaskRule, Volume

__all__ = ["as_label_array", "mask_labels", "validate_volume"]


def as_label_array(array: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    """Convert a stored label array to uint8, refusing anything that is not a label.

    Why: some real files store labels as float32 (case 003 of the MSD hippocampus
    set). Integral floats (0.0, 1.0, 2.0) are labels; 0.5 or NaN are not, and a
    silent cast would invent a wrong segmentation.
    """
    arr = np.asarray(array)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise DataValidationError(path, f"label array holds {int((~np.isfinite(arr)).sum())} NaN/inf values")
        frac = arr != np.round(arr)
        if frac.any():
            bad = np.unique(arr[frac])[:5]
            raise DataValidationError(
                path, f"label array (dtype {arr.dtype}) holds {int(frac.sum())} non-integral values, e.g. {bad.tolist()}"
            )
    elif not np.issubdtype(arr.dtype, np.integer):
        raise DataValidationError(path, f"label array has unsupported dtype {arr.dtype}")
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi > 255:
            raise DataValidationError(path, f"label values span [{lo}, {hi}], outside uint8 (0..255)")
    return arr.astype(np.uint8)


def validate_volume(volume: Volume, *, allow_empty: bool = False) -> Volume:
    """Check the content of a volume; return it unchanged or raise naming the file.

    Checks: image and labels have the same 3D shape; intensities are finite; the
    image is not constant (min-max normalisation would divide by zero); every
    label value is in the label map; unless ``allow_empty``, at least one
    foreground voxel exists (an empty case has nothing to prompt or score).
    """
    img_path = volume.path
    lab_path = volume.label_path or volume.path
    if volume.image.ndim != 3:
        raise DataValidationError(img_path, f"image must be 3D (z, y, x), got shape {volume.image.shape}")
    if volume.image.shape != volume.labels.shape:
        raise DataValidationError(
            lab_path, f"label shape {volume.labels.shape} differs from image shape {volume.image.shape} ({img_path})"
        )
    if volume.image.size == 0:
        raise DataValidationError(img_path, f"image is empty (shape {volume.image.shape})")
    finite = np.isfinite(volume.image)
    if not finite.all():
        n_nan = int(np.isnan(volume.image).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise DataValidationError(img_path, f"image holds {n_nan} NaN and {n_inf} inf intensities")
    lo, hi = float(volume.image.min()), float(volume.image.max())
    if lo == hi:
        raise DataValidationError(img_path, f"image is constant (every voxel = {lo}); nothing to normalise")
    values, counts = np.unique(volume.labels, return_counts=True)
    known = set(volume.label_map.values())
    unknown = {int(v): int(c) for v, c in zip(values, counts) if int(v) not in known}
    if unknown:
        raise DataValidationError(
            lab_path,
            f"label values {sorted(unknown)} (voxel counts {unknown}) are not in the label map {volume.label_map}",
        )
    if not allow_empty and not (volume.labels > 0).any():
        raise DataValidationError(lab_path, "label volume is empty (no foreground voxel)")
    return volume


def mask_labels(raw: np.ndarray, rule: MaskRule, label_map: Mapping[str, int] | None, path: Path,
                foreground_name: str) -> tuple[np.ndarray, dict[str, int]]:
    """A 2D mask as labels under ``rule`` (see :data:`MaskRule`), with the label map that names them."""
    raw = as_label_array(raw, path)
    if rule == "single":
        values = sorted(int(v) for v in np.unique(raw) if v != 0)
        if len(values) > 1:
            raise DataValidationError(
                path, f"mask holds {len(values)} non-zero values {values[:10]}: which structure is which? -- set "
                "mask_rule='nonzero' to merge them into one foreground, or mask_rule='labels' with a label_map")
        return (raw > 0).astype(np.uint8), {"background": 0, foreground_name: 1}
    if rule == "nonzero":
        return (raw > 0).astype(np.uint8), {"background": 0, foreground_name: 1}
    if rule == "labels":
        if label_map is None:
            raise ValueError(f"{path}: mask_rule='labels' needs a label_map (e.g. {{'background': 0, 'gland': 255}})")
        known = set(label_map.values())
        present = set(np.unique(raw).tolist())
        unknown = sorted(present - known)
        if unknown:
            raise DataValidationError(path, f"mask values {unknown} are not in the label map {dict(label_map)}")
        return raw, dict(label_map)
    raise ValueError(f"mask_rule must be 'single', 'nonzero' or 'labels', got {rule!r}")
