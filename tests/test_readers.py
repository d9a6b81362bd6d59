"""Readers on real files (MSD hippocampus volumes, finetune-SAM prostate slices), the
phantom, MSD-style layouts, MedSAM .npz, and every validation error of curation."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from samlab.data.curate import curate_nnunet_raw
from samlab.data.phantom import LABELS, make_phantom_case, write_phantom_dataset
from samlab.data.readers import (
    DataValidationError,
    Slice2D,
    Volume,
    as_label_array,
    iter_volumes,
    load_slice,
    read_case,
    read_nifti_case,
    read_npz,
    read_png_pair,
    read_raw_dataset,
    read_slice_list,
    subject_from_path,
)

SHAPE = (8, 48, 48)
SPACING = (3.0, 1.2, 1.2)


@pytest.fixture(scope="module")
def pristine_phantom(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantom") / "raw"
    write_phantom_dataset(root, n_cases=3, seed=0, shape=SHAPE, spacing=SPACING)
    return root


@pytest.fixture()
def phantom(pristine_phantom, tmp_path) -> Path:
    """A fresh copy that a test may break."""
    return Path(shutil.copytree(pristine_phantom, tmp_path / "raw"))


def _write(array: np.ndarray, path: Path, spacing=SPACING) -> None:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    sitk.WriteImage(img, str(path), useCompression=True)


# --------------------------------------------------------------------------- real 3D volumes


def test_hippocampus_dataset_json_and_cases(hippocampus_raw_dir):
    ds = read_raw_dataset(hippocampus_raw_dir)
    assert ds.layout == "nnunet_v2"
    assert ds.label_map == {"background": 0, "anterior_hippocampus": 1, "posterior_hippocampus": 2}
    assert [c.case_id for c in ds.cases] == [
        "hippocampus_003", "hippocampus_004", "hippocampus_006", "hippocampus_007", "hippocampus_008", "hippocampus_014",
    ]


def test_hippocampus_float32_labels_become_uint8(hippocampus_raw_dir):
    """Case 003 stores labels as float32 (a real-world quirk): integral floats are accepted."""
    label_file = hippocampus_raw_dir / "labelsTr" / "hippocampus_003.nii.gz"
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file)))
    assert raw.dtype == np.float32  # the quirk this test is about
    vol = read_case(read_raw_dataset(hippocampus_raw_dir), "hippocampus_003")
    assert vol.labels.dtype == np.uint8 and vol.image.dtype == np.float32
    assert vol.shape == (35, 52, 34)
    assert vol.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(vol.labels, raw.astype(np.uint8))
    assert sorted(np.unique(vol.labels).tolist()) == [0, 1, 2]
    assert vol.path == hippocampus_raw_dir / "imagesTr" / "hippocampus_003_0000.nii.gz"


def test_hippocampus_all_volumes(hippocampus_raw_dir):
    shapes = {v.case_id: v.shape for v in iter_volumes(hippocampus_raw_dir)}
    assert shapes == {
        "hippocampus_003": (35, 52, 34), "hippocampus_004": (38, 52, 36), "hippocampus_006": (34, 52, 35),
        "hippocampus_007": (40, 47, 34), "hippocampus_008": (40, 48, 36), "hippocampus_014": (40, 50, 39),
    }


def test_non_integral_float_labels_rejected(hippocampus_raw_dir, tmp_path):
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(hippocampus_raw_dir / "labelsTr" / "hippocampus_003.nii.gz")))
    raw = raw.copy()
    raw[10, 20, 15] = 1.5
    bad = tmp_path / "hippocampus_003.nii.gz"
    img = sitk.GetImageFromArray(raw)
    img.CopyInformation(sitk.ReadImage(str(hippocampus_raw_dir / "labelsTr" / "hippocampus_003.nii.gz")))
    sitk.WriteImage(img, str(bad))
    with pytest.raises(DataValidationError, match="non-integral") as info:
        read_nifti_case(hippocampus_raw_dir / "imagesTr" / "hippocampus_003_0000.nii.gz", bad,
                        {"background": 0, "a": 1, "b": 2})
    assert str(bad) in str(info.value) and "1.5" in str(info.value)


def test_as_label_array_rules():
    np.testing.assert_array_equal(as_label_array(np.array([0.0, 2.0, 255.0], np.float32)), [0, 2, 255])
    with pytest.raises(DataValidationError, match="NaN"):
        as_label_array(np.array([0.0, np.nan]))
    with pytest.raises(DataValidationError, match="outside uint8"):
        as_label_array(np.array([0, 300]))
    with pytest.raises(DataValidationError, match="outside uint8"):
        as_label_array(np.array([-1, 1]))


# --------------------------------------------------------------------------- phantom + layouts


def test_phantom_spacing_is_z_first_and_arrays_match(phantom):
    ds = read_raw_dataset(phantom)
    assert ds.label_map == LABELS
    vol = read_case(ds, "pelvis_001")
    assert vol.spacing == SPACING  # (sz, sy, sx): the anisotropic z comes first
    ref = make_phantom_case(1, shape=SHAPE, spacing=SPACING)  # write_phantom_dataset uses seed*1000+i
    np.testing.assert_array_equal(vol.labels, ref.labels)
    np.testing.assert_allclose(vol.image, ref.image, rtol=0, atol=0)


def test_msd_style_dataset_json(phantom):
    """MSD / nnU-Net v1 spelling: "training" list, labels {"0": "background"}, files listed without _0000."""
    meta = json.loads((phantom / "dataset.json").read_text())
    meta = {
        "name": "msd-style",
        "modality": {"0": "T2"},
        "labels": {str(v): k for k, v in meta["labels"].items()},
        "numTraining": 3,
        "training": [{"image": f"./imagesTr/pelvis_{i:03d}.nii.gz", "label": f"./labelsTr/pelvis_{i:03d}.nii.gz"}
                     for i in range(3)],
    }
    (phantom / "dataset.json").write_text(json.dumps(meta))
    ds = read_raw_dataset(phantom)
    assert ds.layout == "msd"
    assert ds.label_map == LABELS
    assert [c.case_id for c in ds.cases] == ["pelvis_000", "pelvis_001", "pelvis_002"]
    assert ds.cases[0].images[0].name == "pelvis_000_0000.nii.gz"
    vol = read_case(ds, ds.cases[2])
    np.testing.assert_array_equal(vol.labels, make_phantom_case(2, shape=SHAPE, spacing=SPACING).labels)


def test_msd_4d_multichannel_image(tmp_path):
    """MSD prostate stores (T2, ADC) in one 4D file; channel selects which one, spacing stays 3D."""
    root = tmp_path / "Task05"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    case = make_phantom_case(0, shape=SHAPE, spacing=SPACING)
    chans = []
    for arr in (case.image, case.image * 0.5 + 7):
        im = sitk.GetImageFromArray(arr)
        im.SetSpacing(tuple(reversed(SPACING)))
        chans.append(im)
    sitk.WriteImage(sitk.JoinSeries(chans), str(root / "imagesTr" / "prostate_00.nii.gz"))
    _write(case.labels, root / "labelsTr" / "prostate_00.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "labels": {"0": "background", **{str(v): k for k, v in LABELS.items() if v}},
        "modality": {"0": "T2", "1": "ADC"},
        "training": [{"image": "./imagesTr/prostate_00.nii.gz", "label": "./labelsTr/prostate_00.nii.gz"}],
    }))
    ds = read_raw_dataset(root)
    t2 = read_case(ds, "prostate_00", channel=0)
    adc = read_case(ds, "prostate_00", channel=1)
    assert t2.spacing == SPACING and t2.shape == SHAPE
    np.testing.assert_allclose(t2.image, case.image)
    np.testing.assert_allclose(adc.image, case.image * 0.5 + 7, rtol=1e-6)
    with pytest.raises(DataValidationError, match="no channel 2"):
        read_case(ds, "prostate_00", channel=2)


def test_region_based_labels_rejected(phantom):
    meta = json.loads((phantom / "dataset.json").read_text())
    meta["labels"]["whole"] = [1, 2]
    (phantom / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataValidationError, match="region-based") as info:
        read_raw_dataset(phantom)
    assert "dataset.json" in str(info.value)


# --------------------------------------------------------------------------- real 2D slices


def test_slice_list_paths_and_subjects(prostate_slices_dir):
    refs = read_slice_list(prostate_slices_dir / "train_5shot.csv")
    assert [r.case_id for r in refs] == ["BIDMC05_32", "I2CVB05_25", "UCL29_7", "RUNMC03_12", "BIDMC04_22"]
    assert [r.subject for r in refs] == ["patient5", "patient60", "patient108", "patient77", "patient4"]
    assert [r.slice_index for r in refs] == [32, 25, 7, 12, 22]
    # "MRI-Prostate/images/..." and "/MRI-Prostate/masks/..." both resolve inside the dataset folder
    assert refs[3].image_path == prostate_slices_dir / "images/patient77/study77/volumn77/RUNMC03_12.png"
    assert refs[3].mask_path == prostate_slices_dir / "masks/RUNMC03_12.png"


def test_two_touching_labels_binarised_explicitly(prostate_slices_dir):
    """BMC26_16 holds labels 254 and 255; the gland is mask > 0 (10827 pixels)."""
    refs = {r.case_id: r for r in read_slice_list(prostate_slices_dir / "val_5shot.csv")}
    ref = refs["BMC26_16"]
    sl = load_slice(ref, mask_rule="nonzero", foreground_name="prostate")
    assert isinstance(sl, Slice2D)
    assert sl.image.shape == (384, 384) and sl.image.dtype == np.float32
    assert sl.label_map == {"background": 0, "prostate": 1}
    assert sorted(np.unique(sl.mask).tolist()) == [0, 1]
    assert int(sl.mask.sum()) == 10827
    multi = load_slice(ref, mask_rule="labels", label_map={"background": 0, "part_a": 254, "part_b": 255})
    values, counts = np.unique(multi.mask, return_counts=True)
    assert values.tolist() == [0, 254, 255]
    assert int(counts[1] + counts[2]) == 10827  # the two labels together are the whole gland
    # RUNMC03_16 holds only 254: a map that forgets 254 is an error naming the mask file
    with pytest.raises(DataValidationError, match=r"\[254\]") as info:
        load_slice(refs["RUNMC03_16"], mask_rule="labels", label_map={"background": 0, "gland": 255})
    assert "RUNMC03_16.png" in str(info.value)


def test_all_real_masks_nonempty_under_nonzero_rule(prostate_slices_dir):
    expected = {"BIDMC04_22": 6814, "BIDMC05_32": 1634, "BMC26_16": 10827, "I2CVB01_27": 6670, "I2CVB05_25": 6863,
                "RUNMC03_12": 9061, "RUNMC03_16": 3233, "RUNMC23_14": 6706, "UCL29_7": 4636, "UCL34_9": 3552}
    found = {}
    for csv_name in ("train_5shot.csv", "val_5shot.csv"):
        for ref in read_slice_list(prostate_slices_dir / csv_name):
            found[ref.case_id] = int(load_slice(ref, mask_rule="nonzero").mask.sum())
    assert found == expected


def test_subject_from_path_and_missing_listed_file(tmp_path, prostate_slices_dir):
    assert subject_from_path("MRI-Prostate/images/patient112/study112/volumn112/UCL34_9.png") == "patient112"
    with pytest.raises(DataValidationError, match="no patient id"):
        subject_from_path("images/UCL34_9.png")
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("MRI-Prostate/images/patient1/x.png,/MRI-Prostate/masks/x.png\n")
    with pytest.raises(DataValidationError, match="line 1") as info:
        read_slice_list(csv_file, prostate_slices_dir)
    assert str(csv_file) in str(info.value)


def test_png_pair_shape_mismatch(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "img.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "mask.png")
    with pytest.raises(DataValidationError, match="mask shape") as info:
        read_png_pair(tmp_path / "img.png", tmp_path / "mask.png", subject="p1")
    assert "mask.png" in str(info.value)


# --------------------------------------------------------------------------- MedSAM .npz


def test_npz_3d_imgs_gts(tmp_path):
    case = make_phantom_case(3, shape=SHAPE, spacing=SPACING)
    path = tmp_path / "MR_pelvis_003.npz"
    # MedSAM writes spacing in SimpleITK order (sx, sy, sz)
    np.savez_compressed(path, imgs=case.image, gts=case.labels, spacing=np.array(SPACING[::-1]))
    vol = read_npz(path, label_map=LABELS)
    assert isinstance(vol, Volume)
    assert vol.spacing == SPACING
    np.testing.assert_array_equal(vol.labels, case.labels)


def test_npz_2d_image_mask_keys(tmp_path):
    img = np.arange(64, dtype=np.uint8).reshape(8, 8)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 3:6] = 3
    path = tmp_path / "slice_7.npz"
    np.savez(path, image=img, mask=mask)
    sl = read_npz(path)
    assert isinstance(sl, Slice2D)
    assert sl.slice_index == 7
    assert sl.label_map == {"background": 0, "label_3": 3}
    assert int((sl.mask == 3).sum()) == 9
    binary = read_npz(path, mask_rule="nonzero")
    assert int(binary.mask.sum()) == 9


def test_npz_bad_archives(tmp_path):
    path = tmp_path / "nokeys.npz"
    np.savez(path, foo=np.zeros(3))
    with pytest.raises(DataValidationError, match="no image array") as info:
        read_npz(path)
    assert "nokeys.npz" in str(info.value)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, imgs=np.array([{"a": 1}], dtype=object), gts=np.zeros(1))
    with pytest.raises(DataValidationError, match="pickled"):
        read_npz(pickled)


# --------------------------------------------------------------------------- validation errors


def test_missing_image_file(phantom):
    missing = phantom / "imagesTr" / "pelvis_001_0000.nii.gz"
    missing.unlink()
    with pytest.raises(DataValidationError, match="file not found") as info:
        read_raw_dataset(phantom)
    assert str(missing) in str(info.value)


def test_missing_label_file(phantom):
    missing = phantom / "labelsTr" / "pelvis_002.nii.gz"
    missing.unlink()
    with pytest.raises(DataValidationError, match="file not found") as info:
        read_raw_dataset(phantom)
    assert str(missing) in str(info.value)


def test_shape_mismatch(phantom):
    case = make_phantom_case(0, shape=SHAPE, spacing=SPACING)
    bad = phantom / "labelsTr" / "pelvis_000.nii.gz"
    _write(case.labels[:, :, :40], bad)
    with pytest.raises(DataValidationError, match=r"label shape \(8, 48, 40\) differs from image shape \(8, 48, 48\)") as info:
        read_case(read_raw_dataset(phantom), "pelvis_000")
    assert str(bad) in str(info.value)


def test_spacing_mismatch(phantom):
    case = make_phantom_case(0, shape=SHAPE, spacing=SPACING)
    bad = phantom / "labelsTr" / "pelvis_000.nii.gz"
    _write(case.labels, bad, spacing=(2.5, 1.2, 1.2))
    with pytest.raises(DataValidationError, match="spacing") as info:
        read_case(read_raw_dataset(phantom), "pelvis_000")
    assert str(bad) in str(info.value) and "(2.5, 1.2, 1.2)" in str(info.value)


def test_labels_outside_label_map(phantom):
    case = make_phantom_case(1, shape=SHAPE, spacing=SPACING)
    labels = case.labels.copy()
    labels[0, :2, :3] = 9  # 6 voxels of an unknown label
    bad = phantom / "labelsTr" / "pelvis_001.nii.gz"
    _write(labels, bad)
    with pytest.raises(DataValidationError, match=r"label values \[9\] \(voxel counts \{9: 6\}\)") as info:
        read_case(read_raw_dataset(phantom), "pelvis_001")
    assert str(bad) in str(info.value)


def test_nan_and_inf_intensities(phantom):
    case = make_phantom_case(2, shape=SHAPE, spacing=SPACING)
    image = case.image.copy()
    image[1, 5, 5] = np.nan
    image[2, 6, 6] = np.inf
    bad = phantom / "imagesTr" / "pelvis_002_0000.nii.gz"
    _write(image, bad)
    with pytest.raises(DataValidationError, match="1 NaN and 1 inf") as info:
        read_case(read_raw_dataset(phantom), "pelvis_002")
    assert str(bad) in str(info.value)


def test_empty_label_volume(phantom):
    bad = phantom / "labelsTr" / "pelvis_000.nii.gz"
    _write(np.zeros(SHAPE, np.uint8), bad)
    ds = read_raw_dataset(phantom)
    with pytest.raises(DataValidationError, match="empty") as info:
        read_case(ds, "pelvis_000")
    assert str(bad) in str(info.value)
    assert read_case(ds, "pelvis_000", allow_empty=True).labels.sum() == 0


def test_corrupt_nifti(phantom):
    bad = phantom / "imagesTr" / "pelvis_001_0000.nii.gz"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])  # truncated download
    with pytest.raises(DataValidationError, match="corrupt or truncated") as info:
        read_case(read_raw_dataset(phantom), "pelvis_001")
    assert str(bad) in str(info.value)
    garbage = phantom / "labelsTr" / "pelvis_002.nii.gz"
    garbage.write_bytes(gzip.compress(b"not a nifti header" * 10))
    with pytest.raises(DataValidationError) as info:
        read_case(read_raw_dataset(phantom), "pelvis_002")
    assert str(garbage) in str(info.value)


def test_curation_reports_every_bad_case_and_writes_nothing(phantom, tmp_path):
    _write(np.full(SHAPE, 99, np.uint8), phantom / "labelsTr" / "pelvis_000.nii.gz")  # a label not in the map
    img = phantom / "imagesTr" / "pelvis_002_0000.nii.gz"
    img.write_bytes(img.read_bytes()[:100])
    out = tmp_path / "out"
    with pytest.raises(DataValidationError, match="2 of 3 case") as info:
        curate_nnunet_raw(phantom, out, progress=False)
    msg = str(info.value)
    assert "pelvis_000.nii.gz" in msg and "pelvis_002_0000.nii.gz" in msg
    assert len(info.value.errors) == 2
    assert not (out / "manifest.csv").exists() and not (out / "splits.json").exists()


# --------------------------------------------------------------------------- registry and dataset.json errors


def test_malformed_dataset_json_names_file_line_and_column(phantom):
    (phantom / "dataset.json").write_text('{"labels": {"background": 0\n "bladder": 1}}')
    with pytest.raises(DataValidationError) as info:
        read_raw_dataset(phantom)
    assert info.value.path == phantom / "dataset.json"
    assert str(info.value).startswith(f"{phantom / 'dataset.json'}: dataset.json is not valid JSON (line 2, column 2")


def test_registry_picks_the_reader_from_the_path(pristine_phantom, prostate_slices_dir, tmp_path):
    from samlab.data.readers import FORMATS, format_of, open_source

    assert list(FORMATS) == ["nnunet_raw", "png_csv", "npz"]
    assert format_of(pristine_phantom).name == "nnunet_raw"
    assert open_source(pristine_phantom) == read_raw_dataset(pristine_phantom)
    csv_list = prostate_slices_dir / "train_5shot.csv"
    assert format_of(csv_list).name == "png_csv"
    assert open_source(csv_list) == read_slice_list(csv_list)
    case = make_phantom_case(1, shape=SHAPE, spacing=SPACING)
    npz = tmp_path / "case_001.npz"
    np.savez_compressed(npz, imgs=case.image, gts=case.labels, spacing=np.array(SPACING[::-1]))
    volume = open_source(npz, label_map=LABELS)
    assert isinstance(volume, Volume) and volume.spacing == SPACING
    with pytest.raises(DataValidationError, match=r"no reader for this source \(readable: nnunet_raw"):
        format_of(pristine_phantom / "labelsTr")  # a folder without dataset.json
    with pytest.raises(DataValidationError, match="not found"):
        open_source(tmp_path / "missing.npz")
