"""Tests of samlab.metrics against hand-computed cases and real hippocampus labels.

The square cases below are small enough to list every boundary distance by hand.
Square A covers rows 10..19 and columns 10..19 of a 32x32 image (a 10x10 block, 36
boundary pixels); B is A moved down by k rows. B's boundary is A's boundary moved
by k rows, so every boundary pixel of either mask has a partner at exactly
k * sy mm, and no distance exceeds that. A's top row (10 pixels) has nothing of B
within fewer than k rows, so 10 of the 36 distances in each direction equal
k * sy: more than 5 %, hence HD95 = k * sy exactly.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

from samlab.metrics import (
    dice,
    evaluate_label_volumes,
    evaluate_masks,
    hd95,
    nsd,
)


def square(shift_rows: int = 0, shift_cols: int = 0, shape=(32, 32)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[10 + shift_rows : 20 + shift_rows, 10 + shift_cols : 20 + shift_cols] = True
    return mask


def cube(shift: tuple[int, int, int] = (0, 0, 0), shape=(20, 24, 24)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    z, y, x = shift
    mask[5 + z : 11 + z, 6 + y : 14 + y, 6 + x : 14 + x] = True
    return mask


# --------------------------------------------------------------------------- Dice


def test_dice_of_known_overlaps():
    # 10x10 squares, 2 rows apart: overlap 8x10 = 80 pixels -> 2*80 / 200.
    assert dice(square(), square(2)) == pytest.approx(0.8)
    # 20 pixels inside 40 pixels: 2*20 / 60.
    small = np.zeros((8, 8), dtype=np.uint8)
    small[0:4, 0:5] = 1
    big = np.zeros((8, 8), dtype=np.uint8)
    big[0:8, 0:5] = 1
    assert dice(small, big) == pytest.approx(2 / 3)
    # disjoint
    assert dice(square(), square(15)) == 0.0
    assert dice(square(), square()) == 1.0


def test_dice_matches_monai_compute_dice():
    rng = np.random.default_rng(3)
    pred = rng.random((12, 30, 30)) > 0.6
    gt = rng.random((12, 30, 30)) > 0.5
    expected = compute_dice(torch.from_numpy(pred)[None, None], torch.from_numpy(gt)[None, None])
    assert dice(pred, gt) == pytest.approx(float(expected[0, 0]), abs=1e-6)


# --------------------------------------------------------------------------- HD95


@pytest.mark.parametrize("k", [1, 2, 3])
def test_hd95_shifted_squares_anisotropic(k):
    # Shift along y (rows) with sy = 3 mm, sx = 1 mm: HD95 = k * sy (see module docstring).
    assert hd95(square(), square(k), spacing=(3.0, 1.0)) == pytest.approx(3.0 * k)
    # The same shift with the spacings swapped measures k * 1 mm: spacing is in array order.
    assert hd95(square(), square(k), spacing=(1.0, 3.0)) == pytest.approx(1.0 * k)
    # A shift along x picks up sx.
    assert hd95(square(), square(0, k), spacing=(3.0, 0.5)) == pytest.approx(0.5 * k)


def test_hd95_is_symmetric_and_zero_for_identical_masks():
    a, b = square(), square(2, 1)
    assert hd95(a, b, (0.7, 1.3)) == pytest.approx(hd95(b, a, (0.7, 1.3)))
    assert hd95(a, a, (0.7, 1.3)) == 0.0


def test_hd95_3d_spacing_along_z():
    spacing = (3.0, 1.0, 1.0)
    # one voxel along z is 3 mm, not 1
    assert hd95(cube(), cube((1, 0, 0)), spacing) == pytest.approx(3.0)
    assert hd95(cube(), cube((2, 0, 0)), spacing) == pytest.approx(6.0)
    # one voxel along y or x is 1 mm
    assert hd95(cube(), cube((0, 1, 0)), spacing) == pytest.approx(1.0)
    assert hd95(cube(), cube((0, 0, 1)), spacing) == pytest.approx(1.0)


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
def test_hd95_matches_monai_on_full_arrays():
    # The crop to the union's bounding box must not change MONAI's answer.
    rng = np.random.default_rng(0)
    pred = np.zeros((10, 40, 40), dtype=bool)
    gt = np.zeros((10, 40, 40), dtype=bool)
    pred[2:8, 5:30, 8:25] = rng.random((6, 25, 17)) > 0.2
    gt[3:9, 7:33, 6:24] = rng.random((6, 26, 18)) > 0.2
    spacing = [2.5, 0.8, 0.6]
    expected = compute_hausdorff_distance(
        pred[None, None], gt[None, None], include_background=True, percentile=95, spacing=spacing
    )
    assert hd95(pred, gt, spacing) == pytest.approx(float(expected[0, 0]), rel=1e-6)
    expected_nsd = compute_surface_dice(
        torch.from_numpy(pred)[None, None],
        torch.from_numpy(gt)[None, None],
        class_thresholds=[1.5],
        include_background=True,
        spacing=spacing,
    )
    assert nsd(pred, gt, spacing, 1.5) == pytest.approx(float(expected_nsd[0, 0]), rel=1e-6)


def test_mask_touching_image_border():
    a = np.zeros((16, 16), dtype=bool)
    a[0:6, 0:16] = True  # touches three borders
    b = np.zeros((16, 16), dtype=bool)
    b[0:8, 0:16] = True
    # A's bottom row is 2 rows from B's bottom row; every other boundary pixel is shared.
    assert hd95(a, b, (2.0, 1.0)) == pytest.approx(4.0)


# --------------------------------------------------------------------------- NSD


def test_nsd_tolerance_below_and_above_offset():
    # Squares 2 rows apart, spacing (3, 1): per direction the 36 boundary distances are
    # 10 x 6 mm (top/bottom row), 0,1,2,3,4,4,3,2,1,0 mm (the row inside the other
    # square, limited by its side columns 1 mm apart), and 3 mm + 7 x 0 mm for each side
    # column. Both directions have the same multiset (72 distances in all).
    a, b, spacing = square(), square(2), (3.0, 1.0)
    assert nsd(a, b, spacing, tolerance_mm=6.0) == pytest.approx(1.0)
    assert nsd(a, b, spacing, tolerance_mm=5.9) == pytest.approx(52 / 72)
    assert nsd(a, b, spacing, tolerance_mm=2.0) == pytest.approx(40 / 72)
    assert nsd(a, b, spacing, tolerance_mm=0.5) == pytest.approx(32 / 72)
    # default tolerance is 2 mm
    assert nsd(a, b, spacing) == pytest.approx(40 / 72)


def test_nsd_3d_shift_along_z():
    a, b, spacing = cube(), cube((1, 0, 0)), (3.0, 1.0, 1.0)
    assert nsd(a, b, spacing, tolerance_mm=3.0) == pytest.approx(1.0)
    assert nsd(a, b, spacing, tolerance_mm=2.9) < 1.0
    assert nsd(a, a, spacing, tolerance_mm=0.0) == pytest.approx(1.0)


# --------------------------------------------------------------------------- empty masks


def test_empty_ground_truth_is_absent_not_scored():
    empty = np.zeros((20, 20), dtype=bool)
    for pred in (empty, square(shape=(20, 20))):  # nothing predicted, or a false positive
        values = evaluate_masks(pred, empty, (1.0, 1.0))
        assert values == {} and values.absent and not values.empty_prediction


def test_empty_prediction_of_a_present_structure():
    empty = np.zeros((20, 30), dtype=bool)
    values = evaluate_masks(empty, square(shape=(20, 30)), (2.0, 0.5))
    assert list(values) == ["dice", "hd95", "nsd"]
    assert values["dice"] == 0.0 and values["nsd"] == 0.0 and math.isnan(values["hd95"])
    assert values.empty_prediction and not values.absent


def test_single_metric_functions_on_empty_masks():
    empty = np.zeros((20, 20), dtype=bool)
    assert (dice(empty, empty), hd95(empty, empty, (1.0, 1.0)), nsd(empty, empty, (1.0, 1.0))) == (1.0, 0.0, 1.0)
    for pred, gt in ((empty, square(shape=(20, 20))), (square(shape=(20, 20)), empty)):
        assert dice(pred, gt) == 0.0 and nsd(pred, gt, (1.0, 1.0)) == 0.0
        assert math.isnan(hd95(pred, gt, (1.0, 1.0)))


# --------------------------------------------------------------------------- evaluate_masks


def test_evaluate_masks_2d_and_3d_order_and_subset():
    values = evaluate_masks(square(), square(2), (3.0, 1.0), nsd_tolerance_mm=2.0)
    assert list(values) == ["dice", "hd95", "nsd"]
    assert values["dice"] == pytest.approx(0.8)
    assert values["hd95"] == pytest.approx(6.0)
    assert values["nsd"] == pytest.approx(40 / 72)
    only = evaluate_masks(cube(), cube((1, 0, 0)), (3.0, 1.0, 1.0), metrics=("hd95",))
    assert only == {"hd95": pytest.approx(3.0)}


def test_accepts_float_and_integer_masks():
    a = square().astype(np.float32)
    b = square(2).astype(np.uint8)
    assert evaluate_masks(a, b, (3.0, 1.0))["hd95"] == pytest.approx(6.0)


# --------------------------------------------------------------------------- validation


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"shapes differ: pred \(32, 32\) vs gt \(31, 32\)"):
        dice(square(), np.zeros((31, 32), dtype=bool))


def test_non_binary_values_are_refused():
    labels = square().astype(np.uint8) * 255
    with pytest.raises(ValueError, match=r"gt is not a binary mask: found value\(s\) \[255\]"):
        hd95(square(), labels, (1.0, 1.0))


def test_nan_is_refused():
    bad = square().astype(np.float64)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="pred contains 1 NaN"):
        nsd(bad, square(), (1.0, 1.0))


@pytest.mark.parametrize(
    "spacing, message",
    [
        ((1.0, 1.0, 1.0), "spacing has 3 value"),
        ((1.0,), "spacing has 1 value"),
        (1.0, "spacing must be a sequence"),
        ((1.0, 0.0), "finite and > 0"),
        ((1.0, float("nan")), "finite and > 0"),
    ],
)
def test_bad_spacing_is_refused(spacing, message):
    with pytest.raises(ValueError, match=message):
        evaluate_masks(square(), square(1), spacing)


def test_bad_dimensionality_metric_and_tolerance_are_refused():
    with pytest.raises(ValueError, match="2D .* or 3D"):
        dice(np.zeros(5, bool), np.zeros(5, bool))
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['iou'\]"):
        evaluate_masks(square(), square(), (1.0, 1.0), metrics=("dice", "iou"))
    with pytest.raises(ValueError, match="tolerance_mm"):
        nsd(square(), square(), (1.0, 1.0), tolerance_mm=-1.0)


# --------------------------------------------------------------------------- label volumes


def test_evaluate_label_volumes_unions_labels():
    gt = np.zeros((4, 20, 20), dtype=np.uint8)
    gt[1:3, 5:10, 5:10] = 4
    gt[1:3, 10:15, 5:10] = 5
    pred = gt.copy()
    pred[pred == 5] = 4  # confuses the two parts, but their union is right
    out = evaluate_label_volumes(pred, gt, (3.0, 1.0, 1.0), {"part5": (5,), "whole": (4, 5), "absent": (7,)})
    assert out["whole"] == {"dice": 1.0, "hd95": 0.0, "nsd": 1.0} and not out["whole"].empty_prediction
    assert out["part5"]["dice"] == 0.0 and out["part5"]["nsd"] == 0.0 and math.isnan(out["part5"]["hd95"])
    assert out["part5"].empty_prediction
    assert out["absent"] == {} and out["absent"].absent


def test_evaluate_label_volumes_all_background_is_all_absent():
    empty = np.zeros((3, 8, 8), dtype=np.uint8)
    out = evaluate_label_volumes(empty, empty, (1.0, 1.0, 1.0), {"bladder": (1,), "bone": (2,)})
    assert out == {"bladder": {}, "bone": {}} and all(v.absent for v in out.values())


def test_evaluate_label_volumes_refuses_bad_labels():
    gt = np.zeros((4, 8, 8), dtype=np.float32)
    gt[1, 2:4, 2:4] = 1
    with pytest.raises(ValueError, match="none of the structure labels"):
        evaluate_label_volumes(gt, gt, (1.0, 1.0, 1.0), {"bladder": (9,)})
    frac = gt.copy()
    frac[0, 0, 0] = 0.5
    with pytest.raises(ValueError, match=r"pred_labels holds non-integer label value\(s\) \[0.5\]"):
        evaluate_label_volumes(frac, gt, (1.0, 1.0, 1.0), {"x": (1,)})
    with pytest.raises(ValueError, match="shapes differ"):
        evaluate_label_volumes(gt[:2], gt, (1.0, 1.0, 1.0), {"x": (1,)})
    with pytest.raises(ValueError, match="integer labels"):
        evaluate_label_volumes(gt, gt, (1.0, 1.0, 1.0), {"x": ("1",)})


# --------------------------------------------------------------------------- real data


def read_labels(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), tuple(reversed(image.GetSpacing()))


def shifted(mask: np.ndarray, axis: int) -> np.ndarray:
    """Move a mask one voxel along ``axis`` after padding, so nothing falls off the edge."""
    padded = np.pad(mask, 1)
    return np.roll(padded, 1, axis=axis), padded


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_real_hippocampus_shift_by_one_voxel(hippocampus_raw_dir, axis):
    labels, spacing = read_labels(hippocampus_raw_dir / "labelsTr" / "hippocampus_004.nii.gz")
    assert labels.dtype == np.uint8 and labels.ndim == 3
    moved, original = shifted(labels > 0, axis)
    values = evaluate_masks(moved, original, spacing, nsd_tolerance_mm=spacing[axis])
    assert values["hd95"] == pytest.approx(spacing[axis])
    assert values["nsd"] == pytest.approx(1.0)
    assert 0.5 < values["dice"] < 1.0
    # With a made-up anisotropic spacing whose smallest value lies on the shifted axis,
    # every non-zero distance is exactly that spacing, so HD95 equals it again.
    fake = [3.0, 2.0, 2.0]
    fake[axis] = 0.7
    assert hd95(moved, original, fake) == pytest.approx(0.7)


def test_real_hippocampus_float32_labels(hippocampus_raw_dir):
    labels, spacing = read_labels(hippocampus_raw_dir / "labelsTr" / "hippocampus_003.nii.gz")
    assert labels.dtype == np.float32  # the real-world quirk of case 003
    structures = {"anterior": (1,), "posterior": (2,), "hippocampus": (1, 2)}
    same = evaluate_label_volumes(labels, labels, spacing, structures)
    for values in same.values():
        assert values == {"dice": 1.0, "hd95": 0.0, "nsd": 1.0}
    padded = np.pad(labels, 1)
    moved = np.roll(padded, 1, axis=0)
    out = evaluate_label_volumes(moved, padded, spacing, structures, metrics=("hd95", "dice"))
    for name in structures:
        assert list(out[name]) == ["hd95", "dice"]
        assert out[name]["hd95"] == pytest.approx(spacing[0])
        assert out[name]["dice"] < 1.0


def test_monai_is_imported_without_the_iri_grammar_and_the_package_stays_importable():
    """samlab.monai_import hides rfc3987_syntax (a 4.5 s grammar build per kernel) and transformers (2.2 s)
    only while MONAI imports; both stay importable, and the LoRA path that needs transformers still works."""
    import subprocess
    import sys

    code = ("import sys, importlib.util; import samlab.metrics; assert 'monai' in sys.modules; "
            "assert 'rfc3987_syntax' not in sys.modules, 'the grammar was built'; "
            "assert 'transformers' not in sys.modules, 'MONAI imported transformers'; "
            "spec = importlib.util.find_spec('rfc3987_syntax'); "
            "assert spec is None or __import__('rfc3987_syntax'), 'left unimportable'; "
            "import transformers, peft; from monai.losses import DiceLoss; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
