"""NIfTI (and any format SimpleITK reads): one image/label pair into a :class:`Volume`.

Spacing, origin and direction come from the file header via SimpleITK, in
SimpleITK's ``(z, y, x)`` array order (MedSAM's own preprocessing convention);
nibabel guards the read against what SimpleITK silently hides (NaN/inf, truncation).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from samlab.data.readers.base import DataValidationError, Volume, strip_ending
from samlab.data.readers.labels import as_label_array, validate_volume

__all__ = ["geometry_difference", "read_nifti_case"]

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


def _n_channels(img) -> int:
    """Channels stored in one file: vector components, or the 4th axis of a 4D image (MSD stores channels there)."""
    if img.GetNumberOfComponentsPerPixel() > 1:
        return int(img.GetNumberOfComponentsPerPixel())
    return int(img.GetSize()[3]) if img.GetDimension() == 4 else 1


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


def geometry_difference(image_geometry: tuple, label_geometry: tuple, *, spacing_rtol: float = _SPACING_RTOL,
                        atol: float = _GEOMETRY_ATOL) -> str | None:
    """How a label's (spacing, origin, direction) differs from its image's, or ``None`` if within tolerance.

    Why all three: a label mirrored through its affine has the same shape and spacing
    as its image but another origin or direction; scored voxel by voxel it would
    silently compare against the mirrored structure.
    """
    (sp, org, dirn), (lsp, lorg, ldirn) = image_geometry, label_geometry
    parts = []
    if not np.allclose(sp, lsp, rtol=spacing_rtol, atol=0):
        parts.append(f"spacing {tuple(lsp)} vs image {tuple(sp)} (sz, sy, sx) mm")
    if len(org) != len(lorg) or not np.allclose(org, lorg, atol=atol):
        parts.append(f"origin {tuple(round(v, 4) for v in lorg)} vs image {tuple(round(v, 4) for v in org)} mm")
    if len(dirn) != len(ldirn) or not np.allclose(dirn, ldirn, atol=atol):
        parts.append(f"direction {tuple(round(v, 4) for v in ldirn)} vs image {tuple(round(v, 4) for v in dirn)}")
    return "; ".join(parts) or None


def _resample_onto(lab, img):
    """The label resampled onto the image grid (nearest neighbour: labels stay labels)."""
    import SimpleITK as sitk

    ref = img
    if img.GetDimension() == 4:
        ref = sitk.Extract(img, list(img.GetSize()[:3]) + [0], [0, 0, 0, 0])
    elif img.GetNumberOfComponentsPerPixel() > 1:
        ref = sitk.VectorIndexSelectionCast(img, 0)
    return sitk.Resample(lab, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, lab.GetPixelID())


def read_nifti_case(
    image_path: str | Path,
    label_path: str | Path,
    label_map: Mapping[str, int],
    case_id: str | None = None,
    *,
    channel: int = 0,
    validate: bool = True,
    allow_empty: bool = False,
    resample_labels: bool = False,
    expected_channels: int | None = None,
) -> Volume:
    """Read one image/label pair (any format SimpleITK reads) into a :class:`Volume`.

    Spacing comes from the file header. Image and label geometry must agree within
    a tolerance: shape, spacing, origin and direction (a label drawn on another grid,
    or mirrored through its affine, would score against the wrong voxels). A
    mismatch is a :class:`DataValidationError` naming both files and the difference,
    unless ``resample_labels`` (an explicit opt-in) resamples the label onto the
    image grid with nearest-neighbour interpolation.

    ``expected_channels`` (from ``dataset.json``'s ``channel_names``) is checked against
    the channels this one file stores: a 4D or vector image where one channel is
    declared is an error naming the file as 4D, not a silently dropped channel.
    """
    image_path, label_path = Path(image_path), Path(label_path)
    img = _read_itk(image_path)
    lab = _read_itk(label_path)
    n_channels = _n_channels(img)
    if expected_channels is not None and n_channels != expected_channels:
        kind = f"a 4D image of size {tuple(img.GetSize())}" if img.GetDimension() == 4 else \
            f"a vector image with {n_channels} components"
        raise DataValidationError(
            image_path, f"is {kind} ({n_channels} channels) but dataset.json declares {expected_channels} channel(s) "
            "in channel_names -- store one channel per file (<case>_0000, _0001, ...) or fix channel_names")
    if _n_channels(lab) != 1:
        raise DataValidationError(label_path, f"label file holds {_n_channels(lab)} channels (size {tuple(lab.GetSize())}); "
                                  "a label map has one")
    n_nan, n_inf = _nifti_nonfinite(image_path)
    if n_nan or n_inf:
        raise DataValidationError(image_path, f"image holds {n_nan} NaN and {n_inf} inf intensities")
    n_nan, n_inf = _nifti_nonfinite(label_path)
    if n_nan or n_inf:
        raise DataValidationError(label_path, f"label array holds {n_nan + n_inf} NaN/inf values")
    image = _channel_array(img, image_path, channel).astype(np.float32, copy=False)
    spacing, origin, direction = _itk_geometry(img)
    lab_geometry = _itk_geometry(lab)
    size = tuple(int(v) for v in lab.GetSize())
    lab_shape = tuple(reversed(size[:3])) if len(size) >= 3 else (1, *reversed(size))
    difference = geometry_difference((spacing, origin, direction), lab_geometry)
    if lab_shape != image.shape and not resample_labels:
        raise DataValidationError(
            label_path, f"label shape {lab_shape} differs from image shape {image.shape} ({image_path})"
            + (f"; {difference}" if difference else "") + " -- fix the label file, or set resample_labels: true")
    if lab_shape != image.shape:
        difference = f"shape {lab_shape} vs image {image.shape}" + (f"; {difference}" if difference else "")
    if difference and not resample_labels:
        raise DataValidationError(
            label_path, f"label grid differs from its image {image_path}: {difference} -- fix the label file, or set "
            "resample_labels: true to resample labels onto the image grid (nearest neighbour)")
    if difference:
        lab = _resample_onto(lab, img)
    labels_raw = _channel_array(lab, label_path, 0)
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
