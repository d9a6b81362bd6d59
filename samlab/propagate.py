"""One prompt per volume: a 3D box, the middle slice segmented, the mask propagated slice by slice.

Why: both seed studies prompt every slice with its own box (a 40-slice
structure costs 40 boxes); a clinician draws one box per volume, or one per
structure part. This is the CVPR24 LiteMedSAM script's 3D mode (the middle
slice of the 3D box is segmented from the box's 2D extent; each next slice is
prompted with the previous slice's prediction's box plus a margin) with three
changes: embeddings come from the predictor (and its :class:`EmbeddingCache`),
so a slice visited twice (two components, two prompt budgets) is encoded once;
propagation *stops* (empty prediction, area collapse, end of the box's
z-range) instead of falling back to the original box; and disjoint structures
can get one 3D box per 3D connected component, results unioned.

Boxes: 3D boxes are ``(x_min, y_min, z_min, x_max, y_max, z_max)`` inclusive
voxel indices, the official script's order; 2D boxes ``(x0, y0, x1, y1)`` as in
:mod:`samlab.prompts`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage

from . import prompts as P
from .metrics import evaluate_masks
from .models import Embedding, Predictor

STOP_REASONS = ("empty", "area_collapse", "z_range_end", "volume_end", "empty_start")
#: Where ``margin`` is measured: ``image`` (original pixels, samlab's first convention) or ``model`` (pixels of
#: the model's square input frame, e.g. 256 for LiteMedSAM: the official CVPR24 script's ``get_bbox256(bbox_shift=3)``).
MARGIN_FRAMES = ("image", "model")


@dataclass
class PropagationRecord:
    """What one propagation did: where it started, what it visited, why each direction stopped."""

    start_slice: int
    box3d: tuple[int, ...] | None
    slices_visited: list[int] = field(default_factory=list)
    stop_reason: dict[str, str] = field(default_factory=dict)  # "up" / "down" -> one of STOP_REASONS
    prompts: int = 1
    encoder_calls: int = 0
    components: list["PropagationRecord"] = field(default_factory=list)
    prompt_boxes: dict[int, np.ndarray] = field(default_factory=dict)  # slice -> the 2D box it was prompted with


@dataclass
class PropagationResult:
    mask: np.ndarray  # (Z, H, W) bool
    record: PropagationRecord


def box3d_from_mask(mask: np.ndarray) -> np.ndarray | None:
    """Tight inclusive 3D box ``(x_min, y_min, z_min, x_max, y_max, z_max)`` of a 3D mask; None if empty."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"expected a 3D mask (Z, H, W), got shape {mask.shape}")
    if not mask.any():
        return None
    zs, ys, xs = (np.flatnonzero(mask.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    return np.array([xs[0], ys[0], zs[0], xs[-1], ys[-1], zs[-1]], dtype=np.int64)


def component_boxes3d(mask: np.ndarray, min_voxels: int = 1) -> list[np.ndarray]:
    """One 3D box per 3D connected component (26-connectivity), largest first."""
    labelled, n = ndimage.label(np.asarray(mask, dtype=bool), structure=np.ones((3, 3, 3)))
    sizes = ndimage.sum_labels(np.ones_like(labelled), labelled, index=range(1, n + 1)) if n else []
    order = sorted(range(1, n + 1), key=lambda i: -sizes[i - 1])
    return [box3d_from_mask(labelled == i) for i in order if sizes[i - 1] >= min_voxels]


def _mask_prompt(predictor: Predictor, embedding: Embedding, logits: np.ndarray) -> torch.Tensor:
    """Previous slice's logits (original pixels) -> the prompt encoder's low-res mask input frame.

    The frame is the model input (content resized, padded bottom/right) at the
    prompt encoder's ``mask_input_size`` (4x the embedding grid, 256 x 256 for
    every registered model); padding gets a strongly negative logit.
    """
    geometry = embedding.geometry
    size = geometry.input_size
    t = torch.from_numpy(np.asarray(logits, dtype=np.float32))[None, None]
    t = F.interpolate(t, size=geometry.resized_size, mode="bilinear", align_corners=False)
    t = F.pad(t, (0, size - geometry.resized_size[1], 0, size - geometry.resized_size[0]), value=-20.0)
    low = tuple(predictor.module.prompt_encoder.mask_input_size)
    return F.interpolate(t, size=low, mode="bilinear", align_corners=False).clamp(-20.0, 20.0)


@torch.no_grad()
def _decode_box(predictor: Predictor, embedding: Embedding, box: np.ndarray,
                previous_logits: np.ndarray | None, points: np.ndarray | None = None,
                point_labels: np.ndarray | None = None) -> np.ndarray:
    """Logits (H, W) for one box (plus optional clicks), or with the previous slice's mask as a dense prompt."""
    if points is not None and len(points):
        return predictor.decode(embedding, boxes=np.asarray(box)[None], points=np.asarray(points)[None],
                                point_labels=np.asarray(point_labels)[None]).logits[0]
    if previous_logits is None:
        return predictor.decode(embedding, boxes=np.asarray(box)[None]).logits[0]
    geometry = embedding.geometry
    box_t = torch.from_numpy(predictor._to_input_frame(np.asarray(box, dtype=np.float32)[None], geometry,
                                                       boxes=True)).to(predictor.device)[:, None, :]
    masks = _mask_prompt(predictor, embedding, previous_logits).to(predictor.device)
    encoder, decoder = predictor.module.prompt_encoder, predictor.module.mask_decoder
    sparse, dense = encoder(points=None, boxes=box_t, masks=masks)
    low_res, _ = decoder(image_embeddings=embedding.features, image_pe=encoder.get_dense_pe(),
                         sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
    return predictor.postprocess(low_res, geometry)[0, 0].cpu().numpy()


class SliceEmbeddings:
    """Per-volume memo on top of the predictor (whose own cache, if any, spans volumes and runs)."""

    def __init__(self, predictor: Predictor, volume: np.ndarray):
        self.predictor, self.volume, self._memo = predictor, volume, {}

    def __call__(self, z: int) -> Embedding:
        if z not in self._memo:
            self._memo[z] = self.predictor.embed(self.volume[z])
        return self._memo[z]


def _as_box(box: Sequence[float] | np.ndarray, volume_shape: tuple[int, ...],
            start_slice: int | None,
            z_range: tuple[int, int] | None) -> tuple[np.ndarray, int, tuple[int, int], tuple | None]:
    """(2D start box, start slice, inclusive z-range, 3D box or None) from a 3D box or a 2D box + slice."""
    box = np.asarray(box, dtype=np.float64).reshape(-1)
    depth = volume_shape[0]
    if box.size == 6:
        x0, y0, z0, x1, y1, z1 = box
        if not (0 <= z0 <= z1 < depth):
            raise ValueError(f"3D box z-range {int(z0)}..{int(z1)} is outside the volume's {depth} slices")
        z0, z1 = int(z0), int(z1)
        start = int((z1 - z0) / 2 + z0) if start_slice is None else int(start_slice)  # the official z_middle
        return np.array([x0, y0, x1, y1]), start, (z0, z1), tuple(int(v) for v in box)
    if box.size == 4:
        if start_slice is None:
            raise ValueError("a 2D box needs start_slice (the slice it was drawn on)")
        lo, hi = z_range if z_range is not None else (0, depth - 1)
        return box, int(start_slice), (max(0, int(lo)), min(depth - 1, int(hi))), None
    raise ValueError(f"box must have 4 (x0, y0, x1, y1) or 6 (x_min, y_min, z_min, x_max, y_max, z_max) "
                     f"values, got {box.size}")


def propagate_volume(
    predictor: Predictor,
    volume: np.ndarray,
    box: Sequence[float] | np.ndarray,
    start_slice: int | None = None,
    z_range: tuple[int, int] | None = None,
    margin: float = 3.0,
    mask_prompt: bool = False,
    min_area_fraction: float = 0.1,
    stop_at_z_range: bool = True,
    margin_frame: str = "image",
    start_points: np.ndarray | None = None,
    start_point_labels: np.ndarray | None = None,
    _embed: "SliceEmbeddings | None" = None,
) -> PropagationResult:
    """Segment one structure in a (Z, H, W) volume from one box.

    ``box`` is a 3D box (its 2D extent prompts its middle slice, as in the
    official script) or a 2D box drawn on ``start_slice``. From the start
    slice the mask is propagated up (z+1, ...) and down (z-1, ...): each slice is
    prompted with the box of the previous slice's prediction, grown by
    ``margin`` pixels, and with ``mask_prompt`` also with the previous slice's
    logits as a dense mask prompt. A direction stops when the prediction is
    empty (``empty``), when its area falls below ``min_area_fraction`` of the
    start slice's area (``area_collapse``; that slice is dropped), at the end of
    the 3D box's / ``z_range``'s slices (``z_range_end``, only if
    ``stop_at_z_range``) or of the volume (``volume_end``).

    ``margin_frame`` says which pixels ``margin`` counts. ``image``: the
    volume's own pixels. ``model``: pixels of the model's square input frame
    (``margin * max(H, W) / input_size`` image pixels), the official script's
    convention (it grows the previous slice's box by 3 px in the 256-px frame).
    The two agree only for 256-px slices; on a 52 x 34 hippocampus slice 3 image
    pixels are ~15 px of the model's frame, ~5x the official margin.

    ``start_points`` (P, 2) x, y with ``start_point_labels`` (P,) (1 foreground,
    0 background) are clicks decoded with the box on the start slice only: a
    corrective click (the corrective3d module of the interactive package) re-propagated.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a (Z, H, W) volume, got shape {volume.shape}")
    if margin < 0 or not 0 <= min_area_fraction < 1:
        raise ValueError(f"margin must be >= 0 and min_area_fraction in [0, 1), got {margin}, {min_area_fraction}")
    if margin_frame not in MARGIN_FRAMES:
        raise ValueError(f"margin_frame must be one of {MARGIN_FRAMES}, got {margin_frame!r}")
    start_box, start, (z0, z1), box3d = _as_box(box, volume.shape, start_slice, z_range)
    if not 0 <= start < volume.shape[0]:
        raise ValueError(f"start slice {start} is outside the volume's {volume.shape[0]} slices")
    if not stop_at_z_range:
        z0, z1 = 0, volume.shape[0] - 1
    embed = _embed or SliceEmbeddings(predictor, volume)
    calls_before = predictor.encoder_calls
    out = np.zeros(volume.shape, dtype=bool)
    record = PropagationRecord(start_slice=start, box3d=box3d)
    if start_points is not None and start_point_labels is None:
        start_point_labels = np.ones(len(start_points), dtype=np.int64)
    logits = _decode_box(predictor, embed(start), start_box, None, start_points, start_point_labels)
    record.slices_visited.append(start)
    record.prompt_boxes[start] = np.asarray(start_box, dtype=np.float32)
    start_area = int((logits > 0).sum())
    if start_area == 0:
        record.stop_reason = {"up": "empty_start", "down": "empty_start"}
        record.encoder_calls = predictor.encoder_calls - calls_before
        return PropagationResult(out, record)
    out[start] = logits > 0
    shape2d = volume.shape[1:]
    if margin_frame == "model":
        margin = margin * max(shape2d) / embed(start).geometry.input_size
    for direction, step, last in (("up", 1, z1), ("down", -1, z0)):
        previous, z = logits, start
        reason = None
        while reason is None:
            z += step
            if (step > 0 and z > last) or (step < 0 and z < last):
                reason = "z_range_end" if 0 <= z < volume.shape[0] else "volume_end"
                break
            next_box = P.expand_box(P.box_from_mask(previous > 0), margin, shape2d)
            current = _decode_box(predictor, embed(z), next_box, previous if mask_prompt else None)
            record.slices_visited.append(z)
            record.prompt_boxes[z] = next_box
            area = int((current > 0).sum())
            if area == 0:
                reason = "empty"
            elif area < min_area_fraction * start_area:
                reason = "area_collapse"
            else:
                out[z] = current > 0
                previous = current
        record.stop_reason[direction] = reason
    record.encoder_calls = predictor.encoder_calls - calls_before
    return PropagationResult(out, record)


def propagate_boxes(
    predictor: Predictor,
    volume: np.ndarray,
    boxes3d: Sequence[np.ndarray],
    **options,
) -> PropagationResult:
    """Propagate each 3D box separately and union the masks (per-component propagation).

    All boxes share one per-volume embedding memo, so a slice two components
    cross is encoded once. The record's ``components`` holds each box's record;
    ``prompts`` is the number of boxes.
    """
    volume = np.asarray(volume)
    if len(boxes3d) == 0:
        raise ValueError("propagate_boxes needs at least one 3D box")
    embed = SliceEmbeddings(predictor, volume)
    calls_before = predictor.encoder_calls
    out = np.zeros(volume.shape, dtype=bool)
    parts = []
    for box in boxes3d:
        result = propagate_volume(predictor, volume, box, _embed=embed, **options)
        out |= result.mask
        parts.append(result.record)
    visited = sorted({z for part in parts for z in part.slices_visited})
    record = PropagationRecord(start_slice=parts[0].start_slice, box3d=None, slices_visited=visited,
                               stop_reason={}, prompts=len(parts),
                               encoder_calls=predictor.encoder_calls - calls_before, components=parts)
    return PropagationResult(out, record)


def propagate_components(predictor: Predictor, volume: np.ndarray, source_mask: np.ndarray,
                         min_voxels: int = 1, **options) -> PropagationResult:
    """One 3D box per 3D connected component of ``source_mask`` (a reference or a user's rough mask)."""
    boxes = component_boxes3d(source_mask, min_voxels=min_voxels)
    if not boxes:
        raise ValueError("source mask is empty: no component to draw a 3D box on")
    return propagate_boxes(predictor, volume, boxes, **options)


def _keyframe_prediction(predictor: Predictor, volume: np.ndarray, gt: np.ndarray, k: int,
                         options: dict) -> tuple[np.ndarray, int]:
    """Boxes (one per 2D component) on the middle slice of each block of k slices, propagated within the block."""
    zs = np.flatnonzero(gt.any(axis=(1, 2)))
    embed = SliceEmbeddings(predictor, volume)
    out = np.zeros(volume.shape, dtype=bool)
    prompts = 0
    for lo in range(int(zs[0]), int(zs[-1]) + 1, k):
        hi = min(lo + k - 1, int(zs[-1]))
        key = (lo + hi) // 2
        for box in P.component_boxes(gt[key]):
            result = propagate_volume(predictor, volume, box, start_slice=key, z_range=(lo, hi), _embed=embed,
                                      **options)
            out |= result.mask
            prompts += 1
    return out, prompts


def every_slice_prediction(predictor: Predictor, volume: np.ndarray, gt: np.ndarray,
                           per_component: bool = False) -> tuple[np.ndarray, int]:
    """Today's oracle: every slice with the structure gets its own box(es), no propagation."""
    out = np.zeros(volume.shape, dtype=bool)
    prompts = 0
    for z in np.flatnonzero(gt.any(axis=(1, 2))):
        boxes = P.component_boxes(gt[z]) if per_component else [P.box_from_mask(gt[z])]
        out[z] = predictor.decode(predictor.embed(volume[z]), boxes=np.array(boxes)).masks().any(axis=0)
        prompts += len(boxes)
    return out, prompts


def prompt_budget(
    predictor: Predictor,
    volume: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    every_k: Sequence[int] = (5, 10),
    nsd_tolerance_mm: float = 2.0,
    subject: str = "",
    structure: str = "",
    **options,
) -> pd.DataFrame:
    """3D Dice / HD95 / NSD against the number of box prompts spent, for one case and structure.

    Strategies: ``volume_box`` (one 3D box of the whole structure),
    ``component_boxes`` (one 3D box per 3D component), ``every_{k}_slices``
    (oracle boxes, one per 2D component, on the middle slice of each block of k
    slices, propagated within the block), ``every_slice`` and
    ``every_slice_components`` (the per-slice oracle, one box or one box per 2D
    component on every slice). Boxes come from ``gt`` (an oracle annotator);
    ``options`` go to :func:`propagate_volume`. One row per strategy and metric.
    """
    gt = np.asarray(gt, dtype=bool)
    if gt.shape != np.shape(volume):
        raise ValueError(f"ground truth shape {gt.shape} differs from the volume's {np.shape(volume)}")
    if not gt.any():
        raise ValueError(f"structure {structure!r} of {subject!r} is absent from the ground truth: no prompt to draw")
    runs = budget_masks(predictor, volume, gt, every_k=every_k, **options)
    rows = []
    for name, mask, n in runs:
        values = evaluate_masks(mask, gt, spacing, nsd_tolerance_mm=nsd_tolerance_mm)
        for metric in ("dice", "hd95", "nsd"):
            rows.append({"subject": subject, "structure": structure, "backbone": predictor.spec.name,
                         "strategy": name, "prompts": int(n), "metric": metric, "value": float(values[metric])})
    return pd.DataFrame.from_records(rows)


def budget_masks(predictor: Predictor, volume: np.ndarray, gt: np.ndarray, every_k: Sequence[int] = (5, 10),
                 **options) -> list[tuple[str, np.ndarray, int]]:
    """``(strategy, predicted 3D mask, prompts spent)`` for every strategy of :func:`prompt_budget`."""
    gt = np.asarray(gt, dtype=bool)
    if gt.shape != np.shape(volume):
        raise ValueError(f"ground truth shape {gt.shape} differs from the volume's {np.shape(volume)}")
    if not gt.any():
        raise ValueError("the structure is absent from the ground truth: no prompt to draw")
    runs: list[tuple[str, np.ndarray, int]] = []
    single = propagate_volume(predictor, volume, box3d_from_mask(gt), **options)
    runs.append(("volume_box", single.mask, single.record.prompts))
    per = propagate_components(predictor, volume, gt, **options)
    runs.append(("component_boxes", per.mask, per.record.prompts))
    for k in every_k:
        if int(k) < 1:
            raise ValueError(f"every_k values must be >= 1, got {k}")
        mask, n = _keyframe_prediction(predictor, volume, gt, int(k), options)
        runs.append((f"every_{int(k)}_slices", mask, n))
    for name, per_component in (("every_slice", False), ("every_slice_components", True)):
        mask, n = every_slice_prediction(predictor, volume, gt, per_component)
        runs.append((name, mask, n))
    return runs
