"""The manifest (content, atomic writes) and the curation entry points that write it."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from samlab.data.curate import convert_paired_to_nnunet_raw, curate_nnunet_raw, curate_slice_lists
from samlab.data.download import file_digest
from samlab.data.manifest import (
    BASE_COLUMNS,
    build_manifest,
    format_tuple,
    label_counts,
    parse_tuple,
    read_manifest,
    volume_rows,
    write_manifest,
)
from samlab.data.phantom import LABELS, make_phantom_case, write_phantom_dataset
from samlab.data.readers import DataValidationError, Volume
from samlab.data.splits import LeakageError, read_splits_json

SHAPE = (8, 48, 48)
SPACING = (3.0, 1.2, 1.2)


@pytest.fixture(scope="module")
def phantom_raw(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("ph") / "raw", n_cases=6, seed=0, shape=SHAPE, spacing=SPACING)


def test_label_counts_hand_computed():
    labels = np.array([[0, 1], [1, 2]], np.uint8)
    assert label_counts(labels, {"background": 0, "posterior hippocampus": 1, "b": 2, "absent": 7}) == {
        "n_background": 1, "n_posterior_hippocampus": 2, "n_b": 1, "n_absent": 0,
    }


def test_tuple_format_round_trip():
    assert format_tuple((35, 52, 34)) == "35x52x34"
    assert format_tuple((3.0, 1.2, 1.2)) == "3x1.2x1.2"
    assert parse_tuple("35x52x34") == (35, 52, 34)
    assert parse_tuple("3x1.2x1.2") == (3, 1.2, 1.2)
    assert format_tuple(None) == "" and parse_tuple("") is None


def test_volume_rows_slices_sum_to_volume():
    case = make_phantom_case(0, shape=SHAPE)
    vol = Volume(case.case_id, case.image, case.labels, case.spacing, LABELS)
    rows = volume_rows(vol, dataset="ph", subject="s0", split="train")
    assert len(rows) == 1 + SHAPE[0]
    assert rows[0]["slice"] == -1 and rows[0]["shape"] == "8x48x48" and rows[1]["shape"] == "48x48"
    for col in (c for c in rows[0] if c.startswith("n_")):
        assert sum(r[col] for r in rows[1:]) == rows[0][col]
    assert rows[0]["n_bladder"] == int((case.labels == 1).sum())


def test_csv_and_parquet_round_trip_with_missing_labels(tmp_path):
    a = Volume("a", np.ones((2, 3, 3), np.float32), np.array([[[0, 1, 1]] * 3] * 2, np.uint8), (2.0, 0.5, 0.5),
               {"background": 0, "bladder": 1})
    b = Volume("b", np.ones((1, 2, 2), np.float32), np.array([[[0, 2], [2, 2]]], np.uint8), (1.0, 1.0, 1.0),
               {"background": 0, "rectum": 2})
    df = build_manifest(volume_rows(a, dataset="d1", subject="001", split="train")
                        + volume_rows(b, dataset="d2", subject="002", split="test", include_slices=False))
    assert list(df.columns[: len(BASE_COLUMNS)]) == list(BASE_COLUMNS)
    assert df.loc[df.case_id == "b", "n_bladder"].isna().all()  # not in d2's label map: missing, not 0
    assert int(df.loc[(df.case_id == "a") & (df["slice"] == -1), "n_bladder"].iloc[0]) == 12
    for name in ("manifest.csv", "manifest.parquet"):
        back = read_manifest(write_manifest(df, tmp_path / name))
        pd.testing.assert_frame_equal(back[df.columns], df, check_dtype=False)
        assert back["subject"].tolist()[0] == "001"  # ids stay strings (no int conversion)
        assert back.loc[back.case_id == "b", "n_bladder"].isna().all()


def test_failure_mid_write_leaves_old_manifest_intact(tmp_path, monkeypatch):
    case = make_phantom_case(0, shape=SHAPE)
    vol = Volume(case.case_id, case.image, case.labels, case.spacing, LABELS)
    good = build_manifest(volume_rows(vol, dataset="ph", subject="s", split="train"))
    path = write_manifest(good, tmp_path / "manifest.csv")
    before = path.read_bytes()

    def half_then_crash(self, target, *args, **kwargs):
        with open(target, "w") as fh:
            fh.write("dataset,subject,case_id\nph,s,")  # a partly written table...
        raise OSError("disk full")  # ...then the failure

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_crash)
    newer = good.assign(split="test")
    with pytest.raises(OSError, match="disk full"):
        write_manifest(newer, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv"]  # no temporary left behind


def test_curate_phantom_end_to_end(phantom_raw, tmp_path):
    res = curate_nnunet_raw(phantom_raw, tmp_path / "out", split="pelvic", seed=0, min_object_px=100, progress=False)
    # files: the contract other notebooks read
    splits = read_splits_json(tmp_path / "out" / "splits.json")
    assert splits == res.splits
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "val": 1, "test": 1}
    man = read_manifest(tmp_path / "out" / "manifest.csv")
    assert len(man) == 6 * (1 + SHAPE[0])
    # every case row carries the real file hashes and the spacing from the header
    row = man[(man.case_id == "pelvis_003") & (man["slice"] == -1)].iloc[0]
    assert row.image_sha256 == file_digest(phantom_raw / "imagesTr" / "pelvis_003_0000.nii.gz")
    assert row.label_sha256 == file_digest(phantom_raw / "labelsTr" / "pelvis_003.nii.gz")
    assert parse_tuple(row["spacing"]) == SPACING and parse_tuple(row["shape"]) == SHAPE
    # per-label voxel counts equal those of the label file
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(phantom_raw / "labelsTr" / "pelvis_003.nii.gz")))
    for name, value in LABELS.items():
        assert row[f"n_{name}"] == int((labels == value).sum())
    # 'usable' marks slices that keep an object of >= 100 px
    sl = man[(man.case_id == "pelvis_003") & (man["slice"] >= 0)]
    assert (sl.usable == (sl.n_foreground_clean > 0)).all()
    assert res.summary.set_index("split").loc["total", "n_cases"] == 6
    assert res.summary.set_index("split").loc["total", "n_slices"] == 48
    # same seed -> byte-identical splits
    again = curate_nnunet_raw(phantom_raw, tmp_path / "again", seed=0, progress=False)
    assert (tmp_path / "again" / "splits.json").read_bytes() == (tmp_path / "out" / "splits.json").read_bytes()
    assert again.splits == res.splits


def test_failed_recuration_keeps_previous_outputs(phantom_raw, tmp_path):
    import shutil

    raw = shutil.copytree(phantom_raw, tmp_path / "raw")
    out = tmp_path / "out"
    curate_nnunet_raw(raw, out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (raw / "labelsTr" / "pelvis_004.nii.gz").write_bytes(b"")
    with pytest.raises(DataValidationError, match="pelvis_004.nii.gz: file is empty"):
        curate_nnunet_raw(raw, out, seed=1, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_curate_real_hippocampus(hippocampus_raw_dir, tmp_path):
    res = curate_nnunet_raw(hippocampus_raw_dir, tmp_path, split="finetune_sam", seed=0, progress=False)
    assert {k: len(v) for k, v in res.splits.items()} == {"train": 4, "val": 1, "test": 1}
    assert res.cases.set_index("case_id").loc["hippocampus_003", "n_slices"] == 35
    total = res.summary.set_index("split").loc["total"]
    assert total["n_slices"] == 35 + 38 + 34 + 40 + 40 + 40
    # voxel counts against the files, read independently (case 003 stores float32 labels)
    n_ant = 0
    for cid in res.cases.case_id:
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(hippocampus_raw_dir / "labelsTr" / f"{cid}.nii.gz")))
        n_ant += int((arr == 1).sum())
    assert total["n_anterior_hippocampus"] == n_ant


def test_curate_real_slice_lists_reports_leak(prostate_slices_dir, tmp_path):
    with pytest.raises(LeakageError, match="patient77"):
        curate_slice_lists(prostate_slices_dir, tmp_path / "strict", progress=False)
    assert not (tmp_path / "strict" / "manifest.csv").exists()
    with pytest.warns(UserWarning, match="patient77"):
        res = curate_slice_lists(prostate_slices_dir, tmp_path / "as_shipped", on_leakage="warn", progress=False)
    assert res.leaks == {"patient77": ["train", "val"]}
    man = read_manifest(res.manifest_path)
    assert len(man) == 10 and int(man.loc[man.case_id == "BMC26_16", "n_foreground"].iloc[0]) == 10827
    assert man.loc[man.case_id == "RUNMC03_12", "slice"].iloc[0] == 12
    fixed = curate_slice_lists(prostate_slices_dir, tmp_path / "by_patient", resplit="finetune_sam", progress=False)
    assert fixed.leaks == {}
    assert sum(len(v) for v in fixed.splits.values()) == 10


def test_convert_paired_layout_then_curate(tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    for i in range(3):
        case = make_phantom_case(i, shape=SHAPE)
        for arr, suffix in ((case.image, "_img.nii"), (case.labels, "_mask.nii")):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing((0.75, 0.75, 2.5))
            sitk.WriteImage(img, str(src / f"{i:03d}{suffix}"))
    raw = convert_paired_to_nnunet_raw(src, tmp_path / "raw", LABELS, case_prefix="pelvic_", progress=False)
    meta = json.loads((raw / "dataset.json").read_text())
    assert meta["numTraining"] == 3 and meta["labels"] == LABELS
    res = curate_nnunet_raw(raw, tmp_path / "out", progress=False, min_object_px=0)
    man = res.manifest
    assert sorted(man.case_id.unique()) == ["pelvic_000", "pelvic_001", "pelvic_002"]
    assert set(man.spacing) == {"2.5x0.75x0.75"}
    os.remove(src / "001_mask.nii")
    with pytest.raises(DataValidationError, match="001_mask.nii: file not found"):
        convert_paired_to_nnunet_raw(src, tmp_path / "raw2", LABELS, progress=False)
