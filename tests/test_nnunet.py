"""nnU-Net v2 baseline: export, splits, profiles, evaluation, boxes (fast) and a real quick training (slow)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from samlab.baselines import nnunet as N
from samlab.baselines.nnunet.pipeline import _write_splits_final as write_splits_final
from samlab.data.phantom import STRUCTURES, write_phantom_dataset
from samlab.results import COLUMNS

SPLITS = {
    "train": ["pelvis_000", "pelvis_001", "pelvis_002"],
    "val": ["pelvis_003"],
    "test": ["pelvis_004", "pelvis_005"],
}


@pytest.fixture(scope="module")
def tiny_phantom(tmp_path_factory) -> Path:
    """Six very small phantom volumes (enough for export/evaluation tests, not for training)."""
    return write_phantom_dataset(tmp_path_factory.mktemp("src"), n_cases=6, seed=0, shape=(8, 24, 24))


def _write_labels(array: np.ndarray, spacing, path: Path) -> None:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    sitk.WriteImage(image, str(path))


# ------------------------------------------------------------------------------------ export


def test_export_layout_and_dataset_json(tiny_phantom, tmp_path):
    run = N.export_dataset(tiny_phantom, SPLITS, tmp_path / "work", dataset_id=7)
    assert run.dataset_name == "Dataset007_PelvisPhantom"
    assert run.raw_dir == (tmp_path / "work" / "nnUNet_raw" / "Dataset007_PelvisPhantom").resolve()
    tr = sorted(p.name for p in (run.raw_dir / "imagesTr").iterdir())
    assert tr == [f"pelvis_00{i}_0000.nii.gz" for i in range(4)]
    assert sorted(p.name for p in (run.raw_dir / "labelsTr").iterdir()) == [f"pelvis_00{i}.nii.gz" for i in range(4)]
    assert sorted(p.name for p in run.images_ts.iterdir()) == ["pelvis_004_0000.nii.gz", "pelvis_005_0000.nii.gz"]
    assert sorted(p.name for p in run.labels_ts.iterdir()) == ["pelvis_004.nii.gz", "pelvis_005.nii.gz"]
    # files are byte copies of the source
    source_label = tiny_phantom / "labelsTr" / "pelvis_005.nii.gz"
    assert (run.labels_ts / "pelvis_005.nii.gz").read_bytes() == source_label.read_bytes()
    dj = run.dataset_json
    assert dj["numTraining"] == 4
    assert dj["labels"]["bladder"] == 1 and dj["labels"]["background"] == 0
    assert dj["channel_names"] == {"0": "T2"} and dj["file_ending"] == ".nii.gz"
    assert N.structures_from_dataset_json(dj)["prostate"] == (4, 5)
    # the trainer shim for nnUNet_extTrainer and the manifest for re-opening
    assert "nnUNetTrainerSamlab" in (run.trainers_dir / "samlab_nnunet_trainers.py").read_text()
    assert N.NnUNetRun.open(tmp_path / "work") == run
    env = run.environment(N.get_profile("quick"), training=True)
    assert env["nnUNet_raw"] == str(run.raw_root) and env["nnUNet_results"] == str(run.results_root)
    assert env["nnUNet_n_proc_DA"] == "0" and env["nnUNet_extTrainer"] == str(run.trainers_dir)
    assert "nnUNet_n_proc_DA" not in run.environment(N.get_profile("quick"))  # nnU-Net's planner refuses 0
    # re-exporting the same split is allowed; a different split into the same run is not
    assert N.export_dataset(tiny_phantom, SPLITS, tmp_path / "work", dataset_id=7) == run
    other = {**SPLITS, "train": ["pelvis_000", "pelvis_001"], "test": ["pelvis_002", "pelvis_004", "pelvis_005"]}
    with pytest.raises(ValueError, match="another source or split"):
        N.export_dataset(tiny_phantom, other, tmp_path / "work", dataset_id=7)


def test_export_reads_splits_json(tiny_phantom, tmp_path):
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(SPLITS))
    run = N.export_dataset(tiny_phantom, path, tmp_path / "work")
    assert run.export_manifest["splits"] == SPLITS
    # read through samlab.data.splits like every other notebook: an unknown key or broken JSON names the file
    path.write_text(json.dumps({**SPLITS, "holdout": ["pelvis_005"]}))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: unknown split name\(s\) \['holdout'\]"):
        N.export_dataset(tiny_phantom, path, tmp_path / "work2")
    path.write_text('{"train": ["pelvis_000"],')
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: splits file is not valid JSON \(line 1"):
        N.export_dataset(tiny_phantom, path, tmp_path / "work2")
    assert not (tmp_path / "work2").exists()


@pytest.mark.parametrize(
    "splits, message",
    [
        ({"train": ["pelvis_000"], "val": ["pelvis_001"]}, r"lacks key\(s\) \['test'\]"),
        ({"train": ["pelvis_000"], "val": ["pelvis_000"], "test": []}, "both 'train' and 'val'"),
        ({"train": ["pelvis_000"], "val": ["pelvis_001"], "test": ["nope_1"]}, r"\['nope_1'\] that are not in"),
        ({"train": [], "val": ["pelvis_001"], "test": []}, "'train'] is empty"),
        ({"train": ["pelvis_000", "pelvis_000"], "val": ["pelvis_001"], "test": []}, "twice"),
        ({"train": "pelvis_000", "val": ["pelvis_001"], "test": []}, "list of case-id strings"),
    ],
)
def test_export_rejects_bad_splits(tiny_phantom, tmp_path, splits, message):
    with pytest.raises(ValueError, match=message):
        N.export_dataset(tiny_phantom, splits, tmp_path / "work")
    assert not (tmp_path / "work" / "samlab_nnunet.json").exists()


def test_export_rejects_bad_source(tmp_path, tiny_phantom):
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        N.export_dataset(tmp_path / "missing", SPLITS, tmp_path / "work")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_phantom, broken)
    (broken / "imagesTr" / "pelvis_003_0000.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="pelvis_003"):
        N.export_dataset(broken, SPLITS, tmp_path / "work")
    with pytest.raises(ValueError, match="dataset_id"):
        N.export_dataset(tiny_phantom, SPLITS, tmp_path / "work", dataset_id=1000)


def test_splits_final_given_and_cv5(tiny_phantom, tmp_path):
    run = N.export_dataset(tiny_phantom, SPLITS, tmp_path / "work")
    with pytest.raises(FileNotFoundError, match="plan_and_preprocess"):
        write_splits_final(run, N.get_profile("quick"))
    run.preprocessed_dir.mkdir(parents=True)
    (run.preprocessed_dir / "nnUNetPlans.json").write_text("{}")
    path = write_splits_final(run, N.get_profile("quick"))
    assert json.loads(path.read_text()) == [
        {"train": ["pelvis_000", "pelvis_001", "pelvis_002"], "val": ["pelvis_003"]}
    ]
    with pytest.raises(ValueError, match="at least 5"):
        write_splits_final(run, N.get_profile("quick", split="cv5", folds=[0, 1, 2, 3, 4]))


# ------------------------------------------------------------------------------------ profiles


def test_profiles():
    paper = N.get_profile("paper")
    # the pelvic study's nnU-Net (§2.5): 3d_fullres, 1000 epochs, SGD lr 0.01, batch 2, single split
    assert (paper.configuration, paper.num_epochs, paper.initial_lr, paper.batch_size) == ("3d_fullres", 1000, 0.01, 2)
    assert (paper.num_iterations_per_epoch, paper.split, paper.folds, paper.device) == (250, "given", (0,), "cuda")
    quick = N.get_profile("quick")
    assert quick.device == "cpu" and quick.num_epochs * quick.num_iterations_per_epoch <= 300
    assert quick.schedule()["save_every"] == 1
    # every schedule key is one the trainer accepts (an unknown key is refused there), with nnU-Net's default
    from samlab.baselines._nnunet_worker import SCHEDULE_DEFAULTS

    assert set(quick.schedule()) == set(SCHEDULE_DEFAULTS)
    assert quick.schedule()["oversample_foreground_percent"] == SCHEDULE_DEFAULTS["oversample_foreground_percent"] == 0.33
    assert N.get_profile("quick", oversample_foreground_percent=1.0).schedule()["oversample_foreground_percent"] == 1.0
    with pytest.raises(ValueError, match="oversample_foreground_percent"):
        N.get_profile("quick", oversample_foreground_percent=1.5)
    assert N.get_profile("quick", num_epochs=2).num_epochs == 2
    assert N.get_profile({"name": "x", "configuration": "2d"}).num_epochs == 1000
    with pytest.raises(ValueError, match="unknown nnU-Net profile"):
        N.get_profile("fast")
    with pytest.raises(ValueError, match="fold 0"):
        N.get_profile("paper", folds=(0, 1))
    with pytest.raises(ValueError, match="configuration"):
        N.get_profile("paper", configuration="3d")
    with pytest.raises(ValueError, match="num_epochs"):
        N.get_profile("paper", num_epochs=0)
    with pytest.raises(ValueError, match="extra"):
        N.get_profile("paper", epochs=3)
    assert N.get_profile("paper", split="cv5", folds=(0, 1, 2, 3, 4)).folds == (0, 1, 2, 3, 4)


# ------------------------------------------------------------------------------------ boxes


def test_boxes_from_label_volume_hand_computed():
    vol = np.zeros((3, 10, 12), dtype=np.uint8)
    vol[1, 2:4, 1:3] = 1  # bladder component A: rows 2-3, cols 1-2 (4 px)
    vol[1, 5:8, 6:10] = 1  # bladder component B: rows 5-7, cols 6-9 (12 px), larger
    vol[1, 8, 10] = 1  # diagonal neighbour of B's corner (7, 9): joins B under 8-connectivity
    vol[2, 4, 4] = 4  # transition zone
    vol[2, 4, 5] = 5  # peripheral zone touching it: one prostate component
    rows = pd.DataFrame(N.boxes_from_label_volume(vol, {"bladder": (1,), "prostate": (4, 5), "rectum": (6,)}, "c1"))
    assert list(rows.columns) == list(N.BOX_COLUMNS)
    bl = rows[rows.structure == "bladder"].set_index("component")
    assert (bl.slice == 1).all() and sorted(bl.index) == [-1, 0, 1]
    assert tuple(bl.loc[-1, ["x0", "y0", "x1", "y1", "n_pixels"]]) == (1, 2, 10, 8, 17)
    assert tuple(bl.loc[0, ["x0", "y0", "x1", "y1", "n_pixels"]]) == (6, 5, 10, 8, 13)  # largest first
    assert tuple(bl.loc[1, ["x0", "y0", "x1", "y1", "n_pixels"]]) == (1, 2, 2, 3, 4)
    pr = rows[rows.structure == "prostate"]
    assert len(pr) == 2 and set(pr.component) == {-1, 0}
    assert (pr[["slice", "x0", "y0", "x1", "y1", "n_pixels"]].to_numpy() == [2, 4, 4, 5, 4, 2]).all()
    assert "rectum" not in set(rows.structure)  # absent structure: no box
    only_big = pd.DataFrame(N.boxes_from_label_volume(vol, {"bladder": (1,)}, "c1", min_component_pixels=5))
    assert sorted(only_big.component) == [-1, 0]
    with pytest.raises(ValueError, match="3D"):
        N.boxes_from_label_volume(vol[0], {"bladder": (1,)}, "c1")


def test_derive_write_load_boxes(tmp_path):
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    vol = np.zeros((2, 6, 6), dtype=np.uint8)
    vol[0, 1:3, 2:5] = 1
    _write_labels(vol, (3.0, 1.0, 1.0), pred_dir / "case_a.nii.gz")
    (pred_dir / "plans.json").write_text("{}")  # nnU-Net's extra files are ignored
    boxes = N.derive_boxes(pred_dir, {"bladder": (1,)})
    path = N.write_boxes(boxes, tmp_path / "nnunet_boxes.csv")
    loaded = N.load_boxes(path)
    pd.testing.assert_frame_equal(loaded, boxes)
    assert loaded.to_dict("records") == [
        {"case_id": "case_a", "slice": 0, "structure": "bladder", "component": c, "x0": 2, "y0": 1, "x1": 4, "y1": 2,
         "n_pixels": 6}
        for c in (-1, 0)
    ]
    bad = boxes.copy()
    bad.loc[0, "x0"] = 9
    (tmp_path / "bad.csv").write_text(bad.to_csv(index=False))
    with pytest.raises(ValueError, match="invalid box"):
        N.load_boxes(tmp_path / "bad.csv")
    (tmp_path / "short.csv").write_text(boxes.drop(columns="y1").to_csv(index=False))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['y1'\]"):
        N.load_boxes(tmp_path / "short.csv")
    with pytest.raises(FileNotFoundError):
        N.load_boxes(tmp_path / "none.csv")
    with pytest.raises(FileNotFoundError, match="no predictions"):
        N.derive_boxes(tmp_path, {"bladder": (1,)})


# ------------------------------------------------------------------------------------ evaluation


def test_evaluate_against_test_labels(tiny_phantom, tmp_path):
    run = N.export_dataset(tiny_phantom, SPLITS, tmp_path / "work")
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    shutil.copy(run.labels_ts / "pelvis_004.nii.gz", pred_dir)  # a perfect prediction
    gt = sitk.ReadImage(str(run.labels_ts / "pelvis_005.nii.gz"))
    arr = sitk.GetArrayFromImage(gt)
    arr[arr == 1] = 0  # bladder missed entirely
    wrong = sitk.GetImageFromArray(arr)
    wrong.CopyInformation(gt)
    sitk.WriteImage(wrong, str(pred_dir / "pelvis_005.nii.gz"))
    frame = N.evaluate(run, pred_dir, "quick", dataset="phantom")
    assert list(frame.columns) == list(COLUMNS)
    assert set(frame.method) == {"nnunet"} and set(frame.prompt) == {"none"} and set(frame.slice) == {-1}
    assert set(frame.structure) == set(STRUCTURES) and set(frame.metric) == {"dice", "hd95", "nsd"}
    dice = frame[frame.metric == "dice"].set_index(["subject", "structure"]).value
    assert (dice.loc["pelvis_004"] == 1.0).all()
    assert dice.loc[("pelvis_005", "bladder")] == 0.0 and dice.loc[("pelvis_005", "rectum")] == 1.0
    hd = frame[frame.metric == "hd95"].set_index(["subject", "structure"])
    assert hd.loc[("pelvis_004", "bladder"), "value"] == 0.0 and hd.loc[("pelvis_004", "bladder"), "unit"] == "mm"
    # a prediction with the wrong shape is refused, naming the file
    _write_labels(np.zeros((2, 3, 4)), (1, 1, 1), pred_dir / "pelvis_005.nii.gz")
    with pytest.raises(ValueError, match="pelvis_005.nii.gz has shape"):
        N.evaluate(run, pred_dir)
    (pred_dir / "pelvis_005.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="pelvis_005"):
        N.evaluate(run, pred_dir)


def test_export_and_evaluate_real_hippocampus(hippocampus_raw_dir, tmp_path):
    splits = {
        "train": ["hippocampus_004", "hippocampus_006", "hippocampus_007"],
        "val": ["hippocampus_008"],
        "test": ["hippocampus_003", "hippocampus_014"],  # 003 stores its labels as float32
    }
    run = N.export_dataset(hippocampus_raw_dir, splits, tmp_path / "work", dataset_id=4, dataset_name="Hippocampus")
    assert run.dataset_name == "Dataset004_Hippocampus"
    structures = N.structures_from_dataset_json(run.dataset_json)
    assert structures == {"anterior_hippocampus": (1,), "posterior_hippocampus": (2,)}
    pred_dir = tmp_path / "pred"
    shutil.copytree(run.labels_ts, pred_dir)
    frame = N.evaluate(run, pred_dir, dataset="msd-hippocampus")
    assert len(frame) == 2 * 2 * 3  # cases x structures x metrics
    values = frame.set_index(["metric"]).value
    assert (values.loc["dice"] == 1.0).all() and (values.loc["hd95"] == 0.0).all() and (values.loc["nsd"] == 1.0).all()
    boxes = N.derive_boxes(pred_dir, structures, case_ids=splits["test"])
    assert set(boxes.case_id) == set(splits["test"]) and set(boxes.structure) == set(structures)


# ------------------------------------------------------------------------------------ real nnU-Net


#: Bladder Dice of the quick profile on this phantom, measured 0.93-0.95 (see the report); floor with margin.
BLADDER_DICE_FLOOR = 0.75
#: Median IoU of predicted vs ground-truth whole-bladder boxes per slice; floor with margin below the measurement.
BLADDER_BOX_IOU_FLOOR = 0.6


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = ix * iy
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.mark.heavy
@pytest.mark.slow
def test_quick_profile_trains_resumes_predicts(tmp_path):
    src = write_phantom_dataset(tmp_path / "src", n_cases=6, seed=0, shape=(16, 64, 64), spacing=(3.0, 2.4, 2.4))
    profile = N.get_profile("quick")
    run = N.export_dataset(src, SPLITS, tmp_path / "work")
    N.plan_and_preprocess(run, profile)
    assert (run.preprocessed_dir / "nnUNetPlans.json").is_file()

    # Start training and kill it (the whole worker process group, by id) once a checkpoint exists.
    fold_dir = run.model_dir(profile) / "fold_0"
    outcome: dict = {}

    def _train() -> None:
        try:
            N.train(run, profile, resume=False)
        except N.NnUNetError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=_train)
    thread.start()
    pid_file = run.logs_dir / "train_fold0.pid"
    deadline = time.monotonic() + 240
    while not (fold_dir / "checkpoint_latest.pth").is_file() and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (fold_dir / "checkpoint_latest.pth").is_file(), "no checkpoint_latest.pth appeared"
    os.killpg(int(pid_file.read_text()), signal.SIGKILL)
    thread.join(60)
    assert "error" in outcome and "exit code -9" in str(outcome["error"])
    assert not (fold_dir / "checkpoint_final.pth").exists()

    # Resume: nnU-Net's --c logic loads checkpoint_latest.pth and continues where it stopped.
    result = N.train(run, profile, resume=True)[0]
    assert 1 <= result["start_epoch"] < profile.num_epochs and result["end_epoch"] == profile.num_epochs
    resumed_log = (run.logs_dir / "train_fold0.stdout.log").read_text().split("===== samlab train_fold0")[-1]
    epochs = [int(e) for e in re.findall(r": Epoch (\d+)", resumed_log)]
    assert epochs == list(range(result["start_epoch"], profile.num_epochs))
    assert (fold_dir / "checkpoint_final.pth").is_file() and not (fold_dir / "checkpoint_latest.pth").exists()
    # a finished run is not retrained
    again = N.train(run, profile, resume=True)[0]
    assert again["skipped"] and again["start_epoch"] == again["end_epoch"] == profile.num_epochs

    pred_dir = N.predict(run, profile)
    assert sorted(p.name for p in pred_dir.glob("*.nii.gz")) == ["pelvis_004.nii.gz", "pelvis_005.nii.gz"]
    results = N.evaluate(run, pred_dir, profile, dataset="phantom")
    dice = results[(results.metric == "dice") & (results.structure == "bladder")].set_index("subject").value
    print("bladder dice:", dice.to_dict(), "timings:", json.loads((run.logs_dir / "timings.json").read_text()))
    assert (dice > BLADDER_DICE_FLOOR).all(), dice

    boxes = N.derive_boxes(pred_dir, STRUCTURES, case_ids=SPLITS["test"])
    path = N.write_boxes(boxes, run.work_dir / "nnunet_boxes.csv")
    boxes = N.load_boxes(path)
    assert set(boxes.case_id) == set(SPLITS["test"]) and "bladder" in set(boxes.structure)
    assert (boxes.x1 < 64).all() and (boxes.y1 < 64).all() and (boxes.slice < 16).all()
    # every component box lies inside its slice's whole-structure box
    whole = boxes[boxes.component == -1].set_index(["case_id", "slice", "structure"])
    for row in boxes[boxes.component >= 0].itertuples():
        w = whole.loc[(row.case_id, row.slice, row.structure)]
        assert w.x0 <= row.x0 and w.y0 <= row.y0 and w.x1 >= row.x1 and w.y1 >= row.y1
    # predicted bladder boxes match the ground-truth boxes on the slices where both have bladder
    ious = []
    for case in SPLITS["test"]:
        gt = sitk.GetArrayFromImage(sitk.ReadImage(str(run.labels_ts / f"{case}.nii.gz")))
        gt_boxes = pd.DataFrame(N.boxes_from_label_volume(gt, {"bladder": (1,)}, case))
        gt_whole = gt_boxes[gt_boxes.component == -1].set_index("slice")
        pred_whole = whole.loc[case].xs("bladder", level="structure")
        for z in gt_whole.index.intersection(pred_whole.index):
            cols = ["x0", "y0", "x1", "y1"]
            ious.append(_iou(tuple(gt_whole.loc[z, cols]), tuple(pred_whole.loc[z, cols])))
    print("bladder box IoU median:", float(np.median(ious)), "n slices:", len(ious))
    assert len(ious) >= 4 and np.median(ious) > BLADDER_BOX_IOU_FLOOR


def test_a_worker_whose_parent_dies_stops_itself_and_its_children(tmp_path):
    """A killed notebook kernel must not leave an nnU-Net step training on (a rerun would train into the same
    folder beside it): the worker's watchdog stops its process group once its parent is gone."""
    import os
    import subprocess
    import sys
    import time

    ready = tmp_path / "pids"
    worker = ("import subprocess, sys, time, pathlib; "
              "from samlab.baselines._nnunet_worker import exit_with_parent; exit_with_parent(0.2); "
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
              f"pathlib.Path({str(ready)!r}).write_text(f'{{__import__(\"os\").getpid()}} {{child.pid}}'); "
              "time.sleep(120)")
    parent = ("import subprocess, sys, time, pathlib; "
              f"subprocess.Popen([sys.executable, '-c', {worker!r}], start_new_session=True); "
              f"p = pathlib.Path({str(ready)!r})\n"
              "while not p.exists(): time.sleep(0.1)\n")
    subprocess.run([sys.executable, "-c", parent], check=True, timeout=180)  # the parent exits: the worker is orphaned
    pids = [int(x) for x in ready.read_text().split()]

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as fh:  # a zombie awaiting its reaper counts as stopped
            return fh.read().split(")")[-1].split()[0] != "Z"

    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in pids), f"still running after their parent died: {pids}"


def test_fingerprint_draws_no_more_intensity_samples_per_case_than_a_case_has_voxels(tiny_phantom, tmp_path):
    """nnU-Net samples 1e8 foreground intensities whatever the dataset's size (22-57 s of the quick run for 6
    tiny volumes); samlab's extractor caps the samples per case at the largest case's voxel count, and its
    statistics still match the foreground's (each case weighted equally, as nnU-Net does)."""
    import subprocess
    import sys

    run = N.export_dataset(tiny_phantom, SPLITS, tmp_path / "work", dataset_id=9)
    script = (
        "import json\n"
        "from samlab.baselines._nnunet_worker import FingerprintExtractorSamlab\n"
        "fpe = FingerprintExtractorSamlab(9, num_processes=1)\n"
        "fingerprint = fpe.run(overwrite_existing=True)\n"
        "print(json.dumps({'cap': fpe.num_foreground_voxels_for_intensitystats,\n"
        "                  'stats': fingerprint['foreground_intensity_properties_per_channel']}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=run.environment(N.get_profile("quick")),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    training = SPLITS["train"] + SPLITS["val"]
    assert out["cap"] == len(training) * 8 * 24 * 24  # not nnU-Net's 1e8
    case_means = []
    for case in training:
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(tiny_phantom / "imagesTr" / f"{case}_0000.nii.gz")))
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tiny_phantom / "labelsTr" / f"{case}.nii.gz")))
        case_means.append(float(image[labels > 0].mean()))
    stats = out["stats"]["0"]
    assert stats["mean"] == pytest.approx(np.mean(case_means), rel=0.03)
