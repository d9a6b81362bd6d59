"""A deterministic synthetic pelvic T2w MR phantom.

Why a phantom: the study must run end to end with no download, and the pelvic
study's central finding (box-prompted SAM fails on disjoint, bilateral, nested and
non-convex structures) can only be probed if the embedded data has those
difficulties. Each of the eight structures below reproduces one of them:

=====================  =====  ==============================================
structure              label  difficulty it reproduces
=====================  =====  ==============================================
bladder                1      convex, large, bright (the easy case)
bone (femoral heads)   2      bilateral, disjoint, with a dark cortical rim
obturator_internus     3      bilateral, disjoint, non-convex (crescents)
transition_zone        4      nested inside the prostate
prostate_peripheral    5      ring around the transition zone (nested)
rectum                 6      ring-shaped wall around a dark lumen
seminal_vesicle        7      bilateral, disjoint, elongated
neurovascular_bundle   8      bilateral, disjoint, tiny (a few pixels)
=====================  =====  ==============================================

Evaluation structures may combine labels: the pelvic study's "intact prostate" is
the union of transition and peripheral zones (see :data:`STRUCTURES`).

Arrays use the SimpleITK / nnU-Net convention: ``(z, y, x)`` voxel order, spacing
given as ``(sz, sy, sx)`` millimetres. Files are written in the nnU-Net v2 raw
layout so that real data and the phantom travel the same path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_path, write_json_atomic

#: nnU-Net label map (values are the integers stored in ``labelsTr``).
LABELS: dict[str, int] = {
    "background": 0,
    "bladder": 1,
    "bone": 2,
    "obturator_internus": 3,
    "transition_zone": 4,
    "prostate_peripheral": 5,
    "rectum": 6,
    "seminal_vesicle": 7,
    "neurovascular_bundle": 8,
}

#: Evaluation structures (the pelvic study's eight), each a set of label values.
STRUCTURES: dict[str, tuple[int, ...]] = {
    "bladder": (1,),
    "bone": (2,),
    "obturator_internus": (3,),
    "transition_zone": (4,),
    "prostate": (4, 5),
    "rectum": (6,),
    "seminal_vesicle": (7,),
    "neurovascular_bundle": (8,),
}

#: The shape family of each evaluation structure, used to test the paper's claim
#: that disjoint/bilateral and non-convex structures fail with a single box.
SHAPE_CLASS: dict[str, str] = {
    "bladder": "convex",
    "bone": "bilateral",
    "obturator_internus": "bilateral",
    "transition_zone": "convex",
    "prostate": "convex",
    "rectum": "ring",
    "seminal_vesicle": "bilateral",
    "neurovascular_bundle": "bilateral",
}

# T2-weighted-like mean intensities (arbitrary units before bias and noise).
_INTENSITY = {
    "outside": 0.02,
    "fat": 0.62,
    "muscle": 0.28,
    "bladder": 1.00,
    "bone_marrow": 0.55,
    "bone_cortex": 0.08,
    "obturator_internus": 0.22,
    "transition_zone": 0.40,
    "prostate_peripheral": 0.78,
    "rectum_wall": 0.20,
    "rectum_lumen": 0.05,
    "seminal_vesicle": 0.92,
    "neurovascular_bundle": 0.45,
}


@dataclass(frozen=True)
class PhantomCase:
    """One synthetic volume: image, label map, voxel spacing and its identifier."""

    case_id: str
    image: np.ndarray  # float32, (z, y, x)
    labels: np.ndarray  # uint8, (z, y, x)
    spacing: tuple[float, float, float]  # (sz, sy, sx) in mm


def _ellipsoid(zz, yy, xx, centre, radii) -> np.ndarray:
    cz, cy, cx = centre
    rz, ry, rx = radii
    return ((zz - cz) / rz) ** 2 + ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _largest_component_per_slice(mask: np.ndarray) -> np.ndarray:
    """Drop the 1-2 pixel specks that discretising a thin crescent leaves at its tips."""
    from scipy import ndimage

    out = np.zeros_like(mask)
    for z in range(mask.shape[0]):
        labelled, count = ndimage.label(mask[z], structure=np.ones((3, 3)))
        if count:
            sizes = ndimage.sum_labels(mask[z], labelled, index=np.arange(1, count + 1))
            out[z] = labelled == (int(np.argmax(sizes)) + 1)
    return out


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], strength: float) -> np.ndarray:
    """A low-order polynomial multiplicative bias field, like an MR coil profile."""
    z, y, x = (np.linspace(-1, 1, n) for n in shape)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    coeffs = rng.normal(0.0, strength, size=6)
    field = 1.0 + coeffs[0] * xx + coeffs[1] * yy + coeffs[2] * zz + coeffs[3] * xx * yy
    field += coeffs[4] * (xx**2 - 0.5) + coeffs[5] * (yy**2 - 0.5)
    return np.clip(field, 0.5, 1.5)


def make_phantom_case(
    seed: int,
    shape: tuple[int, int, int] = (16, 96, 96),
    spacing: tuple[float, float, float] = (3.0, 1.6, 1.6),
    noise_sigma: float = 0.04,
    bias_strength: float = 0.12,
    case_id: str | None = None,
) -> PhantomCase:
    """Draw one pelvic phantom volume; identical seed and arguments give identical arrays.

    Anatomy jitters per seed (position, size, left-right asymmetry) so that cases
    differ like patients do, while every case keeps all eight structures.
    """
    if len(shape) != 3 or shape[0] < 2 or min(shape[1:]) < 16:
        raise ValueError(f"phantom shape must be (z >= 2, y >= 16, x >= 16) voxels, got {shape}")
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    # Work in a normalised coordinate frame: z in [0, 1] (caudal→cranial), y, x in [-1, 1]
    zz, yy, xx = np.meshgrid(
        np.linspace(0.0, 1.0, nz), np.linspace(-1.0, 1.0, ny), np.linspace(-1.0, 1.0, nx), indexing="ij"
    )
    j = lambda scale: float(rng.normal(0.0, scale))  # noqa: E731 - tiny local jitter helper
    labels = np.zeros(shape, dtype=np.uint8)
    image = np.full(shape, _INTENSITY["outside"], dtype=np.float32)

    body = ((yy - 0.05) / (0.80 + j(0.02))) ** 2 + (xx / (0.95 + j(0.02))) ** 2 <= 1.0
    image[body] = _INTENSITY["fat"]

    # Obturator internus: bilateral crescents (annular sectors) lining the pelvic side walls.
    oi_mask = np.zeros(shape, dtype=bool)
    bone_marrow = np.zeros(shape, dtype=bool)
    bone_cortex = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        cx = side * (0.62 + j(0.02))
        cy = 0.05 + j(0.02)
        r = np.sqrt(((xx - cx) / 0.9) ** 2 + ((yy - cy) / 1.0) ** 2)
        inner, outer = 0.30 + j(0.01), 0.40 + j(0.01)
        arc = (r >= inner) & (r <= outer) & (side * (xx - cx) < 0.05) & (np.abs(yy - cy) < 0.33)
        oi_mask |= _largest_component_per_slice(arc & (zz > 0.05) & (zz < 0.85))
        # Femoral head: a sphere just lateral to the crescent, present in the mid slices.
        # (lateral to the crescent's outer edge, so the head never cuts the crescent in two)
        head = _ellipsoid(zz, yy, xx, (0.45 + j(0.03), cy, cx + side * 0.21), (0.35, 0.16 + j(0.01), 0.125 + j(0.005)))
        core = _ellipsoid(zz, yy, xx, (0.45, cy, cx + side * 0.21), (0.31, 0.12, 0.09))
        bone_marrow |= head
        bone_cortex |= head & ~core
    image[oi_mask] = _INTENSITY["obturator_internus"]
    labels[oi_mask] = LABELS["obturator_internus"]
    image[bone_marrow] = _INTENSITY["bone_marrow"]
    image[bone_cortex] = _INTENSITY["bone_cortex"]
    labels[bone_marrow] = LABELS["bone"]

    # Bladder: a large convex ellipsoid, anterior and cranial.
    bladder = _ellipsoid(zz, yy, xx, (0.78 + j(0.03), -0.25 + j(0.03), j(0.03)), (0.30, 0.26 + j(0.02), 0.30 + j(0.02)))
    image[bladder] = _INTENSITY["bladder"]
    labels[bladder] = LABELS["bladder"]

    # Prostate (peripheral zone) with the transition zone nested inside it, caudal.
    pc = (0.30 + j(0.03), 0.02 + j(0.02), j(0.02))
    prostate = _ellipsoid(zz, yy, xx, pc, (0.28, 0.17 + j(0.01), 0.20 + j(0.01)))
    tz = _ellipsoid(zz, yy, xx, (pc[0] + 0.02, pc[1] - 0.03, pc[2]), (0.18, 0.09, 0.12))
    image[prostate] = _INTENSITY["prostate_peripheral"]
    labels[prostate] = LABELS["prostate_peripheral"]
    image[tz] = _INTENSITY["transition_zone"]
    labels[tz] = LABELS["transition_zone"]

    # Seminal vesicles: two elongated ellipsoids, postero-cranial to the prostate.
    for side in (-1, 1):
        sv = _ellipsoid(
            zz, yy, xx, (0.58 + j(0.02), 0.20 + j(0.02), side * (0.15 + j(0.015))), (0.10, 0.045, 0.10 + j(0.01))
        )
        sv &= labels == 0
        image[sv] = _INTENSITY["seminal_vesicle"]
        labels[sv] = LABELS["seminal_vesicle"]

    # Neurovascular bundles: tiny bilateral tubes postero-lateral to the prostate.
    for side in (-1, 1):
        nvb = ((yy - (pc[1] + 0.16)) / 0.035) ** 2 + ((xx - (pc[2] + side * 0.20)) / 0.035) ** 2 <= 1.0
        nvb &= (zz > 0.12) & (zz < 0.50) & (labels == 0)
        image[nvb] = _INTENSITY["neurovascular_bundle"]
        labels[nvb] = LABELS["neurovascular_bundle"]

    # Rectum: a ring (wall) around a dark lumen, posterior, along the whole volume.
    rc = (0.42 + j(0.02), j(0.02))
    rr = np.sqrt(((yy - rc[0]) / 0.14) ** 2 + ((xx - rc[1]) / 0.17) ** 2)
    wall = (rr <= 1.0) & (rr >= 0.55) & (labels == 0)
    lumen = (rr < 0.55) & (labels == 0)
    image[wall] = _INTENSITY["rectum_wall"]
    labels[wall] = LABELS["rectum"]
    image[lumen] = _INTENSITY["rectum_lumen"]

    # Acquisition: coil bias field, then Rician-like magnitude noise.
    image = image * _smooth_field(rng, shape, bias_strength).astype(np.float32)
    real = image + rng.normal(0.0, noise_sigma, size=shape)
    imag = rng.normal(0.0, noise_sigma, size=shape)
    image = np.sqrt(real**2 + imag**2).astype(np.float32) * 1000.0
    return PhantomCase(
        case_id=case_id or f"pelvis_{seed:03d}",
        image=image,
        labels=labels,
        spacing=tuple(float(s) for s in spacing),
    )


def _write_nifti_atomic(array: np.ndarray, spacing: tuple[float, float, float], path: Path) -> None:
    import SimpleITK as sitk

    itk = sitk.GetImageFromArray(array)
    itk.SetSpacing(tuple(float(s) for s in reversed(spacing)))  # SimpleITK wants (sx, sy, sz)
    with atomic_path(path) as tmp:
        sitk.WriteImage(itk, str(tmp), useCompression=True)


def write_phantom_dataset(
    root: str | os.PathLike,
    n_cases: int = 6,
    seed: int = 0,
    shape: tuple[int, int, int] = (16, 96, 96),
    spacing: tuple[float, float, float] = (3.0, 1.6, 1.6),
    dataset_name: str = "PelvisPhantom",
) -> Path:
    """Write ``n_cases`` phantom volumes in the nnU-Net v2 raw layout under ``root``.

    Case ``i`` uses seed ``seed * 1000 + i`` so datasets with different seeds never
    share a volume. Returns ``root``. Files are written to temporary names and
    renamed, so an interrupted call never leaves a half-written volume.
    """
    if n_cases < 1:
        raise ValueError(f"n_cases must be at least 1, got {n_cases}")
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    for i in range(n_cases):
        case = make_phantom_case(seed * 1000 + i, shape=shape, spacing=spacing, case_id=f"pelvis_{i:03d}")
        _write_nifti_atomic(case.image, case.spacing, root / "imagesTr" / f"{case.case_id}_0000.nii.gz")
        _write_nifti_atomic(case.labels, case.spacing, root / "labelsTr" / f"{case.case_id}.nii.gz")
    dataset = {
        "name": dataset_name,
        "description": "Deterministic synthetic pelvic T2w MR phantom (samlab.data.phantom)",
        "channel_names": {"0": "T2"},
        "labels": dict(LABELS),
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        "samlab_structures": {k: list(v) for k, v in STRUCTURES.items()},
        "samlab_seed": seed,
    }
    write_json_atomic(root / "dataset.json", dataset)
    return root
