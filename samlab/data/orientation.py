"""Volume orientation before slicing: ``as_stored`` (default), ``RAS`` or ``LPS``.

Why a setting: SAM-family models are not orientation-invariant. The same
volume fed as stored and re-oriented to RAS moves LiteMedSAM's per-case Dice by
up to 0.08 (issue 21), so the orientation the slices were cut in is part of the
result and is recorded in the manifest and the run's dataset record.

``as_stored`` keeps the voxel array exactly as SimpleITK returns it (array order
``(z, y, x)``, never canonicalised). This is today's behaviour and MedSAM's own
convention: its preprocessing reads NIfTI with SimpleITK and slices the array as
stored. ``RAS`` / ``LPS`` re-orient image and label together with SimpleITK's
``DICOMOrient`` (a permutation and flips of the axes, no interpolation), so that
increasing x, y, z index walks towards the named directions in ITK's convention
(``LPS``: identity direction; ``RAS``: x and y flipped relative to ``LPS``).
Spacing, origin and direction are updated to the new grid.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Literal, get_args

import numpy as np

from samlab.data.readers import Volume

__all__ = ["Orientation", "ORIENTATIONS", "reorient_array", "reorient_volume"]

Orientation = Literal["as_stored", "RAS", "LPS"]
ORIENTATIONS: tuple[str, ...] = get_args(Orientation)


def _check(orientation: str) -> None:
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")


def _as_image(array: np.ndarray, spacing_zyx, origin, direction):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    img.SetSpacing(tuple(float(s) for s in reversed(tuple(spacing_zyx))))
    if origin is not None:
        img.SetOrigin(tuple(float(v) for v in origin))
    if direction is not None:
        img.SetDirection(tuple(float(v) for v in direction))
    return img


def reorient_array(array: np.ndarray, spacing_zyx, origin, direction, orientation: str):
    """Re-orient one ``(z, y, x)`` array; returns ``(array, spacing_zyx, origin, direction)``."""
    _check(orientation)
    if orientation == "as_stored":
        return array, tuple(spacing_zyx), origin, direction
    import SimpleITK as sitk

    out = sitk.DICOMOrient(_as_image(array, spacing_zyx, origin, direction), orientation)
    return (sitk.GetArrayFromImage(out).astype(array.dtype, copy=False),
            tuple(float(s) for s in reversed(out.GetSpacing())), tuple(out.GetOrigin()), tuple(out.GetDirection()))


def reorient_volume(volume: Volume, orientation: Orientation | str = "as_stored") -> Volume:
    """Image and labels of ``volume`` re-oriented together (``as_stored``: the volume itself, unchanged)."""
    _check(orientation)
    if orientation == "as_stored":
        return volume
    image, spacing, origin, direction = reorient_array(volume.image, volume.spacing, volume.origin, volume.direction,
                                                       orientation)
    labels, *_ = reorient_array(volume.labels, volume.spacing, volume.origin, volume.direction, orientation)
    return replace(volume, image=image, labels=labels, spacing=spacing, origin=origin, direction=direction)
