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

The eight in-plane dihedral transforms (:data:`INPLANE_TRANSFORMS`: identity, the three
rotations, the two flips and the two transposes) act on the last two axes of a slice
``(y, x)`` or a stack ``(..., y, x)``. They are what the orientation-sensitivity study
(:mod:`samlab.orientation_sensitivity`) feeds the model: the same anatomy, the same pixels,
only the in-plane orientation changed; each has an exact inverse (:func:`invert_inplane`).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Literal, get_args

import numpy as np

from samlab.data.readers import Volume

__all__ = ["Orientation", "ORIENTATIONS", "INPLANE_TRANSFORMS", "INPLANE_INVERSES", "apply_inplane", "invert_inplane",
           "reorient_array", "reorient_volume"]

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


# --------------------------------------------------------------------------- the 8 in-plane dihedral transforms

def _swap(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


#: name -> function on the last two axes ``(y, x)``. ``rot90`` turns counter-clockwise as :func:`numpy.rot90`;
#: ``flipud`` reverses y, ``fliplr`` x; ``transpose`` swaps y and x; ``antitranspose`` mirrors about the
#: anti-diagonal (transpose, then rotate by 180 degrees).
INPLANE_TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda a: a,
    "rot90": lambda a: np.rot90(a, 1, axes=(-2, -1)),
    "rot180": lambda a: np.rot90(a, 2, axes=(-2, -1)),
    "rot270": lambda a: np.rot90(a, 3, axes=(-2, -1)),
    "flipud": lambda a: np.flip(a, axis=-2),
    "fliplr": lambda a: np.flip(a, axis=-1),
    "transpose": _swap,
    "antitranspose": lambda a: np.rot90(_swap(a), 2, axes=(-2, -1)),
}

#: Each transform's inverse: the rotations undo each other, flips and transposes are their own inverse.
INPLANE_INVERSES: dict[str, str] = {"identity": "identity", "rot90": "rot270", "rot180": "rot180", "rot270": "rot90",
                                    "flipud": "flipud", "fliplr": "fliplr", "transpose": "transpose",
                                    "antitranspose": "antitranspose"}


def _transform(name: str) -> Callable[[np.ndarray], np.ndarray]:
    if name not in INPLANE_TRANSFORMS:
        raise ValueError(f"unknown in-plane transform {name!r}; use one of {list(INPLANE_TRANSFORMS)}")
    return INPLANE_TRANSFORMS[name]


def apply_inplane(name: str, array: np.ndarray) -> np.ndarray:
    """``array`` (a ``(y, x)`` slice or a ``(..., y, x)`` stack) under the named in-plane transform (a contiguous copy)."""
    return np.ascontiguousarray(_transform(name)(np.asarray(array)))


def invert_inplane(name: str, array: np.ndarray) -> np.ndarray:
    """Undo :func:`apply_inplane`: ``invert_inplane(t, apply_inplane(t, a))`` equals ``a`` exactly."""
    _transform(name)
    return apply_inplane(INPLANE_INVERSES[name], array)
