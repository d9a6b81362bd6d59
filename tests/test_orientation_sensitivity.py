"""Orientation: the 8 in-plane transforms, the sensitivity study on real slices, the results column, nnU-Net prompts.

The real-weights tests use LiteMedSAM on the shared prostate slices (skipped with a message
when ../shared is absent). Three slices x 8 transforms = 24 encoder passes keep them short.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from samlab.data.orientation import (INPLANE_INVERSES, INPLANE_TRANSFORMS, apply_inplane, invert_inplane,
                                     reorient_array)
from samlab.prompts import box_from_mask
from samlab.results import COLUMNS, make_rows, read_results, to_frame, write_results

N_SLICES = 2  # 16 encoder passes; notebook 02 runs the same study on the phantom


# --------------------------------------------------------------------------- the transforms


def test_there_are_eight_distinct_transforms_and_each_inverse_restores_the_array():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 5, 7))  # a stack: the transforms act on the last two axes
    outputs = set()
    for name in INPLANE_TRANSFORMS:
        turned = apply_inplane(name, image)
        assert turned.shape[0] == 2 and sorted(turned.shape[1:]) == [5, 7]
        np.testing.assert_array_equal(invert_inplane(name, turned), image)
        np.testing.assert_array_equal(apply_inplane(INPLANE_INVERSES[name], turned), image)
        outputs.add((turned.shape, turned.tobytes()))
    assert len(INPLANE_TRANSFORMS) == 8 and len(outputs) == 8
    with pytest.raises(ValueError, match="unknown in-plane transform 'rot45'"):
        apply_inplane("rot45", image)


def test_boxes_and_masks_transform_consistently():
    """The box of a transformed mask is the transformed box: the prompt follows the anatomy."""
    mask = np.zeros((40, 60), bool)
    mask[5:12, 30:50] = True  # an off-centre, non-square object: every transform moves it somewhere else
    mask[9:20, 44:47] = True
    x0, y0, x1, y1 = (int(v) for v in box_from_mask(mask))
    box_region = np.zeros_like(mask)
    box_region[y0:y1 + 1, x0:x1 + 1] = True
    boxes = set()
    for name in INPLANE_TRANSFORMS:
        turned = apply_inplane(name, mask)
        assert turned.sum() == mask.sum()
        region = apply_inplane(name, box_region)
        assert box_from_mask(turned).tolist() == box_from_mask(region).tolist(), name
        assert region[turned].all()  # the transformed mask lies inside the transformed box
        boxes.add(tuple(box_from_mask(turned).tolist()))
    assert len(boxes) == 8


# --------------------------------------------------------------------------- real weights, real slices


def _prostate_items(prostate_slices_dir, n):
    from PIL import Image

    from samlab.orientation_sensitivity import SliceItem

    items = []
    for mask_path in sorted((prostate_slices_dir / "masks").glob("*.png"))[:n]:
        image = np.array(Image.open(next((prostate_slices_dir / "images").rglob(mask_path.name))))
        labels = (np.array(Image.open(mask_path)) > 0).astype(np.uint8)  # labels 254/255: the gland is > 0
        items.append(SliceItem(mask_path.stem, 0, image, labels))
    return items


@pytest.fixture(scope="module")
def study(litemedsam, prostate_slices_dir):
    from samlab.models import Predictor
    from samlab.orientation_sensitivity import run_orientation_sensitivity

    items = _prostate_items(prostate_slices_dir, N_SLICES)
    predictor = Predictor(litemedsam)
    result = run_orientation_sensitivity(predictor, items, {"prostate": (1,)}, dataset="prostate-slices",
                                         progress=False)
    return items, predictor, result


def test_identity_reproduces_the_plain_prediction_exactly(study):
    from samlab.metrics import dice

    items, predictor, result = study
    identity = result.table[result.table["transform"] == "identity"].set_index("case")["dice"]
    assert len(identity) == N_SLICES
    for item in items:
        gt = item.labels.astype(bool)
        plain = predictor.predict_boxes(item.image, np.array([box_from_mask(gt)])).masks()[0]
        assert identity[item.case_id] == dice(plain, gt)
        assert identity[item.case_id] > 0.5  # the real weights segment the gland


def test_some_transform_changes_dice_on_real_slices(study):
    """The finding: the same slices, only turned or mirrored, get different Dice."""
    _, _, result = study
    print(result.summary.round(4).to_string(index=False))
    print(result.spread.round(4).to_string(index=False))
    assert result.encoder_calls == N_SLICES * 8
    assert len(result.table) == N_SLICES * 8
    changed = result.summary.set_index("transform")["n_changed"]
    assert changed["identity"] == 0
    assert changed.drop("identity").sum() > 0
    assert result.max_spread > 0.0


def test_sensitivity_rows_carry_orientation_and_round_trip(study, tmp_path):
    _, _, result = study
    rows = result.results
    assert list(rows.columns) == list(COLUMNS)
    assert set(rows["orientation"]) == {"as_stored"} | {f"as_stored+{t}" for t in INPLANE_TRANSFORMS if t != "identity"}
    assert (rows["slice"] >= 0).all() and set(rows["prompt"]) == {"oracle_box"}
    back = read_results(write_results(rows, tmp_path / "orientation_sensitivity.parquet"))
    pd.testing.assert_series_equal(back["orientation"], rows["orientation"])


def test_orientation_figure_reads_its_title_from_the_rows(study):
    import matplotlib.pyplot as plt

    from samlab.viz import plot_orientation_spread

    _, _, result = study
    fig = plot_orientation_spread(result.results)
    title = fig.axes[0].get_title()
    assert "litemedsam" in title and f"{N_SLICES} slice(s)" in title and "prostate-slices" in title
    assert f"{result.max_spread:.3f}" in title
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list(INPLANE_TRANSFORMS)
    plt.close(fig)


# --------------------------------------------------------------------------- the results column


def test_results_written_before_the_orientation_column_read_as_as_stored(tmp_path):
    rows = to_frame(make_rows({"dataset": "d", "subject": "s", "structure": "b", "method": "zero_shot"}, {"dice": 0.8}))
    old = rows.drop(columns=["orientation"])
    path = tmp_path / "old.parquet"
    old.to_parquet(path, index=False)  # as an older samlab wrote it
    back = read_results(path)
    assert list(back.columns) == list(COLUMNS)
    assert back["orientation"].tolist() == ["as_stored"]


def test_report_never_averages_two_orientations_together():
    from samlab.report.conditions import CONDITION_COLUMNS, condition_label, conditions, subject_means

    rows = []
    for orientation, value in (("as_stored", 0.9), ("RAS", 0.7)):
        rows += make_rows({"dataset": "d", "subject": "s1", "structure": "b", "method": "zero_shot",
                           "backbone": "litemedsam", "prompt": "oracle_box", "orientation": orientation},
                          {"dice": value})
    frame = to_frame(rows).assign(source="zero_shot")
    assert "orientation" in CONDITION_COLUMNS
    means = subject_means(frame, "dice").set_index("orientation")["value"]
    assert means.to_dict() == {"as_stored": 0.9, "RAS": 0.7}
    labels = [condition_label(c) for c in conditions(frame)]
    assert labels == ["LiteMedSAM + oracle box", "LiteMedSAM + oracle box [RAS]"]


# --------------------------------------------------------------------------- nnU-Net prompts in the run's orientation


def test_nnunet_predictions_are_reoriented_like_the_cases(tmp_path):
    """nnU-Net predicts on the stored files; with orientation RAS its prediction must be re-oriented like the labels.

    The file has a non-identity direction (an LPS-stored volume with a permuted, flipped
    axis), so RAS differs from as stored; read as stored, the prediction would not overlay the
    re-oriented label (the bug this guards against).
    """
    import SimpleITK as sitk

    from samlab.workspace import read_prediction_volumes

    labels = np.zeros((4, 6, 8), np.uint8)
    labels[1:3, 1:3, 5:7] = 1
    labels[0, 4, 0] = 2
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((0.5, 0.7, 3.0))
    image.SetOrigin((10.0, -4.0, 2.0))
    image.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))
    sitk.WriteImage(image, str(tmp_path / "case_000.nii.gz"))
    spacing_zyx = (3.0, 0.7, 0.5)
    for orientation in ("as_stored", "RAS", "LPS"):
        expected = reorient_array(labels, spacing_zyx, image.GetOrigin(), image.GetDirection(), orientation)[0]
        read = read_prediction_volumes(tmp_path, ["case_000"], orientation=orientation)["case_000"]
        np.testing.assert_array_equal(read, expected)
    ras = reorient_array(labels, spacing_zyx, image.GetOrigin(), image.GetDirection(), "RAS")[0]
    stored = read_prediction_volumes(tmp_path, ["case_000"])["case_000"]
    assert stored.shape != ras.shape or not np.array_equal(stored, ras)  # the two really differ here


def test_run_dir_reads_nnunet_predictions_in_the_curated_orientation(tmp_path):
    import SimpleITK as sitk

    from samlab.io import write_json_atomic
    from samlab.workspace import RunDir

    labels = np.zeros((3, 5, 6), np.uint8)
    labels[1, 0:2, 4:6] = 1
    image = sitk.GetImageFromArray(labels)
    image.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    predictions = tmp_path / "pred"
    predictions.mkdir()
    sitk.WriteImage(image, str(predictions / "c1.nii.gz"))
    run = RunDir.at(tmp_path / "run")
    write_json_atomic(run.nnunet / "baseline.json", {"predictions_dir": str(predictions)})
    for orientation in ("as_stored", "RAS"):
        run.write_dataset_info(tmp_path, {"b": [1]}, "d", orientation=orientation)
        assert run.orientation() == orientation
        expected = reorient_array(labels, (1.0, 1.0, 1.0), image.GetOrigin(), image.GetDirection(), orientation)[0]
        np.testing.assert_array_equal(run.nnunet_predictions(["c1"])["c1"], expected)
    assert not np.array_equal(run.nnunet_predictions(["c1"])["c1"], labels)  # RAS flips x here
