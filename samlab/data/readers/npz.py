"""MedSAM-style ``.npz`` archives (``imgs``/``gts``, or ``image``/``mask``): a 3D :class:`Volume` or a 2D :class:`Slice2D`.

MedSAM's own tooling exchanges preprocessed cases this way; reading them lets a
study start from MedSAM's files. Loaded with ``allow_pickle=False``: an archive
never executes code.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from samlab.data.readers.base import SLICE_SUFFIX, DataValidationError, MaskRule, Slice2D, Volume
from samlab.data.readers.labels import as_label_array, mask_labels, validate_volume

__all__ = ["read_npz"]

_NPZ_IMAGE_KEYS = ("imgs", "image", "img")
_NPZ_MASK_KEYS = ("gts", "mask", "gt", "label")


def _first_key(npz: Mapping[str, np.ndarray], keys: Iterable[str], path: Path, what: str) -> np.ndarray:
    for key in keys:
        if key in npz:
            return np.asarray(npz[key])
    raise DataValidationError(path, f"no {what} array; expected one of {list(keys)}, found {list(npz)}")


def read_npz(
    path: str | Path,
    *,
    label_map: Mapping[str, int] | None = None,
    subject: str | None = None,
    mask_rule: MaskRule = "labels",
) -> Volume | Slice2D:
    """Read a MedSAM-style ``.npz`` (``imgs``/``gts``, or ``image``/``mask``).

    3D arrays ``(z, y, x)`` give a :class:`Volume` (spacing from a ``spacing``
    entry in SimpleITK order ``(sx, sy, sz)`` as MedSAM writes it; 1 mm with a
    warning when absent); 2D ``(y, x)`` or ``(y, x, 3)`` give a :class:`Slice2D`.
    Loaded with ``allow_pickle=False``: an archive never executes code.
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(path, "file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError) as err:
        raise DataValidationError(path, f"cannot be read as .npz (corrupt, or holds pickled objects): {err}") from err
    image = _first_key(data, _NPZ_IMAGE_KEYS, path, "image").astype(np.float32)
    raw_mask = _first_key(data, _NPZ_MASK_KEYS, path, "mask")
    case_id = path.stem
    is_2d = image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3 and raw_mask.ndim == 2)
    if is_2d:
        if raw_mask.shape != image.shape[:2]:
            raise DataValidationError(path, f"mask shape {raw_mask.shape} differs from image shape {image.shape[:2]}")
        mask, lmap = mask_labels(raw_mask, mask_rule, label_map or _default_map(raw_mask), path, "foreground")
        if not np.isfinite(image).all():
            raise DataValidationError(path, "image holds NaN/inf intensities")
        m = SLICE_SUFFIX.search(case_id)
        return Slice2D(case_id, subject or case_id, image, mask, lmap, path, path, int(m.group(1)) if m else -1)
    if image.ndim != 3:
        raise DataValidationError(path, f"image must be (y, x), (y, x, 3) or (z, y, x); got {image.shape}")
    if raw_mask.shape != image.shape:
        raise DataValidationError(path, f"mask shape {raw_mask.shape} differs from image shape {image.shape}")
    if "spacing" in data:
        sp = np.asarray(data["spacing"], dtype=float).ravel()
        if sp.size != 3:
            raise DataValidationError(path, f"spacing must have 3 values, got {sp.tolist()}")
        spacing = (float(sp[2]), float(sp[1]), float(sp[0]))
    else:
        warnings.warn(f"{path}: no 'spacing' entry; assuming 1 mm isotropic", stacklevel=2)
        spacing = (1.0, 1.0, 1.0)
    labels = as_label_array(raw_mask, path)
    lmap = dict(label_map) if label_map is not None else _default_map(labels)
    vol = Volume(case_id, image, labels, spacing, lmap, path, path)
    return validate_volume(vol, allow_empty=True)


def _default_map(mask: np.ndarray) -> dict[str, int]:
    """A label map naming each stored value, for archives that carry no map."""
    values = sorted({0, *np.unique(mask).astype(int).tolist()})
    return {("background" if v == 0 else f"label_{v}"): v for v in values}
