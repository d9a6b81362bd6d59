"""Training data: slices, training items, targets in the decoder's frame, prompts, augmentation.

Why the data is slices and *items*: SAM is a 2D model, and in box mode one slice holds
several training examples -- one per structure present, each with its own box and
binary target (the pelvic study trains one LiteMedSAM on all structures this way). Point
mode has the same items with a click in place of the box (the 18-configuration study's
interactive variant, §2.3: a pixel deeper than the median distance to the object's edge, one
per connected piece of the structure). In automatic (prompt-free) mode a slice is one example
whose target is the class map.

Targets are compared with the mask decoder's low-resolution output (256 x 256: four
times the 64 x 64 embedding grid), as both reference training scripts do: the mask is
mapped into the model's input frame exactly as :func:`samlab.models.prepare_image` maps
the image (resize of the content, padding at the bottom/right) at the decoder's output
scale, with nearest-neighbour interpolation.

Augmentations (all randomness from one ``torch.Generator`` so that a resumed run draws
the same numbers as an uninterrupted one):

* flips: image and mask are flipped together and the box is recomputed from the flipped
  mask;
* histogram equalisation (scikit-image) on the original slice, before the model's
  min-max normalisation;
* brightness / contrast jitter on the model's [0, 1] representation *after*
  ``prepare_image`` -- applied before, the per-slice min-max would undo it;
* the box shift: each side moves outward by an integer drawn from ``0..n`` pixels of the
  model input frame (LiteMedSAM's ``bbox_shift``), clipped to the image content;
* the click (point mode): drawn afresh for every item and epoch from the pixels deeper than the
  median edge distance, on the flipped mask; validation and test clicks come from generators
  keyed by (seed, case, slice, structure) (:func:`samlab.prompts.prompt_rng`), so every
  configuration of a run is scored on the same clicks.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..models.predictor import _SAM_MEAN, _SAM_STD, Geometry
from ..models.registry import ModelSpec
from ..prompts import MAX_CLICKS, box_from_mask, structure_clicks

#: Flip codes: 0 none, 1 left-right (x), 2 up-down (y), 3 both.
FLIPS: tuple[int, ...] = (0, 1, 2, 3)

#: Training modes: a box per structure, a click per piece of the structure, or no prompt at all.
TRAINING_MODES: tuple[str, ...] = ("box", "point", "automatic", "mixed")
#: ``mixed`` (SupSAM's phase 1, §2.3): each item gets a box *or* a point prompt with equal probability. It is a
#: training mode only: a fine-tuned model is scored with one prompt kind (``box`` or ``point``).
MIXED_BOX_PROBABILITY = 0.5


@dataclass(frozen=True, eq=False)
class SliceRecord:
    """One 2D slice of a case: image (H, W), integer label map (H, W) and in-plane spacing (sy, sx) mm."""

    case_id: str
    z: int
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float]

    def __post_init__(self) -> None:
        image, labels = np.asarray(self.image), np.asarray(self.labels)
        where = f"slice {self.case_id}[z={self.z}]"
        if image.ndim != 2 or labels.ndim != 2:
            raise ValueError(f"{where}: image and labels must be 2D (y, x), got {image.shape} and {labels.shape}")
        if image.shape != labels.shape:
            raise ValueError(f"{where}: image {image.shape} and labels {labels.shape} differ in shape")
        if not np.isfinite(image).all():
            raise ValueError(f"{where}: image contains NaN or infinite values")
        if not np.issubdtype(labels.dtype, np.integer) and not (labels == np.round(labels)).all():
            raise ValueError(f"{where}: labels must be integer-valued")


@dataclass(frozen=True)
class TrainItem:
    """One training example: a slice and, in box mode, the structure to segment."""

    slice_index: int
    structure: str  # "" in automatic mode
    values: tuple[int, ...]  # label values of the structure (empty in automatic mode)


def slices_from_volume(case_id: str, image: np.ndarray, labels: np.ndarray, spacing: Sequence[float],
                       zs: Sequence[int] | None = None) -> list[SliceRecord]:
    """Cut a (z, y, x) volume into :class:`SliceRecord` s (all slices, or those in ``zs``)."""
    image, labels = np.asarray(image), np.asarray(labels)
    if image.ndim != 3 or image.shape != labels.shape:
        raise ValueError(f"case {case_id}: image {image.shape} and labels {labels.shape} must be equal 3D shapes")
    plane = (float(spacing[1]), float(spacing[2]))
    zs = range(image.shape[0]) if zs is None else zs
    return [SliceRecord(case_id, int(z), image[z], labels[z], plane) for z in zs]


def make_items(slices: Sequence[SliceRecord], structures: Mapping[str, Sequence[int]], mode: str,
               min_object_px: int = 0) -> list[TrainItem]:
    """Training items of ``slices``.

    Box, point and mixed mode: one item per (slice, structure) whose mask has at least
    ``max(1, min_object_px)`` pixels (the pelvic study dropped objects under 100 px at 256 x 256).
    Automatic mode: one item per slice with any structure present (the 18-configuration study drops
    empty images).
    """
    if mode not in TRAINING_MODES:
        raise ValueError(f"unknown training mode {mode!r}; use one of {', '.join(TRAINING_MODES)}")
    if not structures:
        raise ValueError("structures is empty: nothing to train on")
    items: list[TrainItem] = []
    all_values = tuple(sorted({int(v) for vals in structures.values() for v in vals}))
    for i, sl in enumerate(slices):
        if mode == "automatic":
            if np.isin(sl.labels, all_values).any():
                items.append(TrainItem(i, "", ()))
            continue
        for name, values in structures.items():
            if np.count_nonzero(np.isin(sl.labels, tuple(values))) >= max(1, min_object_px):
                items.append(TrainItem(i, name, tuple(int(v) for v in values)))
    return items


def class_values(structures: Mapping[str, Sequence[int]]) -> tuple[int, ...]:
    """Label values predicted as classes in automatic mode (class k + 1 is value k; 0 is background).

    Classes are label values, not structures, because structures may overlap (prostate =
    transition zone + peripheral zone) while a softmax needs exclusive classes; a structure
    is evaluated as the union of its values' classes.
    """
    return tuple(sorted({int(v) for vals in structures.values() for v in vals if int(v) != 0}))


def labels_to_classes(labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """Map label values to class indices (1..K in ``values`` order); everything else -> 0."""
    out = np.zeros(labels.shape, dtype=np.int64)
    for k, v in enumerate(values, start=1):
        out[labels == v] = k
    return out


def classes_to_labels(classes: np.ndarray, values: Sequence[int]) -> np.ndarray:
    lut = np.array((0, *values), dtype=np.int64)
    return lut[classes]


def flip(array: np.ndarray, code: int) -> np.ndarray:
    """Flip a (y, x) array: 1 = left-right, 2 = up-down, 3 = both (a copy)."""
    if code & 1:
        array = array[:, ::-1]
    if code & 2:
        array = array[::-1, :]
    return np.ascontiguousarray(array)


def to_decoder_frame(mask: np.ndarray, geometry: Geometry, low_res: int, integer: bool = False) -> torch.Tensor:
    """A (H, W) mask/class map in the decoder's (low_res, low_res) output frame (nearest neighbour)."""
    scale = low_res / geometry.input_size
    h = int(round(geometry.resized_size[0] * scale))
    w = int(round(geometry.resized_size[1] * scale))
    t = torch.from_numpy(np.ascontiguousarray(mask).astype(np.float32))[None, None]
    t = F.interpolate(t, size=(h, w), mode="nearest")
    t = F.pad(t, (0, low_res - w, 0, low_res - h))[0]
    return t[0].long() if integer else t  # (L, L) long or (1, L, L) float


def box_in_input_frame(mask: np.ndarray, geometry: Geometry, shift: torch.Tensor | None = None) -> np.ndarray:
    """The tight box of ``mask`` mapped into the model's input frame, optionally grown by ``shift`` (4,) px.

    The mapping is :class:`samlab.models.Predictor`'s (``x * w'/w``, ``y * h'/h``), so a box
    seen in training is the box the predictor builds at test time.
    """
    box = box_from_mask(mask)
    if box is None:
        raise ValueError("cannot build a box prompt from an empty mask")
    sx, sy = geometry.scale_xy()
    box = box.astype(np.float32) * np.array([sx, sy, sx, sy], dtype=np.float32)
    if shift is not None:
        s = shift.numpy().astype(np.float32)
        box = box + np.array([-s[0], -s[1], s[2], s[3]], dtype=np.float32)
        h, w = geometry.resized_size
        box = np.clip(box, 0.0, np.array([w - 1, h - 1, w - 1, h - 1], dtype=np.float32))
    return box


def clicks_in_input_frame(mask: np.ndarray, geometry: Geometry, rng: np.random.Generator,
                          max_clicks: int = MAX_CLICKS) -> np.ndarray:
    """(P, 2) x, y clicks of one point prompt (:func:`samlab.prompts.structure_clicks`: a click deeper than the
    median edge distance in each connected piece of ``mask``) in the model's input frame.

    Scaled as :func:`box_in_input_frame` scales boxes, so a click seen in training is the click the
    predictor maps at test time.
    """
    sx, sy = geometry.scale_xy()
    return structure_clicks(mask, rng, max_clicks) * np.array([sx, sy], dtype=np.float32)


def stack_clicks(click_sets: Sequence[np.ndarray], width: int = MAX_CLICKS) -> tuple[np.ndarray, np.ndarray]:
    """Point prompts as one batch: (N, width, 2) coordinates and (N, width) labels, real clicks foreground (1).

    Every prompt is padded to the same ``width`` with label -1, SAM's "not a point" (its prompt encoder gives
    a padding point the learned not-a-point embedding and no position). Why a fixed width and not the
    batch's longest prompt: the decoder attends to the padding tokens too, so padding to the longest
    would make a structure's mask depend on which other prompts share its batch or slice.
    """
    if not click_sets:
        raise ValueError("no point prompts to stack")
    if max(len(c) for c in click_sets) > width:
        raise ValueError(f"a point prompt has {max(len(c) for c in click_sets)} clicks, more than width {width}")
    coords = np.zeros((len(click_sets), width, 2), dtype=np.float32)
    labels = np.full((len(click_sets), width), -1, dtype=np.int64)
    for i, clicks in enumerate(click_sets):
        coords[i, :len(clicks)] = clicks
        labels[i, :len(clicks)] = 1
    return coords, labels


def equalize(image: np.ndarray) -> np.ndarray:
    """Histogram equalisation of a slice (scikit-image), output in [0, 1]."""
    from skimage.exposure import equalize_hist

    lo, hi = float(image.min()), float(image.max())
    if hi - lo < 1e-8:
        return np.zeros_like(image, dtype=np.float32)
    return equalize_hist((image - lo) / (hi - lo), nbins=256).astype(np.float32)


def jitter(tensor: torch.Tensor, spec: ModelSpec, geometry: Geometry, brightness: float,
           contrast: float) -> torch.Tensor:
    """Brightness (``x * b``) then contrast (``(x - mean) * c + mean``) on the [0, 1] content of a prepared image.

    ``tensor`` is ``prepare_image``'s (1, 3, S, S) output; the padding is left as it was.
    torchvision's ``adjust_brightness`` / ``adjust_contrast`` formulas (mean of the grey image,
    clip to [0, 1]).
    """
    h, w = geometry.resized_size
    content = tensor[..., :h, :w]
    if spec.normalization == "sam_meanstd":
        content = (content * _SAM_STD + _SAM_MEAN) / 255.0
    content = (content * brightness).clamp(0, 1)
    mean = content.mean()
    content = ((content - mean) * contrast + mean).clamp(0, 1)
    if spec.normalization == "sam_meanstd":
        content = (content * 255.0 - _SAM_MEAN) / _SAM_STD
    out = tensor.clone()
    out[..., :h, :w] = content
    return out


def data_fingerprint(slices: Sequence[SliceRecord], items: Sequence[TrainItem]) -> str:
    """SHA-256 over the slices' pixels, labels and the item list: a checkpoint resumes only on the same data."""
    digest = hashlib.sha256()
    for sl in slices:
        digest.update(f"{sl.case_id}|{sl.z}|{sl.image.shape}".encode())
        digest.update(np.ascontiguousarray(sl.image, dtype=np.float32).tobytes())
        digest.update(np.ascontiguousarray(sl.labels, dtype=np.int64).tobytes())
    for it in items:
        digest.update(f"{it.slice_index}|{it.structure}|{it.values}".encode())
    return digest.hexdigest()


def sample_slices(cases: Sequence[Any], structures: Mapping[str, Sequence[int]], max_slices: int | None = None,
                  seed: int = 0) -> list[SliceRecord]:
    """The 2D slices of ``cases`` that show any structure, optionally a seeded subsample of ``max_slices``.

    Empty slices are left out, as both studies do for training. Here, not in the notebook
    API, because every ``torchrun`` rank must draw exactly the notebook's slices. The subsample is drawn
    without replacement from all cases' slices together and returned in (case, z) order.
    """
    values = tuple(sorted({int(v) for vals in structures.values() for v in vals}))
    slices = []
    for case in cases:
        zs = [z for z in range(case.labels.shape[0]) if np.isin(case.labels[z], values).any()]
        slices += slices_from_volume(case.case_id, case.image, case.labels, case.spacing, zs)
    if not slices:
        raise ValueError(f"no slice of cases {[c.case_id for c in cases]} shows any of {list(structures)}")
    if max_slices is not None and max_slices < len(slices):
        rng = np.random.default_rng(seed)
        keep = sorted(rng.choice(len(slices), size=max_slices, replace=False).tolist())
        slices = [slices[i] for i in keep]
    return slices
