"""samlab.report: tables, comparisons and figures built from synthetic tidy results with known answers."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from statsmodels.stats.multitest import multipletests

from samlab.config import StatisticsParams
from samlab.report.conditions import PAPER_RECOMMENDATIONS
from samlab.report import (
    MEAN_ROW,
    Comparison,
    condition_label,
    load_results,
    paired_comparison,
    pelvic_table1,
    plan_comparisons,
    recommendations,
    regenerate,
    run_comparisons,
    select,
)
from samlab.results import make_rows, to_frame, write_results
from samlab.stats import bootstrap_ci, compare

# R's `sleep` data (Student 1908): t.test(extra ~ group, data = sleep, paired = TRUE)
#   -> t = -4.0621, df = 9, p-value = 0.002833, mean difference -1.58
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]

STRUCTURES = ("bladder", "prostate", "rectum")
FAST = dict(n_resamples=500)


def _rows(values, structure="bladder", metric="dice", subjects=None, **context):
    subjects = subjects or [f"s{i:02d}" for i in range(len(values))]
    rows = []
    for subject, value in zip(subjects, values):
        rows += make_rows({"dataset": "D", "subject": subject, "structure": structure, **context}, {metric: value})
    return rows


def _frame(rows, source):
    return to_frame(rows).assign(source=source)


# --------------------------------------------------------------------------- a synthetic study


def _synthetic_study(results_dir, n_subjects=6, seed=0, parts=("zero_shot", "nnunet", "finetune", "fewshot", "interactive"),
                     backbones=("vit_t", "vit_b", "vit_h")):
    """Results files shaped like notebooks 02-06 write them, with effects chosen so the answers are known.

    Dice = condition base + subject effect + small noise; vit_h-encoder_decoder-lora is the best
    fine-tuning configuration by construction, vit_b-encoder_decoder-adapter the best 5-shot one.
    """
    rng = np.random.default_rng(seed)
    subjects = [f"pelvis_{i:03d}" for i in range(n_subjects)]
    subject_effect = dict(zip(subjects, rng.normal(0, 0.02, n_subjects)))
    structure_effect = {"bladder": 0.05, "prostate": 0.0, "rectum": -0.05}

    def rows_for(base, context, seeds=(0,), slices=0):
        """3D rows (slice -1); with ``slices`` also 2D rows (Dice, NSD) as notebook 04 writes them."""
        rows = []
        for seed_ in seeds:
            for subject in subjects:
                for structure in STRUCTURES:
                    dice = float(np.clip(base + subject_effect[subject] + structure_effect[structure]
                                         + rng.normal(0, 0.01), 0, 1))
                    hd = float(max(0.5, 30 * (1 - dice) + rng.normal(0, 0.3)))
                    where = {"dataset": "PelvisPhantom", "subject": subject, "structure": structure, "seed": seed_}
                    rows += make_rows({**where, **context}, {"dice": dice, "hd95": hd, "nsd": dice})
                    for z in range(slices):
                        value = float(np.clip(dice - 0.02 + rng.normal(0, 0.01), 0, 1))
                        rows += make_rows({**where, **context, "slice": z}, {"dice": value, "nsd": value})
        return rows

    files = {}
    if "zero_shot" in parts:
        rows = []
        for backbone, shift in (("medsam_vit_b", 0.0), ("litemedsam", -0.03)):
            for prompt, base in (("oracle_box", 0.80), ("oracle_box+5px", 0.81), ("nnunet_box", 0.76),
                                 ("nnunet_box+5px", 0.77), ("oracle_component_boxes", 0.85), ("oracle_part_boxes", 0.84),
                                 ("oracle_points", 0.30)):
                rows += rows_for(base + shift, {"method": "zero_shot", "backbone": backbone, "init": "pretrained",
                                                "prompt": prompt})
        files["zero_shot"] = rows
    if "nnunet" in parts:
        files["nnunet"] = rows_for(0.92, {"method": "nnunet", "backbone": "2d", "init": "scratch", "prompt": "none"})
    if "finetune" in parts:
        rows = []
        for backbone, b_shift in (b for b in (("vit_t", 0.0), ("vit_b", 0.01), ("vit_h", 0.03)) if b[0] in backbones):
            for scope, s_shift in (("decoder", 0.0), ("encoder_decoder", 0.05)):
                for peft, p_shift in (("vanilla", 0.0), ("adapter", 0.02), ("lora", 0.03)):
                    rows += rows_for(0.78 + b_shift + s_shift + p_shift,
                                     {"method": "finetune", "backbone": backbone, "scope": scope, "peft": peft,
                                      "init": "pretrained", "prompt": "none"}, slices=3)
        rows += rows_for(0.86, {"method": "finetune", "backbone": "litemedsam", "scope": "encoder_decoder",
                                "peft": "vanilla", "init": "pretrained", "prompt": "oracle_box"}, slices=3)
        files["finetune"] = rows
    if "fewshot" in parts:
        rows = []
        for k, k_shift in ((5, 0.0), (10, 0.04)):
            for peft, p_shift in (("vanilla", 0.0), ("adapter", 0.05)):
                rows += rows_for(0.65 + k_shift + p_shift, {"method": "finetune", "backbone": "vit_b",
                                                             "scope": "encoder_decoder", "peft": peft,
                                                             "init": "pretrained", "prompt": "none", "shots": k},
                                 seeds=(0, 1))
            rows += rows_for(0.60 + k_shift, {"method": "nnunet", "backbone": "2d", "init": "scratch", "prompt": "none",
                                              "shots": k}, seeds=(0, 1))
        files["fewshot"] = rows
    if "interactive" in parts:
        rows = []
        for prompt, shift in (("box", 0.0), ("point", -0.15)):
            rows += rows_for(0.80 + shift, {"method": "zero_shot", "backbone": "vit_t", "init": "pretrained", "prompt": prompt})
            for peft, p_shift in (("vanilla", 0.0), ("adapter", 0.04)):
                rows += rows_for(0.86 + shift + p_shift, {"method": "finetune", "backbone": "vit_t",
                                                           "scope": "encoder_decoder", "peft": peft,
                                                           "init": "pretrained", "prompt": prompt})
        files["interactive"] = rows
    for name, rows in files.items():
        write_results(to_frame(rows), results_dir / f"{name}.parquet")
    return files


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("study")
    _synthetic_study(run_dir / "results")
    return run_dir


@pytest.fixture(scope="module")
def study(study_dir):
    return load_results(study_dir / "results")


# --------------------------------------------------------------------------- paired comparisons


def test_paired_comparison_reproduces_the_sleep_reference():
    frame = pd.concat([_frame(_rows(SLEEP_1, method="A"), "x"), _frame(_rows(SLEEP_2, method="B"), "x")])
    table, notes = paired_comparison(frame, {"method": "A"}, {"method": "B"}, label_a="A", label_b="B", **FAST)
    assert notes == []
    assert len(table) == 1  # one structure: no (mean) row
    row = table.iloc[0]
    assert (row["a"], row["b"], row["structure"], row["n"]) == ("A", "B", "bladder", 10)
    assert row["t"] == pytest.approx(-4.0621, abs=1e-4)
    assert row["df"] == 9
    assert row["p_t"] == pytest.approx(0.002833, abs=5e-7)
    assert row["mean_diff"] == pytest.approx(-1.58)
    assert row["cohen_dz"] == pytest.approx(-4.0621 / math.sqrt(10), abs=1e-4)
    w = scipy.stats.wilcoxon(SLEEP_1, SLEEP_2)
    assert row["W"] == pytest.approx(w.statistic) and row["p_w"] == pytest.approx(w.pvalue)
    diffs = np.subtract(SLEEP_1, SLEEP_2)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(bootstrap_ci(diffs, n_resamples=500, seed=0))
    assert row["ci_low"] < -1.58 < row["ci_high"]
    assert row["stars"] == "**" and bool(row["significant"]) and row["better"] == "b"


def test_structure_correction_and_mean_row_agree_with_stats_compare():
    rng = np.random.default_rng(3)
    rows_a, rows_b = [], []
    for structure, shift in zip(STRUCTURES, (0.3, 0.05, 0.0)):
        base = rng.normal(0.7, 0.1, 8)
        rows_a += _rows(base + shift + rng.normal(0, 0.05, 8), structure=structure, method="A")
        rows_b += _rows(base, structure=structure, method="B")
    frame = pd.concat([_frame(rows_a, "x"), _frame(rows_b, "x")], ignore_index=True)
    table, _ = paired_comparison(frame, {"method": "A"}, {"method": "B"}, **FAST)
    reference = compare(frame, "method", "A", "B", "dice", correction="holm", n_resamples=500)
    per_structure = table[table["structure"] != MEAN_ROW].reset_index(drop=True)
    assert list(per_structure["structure"]) == list(STRUCTURES)
    np.testing.assert_allclose(per_structure["p_t"], reference["p"])
    np.testing.assert_allclose(per_structure["p_t_holm"], reference["p_adj"])
    np.testing.assert_allclose(per_structure["p_t_bh"], multipletests(reference["p"], method="fdr_bh")[1])
    np.testing.assert_allclose(per_structure[["ci_low", "ci_high"]], reference[["ci_low", "ci_high"]])
    assert list(per_structure["stars"]) == list(reference["stars"])
    # the (mean) row tests each subject's mean over the three structures: n = 8 subjects
    mean_row = table[table["structure"] == MEAN_ROW].iloc[0]
    a = frame[frame.method == "A"].groupby("subject")["value"].mean()
    b = frame[frame.method == "B"].groupby("subject")["value"].mean()
    assert mean_row["n"] == 8
    assert mean_row["p_t"] == pytest.approx(scipy.stats.ttest_rel(a, b).pvalue)


def test_3d_and_2d_rows_are_tested_apart():
    rng = np.random.default_rng(5)
    rows = []
    for method, shift in (("A", 0.05), ("B", 0.0)):
        for i in range(5):
            for structure in ("bladder", "rectum"):
                base = 0.7 + 0.02 * i + shift
                rows += make_rows({"dataset": "D", "subject": f"s{i}", "structure": structure, "method": method},
                                  {"dice": base + rng.normal(0, 0.01)})
                for z in range(3):
                    rows += make_rows({"dataset": "D", "subject": f"s{i}", "structure": structure, "method": method,
                                       "slice": z}, {"dice": base - 0.1 + rng.normal(0, 0.01)})
    for structure in ("bladder", "rectum"):  # C: volumes only
        rows += _rows([0.6, 0.62, 0.61, 0.6, 0.63], structure=structure, method="C", subjects=[f"s{i}" for i in range(5)])
    frame = _frame(rows, "x")
    table, notes = paired_comparison(frame, {"method": "A"}, {"method": "B"}, **FAST)
    by = table.set_index(["level", "structure"])
    assert by.loc[("3d", "bladder"), "n"] == 5 and by.loc[("3d", "bladder"), "unit"] == "subject"
    assert by.loc[("2d", "bladder"), "n"] == 15 and by.loc[("2d", "bladder"), "unit"] == "slice"
    assert by.loc[("2d", MEAN_ROW), "n"] == 5 and by.loc[("2d", MEAN_ROW), "unit"] == "subject"
    two_d = frame[(frame.slice >= 0) & (frame.structure == "bladder")].sort_values(["subject", "slice"])
    assert by.loc[("2d", "bladder"), "p_t"] == pytest.approx(scipy.stats.ttest_rel(
        two_d[two_d.method == "A"]["value"], two_d[two_d.method == "B"]["value"]).pvalue)
    assert notes == []
    # a condition with volumes only is compared with A's volumes only, and says so
    table, notes = paired_comparison(frame, {"method": "A"}, {"method": "C"}, **FAST)
    assert set(table["level"]) == {"3d"} and list(table["n"]) == [5, 5, 5]  # bladder, rectum, (mean)
    assert any("compared on 3d rows only" in n for n in notes)


def test_unmatched_pairs_are_refused_or_intersected():
    frame = pd.concat([_frame(_rows(SLEEP_1, method="A"), "x"), _frame(_rows(SLEEP_2[:9], method="B"), "x")])
    with pytest.raises(ValueError, match="unmatched pairs"):
        paired_comparison(frame, {"method": "A"}, {"method": "B"}, **FAST)
    table, notes = paired_comparison(frame, {"method": "A"}, {"method": "B"}, unmatched="intersect", **FAST)
    assert table.iloc[0]["n"] == 9
    assert table.iloc[0]["p_t"] == pytest.approx(scipy.stats.ttest_rel(SLEEP_1[:9], SLEEP_2[:9]).pvalue)
    assert any("1 unmatched key(s) dropped" in n for n in notes)
    # in a plan, the refusal becomes a note and the other comparisons still run
    plan = [Comparison("f", {"method": "A"}, {"method": "B"}), Comparison("f", {"method": "A"}, {"method": "A2"})]
    table, notes = run_comparisons(frame, plan, **FAST)
    assert table.empty
    assert any("unmatched pairs" in n for n in notes) and any("matches no results rows" in n for n in notes)


def test_a_condition_with_two_prompts_is_refused_as_ambiguous():
    frame = pd.concat([_frame(_rows(SLEEP_1, method="A", prompt="box") + _rows(SLEEP_1, method="A", prompt="point"), "x"),
                       _frame(_rows(SLEEP_2, method="B"), "x")])
    with pytest.raises(ValueError, match=r"several rows.*prompt"):
        paired_comparison(frame, {"method": "A"}, {"method": "B"}, **FAST)
    table, _ = paired_comparison(frame, {"method": "A", "prompt": "box"}, {"method": "B"}, **FAST)
    assert table.iloc[0]["n"] == 10


def test_seeds_are_averaged_per_subject_before_pairing():
    rows = _rows([0.5, 0.6, 0.7], method="A", seed=0) + _rows([0.7, 0.8, 0.9], method="A", seed=1)
    frame = pd.concat([_frame(rows, "x"), _frame(_rows([0.5, 0.5, 0.5], method="B"), "x")])
    picked = select(frame, {"method": "A"})
    assert list(picked.sort_values("subject")["value"]) == pytest.approx([0.6, 0.7, 0.8])
    table, _ = paired_comparison(frame, {"method": "A"}, {"method": "B"}, **FAST)
    assert table.iloc[0]["n"] == 3 and table.iloc[0]["mean_diff"] == pytest.approx(0.2)


def test_hd95_direction_lower_is_better():
    frame = pd.concat([_frame(_rows([2.0, 2.1, 1.9, 2.2, 2.0], metric="hd95", method="A"), "x"),
                       _frame(_rows([9.0, 9.5, 8.7, 9.9, 9.1], metric="hd95", method="B"), "x")])
    table, _ = paired_comparison(frame, {"method": "A"}, {"method": "B"}, **FAST)
    assert table.iloc[0]["mean_diff"] < 0 and table.iloc[0]["better"] == "a"


def test_family_correction_spans_the_comparisons_of_a_family():
    frame = pd.concat([_frame(_rows(SLEEP_1, method="A"), "x"), _frame(_rows(SLEEP_2, method="B"), "x"),
                       _frame(_rows(np.add(SLEEP_2, [0.1, -0.2, 0.3, 0.0, 0.1, -0.1, 0.2, 0.0, -0.3, 0.1]), method="C"), "x")])
    plan = [Comparison("fam", {"method": "A"}, {"method": "B"}), Comparison("fam", {"method": "C"}, {"method": "B"})]
    table, notes = run_comparisons(frame, plan, **FAST)
    assert notes == [] and len(table) == 2
    np.testing.assert_allclose(table["p_family_holm"], multipletests(table["p_t"], method="holm")[1])
    np.testing.assert_allclose(table["p_family_bh"], multipletests(table["p_t"], method="fdr_bh")[1])


# --------------------------------------------------------------------------- the plan


def test_plan_finds_the_papers_comparisons(study):
    plan, notes = plan_comparisons(study.frame)
    names = {(c.family, c.name) for c in plan}
    families = {c.family for c in plan}
    assert ("zero-shot: nnU-Net vs oracle boxes (pelvic Fig. 3)",
            "MedSAM + nnU-Net box vs MedSAM + oracle box") in names
    assert ("zero-shot: expanded vs tight box", "LiteMedSAM + oracle box +5 px vs LiteMedSAM + oracle box") in names
    assert ("zero-shot: one box per component vs one box",
            "MedSAM + oracle box per component vs MedSAM + oracle box") in names
    assert ("refined vs nnU-Net (pelvic Fig. 4)",
            "LiteMedSAM + En/Decoder + Vanilla (oracle box) vs nnU-Net (2d)") in names
    assert ("fine-tuning: best configuration vs nnU-Net (18-config Fig. 4, right)",
            "ViT-H + En/Decoder + LoRA vs nnU-Net (2d)") in names
    assert ("few-shot: more training images", "ViT-B + En/Decoder + Adapter k=10 vs ViT-B + En/Decoder + Adapter k=5") in names
    assert ("interactive: fine-tuned vs off-the-shelf (18-config Fig. 10)",
            "ViT-T + En/Decoder + Adapter (box) vs ViT-T + box") in names
    # 3 backbones x 3 PEFT methods scope contrasts; 3 backbones x 2 scopes x 3 method contrasts
    assert sum(c.family == "fine-tuning: En/Decoder vs decoder only" for c in plan) == 9
    assert sum(c.family == "fine-tuning: PEFT method" for c in plan) == 18
    assert "zero-shot: backbone" in families and notes == []


def test_interactive_prompts_are_contrasted_one_factor_at_a_time():
    rows = []
    for prompt in ("box_noisy|single", "box_noisy|oracle", "point_deep|single", "point_deep|oracle"):
        rows += _rows([0.5, 0.6, 0.7], method="interactive", backbone="litemedsam", prompt=prompt)
    plan, _ = plan_comparisons(_frame(rows, "interactive"))
    pairs = {(c.a["prompt"], c.b["prompt"]) for c in plan}
    assert pairs == {("box_noisy|oracle", "box_noisy|single"), ("box_noisy|oracle", "point_deep|oracle"),
                     ("box_noisy|single", "point_deep|single"), ("point_deep|oracle", "point_deep|single")}


def test_nan_values_are_reported_and_leave_the_pair_out(tmp_path):
    values = list(SLEEP_1)
    values[3] = float("nan")
    write_results(to_frame(_rows(values, method="A") + _rows(SLEEP_2, method="B")), tmp_path / "zero_shot.parquet")
    study = load_results(tmp_path)
    assert any("1 row(s) have a NaN value" in n for n in study.notes)
    table, _ = paired_comparison(study.frame, {"method": "A"}, {"method": "B"}, **FAST)
    keep = [i for i in range(10) if i != 3]
    assert table.iloc[0]["n"] == 9
    assert table.iloc[0]["p_t"] == pytest.approx(
        scipy.stats.ttest_rel(np.take(SLEEP_1, keep), np.take(SLEEP_2, keep)).pvalue)


def test_plan_notes_what_is_absent(tmp_path):
    _synthetic_study(tmp_path, parts=("zero_shot",))
    study = load_results(tmp_path)
    assert study.missing == ["nnunet", "finetune", "fewshot", "interactive"]
    plan, notes = plan_comparisons(study.frame)
    assert not any("nnU-Net (" in c.label_b for c in plan)
    assert any("no nnU-Net results" in n for n in notes) and any("no fine-tuning results" in n for n in notes)


# --------------------------------------------------------------------------- tables


def test_recommendations_pick_the_highest_mean_with_its_ci(study):
    table, notes = recommendations(study.frame, n_resamples=500)
    by = table.set_index("scenario")
    # one scenario per training mode, named from the rows: the synthetic grid is prompt-free (18 configurations),
    # its LiteMedSAM refinement box-prompted; a box-prompted model never competes with prompt-free ones
    assert {"single dataset (automatic (no prompt))", "single dataset (box prompts)"} <= set(by.index)
    boxed = by.loc["single dataset (box prompts)"]
    assert boxed["candidates"] == 1 and boxed["best"].startswith("LiteMedSAM")
    assert boxed["paper_recommendation"] == PAPER_RECOMMENDATIONS["prompt-based"]
    by = by.drop(index="single dataset (box prompts)")
    by.index = [s.split(" (")[0] + (f" (k={s.split('k=')[1][0]})" if "k=" in s else "") if not s.startswith("prompt")
                else s for s in by.index]
    single = by.loc["single dataset"]
    assert single["best"] == "ViT-H + En/Decoder + LoRA" and single["candidates"] == 18
    frame = study.frame
    rows = frame[(frame.source == "finetune") & (frame.backbone == "vit_h") & (frame.scope == "encoder_decoder")
                 & (frame.peft == "lora") & (frame.metric == "dice") & (frame.slice >= 0)]  # 2D, as the paper
    assert single["level"] == "2d" and by.loc["zero-shot", "level"] == "3d"
    assert single["mean"] == pytest.approx(rows.groupby("subject")["value"].mean().mean())
    assert single["ci_low"] < single["mean"] < single["ci_high"] and single["n"] == 6
    assert single["runner_up"] == "ViT-H + En/Decoder + Adapter"  # base 0.88; best 0.89
    assert single["paper_recommendation"] == "ViT-H + En/Decoder + LoRA"
    assert by.loc["few-shot (k=5)", "best"] == "ViT-B + En/Decoder + Adapter k=5"
    assert by.loc["few-shot (k=5)", "verdict"] == "best"  # +0.05 over 6 subjects, noise 0.01
    assert by.loc["prompt-based (point)", "best"] == "ViT-T + En/Decoder + Adapter (point)"
    assert by.loc["zero-shot", "best"] == "MedSAM + oracle box per component"
    assert by.loc["few-shot (k=5)", "nnunet_mean"] == pytest.approx(
        frame[(frame.source == "fewshot") & (frame.method == "nnunet") & (frame.shots == 5) & (frame.metric == "dice")]
        ["value"].mean())


def test_recommendations_call_a_tie_a_tie():
    same = [0.80, 0.82, 0.79, 0.81, 0.80]
    rows = _rows(same, method="finetune", backbone="vit_b", scope="decoder", peft="lora")
    rows += _rows(np.add(same, [0.001, -0.001, 0.002, -0.002, 0.0005]).tolist(),
                  method="finetune", backbone="vit_b", scope="decoder", peft="adapter")
    table, _ = recommendations(_frame(rows, "finetune"), n_resamples=500)
    row = table.iloc[0]
    assert row["best"] == "ViT-B + Decoder + Adapter"
    assert row["verdict"].startswith("tie") and row["p_vs_runner_up"] > 0.05


def test_pelvic_table1_puts_ours_beside_the_paper(study):
    long, wide = pelvic_table1(study.frame)
    cell = long[(long.metric == "dice") & (long.structure == "bladder") & (long.model == "MedSAM") & (long.prompt == "oracle")].iloc[0]
    frame = study.frame
    ours = frame[(frame.source == "zero_shot") & (frame.backbone == "medsam_vit_b") & (frame.prompt == "oracle_box")
                 & (frame.structure == "bladder") & (frame.metric == "dice")]["value"]
    assert cell["ours_mean"] == pytest.approx(ours.mean()) and cell["ours_sd"] == pytest.approx(ours.std(ddof=1))
    assert (cell["paper_mean"], cell["paper_sd"], cell["ours_n"]) == (0.81, 0.24, 6)
    row = wide[(wide.metric == "dice") & (wide.structure == "bladder")].iloc[0]
    assert row["MedSAM | oracle | paper"] == "0.81 ± 0.24"
    assert row["MedSAM | oracle | ours"] == f"{ours.mean():.2f} ± {ours.std(ddof=1):.2f}"
    assert row["nnU-Net | none | ours"] != "—" and row["LiteMedSAM refined | oracle | ours"] != "—"
    # structures of the paper that this run lacks show a dash, not a made-up number
    assert wide[(wide.metric == "dice") & (wide.structure == "bone")].iloc[0]["MedSAM | oracle | ours"] == "—"


def test_condition_labels():
    assert condition_label({"method": "finetune", "backbone": "vit_b", "scope": "encoder_decoder", "peft": "lora",
                            "init": "pretrained", "prompt": "none", "shots": 5}) == "ViT-B + En/Decoder + LoRA k=5"
    assert condition_label({"method": "nnunet", "backbone": "3d_fullres", "scope": "", "peft": "", "init": "scratch",
                            "prompt": "none", "shots": -1}) == "nnU-Net (3d_fullres)"
    assert condition_label({"method": "finetune", "backbone": "vit_b", "scope": "decoder", "peft": "adapter",
                            "init": "medsam", "prompt": "none", "shots": -1}) == "ViT-B [medsam] + Decoder + Adapter"


# --------------------------------------------------------------------------- loading and regenerate


def test_corrupt_results_file_is_named(tmp_path):
    (tmp_path / "zero_shot.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(ValueError, match="zero_shot.parquet"):
        load_results(tmp_path)


def test_report_holds_every_table_and_figure_the_results_allow(tmp_path):
    import matplotlib.pyplot as plt

    from samlab.report import build_report

    _synthetic_study(tmp_path / "results", n_subjects=4, backbones=("vit_b",))
    params = StatisticsParams(n_resamples=200, parameter_table=False, metrics=["dice", "hd95"])
    report = build_report(tmp_path, params, verbose=False)
    try:
        expected = {"pelvic_fig1_sam_vs_nnunet", "pelvic_fig3_prompt_source", "pelvic_fig4_refined_vs_nnunet",
                    "zeroshot_box_expansion", "zeroshot_component_boxes", "zeroshot_part_boxes", "finetune_fig4_grid",
                    "finetune_fig4_best_vs_nnunet", "finetune_fig9_fewshot_grid", "finetune_fig12_fewshot_curve",
                    "finetune_fig10_interactive"}
        assert expected <= set(report.figures)
        assert any(name.startswith("effects_") for name in report.figures)
        assert {"comparisons", "summary", "pelvic_table1", "pelvic_table1_long",
                "finetune_table4_recommendations"} <= set(report.tables)
        fig3 = report.tables["comparisons"]
        fig3 = fig3[fig3.comparison == "MedSAM + nnU-Net box vs MedSAM + oracle box"]
        assert set(fig3.metric) == {"dice", "hd95"} and (fig3[fig3.structure != MEAN_ROW].n == 4).all()
        # nothing skipped; fine-tuned models (2D + 3D rows) meet nnU-Net and zero-shot (3D only) on volumes
        assert report.notes and all("compared on 3d rows only" in n for n in report.notes)
    finally:
        plt.close("all")


def test_regenerate_writes_png_pdf_csv_and_prunes_its_stale_outputs(tmp_path):
    study_dir = tmp_path / "run"
    _synthetic_study(study_dir / "results", n_subjects=4, parts=("zero_shot", "nnunet"))
    params = StatisticsParams(n_resamples=200, parameter_table=False, metrics=["dice", "hd95"])
    out = tmp_path / "figs"
    written = regenerate(study_dir, out, "synthetic", params=params, verbose=False)
    folder = out / "synthetic"
    names = {p.name for p in written if p.parent == folder}
    for stem in ("pelvic_fig1_sam_vs_nnunet", "pelvic_fig3_prompt_source", "zeroshot_component_boxes"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names, stem
    assert {"comparisons.csv", "summary.csv", "pelvic_table1.csv", "notes.txt"} <= names
    assert all(p.is_file() for p in written)
    assert (study_dir / "figures" / "07_pelvic_fig3_prompt_source.png").is_file()
    assert (folder / "pelvic_fig3_prompt_source.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "pelvic_fig3_prompt_source.pdf").read_bytes()[:5] == b"%PDF-"
    table = pd.read_csv(folder / "pelvic_table1.csv")
    assert table.loc[(table.metric == "dice") & (table.structure == "bladder"), "MedSAM | oracle | paper"].item() == "0.81 ± 0.24"
    assert not list(folder.glob(".tmp_*"))

    # the nnU-Net results disappear: Fig. 1 goes (here and in the run dir), Fig. 3 stays, the notes say why
    (study_dir / "results" / "nnunet.parquet").unlink()
    regenerate(study_dir, out, "synthetic", params=params, verbose=False)
    assert not (folder / "pelvic_fig1_sam_vs_nnunet.png").exists()
    assert not (study_dir / "figures" / "07_pelvic_fig1_sam_vs_nnunet.pdf").exists()
    assert (folder / "pelvic_fig3_prompt_source.png").exists()
    notes = (folder / "notes.txt").read_text()
    assert "missing nnunet.parquet" in notes and "notebook 03" in notes
    assert "pelvic_fig1_sam_vs_nnunet.png" not in json.loads((folder / "manifest.json").read_text())["files"]


def test_regenerate_without_any_results(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "empty"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"profile": "quick"}))
    written = regenerate(run_dir, tmp_path / "figs", params=StatisticsParams(parameter_table=False))
    assert [p.name for p in written if p.parent == tmp_path / "figs" / "quick"] == ["notes.txt"]  # profile from run.json
    assert "missing zero_shot.parquet" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="does not exist"):
        regenerate(tmp_path / "nowhere", tmp_path / "figs")


def test_statistics_params_validate():
    with pytest.raises(ValueError, match="profile_name"):
        StatisticsParams(profile_name="../up")
    with pytest.raises(ValueError, match="correction"):
        StatisticsParams(correction="sidak")


@pytest.mark.slow
def test_parameter_table_matches_the_papers_table3_counts(tmp_path):
    from samlab.report import table3_parameters as parameter_table

    cache = tmp_path / "table3.json"
    table = parameter_table(cache).set_index("config")
    assert len(table) == 18
    # decoder-only vanilla trains SAM's whole mask decoder with the paper's 2 outputs: 3.92 M in Table 3
    assert table.loc["vit_b-decoder-vanilla", "ours_trainable"] == 3918019
    assert round(table.loc["vit_h-encoder_decoder-vanilla", "ours_total"] / 1e6, 2) == 640.95
    assert (table["trainable_ratio"].between(0.5, 1.5)).all()
    # the cache is read back while its key (code + package versions) holds, and ignored once it does not
    stored = json.loads(cache.read_text())
    stored["rows"][0]["ours_trainable"] = -1
    cache.write_text(json.dumps(stored))
    assert parameter_table(cache)["ours_trainable"].iloc[0] == -1
    stored["key"] = "stale"
    cache.write_text(json.dumps(stored))
    assert parameter_table(cache)["ours_trainable"].iloc[0] == 3918019  # vit_h-decoder-vanilla, recounted
