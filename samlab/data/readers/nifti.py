"""NIfTI (and any format SimpleITK reads): one image/label pair into a :class:`Volume`.

Spacing, origin and direction come from the file header via SimpleITK, in
SimpleITK's ``(z, y, x)`` array order (MedSAM's own preprocessing convention);
nibabel guards the read against what SimpleITK silently hides (NaN/inf, truncation).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping

import numpy as np

from samlab.data.readers.base import DataValidationError, Volume, strip_ending
from samlab.data.readers.labels import as_label_array, validate_volume

__all__ = ["read_nifti_case"]

_SPACING_RTOL = 1e-4  # relative tolerance when comparing image and label spacing
_GEOMETRY_ATOL = 1e-3  # absolute tolerance (mm / cosines) for origin and direction


def _read_itk(path: Path):
    """Read one image with SimpleITK, turning its errors into a message naming the file."""
    import SimpleITK as sitk

    if not path.is_file():
        raise DataValidationError(path, "file not found")
    if path.stat().st_size == 0:
        raise DataValidationError(path, "file is empty (0 bytes)")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as err:  # SimpleITK reports corrupt/truncated files as RuntimeError
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise DataValidationError(path, f"cannot be read as an image (corrupt or truncated file?): {first}") from err


def _nifti_nonfinite(path: Path) -> tuple[int, int]:
    """Integrity pass over a NIfTI file with nibabel: (NaN count, inf count).

    Why a second reader: SimpleITK's NIfTI reader silently turns NaN/inf into 0
    and zero-fills a truncated ``.nii.gz``; both would enter the study as
    plausible-looking data. nibabel reads the stored values and fails on a
    truncated stream, so it guards the SimpleITK read.
    """
    import nibabel as nib

    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return 0, 0
    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except (EOFError, OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise DataValidationError(path, f"cannot be read as NIfTI (corrupt or truncated file?): {err}") from err
    if not np.issubdtype(data.dtype, np.floating):
        return 0, 0
    return int(np.isnan(data).sum()), int(np.isinf(data).sum())


def _itk_geometry(img) -> tuple[tuple[float, float, float], tuple[float, ...], tuple[float, ...]]:
    """Spacing (sz, sy, sx), origin and direction of a 3D (or the first 3 axes of a 4D) image."""
    spacing = tuple(float(s) for s in img.GetSpacing())
    origin = tuple(float(o) for o in img.GetOrigin())
    direction = tuple(float(d) for d in img.GetDirection())
    dim = img.GetDimension()
    if dim == 4:  # keep the spatial 3x3 block of the 4x4 direction matrix
        d4 = np.asarray(direction).reshape(4, 4)
        direction = tuple(float(d) for d in d4[:3, :3].ravel())
        origin = origin[:3]
    # NIfTI stores spacing as float32: 1.2 reads back as 1.2000000476837158. Keep the
    # shortest decimal that is the same float32 (1.2), so manifests and comparisons stay clean.
    sx, sy, sz = (float(str(np.float32(s))) for s in spacing[:3])
    return (sz, sy, sx), origin, direction


def _channel_array(img, path: Path, channel: int) -> np.ndarray:
    """Array of one channel as ``(z, y, x)``; 4D MSD files store channels first."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(img)
    if img.GetNumberOfComponentsPerPixel() > 1:  # vector pixel: (z, y, x, c)
        if arr.ndim != 4 or not 0 <= channel < arr.shape[-1]:
            raise DataValidationError(path, f"no channel {channel} in vector image of shape {arr.shape}")
        arr = arr[..., channel]
    elif arr.ndim == 4:  # 4D NIfTI, e.g. MSD prostate (T2, ADC): (c, z, y, x)
        if not 0 <= channel < arr.shape[0]:
            raise DataValidationError(path, f"no channel {channel} in 4D image with {arr.shape[0]} channels")
        arr = arr[channel]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DataValidationError(path, f"expected a 3D image, got array shape {arr.shape}")
    return arr


def read_nifti_case(
    image_path: str | Path,
    label_path: str | Path,
    label_map: Mapping[str, int],
    case_id: str | None = None,
    *,
    channel: int = 0,
    validate: bool = True,
    allow_empty: bool = False,
) -> Volume:
    """Read one image/label pair (any format SimpleITK reads) into a :class:`Volume`.

    Spacing comes from the file header. Image and label geometry must agree:
    shape and spacing mismatches raise (a label drawn on another grid would score
    against the wrong voxels); origin/direction mismatches only warn, as nnU-Net
    does, because rounding in converters commonly produces them.
    """
    image_path, label_path = Path(image_path), Path(label_path)
    img = _read_itk(image_path)
    lab = _read_itk(label_path)
    n_nan, n_inf = _nifti_nonfinite(image_path)
    if n_nan or n_inf:
        raise DataValidationError(image_path, f"image holds {n_nan} NaN and {n_inf} inf intensities")
    n_nan, n_inf = _nifti_nonfinite(label_path)
    if n_nan or n_inf:
        raise DataValidationError(label_path, f"label array holds {n_nan + n_inf} NaN/inf values")
    image = _channel_array(img, image_path, channel).astype(np.float32, copy=False)
    labels_raw = _channel_array(lab, label_path, 0)
    spacing, origin, direction = _itk_geometry(img)
    lab_spacing, lab_origin, lab_direction = _itk_geometry(lab)
    if labels_raw.shape != image.shape:
        raise DataValidationError(
            label_path, f"label shape {labels_raw.shape} differs from image shape {image.shape} ({image_path})"
        )
    if not np.allclose(spacing, lab_spacing, rtol=_SPACING_RTOL, atol=0):
        raise DataValidationError(
            label_path, f"label spacing {lab_spacing} differs from image spacing {spacing} ({image_path}), as (sz, sy, sx) mm"
        )
    if not (
        np.allclose(origin, lab_origin, atol=_GEOMETRY_ATOL) and np.allclose(direction, lab_direction, atol=_GEOMETRY_ATOL)
    ):
        warnings.warn(f"{label_path}: origin/direction differ from {image_path}; using the image's geometry", stacklevel=2)
    labels = as_label_array(labels_raw, label_path)
    vol = Volume(
        case_id=case_id or strip_ending(label_path.name),
        image=image,
        labels=labels,
        spacing=spacing,
        label_map=dict(label_map),
        path=image_path,
        label_path=label_path,
        origin=origin,
        direction=direction,
    )
    return validate_volume(vol, allow_empty=allow_empty) if validate else vol
