"""Prompts derived from masks: boxes (whole, expanded, per component, per convex part), points, noise.

Why derive every prompt from a mask: the pelvic study's two box sources (oracle =
ground truth, nnU-Net = a prediction) then take the same code path, and a
prompt source missing a structure on a slice simply yields no prompt there.

Boxes are ``(x0, y0, x1, y1)`` in pixel coordinates, inclusive of the extreme
foreground pixels, as MedSAM derives them from masks.
"""
from __future__ import annotations

import zlib

import numpy as np
from scipy import ndimage

Box = np.ndarray  # shape (4,), float32

# 8-connectivity: diagonal neighbours belong to the same object, as in skimage.measure.label's default for 2D.
_STRUCTURE_8 = np.ones((3, 3), dtype=bool)


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2D mask (H, W), got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def box_from_mask(mask: np.ndarray) -> Box | None:
    """Tight box around all foreground pixels, or ``None`` for an empty mask."""
    mask = _check_mask(mask)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float32)


def expand_box(box: Box, pixels: float, shape: tuple[int, int]) -> Box:
    """Grow a box isotropically by ``pixels`` on every side, clipped to the image."""
    height, width = shape
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float32)
    return np.array(
        [max(0.0, x0 - pixels), max(0.0, y0 - pixels), min(width - 1.0, x1 + pixels), min(height - 1.0, y1 + pixels)],
        dtype=np.float32,
    )


def connected_components(mask: np.ndarray, min_pixels: int = 1) -> list[np.ndarray]:
    """Connected foreground components (8-connectivity) with at least ``min_pixels`` pixels, largest first."""
    mask = _check_mask(mask)
    labelled, count = ndimage.label(mask, structure=_STRUCTURE_8)
    if count == 0:
        return []
    sizes = ndimage.sum_labels(mask, labelled, index=np.arange(1, count + 1))
    order = np.argsort(-sizes, kind="stable")
    return [labelled == (i + 1) for i in order if sizes[i] >= min_pixels]


def component_boxes(mask: np.ndarray, min_pixels: int = 1) -> list[Box]:
    """One box per connected component: the remedy for bilateral/disjoint structures.

    A single box around two femoral heads covers the whole pelvis between them,
    and SAM then segments what lies inside; one box per component asks for each
    object separately and the union of the answers is the structure.
    """
    return [box_from_mask(component) for component in connected_components(mask, min_pixels)]


def convex_hull(mask: np.ndarray) -> np.ndarray:
    """Filled 2D convex hull of a mask; a degenerate (collinear) mask is its own hull."""
    from scipy.spatial import QhullError
    from skimage.morphology import convex_hull_image

    mask = _check_mask(mask)
    if not mask.any():
        return mask.copy()
    try:
        return convex_hull_image(mask) | mask
    except (QhullError, ValueError):
        return mask.copy()


def solidity(mask: np.ndarray) -> float:
    """Area / convex-hull area: 1 for convex shapes, low for crescents, rings and separated objects."""
    hull = convex_hull(mask)
    return float(_check_mask(mask).sum() / max(int(hull.sum()), 1))


def convex_parts(
    mask: np.ndarray, min_solidity: float = 0.8, max_depth: int = 3, min_pixels: int = 12
) -> list[np.ndarray]:
    """Split each connected component into near-convex parts (at most ``2 ** max_depth`` per component).

    Why: a tight box around a crescent lies mostly over the crescent's hollow, and
    a box-prompted SAM segments the hollow (see ``zeroshot.error_breakdown``).
    Halving an arc along its length halves its bend, so a part whose solidity is
    below ``min_solidity`` is cut in two at the median of its pixel coordinates
    along the longer side of its bounding box, and each piece is treated again,
    until parts are near-convex, ``max_depth`` cuts were made, or a part has
    fewer than ``2 * min_pixels`` pixels. Convex components come back whole, so
    for them this equals :func:`connected_components`.
    """
    def split(part: np.ndarray, depth: int) -> list[np.ndarray]:
        if depth == max_depth or part.sum() < 2 * min_pixels or solidity(part) >= min_solidity:
            return [part]
        rows, cols = np.nonzero(part)
        if np.ptp(rows) >= np.ptp(cols):
            first = part & (np.arange(part.shape[0])[:, None] <= np.median(rows))
        else:
            first = part & (np.arange(part.shape[1])[None, :] <= np.median(cols))
        pieces = [first, part & ~first]
        if not all(piece.any() for piece in pieces):  # a median that cuts nothing off: stop here
            return [part]
        return [sub for piece in pieces for component in connected_components(piece)
                for sub in split(component, depth + 1)]

    if not 0.0 < min_solidity <= 1.0 or max_depth < 0 or min_pixels < 1:
        raise ValueError(f"need 0 < min_solidity <= 1, max_depth >= 0, min_pixels >= 1; got {min_solidity}, "
                         f"{max_depth}, {min_pixels}")
    return [part for component in connected_components(mask) for part in split(component, 0)]


def part_boxes(mask: np.ndarray, min_solidity: float = 0.8, max_depth: int = 3, min_pixels: int = 12) -> list[Box]:
    """One box per near-convex part of each component: the remedy tried here for non-convex structures."""
    return [box_from_mask(part) for part in convex_parts(mask, min_solidity, max_depth, min_pixels)]


def interior_point(mask: np.ndarray) -> np.ndarray | None:
    """The foreground pixel farthest from the object's edge, as ``(x, y)``; ``None`` if empty.

    Deterministic (first maximum in raster order), the point a careful annotator
    would click; for a ring this lands inside the wall, not in the lumen.
    """
    mask = _check_mask(mask)
    if not mask.any():
        return None
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return np.array([x, y], dtype=np.float32)


def component_points(mask: np.ndarray, min_pixels: int = 1) -> list[np.ndarray]:
    """One interior point per connected component."""
    return [interior_point(component) for component in connected_components(mask, min_pixels)]


def noisy_box(box: Box, rng: np.random.Generator, shape: tuple[int, int], fraction: float = 0.1, cap: float = 20.0) -> Box:
    """Perturb each box coordinate with Gaussian noise (sd = ``fraction`` of the box side, at most ``cap`` px).

    The 18-configuration study's model of a user's imprecise box.
    """
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float32)
    sd_x = min(fraction * (x1 - x0 + 1), cap)
    sd_y = min(fraction * (y1 - y0 + 1), cap)
    noise = rng.normal(0.0, 1.0, size=4) * np.array([sd_x, sd_y, sd_x, sd_y])
    noise = np.clip(noise, -cap, cap)
    height, width = shape
    nx0, ny0, nx1, ny1 = np.array([x0, y0, x1, y1]) + noise
    nx0, nx1 = sorted((float(np.clip(nx0, 0, width - 1)), float(np.clip(nx1, 0, width - 1))))
    ny0, ny1 = sorted((float(np.clip(ny0, 0, height - 1)), float(np.clip(ny1, 0, height - 1))))
    return np.array([nx0, ny0, nx1, ny1], dtype=np.float32)


def sample_deep_point(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """A random foreground point whose distance to the edge exceeds the median distance.

    The 18-configuration study's realistic click: inside the object, not on its rim.
    """
    mask = _check_mask(mask)
    if not mask.any():
        return None
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    inside = distance[mask]
    ys, xs = np.nonzero(mask & (distance > np.median(inside)))
    if ys.size == 0:  # thin objects: every pixel is at the median distance
        ys, xs = np.nonzero(mask & (distance >= np.median(inside)))
    i = int(rng.integers(ys.size))
    return np.array([xs[i], ys[i]], dtype=np.float32)


#: Clicks in one point prompt of a structure: one per connected piece, largest pieces first (as the
#: interactive evaluation caps its per-component prompts).
MAX_CLICKS = 4


def structure_clicks(mask: np.ndarray, rng: np.random.Generator, max_clicks: int = MAX_CLICKS) -> np.ndarray:
    """(P, 2) x, y clicks of one point prompt for a structure: a deep click (:func:`sample_deep_point`) in each
    of its ``max_clicks`` largest connected pieces -- the 18-configuration study's prompt per contiguous region,
    kept in one prompt so that the target stays the whole structure, as its one tight box does in box mode."""
    pieces = connected_components(mask)[:max_clicks]
    if not pieces:
        raise ValueError("cannot build a point prompt from an empty mask")
    return np.stack([sample_deep_point(piece, rng) for piece in pieces]).astype(np.float32)


def _stable_id(text: str) -> int:
    return zlib.crc32(text.encode())


def prompt_rng(draw_seed: int, case_id: str, z: int, structure: str, kind: str) -> np.random.Generator:
    """One generator per (draw, case, slice, structure, prompt kind).

    Keyed by names, not positions, so a prompt does not change when other models, structures or
    prompt kinds are added to a run: every model sees the same draws (paired comparisons). Shared by the
    interactive evaluation and the point-prompted fine-tuning's validation and test prompts.
    """
    return np.random.default_rng([draw_seed, _stable_id(case_id), int(z), _stable_id(structure), _stable_id(kind)])
