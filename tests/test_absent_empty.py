"""Absent structures are not scored; empty predictions are scored Dice 0 / NSD 0 / HD95 NaN and marked.

Hand-built masks first (values computed by hand), then a phantom whose label has one
structure erased (and one case whose label is empty) through curation and zero-shot
scoring with the real LiteMedSAM weights. On the code before this rule, an absent
structure scored Dice 1.0, NSD 1.0, HD95 0 and an empty prediction HD95 = the
field-of-view diagonal; every test below fails there (the names this change adds,
``parse_structures`` and ``empty_prediction_summary``, are imported inside the tests that
use them, so that on the old code the other tests fail on their assertions, not on an import).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from samlab.data.curate import curate_nnunet_raw
from samlab.data.manifest import read_manifest
from samlab.data.phantom import LABELS, STRUCTURES, write_phantom_dataset
from samlab.data.readers import DataValidationError
from samlab.metrics import evaluate_label_volumes, evaluate_masks
from samlab.models import Predictor
from samlab.results import make_rows, read_results, to_frame, write_results
from samlab.workspace import RunDir
from samlab.zeroshot import make_variants, run_zero_shot, summary_table

CONTEXT = {"dataset": "d", "subject": "s1", "structure": "bladder", "method": "m"}


def block(rows: slice, cols: slice, shape=(16, 16)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


# --------------------------------------------------------------------------- hand-built masks


def test_absent_structure_gives_no_rows():
    empty = np.zeros((16, 16), dtype=bool)
    for pred in (empty, block(slice(2, 6), slice(2, 6))):  # nothing predicted, or a false positive
        values = evaluate_masks(pred, empty, (1.0, 1.0))
        assert dict(values) == {} and values.absent
        assert make_rows(CONTEXT, values) == []
    assert len(to_frame(make_rows(CONTEXT, evaluate_masks(empty, empty, (1.0, 1.0))))) == 0


def test_empty_prediction_scores_zero_nan_and_is_flagged():
    gt = block(slice(4, 8), slice(4, 8))
    values = evaluate_masks(np.zeros_like(gt), gt, (2.0, 0.5))
    assert values["dice"] == 0.0 and values["nsd"] == 0.0 and math.isnan(values["hd95"])
    assert values.empty_prediction
    frame = to_frame(make_rows(CONTEXT, values)).set_index("metric")
    assert frame["empty_prediction"].dtype == bool and frame["empty_prediction"].all()
    assert frame.loc["dice", "value"] == 0.0 and frame.loc["nsd", "value"] == 0.0
    assert math.isnan(frame.loc["hd95", "value"]) and frame.loc["hd95", "unit"] == "mm"


def test_normal_case_unchanged_and_not_flagged():
    # 4x4 block vs the same block moved one row down: overlap 3x4 -> Dice 2*12/32; every boundary
    # pixel has a partner exactly one row (2 mm) away, so HD95 = 2 mm and NSD at 2 mm tolerance = 1.
    gt = block(slice(4, 8), slice(4, 8))
    pred = block(slice(5, 9), slice(4, 8))
    values = evaluate_masks(pred, gt, (2.0, 0.5), nsd_tolerance_mm=2.0)
    assert values == {"dice": pytest.approx(0.75), "hd95": pytest.approx(2.0), "nsd": pytest.approx(1.0)}
    assert not values.empty_prediction and not values.absent
    frame = to_frame(make_rows(CONTEXT, values))
    assert len(frame) == 3 and not frame["empty_prediction"].any()


def test_label_volumes_absent_and_empty_structures():
    gt = np.zeros((3, 12, 12), dtype=np.uint8)
    gt[1, 2:6, 2:6] = 1  # bladder present; label 2 (bone) absent from the ground truth
    pred = np.zeros_like(gt)
    pred[1, 8:10, 8:10] = 2  # bone predicted where there is none: a false positive on an absent structure
    out = evaluate_label_volumes(pred, gt, (3.0, 1.0, 1.0), {"bladder": (1,), "bone": (2,)})
    assert out["bone"] == {} and out["bone"].absent
    assert out["bladder"]["dice"] == 0.0 and math.isnan(out["bladder"]["hd95"]) and out["bladder"].empty_prediction
    rows = [r for name, v in out.items() for r in make_rows({**CONTEXT, "structure": name}, v)]
    assert {r["structure"] for r in rows} == {"bladder"} and all(r["empty_prediction"] for r in rows)


def test_empty_prediction_column_survives_parquet_and_old_files(tmp_path):
    gt = block(slice(4, 8), slice(4, 8))
    rows = make_rows(CONTEXT, evaluate_masks(np.zeros_like(gt), gt, (1.0, 1.0)))
    rows += make_rows({**CONTEXT, "subject": "s2"}, evaluate_masks(gt, gt, (1.0, 1.0)))
    back = read_results(write_results(rows, tmp_path / "r.parquet"))
    assert back.groupby("subject")["empty_prediction"].all().to_dict() == {"s1": True, "s2": False}
    # a results file written before the column existed reads back with empty_prediction False
    old = to_frame(rows).drop(columns="empty_prediction")
    old.to_parquet(tmp_path / "old.parquet", index=False)
    assert not read_results(tmp_path / "old.parquet")["empty_prediction"].any()
    with pytest.raises(ValueError, match="empty_prediction.*True/False"):
        to_frame([{**rows[0], "empty_prediction": "False"}])


def test_summary_table_counts_empty_predictions_and_skips_nan():
    from samlab.zeroshot import empty_prediction_summary

    rows = []
    for subject, (d, h) in {"a": (0.8, 4.0), "b": (0.6, 6.0)}.items():
        rows += make_rows({**CONTEXT, "subject": subject, "backbone": "m1", "prompt": "p"}, {"dice": d, "hd95": h})
    gt = block(slice(4, 8), slice(4, 8))
    empty = evaluate_masks(np.zeros_like(gt), gt, (1.0, 1.0), metrics=("dice", "hd95"))
    rows += make_rows({**CONTEXT, "subject": "c", "backbone": "m1", "prompt": "p"}, empty)
    frame = to_frame(rows)
    table = summary_table(frame)
    # Dice counts the empty prediction as 0: (0.8 + 0.6 + 0) / 3; HD95 is the mean of the two measured.
    assert table.loc[("dice", "bladder"), ("m1", "p")] == "0.47 ± 0.42 (1/3 empty)"
    assert table.loc[("hd95", "bladder"), ("m1", "p")] == "5.00 ± 1.41 (1/3 empty)"
    counts = empty_prediction_summary(frame)
    assert counts.to_dict("records") == [{"backbone": "m1", "prompt": "p", "structure": "bladder",
                                          "n_scored": 3, "n_empty": 1}]


# --------------------------------------------------------------------------- phantom, curation, zero-shot


def _rewrite_labels(path, change) -> np.ndarray:
    image = sitk.ReadImage(str(path))
    labels = sitk.GetArrayFromImage(image)
    new = change(labels.copy())
    out = sitk.GetImageFromArray(new.astype(labels.dtype))
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path))
    return labels


@pytest.fixture(scope="module")
def erased_run(tmp_path_factory):
    """A curated phantom run: seminal vesicles erased from the test case, one train case's label emptied."""
    root = tmp_path_factory.mktemp("absent")
    raw = write_phantom_dataset(root / "raw", n_cases=6, seed=0, shape=(8, 64, 64), spacing=(3.0, 1.5, 1.5))
    run = RunDir.at(root / "run")
    splits = curate_nnunet_raw(raw, run.curation, seed=0, progress=False).splits
    test_case, empty_case = splits["test"][0], splits["train"][0]
    sv = LABELS["seminal_vesicle"]
    original = _rewrite_labels(raw / "labelsTr" / f"{test_case}.nii.gz", lambda a: np.where(a == sv, 0, a))
    _rewrite_labels(raw / "labelsTr" / f"{empty_case}.nii.gz", np.zeros_like)
    return raw, run, test_case, empty_case, original


def test_curation_records_absent_structures_and_keeps_an_empty_case(erased_run, capsys):
    from samlab.data.manifest import parse_structures

    raw, run, test_case, empty_case, original = erased_run
    assert (original == LABELS["seminal_vesicle"]).any()  # the structure was there before it was erased
    res = curate_nnunet_raw(raw, run.curation, seed=0, structures=STRUCTURES, progress=False)
    run.write_dataset_info(raw, STRUCTURES, name="PelvisPhantom")
    printed = capsys.readouterr().out
    assert "1 case(s) have an empty label volume, recorded with all 8 structure(s) absent" in printed
    assert empty_case in printed and "9 (case, structure) pair(s) absent" in printed
    man = read_manifest(res.manifest_path)
    volume = man[man["slice"] == -1].set_index("case_id")["present_structures"].map(parse_structures)
    assert volume[test_case] == [s for s in STRUCTURES if s != "seminal_vesicle"]
    assert volume[empty_case] == []
    others = volume.drop([test_case, empty_case])
    assert all(v == list(STRUCTURES) for v in others)
    # per slice: a structure is listed exactly where its labels occur
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / f"{test_case}.nii.gz")))
    slices = man[(man.case_id == test_case) & (man["slice"] >= 0)].set_index("slice")["present_structures"]
    for z, text in slices.items():
        expected = [s for s, vals in STRUCTURES.items() if np.isin(labels[z], vals).any()]
        assert parse_structures(text) == expected
    cases = res.cases.set_index("case_id")["n_absent_structures"]
    assert cases[test_case] == 1 and cases[empty_case] == 8 and cases.sum() == 9
    assert res.summary.set_index("split").loc["total", "n_absent_structures"] == 9
    # the strict mode still refuses an empty label volume, naming the file
    strict = run.root / "strict"
    with pytest.raises(DataValidationError, match=rf"{empty_case}.nii.gz.*label volume is empty"):
        curate_nnunet_raw(raw, strict, seed=0, allow_empty=False, progress=False)
    assert not strict.exists()


def test_zero_shot_skips_absent_structures_and_marks_empty_predictions(erased_run, litemedsam, capsys):
    from samlab.zeroshot import empty_prediction_summary

    raw, run, test_case, empty_case, original = erased_run
    curate_nnunet_raw(raw, run.curation, seed=0, structures=STRUCTURES, progress=False)
    run.write_dataset_info(raw, STRUCTURES, name="PelvisPhantom")
    cases = [c for c in run.load_cases("all") if c.case_id in (test_case, empty_case)]
    assert {c.case_id for c in cases} == {test_case, empty_case}
    structures = {k: STRUCTURES[k] for k in ("bladder", "seminal_vesicle")}
    # The nnU-Net source still has the seminal vesicles (absent from the truth) and misses the bladder.
    nnunet = {test_case: np.where(original == LABELS["bladder"], 0, original)}
    variants = make_variants(["oracle", "nnunet"], ["single"], [0])
    predictor = Predictor(litemedsam)
    capsys.readouterr()
    result = run_zero_shot(predictor, cases, structures, variants, {"nnunet": nnunet}, dataset="phantom",
                           progress=False)
    printed = capsys.readouterr().out
    frame = result.results
    # absent: no rows, no prompts, no predictions; reported
    assert sorted(result.absent) == sorted([(test_case, "seminal_vesicle"), (empty_case, "bladder"),
                                            (empty_case, "seminal_vesicle")])
    assert "skipped 3 (case, structure) pair(s) as absent" in printed
    assert set(frame["subject"]) == {test_case} and set(frame["structure"]) == {"bladder"}
    assert not (frame[frame["metric"] == "dice"]["value"] == 1.0).any()
    assert set(result.predictions) == {(test_case, "bladder", "oracle_box"), (test_case, "bladder", "nnunet_box")}
    bladder_slices = int((original == LABELS["bladder"]).any(axis=(1, 2)).sum())
    assert result.encoder_calls == bladder_slices  # the seminal-vesicle-only slices were never encoded
    # the nnU-Net source has no bladder: an empty prediction, scored 0 / 0 / NaN and flagged
    nn = frame[frame["prompt"] == "nnunet_box"].set_index("metric")
    assert nn["empty_prediction"].all() and len(nn) == 3
    assert nn.loc["dice", "value"] == 0.0 and nn.loc["nsd", "value"] == 0.0 and math.isnan(nn.loc["hd95", "value"])
    oracle = frame[frame["prompt"] == "oracle_box"].set_index("metric")
    assert not oracle["empty_prediction"].any() and oracle.loc["dice", "value"] > 0.5
    assert np.isfinite(oracle.loc["hd95", "value"])
    counts = empty_prediction_summary(frame).set_index("prompt")
    assert counts.loc["nnunet_box", "n_empty"] == 1 and counts.loc["oracle_box", "n_empty"] == 0
    assert "empty predictions (Dice 0, NSD 0, HD95 NaN) in 1 of 2 evaluation(s)" in printed
    assert isinstance(frame, pd.DataFrame) and frame["empty_prediction"].dtype == bool
