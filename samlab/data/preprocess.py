"""Preprocessing profiles of the two reproduced studies, and exact 3D <-> 2D slicing.

Why profiles named after the studies: the two papers prepare images differently
and a model only sees its published numbers with its own preparation.

* ``medsam`` -- the zero-shot pelvic study follows the MedSAM protocol: clip each
  volume to its 0.5th-99.5th intensity percentiles (of the non-zero voxels, as
  MedSAM's ``pre_CT_MR.py`` does; zero background stays zero), min-max to [0, 1],
  resize each slice to the model input (1024 for MedSAM: square, skimage bicubic
  with its default "reflect" border, as ``MedSAM_Inference.py``; 256 for
  LiteMedSAM: longest side to 256 with OpenCV ``INTER_AREA`` then zero-pad
  bottom/right, as ``CVPR24_LiteMedSAM_infer.py`` does), re-min-max each slice,
  and repeat the grey channel 3x. The predictor applies the same recipes to
  raw slices (:mod:`samlab.models.recipes`).
  (MedSAM stores the normalised volume as uint8, i.e. 256 grey levels; we keep
  float32, a difference below one grey level.)
* ``finetune_sam`` -- the 18-config study maps pixel values to 0-255, repeats
  them over 3 channels, upsamples to 1024 x 1024 and normalises with SAM's
  pixel mean/std (ImageNet statistics x 255). Masks are upsampled with nearest
  neighbour; images bilinearly as the released code does (``image_order=0``
  gives the paper text's nearest-neighbour upsampling of images too). For 8-bit
  PNG slices, which the released code feeds as stored (no stretching),
  ``get_profile("finetune_sam", intensity="as_is")`` keeps the stored 0-255 values.

Label cleaning follows the MedSAM protocol the pelvic study cites: connected
objects smaller than ``min_object_px`` pixels (100) are removed per slice
(8-connectivity, per label value, like ``cc3d.dust``), and slices without
foreground are dropped. Both are training-set criteria: never clean test labels.

Slicing remembers the case id, slice index, spacing and original shape of each
slice (:class:`SliceMeta`), so 2D predictions are recompiled into exactly the
3D grid they came from (:func:`stack_slices`), dropped empty slices included.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Literal, Sequence

import numpy as np
from scipy import ndimage

from samlab.data.readers import Volume

__all__ = [
    "SAM_PIXEL_MEAN",
    "SAM_PIXEL_STD",
    "Profile",
    "PROFILES",
    "get_profile",
    "clip_percentiles",
    "CT_WINDOWS",
    "INTENSITY_PROFILES",
    "otsu_foreground",
    "body_mask",
    "ct_window_range",
    "intensity_clip_range",
    "apply_intensity_profile",
    "minmax",
    "normalize_intensity",
    "remove_small_objects",
    "remove_small_objects_per_slice",
    "nonempty_slices",
    "SliceMeta",
    "VolumeSlice",
    "slice_volume",
    "stack_slices",
    "ResizeInfo",
    "PreparedSlice",
    "resize_nearest",
    "prepare_slice",
    "restore_mask",
    "iter_prepared_slices",
]

#: SAM's ``pixel_mean`` / ``pixel_std`` (segment_anything.modeling.Sam), on the 0-255 scale.
SAM_PIXEL_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
SAM_PIXEL_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Profile:
    """Every choice that turns a raw slice into a model input, in one named record."""

    name: str
    input_size: int
    intensity: Literal["percentile_minmax", "minmax_255", "as_is"]
    percentiles: tuple[float, float] = (0.5, 99.5)
    nonzero_only: bool = True  # percentiles over non-zero voxels (MedSAM) or over all
    resize: Literal["square", "longest_side_pad"] = "square"
    image_order: int = 3  # spline order for image resizing (0 nearest, 1 bilinear, 3 bicubic)
    #: image interpolation: skimage splines of ``image_order`` (MedSAM, finetune-SAM) or OpenCV area
    #: averaging (LiteMedSAM's CVPR24 inference script, ``cv2.INTER_AREA``)
    interpolation: Literal["skimage", "cv2_area"] = "skimage"
    skimage_mode: str = "edge"  # border mode of skimage's resize; MedSAM uses its default, "reflect"
    slice_minmax: bool = True  # re-min-max each resized slice to [0, 1] (MedSAM/LiteMedSAM)
    mean: tuple[float, float, float] | None = None  # subtracted after resizing (0-255 scale)
    std: tuple[float, float, float] | None = None
    channels: int = 3


#: The named profiles; :func:`get_profile` adapts ``input_size``.
PROFILES: dict[str, Profile] = {
    "medsam": Profile(name="medsam", input_size=1024, intensity="percentile_minmax", skimage_mode="reflect"),
    "finetune_sam": Profile(
        name="finetune_sam",
        input_size=1024,
        intensity="minmax_255",
        nonzero_only=False,
        image_order=1,
        slice_minmax=False,
        mean=SAM_PIXEL_MEAN,
        std=SAM_PIXEL_STD,
    ),
}


def get_profile(name: str, input_size: int | None = None, **overrides) -> Profile:
    """The named profile; ``input_size=256`` for ``medsam`` gives LiteMedSAM's longest-side + pad resize."""
    if name not in PROFILES:
        raise ValueError(f"unknown preprocessing profile {name!r}; choose one of {sorted(PROFILES)}")
    prof = PROFILES[name]
    if input_size is not None:
        if input_size < 1:
            raise ValueError(f"input_size must be a positive number of pixels, got {input_size}")
        changes: dict = {"input_size": int(input_size)}
        if name == "medsam" and input_size != 1024:  # LiteMedSAM's recipe (CVPR24_LiteMedSAM_infer.py)
            changes.update(resize="longest_side_pad", interpolation="cv2_area")
        prof = replace(prof, **changes)
    return replace(prof, **overrides) if overrides else prof


# --------------------------------------------------------------------------- intensity


def clip_percentiles(
    image: np.ndarray, lower: float = 0.5, upper: float = 99.5, *, nonzero_only: bool = True
) -> np.ndarray:
    """Clip to the [lower, upper] percentiles; with ``nonzero_only`` they are taken over voxels != 0.

    Why non-zero only: MR volumes are mostly zero-filled background; percentiles
    over all voxels would sit at 0 and clip nothing. MedSAM computes them this way.
    """
    if not 0 <= lower < upper <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got ({lower}, {upper})")
    arr = np.asarray(image, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("image holds NaN/inf intensities; validate the volume before normalising")
    sample = arr[arr != 0] if nonzero_only else arr.ravel()
    if sample.size == 0:
        return arr.copy()
    lo, hi = np.percentile(sample, [lower, upper])
    return np.clip(arr, lo, hi)


#: MedSAM's CT window presets (width, level) in HU: the windows its CT preprocessing uses per structure.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (400.0, 40.0),
    "lung": (1500.0, -160.0),
    "brain": (80.0, 40.0),
    "bone": (1800.0, 400.0),
}

#: Volume intensity profiles applied before slicing (``CurationParams.intensity``).
INTENSITY_PROFILES: tuple[str, ...] = ("percentile_nonzero", "percentile_foreground", "zscored", "ct_window")


def otsu_foreground(image: np.ndarray) -> np.ndarray:
    """Voxels above the Otsu threshold: the body/organ, without the dark air or zero fill around it."""
    from skimage.filters import threshold_otsu

    arr = np.asarray(image, dtype=np.float32)
    if float(arr.max()) <= float(arr.min()):
        return np.ones(arr.shape, dtype=bool)
    return arr > threshold_otsu(arr)


def body_mask(image: np.ndarray) -> np.ndarray:
    """Voxels that differ from the background constant (the most frequent value of the volume).

    Why the mode, not zero: a z-scored image's background is a constant negative
    value (81-86 % of voxels in a glioma set), which "non-zero" counts as tissue.
    """
    arr = np.asarray(image, dtype=np.float32)
    values, counts = np.unique(arr, return_counts=True)
    return arr != values[int(np.argmax(counts))]


def ct_window_range(window: str | Sequence[float]) -> tuple[float, float]:
    """``[low, high]`` in HU of a named MedSAM CT preset (``soft_tissue``, ``lung``, ``brain``, ``bone``)
    or of an explicit ``[low, high]`` pair."""
    if isinstance(window, str):
        if window not in CT_WINDOWS:
            raise ValueError(f"unknown CT window {window!r}; presets: {', '.join(CT_WINDOWS)} or an explicit [low, high]")
        width, level = CT_WINDOWS[window]
        return level - width / 2, level + width / 2
    low, high = (float(v) for v in window)
    if not low < high:
        raise ValueError(f"CT window [low, high] needs low < high, got {list(window)}")
    return low, high


def intensity_clip_range(
    image: np.ndarray, profile: str = "percentile_nonzero", *, window: str | Sequence[float] | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> tuple[float, float]:
    """The ``(low, high)`` a volume is clipped to under an intensity profile.

    * ``percentile_nonzero`` -- percentiles of the voxels != 0 (MedSAM's MR rule; today's default);
    * ``percentile_foreground`` -- percentiles inside an Otsu foreground mask;
    * ``zscored`` -- already-normalised input: percentiles inside the body mask
      (voxels != the background constant), so the background does not pull the upper clip down;
    * ``ct_window`` -- a fixed HU window (:data:`CT_WINDOWS` name or ``[low, high]``), as MedSAM's CT preprocessing.
    """
    arr = np.asarray(image, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("image holds NaN/inf intensities; validate the volume before normalising")
    if profile == "ct_window":
        if window is None:
            raise ValueError("intensity 'ct_window' needs a window: a preset name or [low, high]")
        return ct_window_range(window)
    if profile == "percentile_nonzero":
        sample = arr[arr != 0]
    elif profile == "percentile_foreground":
        sample = arr[otsu_foreground(arr)]
    elif profile == "zscored":
        sample = arr[body_mask(arr)]
    else:
        raise ValueError(f"unknown intensity profile {profile!r}; expected one of {INTENSITY_PROFILES}")
    if sample.size == 0:
        return float(arr.min()), float(arr.max())
    lo, hi = np.percentile(sample, list(percentiles))
    return float(lo), float(hi)


def apply_intensity_profile(
    image: np.ndarray, profile: str = "percentile_nonzero", *, window: str | Sequence[float] | None = None,
) -> np.ndarray:
    """Clip a whole volume under an intensity profile (float32); the model's own min-max follows per slice."""
    lo, hi = intensity_clip_range(image, profile, window=window)
    return np.clip(np.asarray(image, dtype=np.float32), lo, hi)


def minmax(image: np.ndarray, out_max: float = 1.0) -> np.ndarray:
    """Scale to [0, out_max]; a constant image maps to zeros instead of dividing by zero."""
    arr = np.asarray(image, dtype=np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros_like(arr)
    return ((arr - lo) / (hi - lo) * out_max).astype(np.float32)


def normalize_intensity(image: np.ndarray, profile: Profile) -> np.ndarray:
    """Apply the profile's intensity step to a whole volume (3D) or one slice (2D).

    ``medsam``: percentile clip then min-max to [0, 1]; voxels that were exactly 0
    stay 0 when ``nonzero_only`` (as MedSAM). ``finetune_sam``: min-max to [0, 255]
    (``intensity="as_is"``: values already on the model's scale, kept unchanged).
    Apply it per volume for 3D data (one intensity scale for all slices of a
    case), per image for 2D data.
    """
    arr = np.asarray(image, dtype=np.float32)
    if profile.intensity == "percentile_minmax":
        lo, hi = profile.percentiles
        out = minmax(clip_percentiles(arr, lo, hi, nonzero_only=profile.nonzero_only), 1.0)
        if profile.nonzero_only:
            out[arr == 0] = 0.0
        return out
    if not np.isfinite(arr).all():
        raise ValueError("image holds NaN/inf intensities; validate the volume before normalising")
    if profile.intensity == "minmax_255":
        return minmax(arr, 255.0)
    if profile.intensity == "as_is":
        return arr.copy()
    raise ValueError(f"unknown intensity mode {profile.intensity!r}")


# --------------------------------------------------------------------------- labels

_CONNECTIVITY_2D = {4: ndimage.generate_binary_structure(2, 1), 8: ndimage.generate_binary_structure(2, 2)}


def remove_small_objects(labels2d: np.ndarray, min_px: int = 100, connectivity: Literal[4, 8] = 8) -> np.ndarray:
    """Remove connected objects with fewer than ``min_px`` pixels from one 2D label map.

    Components are found per label value (touching objects of different labels are
    separate objects), as ``cc3d.dust(threshold=min_px, connectivity=8)`` in
    MedSAM's preprocessing. Removed pixels become background (0).
    """
    lab = np.asarray(labels2d)
    if lab.ndim != 2:
        raise ValueError(f"remove_small_objects expects a 2D label map, got shape {lab.shape}")
    if min_px < 0:
        raise ValueError(f"min_px must be >= 0, got {min_px}")
    if connectivity not in _CONNECTIVITY_2D:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    out = lab.copy()
    if min_px <= 1:
        return out
    for value in np.unique(lab):
        if value == 0:
            continue
        comp, n = ndimage.label(lab == value, structure=_CONNECTIVITY_2D[connectivity])
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        small = sizes < min_px
        small[0] = False
        if small.any():
            out[small[comp]] = 0
    return out


def remove_small_objects_per_slice(labels3d: np.ndarray, min_px: int = 100, connectivity: Literal[4, 8] = 8) -> np.ndarray:
    """:func:`remove_small_objects` on every z-slice of a ``(z, y, x)`` label volume."""
    lab = np.asarray(labels3d)
    if lab.ndim != 3:
        raise ValueError(f"expected a 3D (z, y, x) label volume, got shape {lab.shape}")
    return np.stack([remove_small_objects(s, min_px, connectivity) for s in lab]) if lab.shape[0] else lab.copy()


def nonempty_slices(labels3d: np.ndarray) -> np.ndarray:
    """Indices of the z-slices that hold at least one foreground voxel."""
    lab = np.asarray(labels3d)
    if lab.ndim != 3:
        raise ValueError(f"expected a 3D (z, y, x) label volume, got shape {lab.shape}")
    return np.flatnonzero(lab.reshape(lab.shape[0], -1).any(axis=1))


# --------------------------------------------------------------------------- 3D <-> 2D


@dataclass(frozen=True)
class SliceMeta:
    """Where a 2D slice came from: enough to put a 2D prediction back into 3D exactly."""

    case_id: str
    slice_index: int
    spacing: tuple[float, float, float]  # (sz, sy, sx) of the source volume, mm
    volume_shape: tuple[int, int, int]  # (z, y, x) of the source volume

    @property
    def plane_shape(self) -> tuple[int, int]:
        return self.volume_shape[1], self.volume_shape[2]

    @property
    def plane_spacing(self) -> tuple[float, float]:
        """In-plane (sy, sx) spacing, for 2D metrics in millimetres."""
        return self.spacing[1], self.spacing[2]


@dataclass(frozen=True, eq=False)  # arrays inside: compare fields explicitly
class VolumeSlice:
    """One z-slice of a volume: ``image`` and ``labels`` are ``(y, x)``."""

    meta: SliceMeta
    image: np.ndarray
    labels: np.ndarray


def slice_volume(
    volume: Volume,
    *,
    drop_empty: bool = False,
    min_object_px: int = 0,
    image: np.ndarray | None = None,
) -> list[VolumeSlice]:
    """Cut a volume into its z-slices, remembering where each came from.

    ``min_object_px > 0`` first removes small objects per slice; ``drop_empty``
    then keeps only slices with foreground (the study's training-set criteria).
    ``image`` replaces ``volume.image`` (e.g. the volume after
    :func:`normalize_intensity`), so normalisation stays per volume.
    """
    img = volume.image if image is None else np.asarray(image)
    if img.shape != volume.labels.shape or img.ndim != 3:
        raise ValueError(
            f"case {volume.case_id!r}: image shape {img.shape} and label shape {volume.labels.shape} must be equal and 3D"
        )
    labels = remove_small_objects_per_slice(volume.labels, min_object_px) if min_object_px > 0 else volume.labels
    indices = nonempty_slices(labels) if drop_empty else np.arange(labels.shape[0])
    shape = tuple(int(s) for s in img.shape)
    spacing = tuple(float(s) for s in volume.spacing)
    return [
        VolumeSlice(SliceMeta(volume.case_id, int(z), spacing, shape), img[z], labels[z])  # type: ignore[arg-type]
        for z in indices
    ]


def stack_slices(
    items: Sequence[VolumeSlice | SliceMeta],
    arrays: Sequence[np.ndarray] | None = None,
    *,
    fill_value: int | float = 0,
    dtype: np.dtype | type | None = None,
) -> np.ndarray:
    """Recompile 2D slices (or 2D predictions) into the ``(z, y, x)`` volume they came from.

    ``items`` are the :class:`VolumeSlice` objects from :func:`slice_volume` or
    their :class:`SliceMeta`; ``arrays`` (optional) are per-slice 2D arrays to put
    in place of the slices' labels, e.g. model predictions already mapped back to
    the original in-plane size (:func:`restore_mask`). Slices that are absent
    (dropped as empty) are filled with ``fill_value``. All items must come from
    one case; duplicated slice indices and wrong in-plane shapes raise.
    """
    if not items:
        raise ValueError("stack_slices needs at least one slice")
    metas = [it.meta if isinstance(it, VolumeSlice) else it for it in items]
    if arrays is None:
        if not all(isinstance(it, VolumeSlice) for it in items):
            raise ValueError("pass arrays= when items are SliceMeta objects")
        arrays = [it.labels for it in items]  # type: ignore[union-attr]
    if len(arrays) != len(metas):
        raise ValueError(f"{len(metas)} slices but {len(arrays)} arrays")
    cases = {(m.case_id, m.volume_shape) for m in metas}
    if len(cases) != 1:
        raise ValueError(f"slices come from more than one case/shape: {sorted(cases)}")
    (case_id, shape), = cases
    first = np.asarray(arrays[0])
    out = np.full(shape, fill_value, dtype=dtype or first.dtype)
    seen: set[int] = set()
    for meta, arr in zip(metas, arrays):
        arr = np.asarray(arr)
        if arr.shape != meta.plane_shape:
            raise ValueError(
                f"case {case_id!r} slice {meta.slice_index}: array shape {arr.shape} != original in-plane shape "
                f"{meta.plane_shape}; map model-size outputs back with restore_mask() first"
            )
        if not 0 <= meta.slice_index < shape[0]:
            raise ValueError(f"case {case_id!r}: slice index {meta.slice_index} outside 0..{shape[0] - 1}")
        if meta.slice_index in seen:
            raise ValueError(f"case {case_id!r}: slice index {meta.slice_index} given twice")
        seen.add(meta.slice_index)
        out[meta.slice_index] = arr
    return out


# --------------------------------------------------------------------------- model-size inputs


@dataclass(frozen=True)
class ResizeInfo:
    """How a slice was resized to the model input, so masks can be mapped back exactly."""

    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]  # size of the image content before padding
    input_size: int

    @property
    def padded(self) -> bool:
        return self.resized_hw != (self.input_size, self.input_size)


@dataclass(frozen=True, eq=False)  # arrays inside: compare fields explicitly
class PreparedSlice:
    """A model-ready slice: ``image`` float32 ``(3, S, S)``, ``mask`` uint8 ``(S, S)``."""

    image: np.ndarray
    mask: np.ndarray | None
    resize: ResizeInfo
    meta: SliceMeta | None = None


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of every output pixel with pixel-centre alignment.

    Upsampling then downsampling with this mapping returns the input exactly,
    which is what makes 2D predictions at 256/1024 recompile to the source grid.
    """
    idx = np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.clip(idx, 0, n_in - 1)


def resize_nearest(array: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes (labels keep their values)."""
    arr = np.asarray(array)
    rows = _nearest_index(arr.shape[0], int(out_hw[0]))
    cols = _nearest_index(arr.shape[1], int(out_hw[1]))
    return arr[rows[:, None], cols[None, :]]


def _resize_image(image: np.ndarray, out_hw: tuple[int, int], profile: Profile) -> np.ndarray:
    """Resize with the profile's interpolation (see :mod:`samlab.models.recipes` for the official recipes)."""
    if image.shape[:2] == tuple(out_hw):
        return image.astype(np.float32, copy=True)
    if profile.interpolation == "cv2_area":
        import cv2

        return np.asarray(
            cv2.resize(image.astype(np.float32), (int(out_hw[1]), int(out_hw[0])), interpolation=cv2.INTER_AREA),
            dtype=np.float32,
        )
    if profile.image_order == 0:
        return resize_nearest(image, out_hw).astype(np.float32)
    from skimage.transform import resize

    downsampling = out_hw[0] < image.shape[0] or out_hw[1] < image.shape[1]
    out_shape = tuple(out_hw) + image.shape[2:]
    return resize(
        image, out_shape, order=profile.image_order, mode=profile.skimage_mode, preserve_range=True,
        anti_aliasing=downsampling,
    ).astype(np.float32)


def _target_hw(hw: tuple[int, int], profile: Profile) -> tuple[int, int]:
    size = profile.input_size
    if profile.resize == "square":
        return size, size
    scale = size * 1.0 / max(hw)
    return max(1, int(hw[0] * scale + 0.5)), max(1, int(hw[1] * scale + 0.5))


def prepare_slice(
    image: np.ndarray,
    mask: np.ndarray | None,
    profile: Profile,
    *,
    normalized: bool = False,
    meta: SliceMeta | None = None,
) -> PreparedSlice:
    """Turn one ``(y, x)`` (or ``(y, x, 3)``) slice and its mask into a model input.

    ``normalized=True`` means :func:`normalize_intensity` was already applied to
    the whole volume (do that for 3D data); otherwise it is applied to this slice.
    The mask is resized with nearest neighbour; :func:`restore_mask` inverts it.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3 and img.shape[-1] == 3:
        pass
    elif img.ndim != 2:
        raise ValueError(f"slice image must be (y, x) or (y, x, 3), got shape {img.shape}")
    hw = (int(img.shape[0]), int(img.shape[1]))
    if mask is not None and np.asarray(mask).shape != hw:
        raise ValueError(f"mask shape {np.asarray(mask).shape} differs from image shape {hw}")
    if not normalized:
        img = normalize_intensity(img, profile)
    target = _target_hw(hw, profile)
    resized = _resize_image(img, target, profile)
    if profile.slice_minmax:
        resized = minmax(resized, 1.0)
    else:
        resized = np.clip(resized, 0.0, 1.0 if profile.intensity == "percentile_minmax" else 255.0)
    chw = np.repeat(resized[None], profile.channels, axis=0) if resized.ndim == 2 else np.moveaxis(resized, -1, 0)
    S = profile.input_size
    canvas = np.zeros((chw.shape[0], S, S), dtype=np.float32)
    canvas[:, : target[0], : target[1]] = chw
    if profile.mean is not None and profile.std is not None:
        mean = np.asarray(profile.mean, dtype=np.float32)[: canvas.shape[0], None, None]
        std = np.asarray(profile.std, dtype=np.float32)[: canvas.shape[0], None, None]
        canvas = (canvas - mean) / std
    out_mask = None
    if mask is not None:
        out_mask = np.zeros((S, S), dtype=np.uint8)
        out_mask[: target[0], : target[1]] = resize_nearest(np.asarray(mask, dtype=np.uint8), target)
    return PreparedSlice(canvas, out_mask, ResizeInfo(hw, target, S), meta)


def restore_mask(mask: np.ndarray, info: ResizeInfo) -> np.ndarray:
    """Map a model-size ``(S, S)`` mask back to the slice's original ``(y, x)`` grid.

    Removes the padding, then resizes with the same pixel-centre nearest mapping;
    when the model input is at least as large as the slice this is the exact
    inverse of :func:`prepare_slice` for masks.
    """
    arr = np.asarray(mask)
    if arr.shape[:2] != (info.input_size, info.input_size):
        raise ValueError(f"mask shape {arr.shape} is not the model input size {info.input_size}")
    h, w = info.resized_hw
    return resize_nearest(arr[:h, :w], info.original_hw)


def iter_prepared_slices(
    volume: Volume,
    profile: Profile,
    *,
    drop_empty: bool = True,
    min_object_px: int = 0,
) -> Iterator[PreparedSlice]:
    """Normalise a volume once, then yield its model-ready slices (lazily: 12 MB each at 1024)."""
    norm = normalize_intensity(volume.image, profile)
    for sl in slice_volume(volume, drop_empty=drop_empty, min_object_px=min_object_px, image=norm):
        yield prepare_slice(sl.image, sl.labels, profile, normalized=True, meta=sl.meta)
