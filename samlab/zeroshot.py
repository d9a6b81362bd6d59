"""Zero-shot probing: prompt a frozen SAM-family model slice by slice, rebuild 3D, measure.

This is the pelvic MedSAM study's protocol (2D inference per slice, recompiled to
the volume with its original spacing, Dice/HD95 in 3D), generalised to any
prompt source (a label volume: ground truth = oracle, an nnU-Net prediction),
box mode (one box, one box per connected component, one box per near-convex
part of each component, one interior point per component) and isotropic box
expansion. Every slice is encoded once; all prompt variants reuse the embedding
(see :class:`samlab.models.EmbeddingCache`).

Absent structures and empty predictions follow :mod:`samlab.metrics`: a
structure with no voxel in a case's ground truth is skipped for that case (no
prompt, no rows; the pairs are listed in :attr:`ZeroShotResult.absent`), and a
present structure predicted empty scores Dice 0, NSD 0, HD95 NaN with
``empty_prediction`` set (counted per condition by :func:`empty_prediction_summary`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Protocol, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm.auto import tqdm

from . import prompts as P
from .data.manifest import present_structures
from .metrics import evaluate_masks
from .models import Predictor
from .results import make_rows, to_frame


class CaseLike(Protocol):
    case_id: str
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]


@dataclass(frozen=True)
class PromptVariant:
    """One way to prompt: where the prompt comes from, its form, and the box expansion."""

    source: str  # "oracle" or "nnunet"
    mode: str  # "single", "per_component", "per_part" or "point"
    expansion: int = 0

    @property
    def label(self) -> str:
        forms = {"single": "box", "per_component": "component_boxes", "per_part": "part_boxes", "point": "points"}
        form = forms[self.mode]
        return f"{self.source}_{form}" + (f"+{self.expansion}px" if self.expansion else "")


def make_variants(sources: Sequence[str], modes: Sequence[str], expansions: Sequence[int]) -> list[PromptVariant]:
    """All combinations; points ignore box expansion, so they appear once per source."""
    variants = []
    for source in sources:
        for mode in modes:
            for expansion in ([0] if mode == "point" else expansions):
                variants.append(PromptVariant(source, mode, int(expansion)))
    return variants


def structure_mask(labels: np.ndarray, values: Iterable[int]) -> np.ndarray:
    return np.isin(labels, tuple(values))


def _prompts_for(mask2d: np.ndarray, variant: PromptVariant) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(boxes, points) of one variant on one slice mask; both empty if the source lacks the structure."""
    shape = mask2d.shape
    if variant.mode == "single":
        box = P.box_from_mask(mask2d)
        return ([] if box is None else [P.expand_box(box, variant.expansion, shape)]), []
    if variant.mode == "per_component":
        return [P.expand_box(b, variant.expansion, shape) for b in P.component_boxes(mask2d)], []
    if variant.mode == "per_part":
        return [P.expand_box(b, variant.expansion, shape) for b in P.part_boxes(mask2d)], []
    if variant.mode == "point":
        return [], P.component_points(mask2d)
    raise ValueError(f"unknown prompt mode {variant.mode!r}; use single, per_component, per_part or point")


@dataclass
class ZeroShotResult:
    """Tidy metric rows, the 3D predictions (kept for overlay figures) and the skipped absent structures."""

    results: pd.DataFrame
    predictions: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)  # (case, structure, prompt)
    encoder_calls: int = 0
    absent: list[tuple[str, str]] = field(default_factory=list)  # (case, structure) not in the ground truth


def empty_prediction_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per condition (backbone, prompt) and structure: evaluations scored and how many predicted nothing.

    One evaluation = one Dice row (every evaluation has one). ``n_empty`` counts
    those marked ``empty_prediction``: their Dice and NSD are 0 and their HD95 NaN,
    so an HD95 mean covers ``n_scored - n_empty`` evaluations.
    """
    columns = ["backbone", "prompt", "structure", "n_scored", "n_empty"]
    dice = results[results["metric"] == "dice"]
    if dice.empty:
        return pd.DataFrame(columns=columns)
    grouped = dice.groupby(["backbone", "prompt", "structure"], sort=False)["empty_prediction"]
    table = grouped.agg(n_scored="size", n_empty="sum").reset_index()
    table["n_empty"] = table["n_empty"].astype(int)
    return table[columns]


def _report(absent: Sequence[tuple[str, str]], results: pd.DataFrame) -> None:
    """Print what was not scored (absent structures) and which conditions predicted nothing."""
    if absent:
        pairs = ", ".join(f"{case}/{name}" for case, name in absent[:10]) + (" ..." if len(absent) > 10 else "")
        print(f"skipped {len(absent)} (case, structure) pair(s) as absent from the ground truth "
              f"(not scored): {pairs}")
    summary = empty_prediction_summary(results)
    empty = summary[summary["n_empty"] > 0]
    if not empty.empty:
        print(f"empty predictions (Dice 0, NSD 0, HD95 NaN) in {int(empty['n_empty'].sum())} of "
              f"{int(summary['n_scored'].sum())} evaluation(s):")
        print(empty.to_string(index=False))


def predict_case(
    predictor: Predictor,
    case: CaseLike,
    structures: Mapping[str, Sequence[int]],
    variants: Sequence[PromptVariant],
    prompt_labels: Mapping[str, np.ndarray],
) -> dict[tuple[str, str], np.ndarray]:
    """3D binary predictions ``{(structure, variant label): volume}`` for one case.

    A slice is encoded only if some prompt source has some structure on it;
    slices without a prompt stay empty, as in the paper.
    """
    shape = case.labels.shape
    out = {(s, v.label): np.zeros(shape, dtype=bool) for s in structures for v in variants}
    sources = sorted({v.source for v in variants})
    for source in sources:
        if prompt_labels[source].shape != shape:
            raise ValueError(
                f"prompt source {source!r} for case {case.case_id} has shape {prompt_labels[source].shape}, "
                f"the image has {shape}"
            )
    for z in range(shape[0]):
        requests: list[tuple[str, str, list[np.ndarray], list[np.ndarray]]] = []
        for name, values in structures.items():
            for variant in variants:
                mask2d = structure_mask(prompt_labels[variant.source][z], values)
                if not mask2d.any():
                    continue
                boxes, points = _prompts_for(mask2d, variant)
                if boxes or points:
                    requests.append((name, variant.label, boxes, points))
        if not requests:
            continue
        embedding = predictor.embed(case.image[z])
        # Identical prompts (e.g. the single box and the only component's box) are decoded once.
        unique_boxes = list({tuple(b.tolist()): None for _, _, boxes, _ in requests for b in boxes})
        unique_points = list({tuple(p.tolist()): None for _, _, _, points in requests for p in points})
        box_masks = dict(zip(unique_boxes, predictor.decode(embedding, boxes=np.array(unique_boxes)).masks())) if unique_boxes else {}
        point_masks = (
            dict(zip(unique_points, predictor.decode(embedding, points=np.array(unique_points)[:, None, :]).masks()))
            if unique_points else {}
        )
        for name, label, boxes, points in requests:
            union = out[(name, label)][z]
            for b in boxes:
                union |= box_masks[tuple(b.tolist())]
            for q in points:
                union |= point_masks[tuple(q.tolist())]
    return out


def run_zero_shot(
    predictor: Predictor,
    cases: Sequence[CaseLike],
    structures: Mapping[str, Sequence[int]],
    variants: Sequence[PromptVariant],
    prompt_sources: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    dataset: str = "",
    nsd_tolerance_mm: float = 2.0,
    keep_predictions: bool = True,
    seed: int = 0,
    progress: bool = True,
    orientation: str = "as_stored",
) -> ZeroShotResult:
    """Run every prompt variant on every case and evaluate in 3D (Dice, HD95 mm, NSD).

    ``prompt_sources`` maps a source name to ``{case_id: label volume}``; the
    ``oracle`` source defaults to each case's ground truth. Cases a source lacks
    are skipped for that source's variants (and reported by the caller).
    Structures absent from a case's ground truth are skipped for that case (no
    prompt from any source, no rows) and listed in ``ZeroShotResult.absent``; the
    absent pairs and the empty predictions per condition are printed. ``orientation`` is the
    run's curation setting (``RunDir.orientation()``), written into every row.
    """
    prompt_sources = dict(prompt_sources or {})
    rows = []
    absent: list[tuple[str, str]] = []
    predictions: dict[tuple[str, str, str], np.ndarray] = {}
    calls_before = predictor.encoder_calls
    for case in tqdm(cases, desc=f"zero-shot {predictor.spec.name}", disable=not progress):
        available = {"oracle": case.labels}
        for source, volumes in prompt_sources.items():
            if case.case_id in volumes:
                available[source] = volumes[case.case_id]
        case_variants = [v for v in variants if v.source in available]
        if not case_variants:
            continue
        present = {name: structures[name] for name in present_structures(case.labels, structures)}
        absent += [(case.case_id, name) for name in structures if name not in present]
        if not present:
            continue
        predicted = predict_case(predictor, case, present, case_variants, available)
        for (name, label), volume in predicted.items():
            gt = structure_mask(case.labels, structures[name])
            values = evaluate_masks(volume, gt, case.spacing, nsd_tolerance_mm=nsd_tolerance_mm)
            context = {
                "dataset": dataset,
                "subject": case.case_id,
                "structure": name,
                "method": "zero_shot",
                "backbone": predictor.spec.name,
                "init": predictor.model.init,
                "prompt": label,
                "orientation": orientation,
                "seed": seed,
            }
            rows.extend(make_rows(context, values))
            if keep_predictions:
                predictions[(case.case_id, name, label)] = volume
    frame = to_frame(rows)
    _report(absent, frame)
    return ZeroShotResult(frame, predictions, predictor.encoder_calls - calls_before, absent)


def shape_descriptors(cases: Sequence[CaseLike], structures: Mapping[str, Sequence[int]]) -> pd.DataFrame:
    """Per case and structure: mean connected components per slice and mean 2D solidity.

    Solidity = area / convex-hull area of the slice mask (1 for convex shapes, low
    for rings, crescents and pairs of distant objects); used to test the paper's
    claim that disjoint and non-convex structures are what box-prompted SAM fails.
    """
    records = []
    for case in cases:
        for name, values in structures.items():
            mask = structure_mask(case.labels, values)
            components, solidity = [], []
            for z in np.flatnonzero(mask.any(axis=(1, 2))):
                components.append(ndimage.label(mask[z], structure=np.ones((3, 3)))[1])
                solidity.append(P.solidity(mask[z]))
            if components:
                records.append(
                    {
                        "subject": case.case_id,
                        "structure": name,
                        "components_per_slice": float(np.mean(components)),
                        "solidity": float(np.mean(solidity)),
                        "voxels": int(mask.sum()),
                    }
                )
    return pd.DataFrame.from_records(records)


ERROR_REGIONS = ("target", "concavity", "between_components", "elsewhere")


def _shape_regions(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per slice: (union of each component's convex hull, convex hull of the whole slice mask)."""
    component_hulls = np.zeros_like(mask, dtype=bool)
    whole_hull = np.zeros_like(mask, dtype=bool)
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        for component in P.connected_components(mask[z]):
            component_hulls[z] |= P.convex_hull(component)
        whole_hull[z] = P.convex_hull(mask[z]) | component_hulls[z]
    return component_hulls, whole_hull


def error_breakdown(
    predictions: Mapping[tuple[str, str, str], np.ndarray],
    cases: Sequence[CaseLike],
    structures: Mapping[str, Sequence[int]],
) -> pd.DataFrame:
    """Where each prediction's voxels fall relative to the ground truth's shape.

    Dice says *that* a box prompt failed; this says *how*, separating the paper's
    two failure modes. Predicted voxels are split into: ``target`` (ground truth),
    ``concavity`` (inside a component's convex hull but not the structure: a
    crescent's hollow filled in, the non-convex failure), ``between_components``
    (inside the hull of the whole slice mask but outside every component's hull:
    the space between two femoral heads, the disjoint failure) and ``elsewhere``.
    Hulls are 2D, per slice, as the prompts are. Values are fractions of the
    predicted voxels (NaN when nothing was predicted); ``predicted_voxels`` and
    ``gt_voxels`` give the sizes.
    """
    by_id = {case.case_id: case for case in cases}
    regions: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    records = []
    for (case_id, name, prompt), predicted in predictions.items():
        if case_id not in by_id or name not in structures:
            raise KeyError(f"prediction for ({case_id!r}, {name!r}) has no matching case or structure")
        case = by_id[case_id]
        if (case_id, name) not in regions:
            gt = structure_mask(case.labels, structures[name])
            regions[(case_id, name)] = (gt, *_shape_regions(gt))
        gt, component_hulls, whole_hull = regions[(case_id, name)]
        if predicted.shape != gt.shape:
            raise ValueError(f"prediction for ({case_id}, {name}, {prompt}) has shape {predicted.shape}, "
                             f"the labels have {gt.shape}")
        predicted = predicted.astype(bool)
        total = int(predicted.sum())
        counts = {
            "target": int((predicted & gt).sum()),
            "concavity": int((predicted & component_hulls & ~gt).sum()),
            "between_components": int((predicted & whole_hull & ~component_hulls).sum()),
            "elsewhere": int((predicted & ~whole_hull).sum()),
        }
        record = {"subject": case_id, "structure": name, "prompt": prompt,
                  "predicted_voxels": total, "gt_voxels": int(gt.sum())}
        record.update({k: (v / total if total else float("nan")) for k, v in counts.items()})
        records.append(record)
    columns = ["subject", "structure", "prompt", "predicted_voxels", "gt_voxels", *ERROR_REGIONS]
    return pd.DataFrame.from_records(records, columns=columns)


def pool_error_breakdown(frame: pd.DataFrame) -> pd.DataFrame:
    """Per structure and prompt: the share of all predicted voxels (pooled over cases) in each region."""
    counts = frame[list(ERROR_REGIONS)].fillna(0.0).mul(frame["predicted_voxels"], axis=0)
    counts[["structure", "prompt", "predicted_voxels"]] = frame[["structure", "prompt", "predicted_voxels"]]
    pooled = counts.groupby(["structure", "prompt"], sort=False).sum()
    total = pooled["predicted_voxels"].replace(0, np.nan)
    return pooled[list(ERROR_REGIONS)].div(total, axis=0).join(pooled["predicted_voxels"]).reset_index()


def _cell(mean: float, sd: float, n: int, n_empty: int) -> str:
    text = "—" if not np.isfinite(mean) else f"{mean:.2f} ± {sd:.2f}" if np.isfinite(sd) else f"{mean:.2f}"
    return f"{text} ({n_empty}/{n} empty)" if n_empty else text


def summary_table(results: pd.DataFrame, metrics: Sequence[str] = ("dice", "hd95")) -> pd.DataFrame:
    """Table-1-shaped summary: structures x (model, prompt) with ``mean ± sd`` per metric.

    A cell with empty predictions says how many, ``(k/n empty)``: Dice and NSD
    count them as 0 in the mean, HD95 (NaN for them) is the mean of the other
    ``n - k``; a cell whose every prediction was empty has no HD95 (``—``).
    """
    frame = results[results["metric"].isin(metrics)]
    grouped = frame.groupby(["metric", "structure", "backbone", "prompt"])
    stats = grouped.agg(mean=("value", "mean"), std=("value", "std"), n=("value", "size"),
                        n_empty=("empty_prediction", "sum")).reset_index()
    stats["cell"] = [_cell(m, s, int(n), int(k)) for m, s, n, k in
                     zip(stats["mean"], stats["std"], stats["n"], stats["n_empty"])]
    table = stats.pivot_table(index=["metric", "structure"], columns=["backbone", "prompt"], values="cell", aggfunc="first")
    return table.reindex(list(metrics), level=0)


def component_vs_single(results: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Per structure and source: mean metric of one box vs one box per component / per convex part.

    The beyond-the-paper remedies: per-component boxes for bilateral/disjoint
    structures, per-part boxes for non-convex ones. ``gain`` > 0 means
    per-component boxes did better than one box, ``part_gain`` > 0 that per-part
    boxes did (same source and expansion); NaN where a mode did not run.
    """
    frame = results[results["metric"] == metric].copy()
    parts = frame["prompt"].str.extract(
        r"^(?P<source>[a-z]+)_(?P<form>box|component_boxes|part_boxes|points)(?:\+(?P<exp>\d+)px)?$")
    frame = frame.join(parts)
    frame = frame[frame["form"].isin(["box", "component_boxes", "part_boxes"])]
    frame["exp"] = frame["exp"].fillna("0").astype(int)
    means = frame.groupby(["backbone", "source", "exp", "structure", "form"])["value"].mean().unstack("form")
    means = means.rename(columns={"box": "single_box", "component_boxes": "per_component", "part_boxes": "per_part"})
    means = means.reindex(columns=["single_box", "per_component", "per_part"])
    means["gain"] = means["per_component"] - means["single_box"]
    means["part_gain"] = means["per_part"] - means["single_box"]
    return means.reset_index()


def best_worst_panels(result: ZeroShotResult, cases: Sequence[CaseLike], structures: Mapping[str, Sequence[int]],
                      prompt: str, n: int = 2) -> list[dict]:
    """Slices of the best and worst cases (by 3D Dice) for one prompt, for an overlay figure."""
    by_id = {c.case_id: c for c in cases}
    dice = result.results[(result.results["metric"] == "dice") & (result.results["prompt"] == prompt)]
    dice = dice.sort_values("value")
    picks = list(dice.head(n).itertuples()) + list(dice.tail(n).itertuples())[::-1]
    panels = []
    for row in picks:
        case = by_id[row.subject]
        gt = structure_mask(case.labels, structures[row.structure])
        pred = result.predictions.get((row.subject, row.structure, prompt))
        if pred is None:
            continue
        z = int(np.argmax(gt.sum(axis=(1, 2))))
        panels.append({"image": case.image[z], "gt": gt[z], "pred": pred[z],
                       "title": f"{row.structure} {row.subject} z={z}\nDice {row.value:.2f} ({prompt})"})
    return panels


# --------------------------------------------------------------------------- which cases, which reference, which shape

#: Dataset names the pelvic paper's Table 1 and commentary apply to: the phantom (PelvisPhantom) and the pelvic
#: MR set (PelvicMR). A prostate-only set is not: its structures and shapes differ from the paper's eight.
PELVIC_DATASET_HINTS = ("pelvi",)


def resolve_split(split: str, prompt_sources: Sequence[str], nnunet_available: bool) -> tuple[str, str]:
    """The split notebook 02 evaluates and why.

    ``auto``: zero-shot needs no held-out cases, so every case is scored (``all``),
    unless nnU-Net prompts are asked for -- nnU-Net predicts only its held-out
    (``test``) cases, and oracle and nnU-Net prompts are compared pair by pair on the
    same cases, so then every source is scored on the test split, whether or not
    notebook 03's predictions exist yet (``nnunet_available`` only changes the reason
    given). An explicit split is kept as given.
    """
    if split != "auto":
        return split, f"split {split!r} set in the parameters"
    if "nnunet" in prompt_sources:
        reason = "nnU-Net prompts are compared and nnU-Net predicts the held-out test cases only"
        if not nnunet_available:
            reason += " (its predictions are not there yet: run notebook 03 first)"
        return "test", reason
    return "all", "zero-shot needs no held-out cases, so every case is evaluated"


def scored_cases_note(n_scored: int, n_total: int, split: str, reason: str, max_cases: int | None = None) -> str:
    """One line saying how many of the dataset's cases a notebook scores, and why when it is fewer than all."""
    if n_scored >= n_total:
        return f"scoring all {n_total} case(s) of the dataset ({reason})"
    why = [f"split {split!r}: {reason}"]
    if max_cases is not None and n_scored == max_cases:
        why.append(f"max_cases={max_cases}")
    return (f"NOTE: scoring {n_scored} of the dataset's {n_total} case(s) ({'; '.join(why)}); "
            "set split='all' and max_cases=None to score every case")


def is_pelvic_dataset(dataset: str) -> bool:
    """Whether the pelvic paper (and the phantom's commentary) applies: the phantom or the pelvic set."""
    name = dataset.lower()
    return any(hint in name for hint in PELVIC_DATASET_HINTS)


def classify_shapes(shapes: pd.DataFrame, min_solidity: float = 0.8) -> pd.Series:
    """Per structure, its shape class computed from the masks (a :func:`shape_descriptors` table):

    ``disjoint`` when its slices hold >= 1.5 connected components on average (bilateral pairs),
    else ``convex`` when the mean 2D solidity is >= ``min_solidity``, else ``non-convex``
    (rings, crescents). Why computed: a fixed pelvic lookup says nothing about another dataset.
    """
    if shapes.empty:
        return pd.Series(dtype=str, name="shape")
    mean = shapes.groupby("structure")[["components_per_slice", "solidity"]].mean()
    classes = np.where(mean["components_per_slice"] >= 1.5, "disjoint",
                       np.where(mean["solidity"] >= min_solidity, "convex", "non-convex"))
    return pd.Series(classes, index=mean.index, name="shape")
