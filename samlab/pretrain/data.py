"""Unlabelled 2D slices for phase-1 pre-training: from curated volumes (labels unused) and image-only folders.

Why a module of its own: self-supervised pre-training reads *images only*. Curated volumes come with
labels, which must never reach the MAE objective; image-only folders (scans nobody annotated) have
none. Both end up as the same :class:`UnlabelledSlice` list, with blank slices removed as the
18-configuration study does (§4.3.1: "Blank slices were further removed since they were not
informative for the reconstruction task").
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: Image-only file types :func:`read_image_folder` reads.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy", ".nii", ".nii.gz")


@dataclass(frozen=True)
class UnlabelledSlice:
    """One 2D image (H, W), float, and where it came from (case or file, slice index)."""

    source: str
    z: int
    image: np.ndarray


def is_blank(image: np.ndarray, min_foreground: float = 0.05) -> bool:
    """A slice is blank when fewer than ``min_foreground`` of its pixels lie above its minimum (air, padding)."""
    image = np.asarray(image)
    if image.size == 0 or not np.isfinite(image).all():
        return True
    return float((image > image.min()).mean()) < min_foreground


def slices_from_cases(cases: Sequence[Any], min_foreground: float = 0.05) -> list[UnlabelledSlice]:
    """Every non-blank slice of curated volumes (``case.image`` (Z, H, W)); ``case.labels`` is never read."""
    out = []
    for case in cases:
        image = np.asarray(case.image)
        out += [UnlabelledSlice(str(case.case_id), z, image[z]) for z in range(image.shape[0])
                if not is_blank(image[z], min_foreground)]
    return out


def _percentile_clip(volume: np.ndarray) -> np.ndarray:
    """MedSAM's MR rule for raw scans: clip to the 0.5/99.5 percentiles of the non-zero voxels, then 0-1."""
    values = volume[volume != 0]
    if values.size == 0:
        return np.zeros_like(volume, dtype=np.float32)
    low, high = np.percentile(values, [0.5, 99.5])
    scale = max(float(high - low), 1e-8)
    return ((np.clip(volume, low, high) - low) / scale).astype(np.float32)


def _read_file(path: Path) -> np.ndarray:
    """(Z, H, W) float array of one image file; a clear error names the file otherwise."""
    name = path.name.lower()
    try:
        if name.endswith((".png", ".jpg", ".jpeg")):
            from PIL import Image

            with Image.open(path) as img:
                return np.asarray(img.convert("L"), dtype=np.float32)[None]
        if name.endswith(".npy"):
            array = np.load(path, allow_pickle=False)
        else:
            import SimpleITK as sitk

            array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except Exception as exc:  # PIL, numpy and SimpleITK raise different types for broken files
        raise ValueError(f"{path}: cannot read this image file ({type(exc).__name__}: {exc})") from exc
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a 2D image or a 3D volume, got an array of shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{path}: holds NaN or infinite values")
    return _percentile_clip(array) if name.endswith((".nii", ".nii.gz", ".npy")) else array


def read_image_folder(folder: str | os.PathLike, min_foreground: float = 0.05,
                      max_files: int | None = None) -> list[UnlabelledSlice]:
    """Non-blank 2D slices of every image file in ``folder`` (recursively): PNG/JPEG, ``.npy``, NIfTI.

    Volumes are cut along their first array axis (SimpleITK's z); raw volumes are clipped to the
    0.5/99.5 percentiles of their non-zero voxels. A missing folder, a folder without images, or an
    unreadable file is an error naming it.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found -- check `extra_image_dirs`")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    out = []
    for path in files[:max_files]:
        volume = _read_file(path)
        rel = str(path.relative_to(folder))
        out += [UnlabelledSlice(rel, z, volume[z]) for z in range(volume.shape[0])
                if not is_blank(volume[z], min_foreground)]
    return out


def subsample(slices: Sequence[UnlabelledSlice], max_slices: int | None, seed: int = 0) -> list[UnlabelledSlice]:
    """A seeded subsample (in the original order), or all slices."""
    if max_slices is None or max_slices >= len(slices):
        return list(slices)
    keep = sorted(np.random.default_rng(seed).choice(len(slices), size=max_slices, replace=False).tolist())
    return [slices[i] for i in keep]
