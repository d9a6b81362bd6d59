"""Notebook 02b: prompt budgets per volume over a run's cases, and where propagation fails.

Why: notebook 02 (like both seed studies) prompts every slice with its own box, so a
40-slice structure costs 40 prompts. A clinician draws one 3D box per volume, one per
part, or a box every few slices. This module runs :func:`samlab.propagate.budget_masks`
(one 3D box, one per 3D component, every k-th slice, every slice) on every case and
evaluation structure and turns it into

* schema rows (:mod:`samlab.results`; ``method = "propagation"``, ``prompt`` = the budget
  name, ``mode = "box"``) for the report and the paired statistics;
* :func:`budget_table`: one row per model, structure and budget with the mean number of
  prompts, mean 3D Dice / HD95 / NSD and the number of cases (the table the report shows);
* :func:`slice_profile`: per-slice Dice of the one-box propagation and of the per-slice
  oracle against the slice's position in the structure's extent (0 = its first labelled
  slice, 1 = its last): propagation fails at the ends (apex/base), where the structure is
  small and the previous slice's box no longer fits.

The embeddings come from the predictor's cache: run after notebook 02 in the same run
directory, every slice visited here was encoded there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .data.manifest import present_structures
from .metrics import dice, evaluate_masks
from .models import Predictor
from .propagate import budget_masks
from .results import make_rows, to_frame

METHOD = "propagation"
#: Budgets in the order of the prompts they usually spend (the figure's legend order).
BUDGET_ORDER = ("volume_box", "component_boxes", "every_10_slices", "every_5_slices", "every_3_slices",
                "every_2_slices", "every_slice", "every_slice_components")
#: The two strategies whose per-slice Dice :func:`slice_profile` compares.
PROFILE_STRATEGIES = ("volume_box", "every_slice")

__all__ = ["METHOD", "BudgetResult", "run_prompt_budgets", "budget_table", "slice_profile", "failure_slices"]


@dataclass
class BudgetResult:
    results: pd.DataFrame  # the tidy schema, one row per case x structure x budget x metric
    prompts: pd.DataFrame  # subject, structure, backbone, prompt, n_prompts
    slices: pd.DataFrame  # subject, structure, backbone, prompt, slice, position, gt_pixels, dice
    encoder_calls: int


def _slice_rows(mask: np.ndarray, gt: np.ndarray) -> list[dict]:
    zs = np.flatnonzero(gt.any(axis=(1, 2)))
    lo, hi = int(zs[0]), int(zs[-1])
    rows = []
    for z in range(lo, hi + 1):
        rows.append({"slice": z, "position": (z - lo) / (hi - lo) if hi > lo else 0.5,
                     "gt_pixels": int(gt[z].sum()), "dice": dice(mask[z], gt[z])})
    return rows


def run_prompt_budgets(
    predictor: Predictor,
    cases: Sequence,
    structures: Mapping[str, Sequence[int]],
    every_k: Sequence[int] = (5, 10),
    dataset: str = "",
    nsd_tolerance_mm: float = 2.0,
    seed: int = 0,
    **options,
) -> BudgetResult:
    """Every budget of :func:`samlab.propagate.budget_masks` on every case and present structure.

    Boxes come from the ground truth (an oracle annotator). Structures absent from a
    case are skipped (no prompt, no row). ``options`` go to
    :func:`samlab.propagate.propagate_volume` (``margin``, ``margin_frame``, ...).
    """
    rows, prompt_rows, slice_rows = [], [], []
    calls_before = predictor.encoder_calls
    for case in cases:
        for name in present_structures(case.labels, structures):
            gt = np.isin(case.labels, tuple(structures[name]))
            context = {"dataset": dataset, "subject": case.case_id, "structure": name, "method": METHOD,
                       "backbone": predictor.spec.name, "init": predictor.model.init, "mode": "box", "seed": seed}
            for budget, mask, n in budget_masks(predictor, case.image, gt, every_k=every_k, **options):
                values = evaluate_masks(mask, gt, case.spacing, nsd_tolerance_mm=nsd_tolerance_mm)
                rows.extend(make_rows({**context, "prompt": budget}, values))
                key = {"subject": case.case_id, "structure": name, "backbone": predictor.spec.name, "prompt": budget}
                prompt_rows.append({**key, "n_prompts": int(n)})
                if budget in PROFILE_STRATEGIES:
                    slice_rows.extend({**key, **r} for r in _slice_rows(mask, gt))
    return BudgetResult(to_frame(rows), pd.DataFrame(prompt_rows), pd.DataFrame(slice_rows),
                        predictor.encoder_calls - calls_before)


def _order(budgets: Sequence[str]) -> list[str]:
    known = [b for b in BUDGET_ORDER if b in set(budgets)]
    return known + sorted(set(budgets) - set(known))


def budget_table(results: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
    """One row per model, structure and budget: mean prompts, mean Dice / HD95 / NSD, cases.

    ``hd95`` is the mean over the cases whose prediction was not empty (HD95 is undefined
    for an empty mask); ``n_empty`` says how many were. Columns: ``dataset, model,
    structure, budget, n_prompts, dice, hd95, nsd, n_cases, n_empty``.
    """
    keys = ["dataset", "backbone", "structure", "prompt"]
    wide = results.pivot_table(index=keys + ["subject"], columns="metric", values="value", aggfunc="first")
    empty = results[results["metric"] == "dice"].set_index(keys + ["subject"])["empty_prediction"]
    wide = wide.join(empty).reset_index()
    wide = wide.merge(prompts, on=["subject", "structure", "backbone", "prompt"])
    table = wide.groupby(keys, sort=False).agg(n_prompts=("n_prompts", "mean"), dice=("dice", "mean"),
                                               hd95=("hd95", "mean"), nsd=("nsd", "mean"),
                                               n_cases=("subject", "nunique"),
                                               n_empty=("empty_prediction", "sum")).reset_index()
    table = table.rename(columns={"backbone": "model", "prompt": "budget"})
    order = {b: i for i, b in enumerate(_order(table["budget"].unique()))}
    table["n_empty"] = table["n_empty"].astype(int)
    return table.sort_values(["model", "structure", "budget"], key=lambda c: c.map(order) if c.name == "budget" else c,
                             ignore_index=True)


def slice_profile(slices: pd.DataFrame, bins: int = 5) -> pd.DataFrame:
    """Mean per-slice Dice in ``bins`` equal bins of the position in the structure's extent.

    Columns: ``backbone, structure, prompt, bin, position (bin centre), dice, n_slices``.
    """
    if slices.empty:
        return pd.DataFrame(columns=["backbone", "structure", "prompt", "bin", "position", "dice", "n_slices"])
    frame = slices.assign(bin=np.minimum((slices["position"] * bins).astype(int), bins - 1))
    out = frame.groupby(["backbone", "structure", "prompt", "bin"]).agg(dice=("dice", "mean"),
                                                                       n_slices=("dice", "size")).reset_index()
    out["position"] = (out["bin"] + 0.5) / bins
    return out


def failure_slices(slices: pd.DataFrame, drop: float = 0.2) -> pd.DataFrame:
    """Slices where one-box propagation loses more than ``drop`` Dice against the per-slice oracle.

    Columns: ``subject, structure, slice, position, gt_pixels, dice_propagated, dice_oracle,
    loss, where`` (``end`` within the outer fifth of the extent at either side, else ``middle``).
    """
    a, b = PROFILE_STRATEGIES
    keys = ["backbone", "subject", "structure", "slice", "position", "gt_pixels"]
    paired = slices[slices["prompt"] == a].merge(slices[slices["prompt"] == b], on=keys,
                                                 suffixes=("_propagated", "_oracle"))
    paired["loss"] = paired["dice_oracle"] - paired["dice_propagated"]
    paired["where"] = np.where((paired["position"] < 0.2) | (paired["position"] > 0.8), "end", "middle")
    out = paired[paired["loss"] > drop]
    return out[keys + ["dice_propagated", "dice_oracle", "loss", "where"]].sort_values("loss", ascending=False,
                                                                                       ignore_index=True)
