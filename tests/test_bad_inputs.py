"""Every bad input of issue 18 is stopped before heavy work, with its file and its problem named.

Each test builds one broken input in ``tmp_path`` and checks (a) the message names the
file and the problem, (b) nothing was written, (c) no notebook started (the check runs
in seconds; the run directory holds no executed notebook). Tiny arrays, no forward pass.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from samlab import cli
from samlab.config import ProfileError
from samlab.data.phantom import write_phantom_dataset
from samlab.data.readers import DataValidationError, read_case, read_png_pair, read_raw_dataset
from samlab.models.registry import CheckpointError, check_checkpoint
from samlab.runlock import LOCK_NAME, RunDirLockedError, mark_stale_record, run_lock
from samlab.validate import ProfileCheckError, check_profile

SHAPE = (8, 32, 32)
SPACING = (3.0, 1.2, 1.2)


@pytest.fixture(scope="module")
def pristine_raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad_inputs") / "raw"
    write_phantom_dataset(root, n_cases=3, seed=0, shape=SHAPE, spacing=SPACING)
    return root


@pytest.fixture()
def raw(pristine_raw, tmp_path) -> Path:
    """A fresh copy of a tiny phantom dataset that a test may break."""
    return Path(shutil.copytree(pristine_raw, tmp_path / "raw"))


def _profile(tmp_path: Path, curation: dict | None = None, zero_shot: dict | None = None, name: str = "bad") -> Path:
    steps = [{"notebook": "01_data_curation", "parameters": curation or {"phantom_shape": list(SHAPE)}},
             {"notebook": "02_zero_shot_probing", "parameters": zero_shot or {}}]
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps({"name": name, "notebooks": steps}))  # JSON is YAML
    return path


def _raw_profile(tmp_path: Path, raw_dir: Path, **zero_shot) -> Path:
    return _profile(tmp_path, {"data_source": "nnunet_raw", "raw_dir": str(raw_dir)}, zero_shot)


def _cli(capsys, *argv: str) -> tuple[int, str]:
    start = time.perf_counter()
    code = cli.main(list(argv))
    assert time.perf_counter() - start < 20, "the check must run before any heavy work"
    return code, capsys.readouterr().err


def _assert_nothing_run(runs_root: Path, name: str = "bad") -> None:
    run_dir = runs_root / name
    assert not (run_dir / "run.json").exists()
    assert not list((run_dir / "notebooks").glob("*.ipynb")) if (run_dir / "notebooks").is_dir() else True


def _label_image(raw: Path, case: str = "pelvis_000") -> tuple[Path, sitk.Image]:
    path = raw / "labelsTr" / f"{case}.nii.gz"
    return path, sitk.ReadImage(str(path))


# --------------------------------------------------------------------------- geometry


def test_mirrored_label_direction_is_refused_naming_both_files(raw, tmp_path, capsys):
    path, label = _label_image(raw)
    label.SetDirection((-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))  # mirrored through x: same shape and spacing
    sitk.WriteImage(label, str(path))
    with pytest.raises(DataValidationError, match="direction") as info:
        read_case(read_raw_dataset(raw), "pelvis_000")
    assert str(path) in str(info.value) and "pelvis_000_0000.nii.gz" in str(info.value)
    code, err = _cli(capsys, "run", str(_raw_profile(tmp_path, raw)), "--runs-root", str(tmp_path / "runs"))
    first = err.splitlines()[0]
    assert code == 2 and first.startswith(f"samlab: error: {path}: label grid differs") and "direction" in first
    _assert_nothing_run(tmp_path / "runs")


def test_shifted_label_origin_is_refused_unless_resampling_is_asked_for(raw):
    path, label = _label_image(raw)
    label.SetOrigin((12.0, 0.0, 0.0))
    sitk.WriteImage(label, str(path))
    with pytest.raises(DataValidationError, match=r"origin \(12\.0, 0\.0, 0\.0\)") as info:
        read_case(read_raw_dataset(raw), "pelvis_000")
    assert str(path) in str(info.value) and "resample_labels" in str(info.value)
    volume = read_case(read_raw_dataset(raw, resample_labels=True), "pelvis_000", allow_empty=True)
    original = sitk.GetArrayFromImage(label)
    # shifted by 10 voxels (12 mm / 1.2 mm) in x: nearest-neighbour resampling moves the label back onto the image grid
    np.testing.assert_array_equal(volume.labels[:, :, 10:], original[:, :, :-10])
    assert not volume.labels[:, :, :10].any()


# --------------------------------------------------------------------------- channels


def test_four_d_image_with_two_channels_where_one_is_declared(raw, tmp_path, capsys):
    image_path = raw / "imagesTr" / "pelvis_001_0000.nii.gz"
    image = sitk.ReadImage(str(image_path))
    sitk.WriteImage(sitk.JoinSeries([image, image]), str(image_path))
    with pytest.raises(DataValidationError, match=r"is a 4D image .*2 channels.* declares 1 channel") as info:
        read_case(read_raw_dataset(raw), "pelvis_001")
    assert str(image_path) in str(info.value)
    code, err = _cli(capsys, "validate", str(_raw_profile(tmp_path, raw)), "--runs-root", str(tmp_path / "runs"))
    assert code == 2 and err.startswith(f"samlab: error: {image_path}: is a 4D image")


# --------------------------------------------------------------------------- dataset.json, raw_dir


def test_malformed_dataset_json_is_named_by_validate(raw, tmp_path, capsys):
    meta = raw / "dataset.json"
    meta.write_text(meta.read_text()[:-5])
    code, err = _cli(capsys, "validate", str(_raw_profile(tmp_path, raw)), "--runs-root", str(tmp_path / "runs"))
    assert code == 2 and err.startswith(f"samlab: error: {meta}: dataset.json is not valid JSON (line")
    assert not (tmp_path / "runs").exists()


def test_missing_raw_dir(tmp_path, capsys):
    missing = tmp_path / "no_such_dataset"
    code, err = _cli(capsys, "run", str(_raw_profile(tmp_path, missing)), "--runs-root", str(tmp_path / "runs"))
    assert code == 2 and err.startswith(f"samlab: error: {missing}: raw_dir not found")
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- PNG masks


def test_png_mask_with_two_values_is_refused_unless_a_rule_maps_them(tmp_path):
    image = (np.arange(64 * 64) % 251).reshape(64, 64).astype(np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:20, 10:20], mask[30:40, 30:40] = 128, 255
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    with pytest.raises(DataValidationError, match=r"2 non-zero values \[128, 255\]") as info:
        read_png_pair(tmp_path / "img.png", tmp_path / "mask.png", subject="p1")
    assert str(tmp_path / "mask.png") in str(info.value)
    merged = read_png_pair(tmp_path / "img.png", tmp_path / "mask.png", subject="p1", mask_rule="nonzero")
    assert int(merged.mask.sum()) == 200
    one = mask.copy()
    one[one == 128] = 0
    Image.fromarray(one).save(tmp_path / "mask.png")
    assert int(read_png_pair(tmp_path / "img.png", tmp_path / "mask.png", subject="p1").mask.sum()) == 100


def test_subject_pattern_is_a_parameter_of_read_png_pair(tmp_path):
    (tmp_path / "case7").mkdir()
    image = np.full((8, 8), 3, np.uint8)
    image[0, 0] = 9
    Image.fromarray(image).save(tmp_path / "case7" / "img.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "mask.png")
    with pytest.raises(DataValidationError, match="subject_pattern"):
        read_png_pair(tmp_path / "case7" / "img.png", tmp_path / "mask.png")
    sl = read_png_pair(tmp_path / "case7" / "img.png", tmp_path / "mask.png", subject_pattern=r"case\d+")
    assert sl.subject == "case7"


# --------------------------------------------------------------------------- numeric ranges


def test_expansion_larger_than_the_image(tmp_path, capsys):
    profile = _profile(tmp_path, zero_shot={"expansions_px": [0, 100000]})
    code, err = _cli(capsys, "run", str(profile), "--runs-root", str(tmp_path / "runs"))
    assert code == 2 and err.startswith(f"samlab: error: {profile} (notebook 02_zero_shot_probing): "
                                        f"expansions_px [100000] not smaller than the images ({SHAPE[1]} px")
    _assert_nothing_run(tmp_path / "runs")


def test_expansion_checked_against_raw_image_headers(raw, tmp_path):
    with pytest.raises(ProfileCheckError, match=r"expansions_px \[40\] not smaller than the images \(32 px"):
        check_profile(_raw_profile(tmp_path, raw, expansions_px=[5, 40]), runs_root=tmp_path / "runs")
    check_profile(_raw_profile(tmp_path, raw, expansions_px=[5, 31]), runs_root=tmp_path / "runs")


# --------------------------------------------------------------------------- checkpoints


def test_missing_checkpoint(tmp_path, capsys):
    missing = tmp_path / "medsam_vit_b.pth"
    profile = _profile(tmp_path, zero_shot={"models": ["medsam_vit_b"], "checkpoints": {"medsam_vit_b": str(missing)}})
    code, err = _cli(capsys, "run", str(profile), "--runs-root", str(tmp_path / "runs"))
    assert code == 2 and err.startswith(f"samlab: error: {missing}: checkpoint not found")
    _assert_nothing_run(tmp_path / "runs")


def test_model_needing_a_checkpoint_without_one(tmp_path):
    with pytest.raises(ProfileCheckError, match=r"model sam_vit_b .* needs a checkpoint file"):
        check_profile(_profile(tmp_path, zero_shot={"models": ["sam_vit_b"]}), runs_root=tmp_path / "runs")


def test_checkpoint_key_naming_no_model(tmp_path, capsys):
    profile = _profile(tmp_path, zero_shot={"checkpoints": {"sam_vit_typo": str(tmp_path / "x.pth")}})
    code, err = _cli(capsys, "validate", str(profile))
    assert code == 2 and str(profile) in err.splitlines()[0] and "sam_vit_typo" in err
    assert "valid names: litemedsam, medsam_vit_b, sam_vit_b" in err


def test_wrong_keys_checkpoint_is_summarised(tmp_path, capsys):
    wrong = tmp_path / "wrong.pth"
    torch.save({f"encoder.block{i}.weight": torch.zeros(2) for i in range(40)}, wrong)
    with pytest.raises(CheckpointError) as info:
        check_checkpoint("medsam_vit_b", wrong)
    lines = str(info.value).splitlines()
    assert lines[0].startswith(f"{wrong}: does not fit model medsam_vit_b: ") and " missing, 40 unexpected keys" in lines[0]
    assert len(str(info.value)) < 1500 and "and 35 more" in str(info.value)
    profile = _profile(tmp_path, zero_shot={"models": ["medsam_vit_b"], "checkpoints": {"medsam_vit_b": str(wrong)}})
    code, err = _cli(capsys, "run", str(profile), "--runs-root", str(tmp_path / "runs"))
    assert code == 2 and err.startswith(f"samlab: error: {wrong}: does not fit model medsam_vit_b")
    _assert_nothing_run(tmp_path / "runs")


def test_wrong_shape_checkpoint_is_named(tmp_path):
    from samlab.models.registry import _skeleton

    state = {k: torch.zeros(v.shape) for k, v in _skeleton("medsam_vit_b").state_dict().items()}
    key = "mask_decoder.iou_prediction_head.layers.0.weight"
    state[key] = torch.zeros(3, 3)
    bad = tmp_path / "shape.pth"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match=r"0 missing, 0 unexpected keys, 1 of another shape") as info:
        check_checkpoint("medsam_vit_b", bad)
    assert key in str(info.value)


# --------------------------------------------------------------------------- run directory, CLI


def test_read_only_run_dir(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    (runs / "bad").mkdir(parents=True)
    os.chmod(runs / "bad", 0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the permission check see what a user would
        import samlab.validate as validate

        real = validate.os.access
        monkeypatch.setattr(validate.os, "access", lambda p, m: False if Path(p) == runs / "bad" else real(p, m))
    try:
        code, err = _cli(capsys, "run", str(_profile(tmp_path)), "--runs-root", str(runs))
    finally:
        os.chmod(runs / "bad", 0o755)
    assert code == 2 and err.startswith(f"samlab: error: {runs / 'bad'}: run directory is not writable")
    assert "Traceback" not in err
    assert list((runs / "bad").iterdir()) == []


def test_bad_only_name_lists_the_valid_ones(tmp_path, capsys):
    profile = _profile(tmp_path)
    code, err = _cli(capsys, "run", str(profile), "--runs-root", str(tmp_path / "runs"), "--only", "02_zero_shot")
    assert code == 2 and err.startswith(f"samlab: error: {profile}: --only 02_zero_shot: not a notebook")
    assert "valid names: 01_data_curation, 02_zero_shot_probing" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_unexpected_exception_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    import samlab.validate as validate

    def boom(*args, **kwargs):
        raise KeyError("surprise")

    monkeypatch.setattr(validate, "check_profile", boom)
    code, err = _cli(capsys, "validate", str(_profile(tmp_path)))
    assert code == 2 and err.startswith("samlab: error: KeyError: 'surprise'") and "Traceback" not in err
    code, err = _cli(capsys, "--debug", "validate", str(_profile(tmp_path)))
    assert code == 2 and "Traceback (most recent call last)" in err and "samlab: error: KeyError" in err


def test_validate_prints_the_real_run_dir(tmp_path, capsys):
    assert cli.main(["validate", str(_profile(tmp_path, name="myprofile")), "--runs-root", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert f"run directory: {tmp_path / 'r' / 'myprofile'}" in out and "runs/dev" not in out


def test_second_live_run_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "bad"
    run_dir.mkdir(parents=True)
    lock = run_dir / LOCK_NAME
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00"}))
    code, err = _cli(capsys, "run", str(_profile(tmp_path)), "--runs-root", str(tmp_path / "runs"))
    assert code == 2 and err.startswith(f"samlab: error: {lock}: run directory in use by another samlab run "
                                        f"(pid {os.getpid()} on this host")
    assert json.loads(lock.read_text())["pid"] == os.getpid()  # the live run's lock is left alone
    _assert_nothing_run(tmp_path / "runs")
    with pytest.raises(RunDirLockedError):
        with run_lock(run_dir):
            pass


def test_dead_run_lock_is_taken_over_and_its_record_marked_killed(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    (run_dir / "run.json").write_text(json.dumps({"status": "running", "notebooks": []}))
    with run_lock(run_dir) as lock:
        assert lock["took_over"]["pid"] == dead.pid
        assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
        previous = mark_stale_record(run_dir / "run.json", lock)
    assert previous["status"] == "killed" and str(dead.pid) in previous["killed_note"]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "killed"
    assert not (run_dir / LOCK_NAME).exists()


def test_only_merges_into_run_json(tmp_path, monkeypatch):
    import papermill

    from samlab.runner import run_profile

    executed = []

    def fake_execute(source, output, **kwargs):  # no kernel: this test is about the record
        executed.append(Path(source).stem)
        Path(output).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    profile, runs = _profile(tmp_path), tmp_path / "runs"
    run_profile(profile, runs_root=runs, progress=False)
    run_profile(profile, runs_root=runs, only=["02_zero_shot_probing"], progress=False)
    record = json.loads((runs / "bad" / "run.json").read_text())
    assert executed == ["01_data_curation", "02_zero_shot_probing", "02_zero_shot_probing"]
    assert [e["notebook"] for e in record["notebooks"]] == ["01_data_curation", "02_zero_shot_probing"]
    assert record["status"] == "ok" and not (runs / "bad" / LOCK_NAME).exists()


def test_profile_error_still_a_profile_error(tmp_path):
    profile = _profile(tmp_path, zero_shot={"expansions_px": [100000]})
    with pytest.raises(ProfileError):
        check_profile(profile, runs_root=tmp_path / "runs")


# --------------------------------------------------------------------------- run-directory splits, figures


@pytest.fixture()
def curated(pristine_raw, tmp_path):
    from samlab.data.curate import curate_nnunet_raw
    from samlab.workspace import RunDir

    run = RunDir.at(tmp_path / "run")
    curate_nnunet_raw(pristine_raw, run.curation, split={"train": 0.34, "val": 0.33, "test": 0.33},
                      seed=0, progress=False)
    return run


def test_run_dir_splits_refuse_a_case_in_train_and_test(curated):
    splits = curated.splits()
    assert all(splits[s] for s in ("train", "val", "test")), splits
    path = curated.root / "curation" / "splits.json"
    shared = splits["train"][0]
    path.write_text(json.dumps({**splits, "test": splits["test"] + [shared]}))
    with pytest.raises(ValueError, match=rf"^{path}: case '{shared}' is in both 'train' and 'test'"):
        curated.splits()


def test_run_dir_splits_refuse_one_patient_in_train_and_test(curated):
    """Two cases of one patient (manifest ``subject``) in train and test: patient-level leakage, both files named."""
    import pandas as pd

    from samlab.data.splits import LeakageError

    splits = curated.splits()
    train_case, test_case = splits["train"][0], splits["test"][0]
    manifest = curated.root / "curation" / "manifest.csv"
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    patient = frame.loc[frame["case_id"] == train_case, "subject"].iloc[0]
    frame.loc[frame["case_id"] == test_case, "subject"] = patient
    frame.to_csv(manifest, index=False)
    with pytest.raises(LeakageError, match=rf"{patient} in test, train") as info:
        curated.splits()
    message = str(info.value)
    assert str(manifest) in message and str(curated.root / "curation" / "splits.json") in message
    assert train_case in message and test_case in message
    # a splits.json naming a case the manifest does not know comes from another curation
    (curated.root / "curation" / "splits.json").write_text(json.dumps({**splits, "test": ["stranger"]}))
    frame.loc[frame["case_id"] == test_case, "subject"] = test_case
    frame.to_csv(manifest, index=False)
    with pytest.raises(ValueError, match=r"case\(s\) \['stranger'\] \(1 in all\) are not in"):
        curated.splits()


def test_no_figure_is_written_around_save_figure():
    """Every figure goes through samlab.viz.save_figure (atomic): no bare ``savefig(`` in samlab/ or notebooks/."""
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for path in sorted([*(root / "samlab").rglob("*.py"), *(root / "notebooks").glob("*.ipynb")]):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "savefig(" in line and "atomic_path" not in line:
                offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    allowed = [o for o in offenders if o.startswith("samlab/viz.py:") and "fig.savefig(tmp," in o]
    assert len(allowed) == 1, "save_figure itself must write through a temporary path"
    assert sorted(set(offenders) - set(allowed)) == []
