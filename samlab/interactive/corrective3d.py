"""A 3D corrective loop: one 3D box, then a simulated annotator fixes the worst slice until it stops paying.

Why: interactive-segmentation papers report how many interactions a user needs to reach a
target quality (NoC@85 / NoC@90, "clicks to target"). For a volume prompted with one 3D box
(:mod:`samlab.propagate`) the question is how many further prompts bring the propagated mask
to the per-slice oracle (a box on every slice, today's protocol), and whether a box or a click
is the better correction.

The loop (:func:`corrective_loop`), per case and structure:

1. One tight 3D box of the structure (1 prompt); its middle slice is segmented and the mask
   propagated up and down (:func:`samlab.propagate.propagate_volume`).
2. The annotator picks the slice of the 3D box's z-range with the largest error area
   (``pick = "error_area"``: missed plus spurious pixels, what weighs most on 3D Dice) or the
   lowest per-slice Dice (``pick = "dice"``). With box corrections a slice is corrected once.
3. ``kind = "box"``: the annotator draws a box per connected component on that slice, with the
   noise rules of :func:`samlab.interactive.simulate.draw_prompts` (one prompt per box), and the
   mask is re-propagated from that slice to the neighbouring corrected slices (or the 3D box's
   ends). ``kind = "point"``: one click on the largest error region
   (:func:`samlab.interactive.simulate.correction_click`; foreground on a miss, background on a
   spurious region), decoded together with the box that slice was prompted with and the
   slice's earlier clicks (one prompt per click); the slice is re-predicted and re-propagated
   the same way. A slice with no structure but spurious pixels is erased by a box annotator
   (one prompt); a point annotator clicks background there.
4. 3D Dice is recorded after every correction. The loop stops when Dice has not improved by
   more than ``min_delta`` for ``patience`` corrections in a row, when ``budget`` prompts are
   spent (the 3D box included), or when no slice has an error left to correct.

Re-propagation overwrites the slices the new propagation kept; slices past where it stopped
keep their earlier prediction. No correction is undone: a correction that lowers Dice stays
(the annotator sees slices, not 3D Dice), so the recorded curve can fall.

**NoC** (:func:`noc_table`): the fewest prompts after which 3D Dice reaches ``t`` x the
per-slice oracle's 3D Dice (a tight box per 2D component on every slice, :func:`run_corrective`) (``t`` = 0.85 and 0.90). A case that never reaches it within the
loop (stopped by patience or budget) counts as ``budget + 1`` -- the convention of the
interactive-segmentation literature, which charges a failure the maximum -- and is counted
in ``not_reached``, so a mean NoC near ``budget + 1`` reads as "mostly not reached".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from ..data.manifest import present_structures
from ..metrics import dice
from ..models import Predictor
from ..propagate import SliceEmbeddings, box3d_from_mask, every_slice_prediction, propagate_volume
from .simulate import correction_click, draw_prompts, prompt_rng

CorrectionKind = Literal["box", "point"]
TARGETS = (0.85, 0.90)

__all__ = ["TARGETS", "CorrectiveTrace", "CorrectiveResult", "corrective_loop", "run_corrective", "noc_table",
           "clicks_curve"]


@dataclass
class CorrectiveTrace:
    """One case and structure: 3D Dice after each prompt, and why the loop stopped."""

    steps: list[dict] = field(default_factory=list)  # n_prompts, dice, slice, action
    stop_reason: str = ""
    encoder_calls: int = 0
    mask: np.ndarray | None = None


def _slice_errors(mask: np.ndarray, gt: np.ndarray, z0: int, z1: int) -> dict[int, tuple[int, float]]:
    return {z: (int(np.count_nonzero(mask[z] ^ gt[z])), dice(mask[z], gt[z])) for z in range(z0, z1 + 1)}


def _pick_slice(errors: Mapping[int, tuple[int, float]], excluded: set[int], pick: str) -> int | None:
    candidates = [z for z, (area, _) in errors.items() if area > 0 and z not in excluded]
    if not candidates:
        return None
    if pick == "error_area":
        return max(candidates, key=lambda z: (errors[z][0], -z))
    return min(candidates, key=lambda z: (errors[z][1], -errors[z][0], z))


def _segment(z: int, anchors: set[int], z0: int, z1: int) -> tuple[int, int]:
    """The slices a correction on ``z`` re-propagates into: up to (not including) the next corrected slices."""
    below = [a for a in anchors if a < z]
    above = [a for a in anchors if a > z]
    return (max(below) + 1 if below else z0), (min(above) - 1 if above else z1)


def corrective_loop(
    predictor: Predictor,
    volume: np.ndarray,
    gt: np.ndarray,
    budget: int = 10,
    kind: CorrectionKind = "box",
    pick: Literal["error_area", "dice"] = "error_area",
    patience: int = 2,
    min_delta: float = 0.0,
    box_noise_fraction: float = 0.0,
    box_noise_cap_px: float = 20.0,
    max_components: int = 4,
    seed: int = 0,
    case_id: str = "",
    structure: str = "",
    **options,
) -> CorrectiveTrace:
    """Run the corrective loop of the module docstring on one (Z, H, W) volume and structure mask.

    ``options`` go to :func:`samlab.propagate.propagate_volume` (``margin``, ``margin_frame``, ...).
    Box noise is drawn with :func:`samlab.interactive.simulate.prompt_rng` keyed by
    ``(seed, case_id, slice, structure)``, so a rerun draws the same boxes.
    """
    gt = np.asarray(gt, dtype=bool)
    volume = np.asarray(volume)
    if gt.shape != volume.shape:
        raise ValueError(f"ground truth shape {gt.shape} differs from the volume's {volume.shape}")
    if not gt.any():
        raise ValueError(f"structure {structure!r} of {case_id!r} is absent from the ground truth: no 3D box to draw")
    if budget < 1 or patience < 1:
        raise ValueError(f"budget and patience must be >= 1, got {budget}, {patience}")
    if kind not in ("box", "point") or pick not in ("error_area", "dice"):
        raise ValueError(f"kind must be box or point and pick error_area or dice, got {kind!r}, {pick!r}")
    embed = SliceEmbeddings(predictor, volume)
    calls_before = predictor.encoder_calls
    box3d = box3d_from_mask(gt)
    z0, z1 = int(box3d[2]), int(box3d[5])
    first = propagate_volume(predictor, volume, box3d, _embed=embed, **options)
    mask = first.mask.copy()
    prompt_boxes = dict(first.record.prompt_boxes)
    anchors = {first.record.start_slice}
    corrected: set[int] = set()
    clicks: dict[int, list[tuple[float, float, int]]] = {}
    spent = 1
    trace = CorrectiveTrace(steps=[{"n_prompts": 1, "dice": dice(mask, gt), "slice": first.record.start_slice,
                                    "action": "box3d"}])
    best, stale = trace.steps[0]["dice"], 0
    while True:
        if spent >= budget:
            trace.stop_reason = "budget"
            break
        z = _pick_slice(_slice_errors(mask, gt, z0, z1), corrected if kind == "box" else set(), pick)
        if z is None:
            trace.stop_reason = "no_error_left"
            break
        lo, hi = _segment(z, anchors - {z}, z0, z1)
        starts: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = []
        if kind == "box" and not gt[z].any():
            action, cost = "erase", 1
        elif kind == "box":
            rng = prompt_rng(seed, case_id, z, structure, "box_noisy")
            boxes = draw_prompts(gt[z], "box_noisy", rng, max_components=min(max_components, budget - spent),
                                 box_noise_fraction=box_noise_fraction, box_noise_cap_px=box_noise_cap_px)
            starts = [(box, None, None) for box in boxes]
            action, cost = "box", len(boxes)
        else:
            x, y, foreground = correction_click(mask[z], gt[z])
            clicks.setdefault(z, []).append((x, y, int(foreground)))
            box = prompt_boxes.get(z, np.array([box3d[0], box3d[1], box3d[3], box3d[4]], dtype=np.float32))
            points = np.array([(cx, cy) for cx, cy, _ in clicks[z]], dtype=np.float32)
            labels = np.array([label for _, _, label in clicks[z]], dtype=np.int64)
            starts = [(box, points, labels)]
            action, cost = ("point+" if foreground else "point-"), 1
        new = np.zeros_like(mask)
        kept = {z}
        for box, points, labels in starts:
            result = propagate_volume(predictor, volume, box, start_slice=z, z_range=(lo, hi), _embed=embed,
                                      start_points=points, start_point_labels=labels, **options)
            new |= result.mask
            kept |= {int(k) for k in np.flatnonzero(result.mask.any(axis=(1, 2)))}
            for k, b in result.record.prompt_boxes.items():
                if k != z or k not in prompt_boxes:  # a clicked slice keeps the box its clicks were added to
                    prompt_boxes[k] = b
        for k in kept:
            mask[k] = new[k]
        anchors.add(z)
        corrected.add(z)
        spent += cost
        score = dice(mask, gt)
        trace.steps.append({"n_prompts": spent, "dice": score, "slice": z, "action": action})
        if score > best + min_delta:
            best, stale = score, 0
        else:
            stale += 1
            if stale >= patience:
                trace.stop_reason = "no_improvement"
                break
    trace.encoder_calls = predictor.encoder_calls - calls_before
    trace.mask = mask
    return trace


@dataclass
class CorrectiveResult:
    steps: pd.DataFrame  # dataset, subject, structure, backbone, kind, n_prompts, dice, slice, action
    oracle: pd.DataFrame  # subject, structure, backbone, oracle_dice, oracle_prompts
    stops: pd.DataFrame  # subject, structure, backbone, kind, stop_reason, n_prompts, encoder_calls
    budget: int


def run_corrective(
    predictor: Predictor,
    cases: Sequence,
    structures: Mapping[str, Sequence[int]],
    budget: int = 10,
    kinds: Sequence[CorrectionKind] = ("box",),
    dataset: str = "",
    **loop_options,
) -> CorrectiveResult:
    """:func:`corrective_loop` for every case, present structure and correction kind, plus the
    per-slice oracle it is measured against: a tight box per connected component on every slice
    with the structure (one box per slice for one-piece structures; for two femoral heads one
    box per head, the stronger of notebook 02's two per-slice oracles)."""
    steps, oracle, stops = [], [], []
    for case in cases:
        for name in present_structures(case.labels, structures):
            gt = np.isin(case.labels, tuple(structures[name]))
            key = {"subject": case.case_id, "structure": name, "backbone": predictor.spec.name}
            mask, n = every_slice_prediction(predictor, case.image, gt, per_component=True)
            oracle.append({**key, "oracle_dice": dice(mask, gt), "oracle_prompts": n})
            for kind in kinds:
                trace = corrective_loop(predictor, case.image, gt, budget=budget, kind=kind, case_id=case.case_id,
                                        structure=name, **loop_options)
                steps.extend({"dataset": dataset, **key, "kind": kind, **s} for s in trace.steps)
                stops.append({**key, "kind": kind, "stop_reason": trace.stop_reason,
                              "n_prompts": trace.steps[-1]["n_prompts"], "encoder_calls": trace.encoder_calls})
    return CorrectiveResult(pd.DataFrame(steps), pd.DataFrame(oracle), pd.DataFrame(stops), budget)


def _with_oracle(steps: pd.DataFrame, oracle: pd.DataFrame) -> pd.DataFrame:
    return steps.merge(oracle[["subject", "structure", "backbone", "oracle_dice"]],
                       on=["subject", "structure", "backbone"], how="left")


def noc_table(steps: pd.DataFrame, oracle: pd.DataFrame, budget: int,
              targets: Sequence[float] = TARGETS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per case, per structure) NoC to reach ``t`` x the per-slice-oracle 3D Dice for each target ``t``.

    Per case: ``noc@85`` (etc.) = the fewest prompts whose 3D Dice reaches the target, or
    ``budget + 1`` if never (``reached@85`` False). Per structure and kind: mean NoC,
    ``not_reached@85`` (cases), ``n_cases``, mean Dice after the 3D box and at the end, mean oracle Dice.
    """
    merged = _with_oracle(steps, oracle)
    keys = ["dataset", "backbone", "kind", "structure", "subject"]
    cases = []
    for key, rows in merged.groupby(keys, sort=False):
        rows = rows.sort_values("n_prompts")
        row = dict(zip(keys, key))
        row.update(first_dice=float(rows["dice"].iloc[0]), final_dice=float(rows["dice"].iloc[-1]),
                   oracle_dice=float(rows["oracle_dice"].iloc[0]), prompts_used=int(rows["n_prompts"].iloc[-1]))
        for t in targets:
            tag = f"{round(100 * t)}"
            hit = rows[rows["dice"] >= t * row["oracle_dice"]]
            row[f"reached@{tag}"] = bool(len(hit))
            row[f"noc@{tag}"] = int(hit["n_prompts"].iloc[0]) if len(hit) else budget + 1
        cases.append(row)
    per_case = pd.DataFrame(cases)
    agg = {"n_cases": ("subject", "nunique"), "first_dice": ("first_dice", "mean"),
           "final_dice": ("final_dice", "mean"), "oracle_dice": ("oracle_dice", "mean")}
    for t in targets:
        tag = f"{round(100 * t)}"
        agg[f"noc@{tag}"] = (f"noc@{tag}", "mean")
        agg[f"not_reached@{tag}"] = (f"reached@{tag}", lambda s: int((~s.astype(bool)).sum()))
    summary = per_case.groupby(["dataset", "backbone", "kind", "structure"], sort=False).agg(**agg).reset_index()
    return per_case, summary.rename(columns={"backbone": "model"})


def clicks_curve(steps: pd.DataFrame, oracle: pd.DataFrame, budget: int) -> pd.DataFrame:
    """3D Dice relative to the per-slice oracle after 1 .. ``budget`` prompts, mean per structure and kind.

    A case whose loop stopped early keeps its last Dice (the annotator stopped there); a prompt
    count a multi-box step skipped takes the Dice before it. Columns: ``dataset, backbone, kind,
    structure, n_prompts, relative_dice, dice, n_cases``.
    """
    merged = _with_oracle(steps, oracle)
    rows = []
    keys = ["dataset", "backbone", "kind", "structure", "subject"]
    grid = pd.Index(range(1, budget + 1), name="n_prompts")
    for key, part in merged.groupby(keys, sort=False):
        series = part.drop_duplicates("n_prompts", keep="last").set_index("n_prompts")["dice"]
        filled = series.reindex(grid.union(series.index)).ffill().reindex(grid)
        ref = float(part["oracle_dice"].iloc[0])
        for n, value in filled.items():
            rows.append({**dict(zip(keys, key)), "n_prompts": int(n), "dice": float(value),
                         "relative_dice": float(value) / ref if ref > 0 else np.nan})
    frame = pd.DataFrame(rows)
    return frame.groupby(keys[:-1] + ["n_prompts"], sort=False).agg(
        relative_dice=("relative_dice", "mean"), dice=("dice", "mean"), n_cases=("subject", "nunique")).reset_index()
