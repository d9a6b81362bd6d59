"""Curation options for a user's own data: orientation, intensity profiles, subject rules (issues 21, 18)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from samlab.config import CurationParams, ProfileError, ZeroShotParams
from samlab.profiles import validate_notebook_parameters
from samlab.data.curate import curate_nnunet_raw
from samlab.data.manifest import INTENSITY_COLUMN, ORIENTATION_COLUMN, read_manifest
from samlab.data.preprocess import (
    CT_WINDOWS,
    apply_intensity_profile,
    ct_window_range,
    intensity_clip_range,
)
from samlab.data.splits import read_subject_csv, subject_from_pattern, subject_rule
from samlab.workspace import RunDir
from samlab.zeroshot import classify_shapes, is_pelvic_dataset, resolve_split, scored_cases_note

X_FLIPPED = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # x axis points right-to-left: not LPS, not RAS


def _write_dataset(root, case_ids, direction=X_FLIPPED, shape=(6, 20, 24)):
    """A tiny nnU-Net raw dataset whose label sits off-centre in y and x, so every flip moves it."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for cid in case_ids:
        image = rng.normal(100, 10, shape).astype(np.float32)
        labels = np.zeros(shape, np.uint8)
        labels[1:5, 2:8, 3:10] = 1
        image[labels > 0] += 50
        for array, path in ((image, root / "imagesTr" / f"{cid}_0000.nii.gz"), (labels, root / "labelsTr" / f"{cid}.nii.gz")):
            img = sitk.GetImageFromArray(array)
            img.SetSpacing((0.8, 0.9, 2.5))
            img.SetDirection(direction)
            img.SetOrigin((10.0, -5.0, 3.0))
            sitk.WriteImage(img, str(path))
    meta = {"name": "Tiny", "channel_names": {"0": "MR"}, "labels": {"background": 0, "blob": 1},
            "numTraining": len(case_ids), "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("orientation", ["as_stored", "RAS", "LPS"])
def test_orientation_changes_the_slices_as_documented(tmp_path, orientation):
    raw = _write_dataset(tmp_path / "raw", ["c1", "c2", "c3"])
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / "c1.nii.gz")))
    run = RunDir.at(tmp_path / "run")
    result = curate_nnunet_raw(raw, run.curation, seed=0, min_object_px=0, progress=False, orientation=orientation)
    run.write_dataset_info(raw, {"blob": (1,)}, name="Tiny", orientation=orientation)
    manifest = read_manifest(result.manifest_path)
    assert set(manifest[ORIENTATION_COLUMN]) == {orientation}
    assert set(manifest[INTENSITY_COLUMN]) == {"percentile_nonzero"}
    assert run.dataset_info()["orientation"] == orientation
    case = next(c for c in run.load_cases("all") if c.case_id == "c1")
    # the stored x axis points to -x (right to left). LPS wants +x: flip x. RAS wants -x (kept) and -y: flip y.
    expected = {"as_stored": stored, "RAS": stored[:, ::-1, :], "LPS": stored[:, :, ::-1]}[orientation]
    np.testing.assert_array_equal(case.labels, expected)
    assert case.image.shape == case.labels.shape
    direction = np.reshape(case.direction, (3, 3))
    want = {"as_stored": np.diag([-1, 1, 1]), "RAS": np.diag([-1, -1, 1]), "LPS": np.eye(3)}[orientation]
    np.testing.assert_allclose(direction, want)
    if orientation != "as_stored":
        assert not np.array_equal(case.labels, stored)  # the setting really changes what the model sees


def _zscored_volume(seed=0):
    """85 % constant negative background, a body ~ N(0, 1), and a bright 'tumour' (20 % of the body)."""
    rng = np.random.default_rng(seed)
    shape = (20, 64, 64)
    n = int(np.prod(shape))
    volume = np.full(n, -1.3, np.float32)
    body = rng.choice(n, size=int(0.15 * n), replace=False)
    volume[body] = rng.normal(0.0, 1.0, body.size)
    tumour = body[: int(0.2 * body.size)]
    volume[tumour] = rng.normal(3.5, 0.6, tumour.size)
    mask_body = np.zeros(n, bool)
    mask_body[body] = True
    mask_tumour = np.zeros(n, bool)
    mask_tumour[tumour] = True
    return volume.reshape(shape), mask_body.reshape(shape), mask_tumour.reshape(shape)


def test_zscored_profile_keeps_the_tumour_unsaturated():
    volume, body, tumour = _zscored_volume()
    _, hi_new = intensity_clip_range(volume, "zscored")
    _, hi_old = intensity_clip_range(volume, "percentile_nonzero")
    new_body, new_tumour = (volume[body] < hi_new).mean(), (volume[tumour] < hi_new).mean()
    old_tumour = (volume[tumour] < hi_old).mean()
    assert new_body >= 0.95 and new_tumour >= 0.95, (new_body, new_tumour)
    # the old rule counts the constant background as tissue: the upper clip falls inside the tumour
    assert hi_old < hi_new and old_tumour < 0.9, (hi_old, old_tumour)
    clipped = apply_intensity_profile(volume, "zscored")
    assert clipped.max() == pytest.approx(hi_new) and clipped.dtype == np.float32


def test_foreground_profile_ignores_dark_air():
    rng = np.random.default_rng(1)
    volume = rng.normal(5.0, 1.0, (10, 40, 40)).astype(np.float32)  # low-level noise of the air around a body
    volume[:, 10:30, 10:30] = rng.normal(500.0, 50.0, (10, 20, 20))
    lo_fg, _ = intensity_clip_range(volume, "percentile_foreground")
    lo_nz, _ = intensity_clip_range(volume, "percentile_nonzero")
    air = volume[:, :10, :]
    # over non-zero voxels the lower clip sits inside the air's noise; over the Otsu foreground above (almost) all of it
    assert lo_nz < np.percentile(air, 50) and lo_fg > np.percentile(air, 99), (lo_nz, lo_fg)


def test_ct_windows():
    assert ct_window_range("soft_tissue") == (-160.0, 240.0)
    assert ct_window_range("lung") == (-910.0, 590.0)
    assert ct_window_range("brain") == (0.0, 80.0)
    assert ct_window_range("bone") == (-500.0, 1300.0)
    assert set(CT_WINDOWS) == {"soft_tissue", "lung", "brain", "bone"}
    assert ct_window_range([-100, 300]) == (-100.0, 300.0)
    hu = np.array([-1000.0, 0.0, 40.0, 3000.0], np.float32)
    np.testing.assert_array_equal(apply_intensity_profile(hu, "ct_window", window="soft_tissue"), [-160, 0, 40, 240])
    with pytest.raises(ValueError, match="presets"):
        ct_window_range("liver_typo")
    with pytest.raises(ValueError, match="low < high"):
        ct_window_range([300, 100])
    with pytest.raises(ValueError, match="needs a window"):
        intensity_clip_range(hu, "ct_window")


def test_curation_parameters_validate():
    assert CurationParams().orientation == "as_stored" and CurationParams().intensity == "percentile_nonzero"
    with pytest.raises(ProfileError, match="ct_window"):
        validate_notebook_parameters("01_data_curation", {"intensity": "ct_window"})
    with pytest.raises(ProfileError, match="orientation"):
        validate_notebook_parameters("01_data_curation", {"orientation": "RAI"})
    with pytest.raises(ProfileError, match="one group"):
        validate_notebook_parameters("01_data_curation", {"subject_pattern": r"pat\d+"})
    assert CurationParams(intensity="ct_window", ct_window="lung").ct_window == "lung"
    assert ZeroShotParams().split == "auto"


def test_intensity_recorded_in_the_manifest(tmp_path):
    raw = _write_dataset(tmp_path / "raw", ["c1", "c2", "c3"])
    result = curate_nnunet_raw(raw, tmp_path / "cur", min_object_px=0, progress=False, intensity="ct_window",
                               ct_window="brain")
    assert set(read_manifest(result.manifest_path)[INTENSITY_COLUMN]) == {"ct_window:0,80"}
    assert (result.cases["clip_low"] == 0).all() and (result.cases["clip_high"] == 80).all()


# --------------------------------------------------------------------------- subjects, not files


def test_subject_pattern_keeps_a_patients_scans_together(tmp_path):
    ids = [f"pat{p}_scan{s}" for p in range(5) for s in range(2)]
    raw = _write_dataset(tmp_path / "raw", ids, shape=(4, 12, 12))
    rule = subject_rule(subject_pattern=r"(pat\d+)_scan")
    result = curate_nnunet_raw(raw, tmp_path / "cur", min_object_px=0, progress=False, subject_of=rule)
    where = {cid: s for s, cids in result.splits.items() for cid in cids}
    for p in range(5):
        assert where[f"pat{p}_scan0"] == where[f"pat{p}_scan1"]
    assert result.cases["subject"].nunique() == 5
    # without the rule each scan is its own patient and, with this seed, one patient straddles two splits
    plain = curate_nnunet_raw(raw, tmp_path / "plain", min_object_px=0, progress=False)
    where = {cid: s for s, cids in plain.splits.items() for cid in cids}
    assert any(where[f"pat{p}_scan0"] != where[f"pat{p}_scan1"] for p in range(5))


def test_subject_csv_and_errors(tmp_path):
    csv_path = tmp_path / "subjects.csv"
    csv_path.write_text("case_id,subject\na1,P1\na2,P1\nb1,P2\n")
    assert read_subject_csv(csv_path) == {"a1": "P1", "a2": "P1", "b1": "P2"}
    bad = tmp_path / "bad.csv"
    bad.write_text("case,patient\na1,P1\n")
    with pytest.raises(ValueError, match="bad.csv"):
        read_subject_csv(bad)
    with pytest.raises(ValueError, match="does not match"):
        subject_from_pattern(r"(pat\d+)_")("other_case")
    with pytest.raises(ValueError, match="not both"):
        subject_rule(r"(p)", csv_path)


# --------------------------------------------------------------------------- what notebook 02 evaluates and says


def test_zero_shot_split_rule_and_note():
    assert resolve_split("auto", ["oracle"], nnunet_available=False)[0] == "all"
    assert resolve_split("auto", ["oracle", "nnunet"], nnunet_available=False)[0] == "test"
    assert resolve_split("auto", ["oracle", "nnunet"], nnunet_available=True)[0] == "test"
    assert resolve_split("val", ["oracle"], nnunet_available=False)[0] == "val"
    note = scored_cases_note(1, 4, "test", "held out for nnU-Net")
    assert "1 of the dataset's 4" in note and "held out" in note
    assert scored_cases_note(4, 4, "all", "why").startswith("scoring all 4")
    assert is_pelvic_dataset("PelvisPhantom") and is_pelvic_dataset("PelvicMR")
    assert not is_pelvic_dataset("MSD Task04 Hippocampus, 6 training cases") and not is_pelvic_dataset("Prostate")


def test_shape_classes_from_descriptors():
    import pandas as pd

    shapes = pd.DataFrame({"subject": ["a", "b", "a", "a"], "structure": ["ball", "ball", "pair", "ring"],
                           "components_per_slice": [1.0, 1.0, 2.0, 1.0], "solidity": [0.95, 0.9, 0.4, 0.3]})
    classes = classify_shapes(shapes)
    assert classes.to_dict() == {"ball": "convex", "pair": "disjoint", "ring": "non-convex"}


def test_slice_lists_pass_the_subject_pattern_through(prostate_slices_dir, tmp_path):
    from samlab.data.curate import curate_slice_lists

    with pytest.warns(UserWarning, match="study77"):  # the patient as the pattern names it
        res = curate_slice_lists(prostate_slices_dir, tmp_path / "study", on_leakage="warn", progress=False,
                                 subject_pattern=r"study\d+")
    assert set(res.cases["subject"]).issuperset({"study77"}) and res.leaks == {"study77": ["train", "val"]}
