"""samlab.report: titles, labels and stars say only what the rows they draw support (issue 15)."""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from samlab.config import StatisticsParams
from samlab.report import build_report, condition_summary, pelvic_table1
from samlab.report.conditions import prompt_name, structure_name
from samlab.report.figures import short_comparison
from samlab.results import make_rows, to_frame, write_results

STRUCTURES = ("bladder", "obturator_internus")


def _grid_rows(n_subjects: int, prompt: str, dataset: str = "PelvisPhantom", seed: int = 0) -> list[dict]:
    """Fine-tuning grid rows (2 configurations, 2D + 3D) and an nnU-Net reference, box-prompted when ``prompt``."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_subjects):
        for structure in STRUCTURES:
            where = {"dataset": dataset, "subject": f"case_{i:02d}", "structure": structure}
            for peft, base in (("vanilla", 0.80), ("lora", 0.84)):
                ctx = {**where, "method": "finetune", "backbone": "vit_b", "scope": "decoder", "peft": peft,
                       "init": "pretrained", "prompt": prompt, "recipe": "paper_adam"}
                dice = float(base + rng.normal(0, 0.01))
                rows += make_rows(ctx, {"dice": dice, "hd95": 30 * (1 - dice)})
                rows += make_rows({**ctx, "slice": 3}, {"dice": dice - 0.01})
            rows += make_rows({**where, "method": "nnunet", "backbone": "2d", "prompt": "none"},
                              {"dice": float(0.9 + rng.normal(0, 0.01)), "hd95": 3.0})
    return rows


def _texts(fig: matplotlib.figure.Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


def _report(tmp_path, rows, **params):
    write_results(to_frame(rows), tmp_path / "results" / "finetune.parquet")
    settings = dict(n_resamples=200, parameter_table=False, metrics=["dice", "hd95"]) | params
    return build_report(tmp_path, StatisticsParams(**settings), verbose=False)


def test_grid_title_is_read_from_the_rows_it_plots(tmp_path):
    report = _report(tmp_path, _grid_rows(6, "oracle_box"))
    try:
        title = " ".join(_texts(report.figures["finetune_fig4_grid"]))
        assert "box prompts" in title and "automatic" not in title  # every row was box-prompted
        assert "n = 6 subjects" in title and "PelvisPhantom (synthetic phantom)" in title
        assert "recipe paper_adam" in title
        scenarios = report.tables["finetune_table4_recommendations"]["scenario"].tolist()
        assert scenarios == ["single dataset (box prompts, recipe paper_adam)"]
    finally:
        plt.close("all")


def test_grid_title_says_automatic_for_prompt_free_rows_and_counts_n(tmp_path):
    report = _report(tmp_path, _grid_rows(3, ""))
    try:
        title = " ".join(_texts(report.figures["finetune_fig4_grid"]))
        assert "automatic (no prompt)" in title and "box" not in title
        assert "n = 3 subjects" in title
    finally:
        plt.close("all")


def test_both_training_modes_get_their_own_grid_figure_table4_row_and_contrast(tmp_path):
    rows = _grid_rows(6, "none") + [r for r in _grid_rows(6, "box", seed=1) if r["method"] != "nnunet"]
    report = _report(tmp_path, rows)
    try:
        automatic = " ".join(_texts(report.figures["finetune_fig4_grid"]))
        boxed = " ".join(_texts(report.figures["finetune_fig4_grid_box"]))
        assert "automatic (no prompt)" in automatic and "box prompts" not in automatic  # the paper's main setting
        assert "box prompts" in boxed and "automatic" not in boxed
        table4 = report.tables["finetune_table4_recommendations"]
        assert table4["scenario"].tolist() == ["single dataset (automatic (no prompt), recipe paper_adam)",
                                               "single dataset (box prompts, recipe paper_adam)"]
        assert table4["paper_recommendation"].iloc[0] != table4["paper_recommendation"].iloc[1]  # single vs prompt-based
        comparisons = report.tables["comparisons"]
        families = set(comparisons["family"])
        assert "fine-tuning: box prompts vs automatic" in families
        best = comparisons[comparisons["family"].str.startswith("fine-tuning: best configuration")]
        assert len(best) and best["comparison"].str.contains("box").any() and \
            (~best["comparison"].str.contains("box")).any()  # one best per mode, never box against automatic
    finally:
        plt.close("all")


def test_point_prompted_grid_gets_its_own_figure_and_the_box_vs_point_contrast(tmp_path):
    rows = _grid_rows(6, "box") + [r for r in _grid_rows(6, "point", seed=2) if r["method"] != "nnunet"]
    report = _report(tmp_path, rows)
    try:
        boxed = " ".join(_texts(report.figures["finetune_fig4_grid"]))  # no automatic rows: box is the main panel
        clicked = " ".join(_texts(report.figures["finetune_fig4_grid_point"]))
        assert "box prompts" in boxed and "point" not in boxed
        assert "point prompts" in clicked and "box" not in clicked
        families = set(report.tables["comparisons"]["family"])
        assert "fine-tuning: box vs point prompts (18-config Fig. 10)" in families
        assert "fine-tuning: box prompts vs automatic" not in families
    finally:
        plt.close("all")


def test_no_star_anywhere_when_every_comparison_has_fewer_than_min_n_pairs(tmp_path):
    report = _report(tmp_path, _grid_rows(4, "oracle_box"))  # 4 volumes < 5: nothing may be tested
    try:
        comparisons = report.tables["comparisons"]
        assert len(comparisons) and (comparisons["test"] == "not tested (n < 5)").all()
        assert comparisons["p"].isna().all() and not comparisons["significant"].any()
        assert (comparisons["stars"] == "").all()
        for name, fig in report.figures.items():
            assert not any("*" in text for text in _texts(fig)), name
        forest = " ".join(_texts(report.figures["effects_fine_tuning_peft_method"]))
        assert "not tested" in forest and "n = 4" in forest
        assert "PelvisPhantom (synthetic phantom)" in forest  # a phantom difference never reads as a real one
        best = " ".join(_texts(report.figures["finetune_fig4_best_vs_nnunet"]))
        assert "PelvisPhantom (synthetic phantom)" in best
    finally:
        plt.close("all")


def test_stars_come_back_with_enough_pairs_and_the_test_is_named(tmp_path):
    report = _report(tmp_path, _grid_rows(8, "oracle_box"))
    try:
        comparisons = report.tables["comparisons"]
        peft = comparisons[comparisons["family"] == "fine-tuning: PEFT method"]
        assert (peft["test"] == "paired t").all() and peft["significant"].all()  # +0.04 Dice, noise 0.01
        assert (peft["stars"].str.startswith("*")).all()
        forest = " ".join(_texts(report.figures["effects_fine_tuning_peft_method"]))
        assert "paired t" in forest and "n = 8" in forest
        # the threshold is a parameter: with min_n = 10 the same 8 pairs are reported, not tested
        strict = _report(tmp_path / "strict", _grid_rows(8, "oracle_box"), min_n=10).tables["comparisons"]
        assert (strict["test"] == "not tested (n < 10)").all() and (strict["stars"] == "").all()
    finally:
        plt.close("all")


def test_slices_of_fewer_than_min_n_volumes_get_no_star(tmp_path):
    """2 volumes x 8 slices are 16 pairs but 2 subjects: the 2D rows are reported, never tested."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(2):
        for z in range(8):
            for peft, base in (("vanilla", 0.80), ("lora", 0.90)):
                ctx = {"dataset": "PelvisPhantom", "subject": f"case_{i:02d}", "structure": "bladder", "slice": z,
                       "method": "finetune", "backbone": "vit_b", "scope": "decoder", "peft": peft,
                       "init": "pretrained", "prompt": "oracle_box", "recipe": "paper_adam"}
                rows += make_rows(ctx, {"dice": float(base + rng.normal(0, 0.01))})
    report = _report(tmp_path, rows, metrics=["dice"])
    try:
        comparisons = report.tables["comparisons"]
        per_structure = comparisons[comparisons["structure"] == "bladder"]
        assert len(per_structure) and (per_structure["n"] == 16).all() and (per_structure["subjects"] == 2).all()
        assert (per_structure["test"] == "not tested (slices of 2 subjects < 5)").all()
        assert (comparisons["stars"] == "").all() and not comparisons["significant"].any()
        for name, fig in report.figures.items():
            assert not any("*" in text for text in _texts(fig)), name
        forest = " ".join(_texts(report.figures["effects_fine_tuning_peft_method"]))
        assert "slices of < 5 subjects" in forest
    finally:
        plt.close("all")


def test_summary_counts_empty_predictions_and_skips_their_nan_distances():
    frame = to_frame(_grid_rows(5, "oracle_box")).assign(source="finetune")
    frame["empty_prediction"] = False
    empty = (frame["subject"] == "case_01") & (frame["structure"] == "bladder") & (frame["peft"] == "lora") \
        & (frame["slice"] < 0)
    frame.loc[empty & (frame["metric"] == "hd95"), "value"] = np.nan
    frame.loc[empty & (frame["metric"] == "dice"), "value"] = 0.0
    frame.loc[empty, "empty_prediction"] = True
    summary = condition_summary(frame, ["hd95"], n_resamples=200)
    cell = summary[(summary["peft"] == "lora") & (summary["structure"] == "bladder") & (summary["level"] == "3d")].iloc[0]
    assert cell["n_empty"] == 1 and cell["n"] == 4  # the empty prediction's HD95 is not averaged as a distance
    assert np.isfinite(cell["mean"])
    # older results without the column: the count is unknown (NaN), not 0
    old = condition_summary(frame.drop(columns="empty_prediction"), ["dice"], n_resamples=200)
    assert old["n_empty"].isna().all()


def test_pelvic_table1_names_the_data_of_every_column():
    rows = []
    for i in range(6):
        for prompt in ("oracle_box", "nnunet_box"):
            rows += make_rows({"dataset": "PelvisPhantom", "subject": f"c{i}", "structure": "bladder",
                               "method": "zero_shot", "backbone": "medsam_vit_b", "prompt": prompt},
                              {"dice": 0.8, "hd95": 5.0})
    long, wide = pelvic_table1(to_frame(rows).assign(source="zero_shot"))
    header = wide.iloc[0]
    assert header["metric"] == "(data)" and "only the pattern is comparable" in header["structure"]
    assert header["MedSAM | oracle | ours"] == "samlab: PelvisPhantom (synthetic phantom), n = 6 volumes"
    assert "117 real" in header["MedSAM | oracle | paper"]
    assert header["nnU-Net | none | ours"] == "samlab: not in this run"
    assert set(long["ours_data"]) >= {"samlab: PelvisPhantom (synthetic phantom), n = 6 volumes"}


@pytest.mark.parametrize("raw, shown", [
    ("oracle_box", "oracle box"), ("oracle_box+5px", "oracle box +5 px"), ("oracle_box_exp5", "oracle box +5 px"),
    ("nnunet_part_boxes", "nnU-Net box per convex part"), ("oracle_component_boxes", "oracle box per component"),
    ("box_noisy|oracle", "noisy box | oracle"), ("", "no prompt"),
])
def test_prompt_display_names(raw, shown):
    assert prompt_name(raw) == shown


def test_structure_names_and_short_comparison_labels():
    assert structure_name("obturator_internus") == "obturator internus"
    assert structure_name("(mean)") == "mean over structures"
    assert short_comparison("MedSAM + oracle box +5 px vs MedSAM + oracle box") == "MedSAM: oracle box +5 px vs oracle box"
    assert short_comparison("ViT-B + Decoder + LoRA vs ViT-B + Decoder + Vanilla") == "ViT-B + Decoder: LoRA vs Vanilla"
    assert short_comparison("nnU-Net (2d) vs MedSAM + oracle box") == "nnU-Net (2d) vs MedSAM + oracle box"


def test_samlab_figures_cli_prints_and_writes_no_star_below_min_n(tmp_path, capsys):
    from samlab.cli import main

    run = tmp_path / "runs" / "tiny"
    write_results(to_frame(_grid_rows(3, "oracle_box")), run / "results" / "finetune.parquet")
    (run / "run.json").write_text('{"profile": "tiny"}')
    try:
        assert main(["figures", str(run), "--out", str(tmp_path / "figs"), "--no-parameter-table"]) == 0
    finally:
        plt.close("all")
    printed = capsys.readouterr().out
    assert "*" not in printed and "wrote" in printed
    comparisons = pd.read_csv(tmp_path / "figs" / "tiny" / "comparisons.csv", keep_default_na=False)
    assert len(comparisons) and (comparisons["stars"] == "").all()
    assert set(comparisons["test"]) == {"not tested (n < 5)"}


def _error_bar_lengths(fig: matplotlib.figure.Figure) -> list[float]:
    """Vertical extent of every error-bar segment drawn on the figure's axes."""
    lengths = []
    for ax in fig.axes:
        for collection in ax.collections:
            if isinstance(collection, matplotlib.collections.LineCollection):
                lengths += [abs(float(seg[1][1] - seg[0][1])) for seg in collection.get_segments()]
    return lengths


@pytest.mark.parametrize("n_subjects, drawn", [(3, False), (6, True)])
def test_grid_bars_draw_a_bootstrap_interval_only_from_min_n_subjects(tmp_path, n_subjects, drawn):
    report = _report(tmp_path, _grid_rows(n_subjects, "oracle_box"), min_n=5)
    try:
        fig = report.figures["finetune_fig4_grid"]
        lengths = _error_bar_lengths(fig)
        assert lengths, "the bars were drawn without error-bar collections"
        assert any(length > 0 for length in lengths) is drawn
        assert ("no 95 % CI drawn where n < 5" in " ".join(_texts(fig))) is not drawn
    finally:
        plt.close("all")


def test_hide_small_intervals_blanks_only_means_of_fewer_than_min_n_values():
    from samlab.report.figures import hide_small_intervals

    rows = pd.DataFrame({"n": [2, 4, 5, 9], "mean": [.5, .6, .7, .8], "ci_low": [.1, .2, .6, .7],
                         "ci_high": [.9, .95, .8, .9]})
    shown, note = hide_small_intervals(rows, 5, "95 % CI")
    assert shown["ci_low"].isna().tolist() == [True, True, False, False]
    assert shown["ci_high"].isna().tolist() == [True, True, False, False]
    assert shown["mean"].tolist() == rows["mean"].tolist() and note == "\n(no 95 % CI drawn where n < 5)"
    assert rows["ci_low"].notna().all()  # the caller's table is not changed
    unchanged, none = hide_small_intervals(rows[rows["n"] >= 5], 5, "95 % CI")
    assert none == "" and unchanged["ci_low"].notna().all()


@pytest.mark.parametrize("n_subjects, drawn", [(3, False), (6, True)])
def test_fewshot_curve_draws_a_bootstrap_interval_only_from_min_n_subjects(tmp_path, n_subjects, drawn):
    rows = []
    for shots in (1, 5):
        rows += [{**r, "shots": shots} for r in _grid_rows(n_subjects, "oracle_box", seed=shots)
                 if r["method"] == "finetune"]
    write_results(to_frame(rows), tmp_path / "results" / "fewshot.parquet")
    report = build_report(tmp_path, StatisticsParams(n_resamples=200, parameter_table=False, metrics=["dice"], min_n=5),
                          verbose=False)
    try:
        fig = report.figures["finetune_fig12_fewshot_curve"]
        assert fig is not None
        lengths = _error_bar_lengths(fig)
        assert any(length > 0 for length in lengths) is drawn
        assert ("no 95 % CI drawn where n < 5" in " ".join(_texts(fig))) is not drawn
    finally:
        plt.close("all")


def test_notebook_grid_bars_title_is_read_from_the_rows_it_plots():
    """Notebook 04's grid figure names data, n, mode and recipe from its rows, not by hand."""
    from samlab.finetune import plot_grid_bars

    rows = []
    for i in range(3):
        for peft in ("vanilla", "lora"):
            ctx = {"dataset": "PelvisPhantom", "subject": f"case_{i:02d}", "structure": "bladder",
                   "method": "finetune", "backbone": "litemedsam", "scope": "decoder", "peft": peft,
                   "init": "litemedsam", "prompt": "none", "mode": "automatic",
                   "recipe": "litemedsam_refine, 8 epochs, lr 0.001, batch 1"}
            for z in (2, 5):
                rows += make_rows({**ctx, "slice": z}, {"dice": 0.8, "nsd": 0.7})
    fig = plot_grid_bars(to_frame(rows), level="2d")
    title = fig.get_suptitle()
    plt.close(fig)
    assert "PelvisPhantom (synthetic phantom), n = 3 test volumes (6 slices)" in title
    assert "automatic (no prompt)" in title and "box" not in title
    assert "litemedsam_refine, 8 epochs, lr 0.001, batch 1" in title


@pytest.mark.parametrize("min_n, drawn", [(5, False), (3, True)])
def test_notebook_grid_bars_draw_a_ci_only_from_min_n_test_volumes(min_n, drawn):
    """Three volumes' slices get error bars only when the minimum n allows three; the panel says which."""
    from samlab.finetune import plot_grid_bars

    rows = []
    for i in range(3):
        for peft in ("vanilla", "lora"):
            ctx = {"dataset": "PelvisPhantom", "subject": f"case_{i:02d}", "structure": "bladder",
                   "method": "finetune", "backbone": "litemedsam", "scope": "decoder", "peft": peft,
                   "init": "litemedsam", "prompt": "box", "mode": "box", "recipe": "litemedsam_refine"}
            for z in (2, 5):
                rows += make_rows({**ctx, "slice": z}, {"dice": 0.5 + 0.1 * i + 0.05 * z, "nsd": 0.7})
    fig = plot_grid_bars(to_frame(rows), level="2d", min_n=min_n)
    try:
        ax = fig.axes[0]
        error_bars = [line for line in ax.lines if len(line.get_ydata()) == 2
                      and abs(line.get_ydata()[1] - line.get_ydata()[0]) > 0]
        assert bool(error_bars) is drawn
        title = ax.get_title()
        assert ("95 % CI over slices" in title) is drawn
        assert ("no CI: n = 3 volume(s) < 5" in title) is not drawn
    finally:
        plt.close(fig)


def test_data_description_says_one_volume_in_the_singular():
    from samlab.report.conditions import data_description

    one = to_frame(make_rows({"dataset": "PelvisPhantom", "subject": "case_00", "structure": "bladder", "slice": -1,
                              "method": "finetune"},
                             {"dice": 0.5}))
    assert data_description(one, "test volumes").endswith("n = 1 test volume")
    two = pd.concat([one, one.assign(subject="case_01")])
    assert data_description(two, "test volumes").endswith("n = 2 test volumes")


def test_fewshot_learning_curve_title_is_read_from_the_rows_it_plots():
    """Notebook 05's learning curve names data, n, seeds, mode, starting weights and recipe from its rows."""
    from samlab.fewshot import plot_learning_curve

    rows = []
    for i in range(2):
        for shots in (1, 3):
            for seed in (0, 1):
                ctx = {"dataset": "PelvisPhantom", "subject": f"case_{i:02d}", "structure": "bladder", "slice": -1,
                       "method": "finetune", "backbone": "litemedsam", "scope": "decoder", "peft": "lora",
                       "init": "litemedsam", "prompt": "none", "mode": "automatic", "shots": shots, "seed": seed,
                       "recipe": "finetune_sam, 6 epochs, lr 0.001, batch 1"}
                rows += make_rows(ctx, {"dice": 0.5})
    fig = plot_learning_curve(to_frame(rows))
    title = fig.axes[0].get_title()
    plt.close(fig)
    assert "PelvisPhantom (synthetic phantom), n = 2 test volumes, 2 seed(s): few-shot" in title
    assert "automatic (no prompt); starting weights: litemedsam" in title and "box" not in title
    assert "recipe finetune_sam, 6 epochs, lr 0.001, batch 1" in title


def test_tables_by_init_lay_out_the_grid_per_starting_weight_like_tables_9_to_11(tmp_path):
    """One block per starting weight: structures then the average as rows, scope x method x metric as columns,
    the paper's table named for SupSAM / SSLSAM and none for the model's own weights; means by hand."""
    rows = []
    values = {("litemedsam", "vanilla"): 0.50, ("litemedsam", "lora"): 0.60,
              ("sslsam:runs/x/sslsam.pt", "vanilla"): 0.70, ("sslsam:runs/x/sslsam.pt", "lora"): 0.80}
    for i in range(3):
        for (init, peft), base in values.items():
            for structure, offset in (("bladder", 0.1), ("rectum", -0.1)):
                ctx = {"dataset": "PelvisPhantom", "subject": f"case_{i:02d}", "structure": structure, "slice": 4,
                       "method": "finetune", "backbone": "litemedsam", "scope": "decoder", "peft": peft,
                       "init": init, "prompt": "none", "mode": "automatic", "recipe": "litemedsam_refine"}
                rows += make_rows(ctx, {"dice": base + offset + 0.01 * i, "nsd": base})
    write_results(to_frame(rows), tmp_path / "results" / "pretraining.parquet")
    report = build_report(tmp_path, StatisticsParams(n_resamples=200, parameter_table=False, metrics=["dice", "nsd"]),
                          verbose=False)
    plt.close("all")
    table = report.tables["finetune_tables9_11_by_init"]
    assert table["init"].tolist() == ["litemedsam"] * 3 + ["sslsam:runs/x/sslsam.pt"] * 3
    assert table["structure"].tolist() == ["bladder", "rectum", "Average"] * 2
    assert set(table["level"]) == {"2d"} and set(table["source"]) == {"pretraining"}
    assert table["paper_table"].tolist()[:3] == [""] * 3
    assert all(t.startswith("Table 11 (SSLSAM") for t in table["paper_table"][3:])
    assert table["data"].iloc[0] == "PelvisPhantom (synthetic phantom)"
    ssl = table[table["init"].str.startswith("sslsam")].set_index("structure")
    # bladder, SSLSAM + LoRA: 0.80 + 0.1 + mean(0, 0.01, 0.02) over the 3 slices
    assert ssl.loc["bladder", "litemedsam Decoder L DSC"] == pytest.approx(0.91)
    assert ssl.loc["rectum", "litemedsam Decoder V DSC"] == pytest.approx(0.61)
    assert ssl.loc["Average", "litemedsam Decoder V DSC"] == pytest.approx(0.71)  # per subject over structures
    assert ssl.loc["Average", "litemedsam Decoder V NSD"] == pytest.approx(0.70)
    assert ssl.loc["Average", "n"] == 3 and ssl.loc["bladder", "n"] == 3
    comparisons = report.tables["comparisons"]
    phase2 = comparisons[comparisons["family"] == "pre-training phase 2: initial weights"]
    assert len(phase2) and set(phase2["n"]) == {3}  # SSLSAM vs LiteMedSAM weights, per configuration, paired
    assert not phase2["tested"].any()  # 3 volumes < the minimum n of 5: effect and CI only, no test
    assert "effects_pre_training_phase_2_initial_weights" in report.figures
