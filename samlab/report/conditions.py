"""Loading a run's tidy results and naming the conditions in them.

Why a module of its own: every table, comparison and figure of the report starts from the
same two questions: which rows exist (:func:`load_results`, absent files noted, never fatal)
and which *condition* a row belongs to (:data:`CONDITION_COLUMNS`, :func:`condition_label`,
:func:`select`). Keeping them here means a new results column changes one file.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..results import COLUMNS, read_results

#: Results files the notebooks write (stem -> who writes it); any other ``*.parquet`` is read too.
RESULT_FILES: dict[str, str] = {
    "zero_shot": "notebook 02 (zero-shot probing)",
    "nnunet": "notebook 03 (nnU-Net baseline)",
    "finetune": "notebook 04 (fine-tuning grid)",
    "fewshot": "notebook 05 (few-shot)",
    "interactive": "notebook 06 (interactive prompting)",
}
#: Results files of optional notebooks or sections (a profile may leave notebook 02b out, notebook 02 may switch
#: its orientation section off): read like the others, never noted as missing.
OPTIONAL_RESULT_FILES: dict[str, str] = {
    "volume_prompting": "notebook 02b (prompt budgets per volume)",
    "orientation_sensitivity": "notebook 02's orientation-sensitivity section (orientation_sensitivity: true)",
}

#: What identifies one condition (a "method" in the broad sense) in the results; ``source`` is the file stem.
#: ``mode`` is a function of method and prompt (:func:`samlab.results.derive_mode`): carried so that titles can
#: say it, but never a reason for two conditions not to match (see :data:`MATCH_COLUMNS`). ``orientation`` is a
#: condition of its own: SAM-family models are not orientation-invariant, so rows sliced in different orientations
#: (``as_stored`` / ``RAS`` / an in-plane transform of the sensitivity study) are never averaged together.
CONDITION_COLUMNS: tuple[str, ...] = ("source", "method", "backbone", "scope", "peft", "recipe", "init", "prompt",
                                      "mode", "orientation", "shots")
MATCH_COLUMNS: tuple[str, ...] = tuple(c for c in CONDITION_COLUMNS if c != "mode")

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
#: What the paper's recommendations rest on (named beside ours; only the pattern is comparable to a phantom).
PAPER_RECOMMENDATIONS_DATA = "paper: the 18-configuration study's real datasets (Gu et al.)"

_BACKBONE_NAMES = {
    "vit_h": "ViT-H", "vit_b": "ViT-B", "vit_l": "ViT-L", "vit_t": "ViT-T", "litemedsam": "LiteMedSAM",
    "medsam_vit_b": "MedSAM", "sam_vit_b": "SAM ViT-B", "sam_vit_l": "SAM ViT-L", "sam_vit_h": "SAM ViT-H",
}
_SCOPE_NAMES = {"decoder": "Decoder", "encoder_decoder": "En/Decoder"}
_PEFT_NAMES = {"vanilla": "Vanilla", "adapter": "Adapter", "lora": "LoRA"}
_BACKBONE_ORDER = ("vit_t", "vit_b", "vit_l", "vit_h")  # encoder depth 4 / 12 / 24 / 32, as in 18-config Fig. 4
_DEFAULT_INITS = ("", "pretrained", "sam", "litemedsam")  # a model's own weights: no [init] in labels
_NO_PROMPT = ("", "none")
MEAN_ROW = "(mean)"

#: How a reader names a structure where it differs from ``structure.replace("_", " ")``.
STRUCTURE_NAMES: dict[str, str] = {"neurovascular_bundle": "neurovascular bundle", MEAN_ROW: "mean over structures"}
_PROMPT_SOURCES = {"oracle": "oracle", "nnunet": "nnU-Net", "gt": "ground-truth"}


def structure_name(structure: str) -> str:
    """``obturator_internus`` -> ``obturator internus``."""
    return STRUCTURE_NAMES.get(structure, str(structure).replace("_", " "))


def prompt_name(prompt: str) -> str:
    """A readable prompt: ``oracle_box+5px`` -> ``oracle box +5 px``, ``nnunet_part_boxes`` -> ``nnU-Net box per
    convex part``, ``oracle_box_exp5`` -> ``oracle box +5 px``, ``box_noisy|oracle`` -> ``noisy box | oracle``."""
    if prompt in _NO_PROMPT:
        return "no prompt"
    parts = []
    for part in str(prompt).split("|"):
        text = re.sub(r"_exp(\d+)$", r"+\1px", part)
        text = re.sub(r"\+(\d+)px", r" +\1 px", text)
        text = text.replace("_component_boxes", " box per component").replace("_part_boxes", " box per convex part")
        words = text.split("_")
        if len(words) == 2 and words[1] in ("noisy", "tight", "jittered"):  # box_noisy -> noisy box
            words = words[::-1]
        parts.append(" ".join(_PROMPT_SOURCES.get(w, w) for w in " ".join(words).split(" ")))
    return " | ".join(parts)


def is_phantom(dataset: str) -> bool:
    """Whether a dataset name is the synthetic phantom (``PelvisPhantom``…): its numbers are not the paper's data."""
    return "phantom" in str(dataset).lower()


def data_sources(rows: pd.DataFrame) -> str:
    """``"PelvisPhantom (synthetic phantom)"``: the datasets of the rows, each said to be a phantom or real."""
    if rows is None or rows.empty:
        return "no data"
    names = [str(d) for d in pd.unique(rows["dataset"])]
    return ", ".join(f"{d} ({'synthetic phantom' if is_phantom(d) else 'real'})" for d in names)


def data_description(rows: pd.DataFrame, unit: str = "volumes") -> str:
    """``"PelvisPhantom (synthetic phantom), n = 6 volumes"`` from the rows a table or figure shows."""
    if rows is None or rows.empty:
        return "no data"
    n = rows.groupby(["dataset", "subject"]).ngroups
    if n == 1 and unit.endswith("s"):  # "n = 1 test volume", not "1 test volumes"
        unit = unit[:-1]
    return f"{data_sources(rows)}, n = {n} {unit}"


def modes_text(rows: pd.DataFrame) -> str:
    """``"box prompts"`` / ``"automatic (no prompt)"`` / ``"box and point prompts"``: the ``mode`` of the rows."""
    if rows is None or rows.empty or "mode" not in rows:
        return "mode unknown"
    names = {"automatic": "automatic (no prompt)", "box": "box prompts", "point": "point prompts", "none": "no prompt"}
    modes = [str(m) for m in pd.unique(rows["mode"])]
    if set(modes) <= {"box", "point"} and len(modes) == 2:
        return "box and point prompts"
    return " and ".join(names.get(m, m) for m in modes)


def recipe_text(rows: pd.DataFrame) -> str:
    """``"recipe paper_adam"`` when the rows name a training recipe, else ``""``."""
    if rows is None or rows.empty or "recipe" not in rows:
        return ""
    recipes = [str(r) for r in pd.unique(rows["recipe"]) if str(r)]
    return ("recipe " + " / ".join(recipes)) if recipes else ""

#: Evaluation levels: 3D rows (``slice == -1``, one per subject: the pelvic study's unit) and 2D rows
#: (``slice >= 0``, one per image: the 18-configuration study's unit). A notebook may write both for
#: the same condition (notebook 04 does); they are never mixed in one test, mean or figure.
LEVELS: tuple[str, ...] = ("3d", "2d")
PELVIC_LEVELS = ("3d", "2d")  # preference order for the pelvic paper's tables and figures
GRID_LEVELS = ("2d", "3d")  # … and for the 18-configuration paper's (it scores 2D images)


def level_of(frame: pd.DataFrame) -> np.ndarray:
    """``"3d"`` for volume rows (``slice == -1``), ``"2d"`` for slice rows."""
    return np.where(frame["slice"].to_numpy() < 0, "3d", "2d")


def at_level(frame: pd.DataFrame, prefer: Sequence[str]) -> tuple[pd.DataFrame, str]:
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
        if stem not in RESULT_FILES and stem not in OPTIONAL_RESULT_FILES:
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


def results_overview(study: StudyResults) -> pd.DataFrame:
    """One row per results file: conditions, subjects, datasets, modes, rows; missing files named with their notebook."""
    records = []
    for name, part in study.frame.groupby("source", sort=False):
        records.append({"file": f"{name}.parquet", "conditions": len(part[list(MATCH_COLUMNS)].drop_duplicates()),
                        "subjects": part["subject"].nunique(),
                        "datasets": ", ".join(f"{d} ({'phantom' if is_phantom(d) else 'real'})"
                                              for d in pd.unique(part["dataset"])),
                        "modes": ", ".join(map(str, pd.unique(part["mode"]))), "2D slices": bool((part["slice"] >= 0).any()),
                        "metrics": ", ".join(sorted(part["metric"].unique())), "rows": len(part)})
    records += [{"file": f"{name}.parquet", "rows": 0, "datasets": f"missing: run {RESULT_FILES[name]}"}
                for name in study.missing]
    return pd.DataFrame.from_records(records)


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
    """A readable name: "LiteMedSAM + oracle box +5 px", "ViT-B + En/Decoder + LoRA", "nnU-Net (2d)", "… k=5"."""
    method = str(cond.get("method", ""))
    backbone = str(cond.get("backbone", ""))
    name = _BACKBONE_NAMES.get(backbone, backbone)
    init = str(cond.get("init", ""))
    prompt = str(cond.get("prompt", ""))
    if method == "nnunet":
        label = "nnU-Net" + (f" ({backbone})" if backbone else "")
    elif method == "zero_shot" or (not cond.get("scope") and not cond.get("peft")):
        label = " + ".join(p for p in (name or method, prompt_name(prompt) if prompt not in _NO_PROMPT else "") if p)
        if init == "random":
            label += " [random init]"
    else:
        parts = [name + (f" [{init}]" if init not in _DEFAULT_INITS else "")]
        parts += [_SCOPE_NAMES.get(str(cond.get("scope", "")), str(cond.get("scope", "")))]
        parts += [_PEFT_NAMES.get(str(cond.get("peft", "")), str(cond.get("peft", "")))]
        label = " + ".join(p for p in parts if p)
        if prompt not in _NO_PROMPT:
            label += f" ({prompt_name(prompt)})"
    if cond.get("recipe"):
        label += f" [{cond['recipe']}]"
    orientation = str(cond.get("orientation", "as_stored"))
    if orientation not in ("", "as_stored"):
        label += f" [{orientation}]"
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
        keys = [c for c in rows.columns if c not in ("seed", "value", "empty_prediction")]
        agg = {"value": "mean", **({"empty_prediction": "max"} if "empty_prediction" in rows.columns else {})}
        rows = rows.groupby(keys, sort=False, dropna=False).agg(agg).reset_index().assign(seed=-1)
    return rows



# =========================================================================== summaries and tables


def subject_means(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per condition and subject: ``metric`` averaged over structures, slices and seeds — the unit of Table 4.

    Pass rows of one level (see :func:`level_of`); the subject is the unit either way.
    """
    part = frame[frame["metric"] == metric]
    keys = [*CONDITION_COLUMNS, "dataset", "subject"]
    return part.groupby(keys, sort=False, dropna=False)["value"].mean().reset_index()


def mean_metric(frame: pd.DataFrame, cond: Mapping[str, Any], metric: str = "dice",
                 prefer: Sequence[str] = GRID_LEVELS) -> float:
    """Mean of the per-subject means of one condition (at the first level of ``prefer`` it has)."""
    rows, _ = at_level(select(frame[frame["metric"] == metric], cond), prefer)
    means = subject_means(rows, metric)
    return float(means["value"].mean()) if len(means) else float("nan")


def pick_level(rows: pd.DataFrame, prefer: Sequence[str]) -> tuple[pd.DataFrame, str]:
    """Rows (of a comparisons or summary table) at the first preferred level they have."""
    for level in prefer:
        if (rows["level"] == level).any():
            return rows[rows["level"] == level], level
    return rows.iloc[:0], prefer[0]


def family_levels(family: str) -> tuple[str, ...]:
    return PELVIC_LEVELS if family.startswith(("zero-shot", "refined")) else GRID_LEVELS


LEVEL_NAMES = {"3d": "3D volumes", "2d": "2D slices"}
