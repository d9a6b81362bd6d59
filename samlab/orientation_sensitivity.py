"""Orientation sensitivity: the same slices, turned and mirrored in plane, scored against the same masks.

Why a study of its own: SAM-family models are not orientation-invariant (issue 21; LiteMedSAM's
per-case Dice moves by up to 0.08 between the stored and the RAS orientation of the same volumes),
so the orientation a dataset is sliced in is part of every result. This module measures how much:
each chosen slice is fed under the eight in-plane dihedral transforms
(:data:`samlab.data.orientation.INPLANE_TRANSFORMS`), prompted with the oracle box of the
*transformed* mask, and the prediction is transformed back and scored against the *original*
mask. Only the orientation differs between the eight predictions; the anatomy, the pixels and
the box (up to the same transform) are the same. The identity transform is the plain prediction
(same pixels, same box: its embedding is the one notebook 02 already cached).

Cost: each transformed slice is a new image, so one encoder pass per slice and transform (the
rotations by 90 degrees of a non-square slice also change the model's padding); the structures
of a slice share that pass. Keep the number of slices small by default.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import prompts as P
from .data.orientation import INPLANE_TRANSFORMS, apply_inplane, invert_inplane
from .metrics import evaluate_masks
from .models import Predictor
from .results import make_rows, to_frame

__all__ = ["SliceItem", "OrientationSensitivity", "pick_slices", "orientation_label", "run_orientation_sensitivity",
           "summarize_sensitivity"]

TABLE_COLUMNS = ("case", "slice", "structure", "transform", "dice", "empty_prediction")


@dataclass(frozen=True)
class SliceItem:
    """One 2D slice of a case: its image, its label slice and in-plane spacing ``(sy, sx)`` in mm."""

    case_id: str
    z: int
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float] = (1.0, 1.0)


@dataclass
class OrientationSensitivity:
    """The tidy table (one row per case, slice, structure, transform), its results rows and summaries."""

    table: pd.DataFrame
    results: pd.DataFrame
    summary: pd.DataFrame  # per transform: n, mean Dice, mean difference from identity
    spread: pd.DataFrame  # per (case, slice, structure): min, max, max - min of Dice over the transforms
    encoder_calls: int = 0
    model: str = ""
    dataset: str = ""
    transforms: tuple[str, ...] = field(default_factory=tuple)

    @property
    def max_spread(self) -> float:
        """The largest per-slice spread of Dice over the transforms (NaN without rows)."""
        return float(self.spread["spread"].max()) if len(self.spread) else float("nan")

    @property
    def n_slices(self) -> int:
        return int(self.table[["case", "slice"]].drop_duplicates().shape[0]) if len(self.table) else 0


def pick_slices(cases: Sequence, structures: Mapping[str, Sequence[int]], n: int,
                min_pixels: int = 20) -> list[SliceItem]:
    """``n`` slices spread evenly over all slices (of all cases, in order) that show some structure.

    Deterministic (evenly spaced over the candidates, no random draw), so that reruns reuse the
    cached embeddings. A structure counts on a slice when it covers at least ``min_pixels``
    pixels: a speck gives a box of a pixel or two, which tells nothing about orientation.
    """
    if n < 1:
        raise ValueError(f"the number of slices must be >= 1, got {n}")
    values = tuple(v for vals in structures.values() for v in vals)
    candidates = []
    for case in cases:
        present = np.isin(case.labels, values).sum(axis=(1, 2)) >= min_pixels
        candidates += [(case, int(z)) for z in np.flatnonzero(present)]
    if not candidates:
        return []
    picks = sorted({int(round(i)) for i in np.linspace(0, len(candidates) - 1, min(n, len(candidates)))})
    return [SliceItem(case.case_id, z, case.image[z], case.labels[z], tuple(float(s) for s in case.spacing[1:]))
            for case, z in (candidates[i] for i in picks)]


def orientation_label(base: str, transform: str) -> str:
    """The results ``orientation`` of a transformed slice: ``as_stored+rot90``; the identity is ``base`` itself."""
    return base if transform == "identity" else f"{base}+{transform}"


def run_orientation_sensitivity(
    predictor: Predictor,
    items: Sequence[SliceItem],
    structures: Mapping[str, Sequence[int]],
    transforms: Iterable[str] = tuple(INPLANE_TRANSFORMS),
    *,
    dataset: str = "",
    base_orientation: str = "as_stored",
    min_pixels: int = 20,
    seed: int = 0,
    progress: bool = True,
) -> OrientationSensitivity:
    """Predict every slice under every transform with an oracle box; score the inverted prediction in 2D.

    Per slice and transform: the image and its label slice are transformed together, each
    structure present (``min_pixels`` or more) gets the tight box of its transformed mask
    (:func:`samlab.prompts.box_from_mask`), the predicted masks are transformed back and
    scored against the untransformed mask with :func:`samlab.metrics.evaluate_masks` (Dice;
    an empty prediction scores 0 and is flagged). Results rows are 2D (``slice`` = z),
    ``method = zero_shot``, ``prompt = oracle_box``, ``orientation`` =
    :func:`orientation_label` of ``base_orientation`` (the run's curation setting) and the transform.
    """
    transforms = tuple(transforms)
    for name in transforms:
        if name not in INPLANE_TRANSFORMS:
            raise ValueError(f"unknown in-plane transform {name!r}; use one of {list(INPLANE_TRANSFORMS)}")
    records, rows = [], []
    calls_before = predictor.encoder_calls
    for item in tqdm(items, desc=f"orientation {predictor.spec.name}", disable=not progress):
        truths = {name: np.isin(item.labels, tuple(values)) for name, values in structures.items()}
        truths = {name: mask for name, mask in truths.items() if int(mask.sum()) >= min_pixels}
        if not truths:
            continue
        for transform in transforms:
            image = apply_inplane(transform, item.image)
            boxes = np.stack([P.box_from_mask(apply_inplane(transform, mask)) for mask in truths.values()])
            masks = predictor.decode(predictor.embed(image), boxes=boxes).masks()
            for (name, gt), mask in zip(truths.items(), masks):
                predicted = invert_inplane(transform, mask)
                values = evaluate_masks(predicted, gt, item.spacing, metrics=("dice",))
                empty = bool(getattr(values, "empty_prediction", False))
                records.append({"case": item.case_id, "slice": item.z, "structure": name, "transform": transform,
                                "dice": float(values["dice"]), "empty_prediction": empty})
                context = {"dataset": dataset, "subject": item.case_id, "slice": item.z, "structure": name,
                           "method": "zero_shot", "backbone": predictor.spec.name, "init": predictor.model.init,
                           "prompt": "oracle_box", "mode": "box",
                           "orientation": orientation_label(base_orientation, transform), "seed": seed}
                rows.extend(make_rows(context, values))
    table = pd.DataFrame.from_records(records, columns=list(TABLE_COLUMNS))
    summary, spread = summarize_sensitivity(table)
    return OrientationSensitivity(table, to_frame(rows), summary, spread, predictor.encoder_calls - calls_before,
                                  predictor.spec.name, dataset, transforms)


def summarize_sensitivity(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per transform: n, mean Dice and its mean paired difference from identity; per slice: the spread.

    The spread of one (case, slice, structure) is max - min of its Dice over the transforms, the
    number that says how much orientation alone moves a single prediction.
    """
    summary_columns = ["transform", "n", "mean_dice", "mean_diff_vs_identity", "n_changed"]
    spread_columns = ["case", "slice", "structure", "min_dice", "max_dice", "spread", "worst_transform"]
    if table.empty:
        return pd.DataFrame(columns=summary_columns), pd.DataFrame(columns=spread_columns)
    keys = ["case", "slice", "structure"]
    wide = table.pivot_table(index=keys, columns="transform", values="dice", aggfunc="first")
    order = [t for t in INPLANE_TRANSFORMS if t in wide.columns]
    wide = wide[order]
    records = []
    for transform in order:
        diff = (wide[transform] - wide["identity"]) if "identity" in wide else pd.Series(np.nan, index=wide.index)
        records.append({"transform": transform, "n": int(wide[transform].notna().sum()),
                        "mean_dice": float(wide[transform].mean()), "mean_diff_vs_identity": float(diff.mean()),
                        "n_changed": int((diff.abs() > 1e-9).sum())})
    spread = wide.agg(["min", "max"], axis=1).rename(columns={"min": "min_dice", "max": "max_dice"})
    spread["spread"] = spread["max_dice"] - spread["min_dice"]
    spread["worst_transform"] = wide.idxmin(axis=1)
    spread = spread.reset_index().sort_values("spread", ascending=False, kind="stable").reset_index(drop=True)
    return pd.DataFrame.from_records(records, columns=summary_columns), spread[spread_columns]
