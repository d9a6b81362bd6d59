"""Patient-level splits, k-shot sampling and the leakage check, on synthetic ids, the phantom and the real slices."""
from __future__ import annotations

import json

import numpy as np
import pytest

from samlab.data.curate import curate_nnunet_raw
from samlab.data.phantom import write_phantom_dataset
from samlab.data.readers import read_slice_list
from samlab.data.splits import (
    LeakageError,
    assert_no_leakage,
    assign_items,
    find_leaks,
    k_shot_splits,
    read_splits_json,
    sample_k_shot,
    split_counts,
    split_patients,
    write_splits_json,
)


def test_split_counts_hand_computed():
    # pelvic study: 589 volumes; test = round(117.8) = 118; val = round(0.2 * 471 = 94.2) = 94
    assert split_counts(589, "pelvic") == {"train": 377, "val": 94, "test": 118}
    assert split_counts(6, "pelvic") == {"train": 4, "val": 1, "test": 1}
    # 18-config study 7:1:2
    assert split_counts(100, "finetune_sam") == {"train": 70, "val": 10, "test": 20}
    assert split_counts(10, "finetune_sam") == {"train": 7, "val": 1, "test": 2}
    assert split_counts(6, "finetune_sam") == {"train": 4, "val": 1, "test": 1}  # val 0.6 -> at least 1
    assert split_counts(2, "pelvic") == {"train": 2, "val": 0, "test": 0}  # too few to hold out anything
    assert split_counts(10, {"train": 8, "val": 0, "test": 2}) == {"train": 8, "val": 0, "test": 2}
    with pytest.raises(ValueError, match="unknown split scheme"):
        split_counts(10, "70-30")


def test_split_patients_seeded_order_free_and_disjoint():
    ids = [f"p{i:03d}" for i in range(50)]
    a = split_patients(ids, "pelvic", seed=3)
    assert a == split_patients(list(reversed(ids)), "pelvic", seed=3)  # input order does not matter
    assert {k: len(v) for k, v in a.items()} == {"train": 32, "val": 8, "test": 10}
    assert sorted(a["train"] + a["val"] + a["test"]) == ids
    assert split_patients(ids, "pelvic", seed=4) != a
    with pytest.raises(ValueError, match="no patients"):
        split_patients([], "pelvic")


def test_stratified_split_keeps_proportions_per_group():
    ids = [f"s{g}_{i}" for g in range(7) for i in range(10)]  # 7 source studies x 10 patients
    strata = {p: p.split("_")[0] for p in ids}
    out = split_patients(ids, "pelvic", seed=0, strata=strata)
    for g in range(7):  # per group of 10: test round(2.0) = 2, val round(1.6) = 2, train 6
        assert sum(p.startswith(f"s{g}_") for p in out["test"]) == 2
        assert sum(p.startswith(f"s{g}_") for p in out["val"]) == 2
    with pytest.raises(ValueError, match="no group"):
        split_patients(ids + ["x"], strata=strata)


def _slice_ids(n_patients: int, n_slices: int) -> dict[str, str]:
    return {f"p{p:03d}_s{s:02d}": f"p{p:03d}" for p in range(n_patients) for s in range(n_slices)}


def test_slices_follow_their_patient():
    patient_of = _slice_ids(20, 8)
    splits = split_patients(set(patient_of.values()), "finetune_sam", seed=1)
    by_split = assign_items(patient_of, patient_of, splits)
    assert sum(len(v) for v in by_split.values()) == 160
    assert_no_leakage(by_split, patient_of)  # passes: no exception
    assert len(by_split["test"]) == 8 * len(splits["test"])


def test_leakage_check_fails_on_slice_level_split():
    """A slice-level shuffle (the mistake the check exists for) must be caught, naming the patients."""
    patient_of = _slice_ids(10, 8)
    slices = sorted(patient_of)
    order = np.random.default_rng(0).permutation(len(slices))
    leaky = {"train": [slices[i] for i in order[:64]], "test": [slices[i] for i in order[64:]]}
    expected = sorted({patient_of[s] for s in leaky["test"]} & {patient_of[s] for s in leaky["train"]})
    assert expected  # with 8 slices per patient a random 80:20 cut always splits someone
    with pytest.raises(LeakageError) as info:
        assert_no_leakage(leaky, patient_of)
    assert sorted(info.value.leaks) == expected
    assert all(v == ("test", "train") for v in info.value.leaks.values())
    for p in expected:
        assert p in str(info.value)


def test_no_leakage_on_curated_phantom(tmp_path):
    raw = write_phantom_dataset(tmp_path / "raw", n_cases=6, seed=0, shape=(8, 32, 32))
    # two volumes per patient: the split must keep both volumes of a patient together
    subject_of = {f"pelvis_{i:03d}": f"patient{i // 2}" for i in range(6)}
    res = curate_nnunet_raw(raw, tmp_path / "out", split="finetune_sam", seed=2, subject_of=subject_of,
                            progress=False, min_object_px=0)
    assert_no_leakage(res.splits, subject_of)
    for i in range(0, 6, 2):
        a, b = f"pelvis_{i:03d}", f"pelvis_{i + 1:03d}"
        assert [s for s in res.splits if a in res.splits[s]] == [s for s in res.splits if b in res.splits[s]]
    # the slice rows of the manifest follow their case's split too
    slices = res.manifest[res.manifest["slice"] >= 0]
    assert_no_leakage({s: list(g["case_id"] + ":" + g["slice"].astype(str)) for s, g in slices.groupby("split")},
                      lambda item: subject_of[item.split(":")[0]])


def test_no_leakage_on_real_slices_split_by_patient(prostate_slices_dir):
    refs = read_slice_list(prostate_slices_dir / "train_5shot.csv") + read_slice_list(prostate_slices_dir / "val_5shot.csv")
    patient_of = {r.case_id: r.subject for r in refs}
    assert len(set(patient_of.values())) == 9  # 10 slices, patient77 has two
    splits = split_patients(set(patient_of.values()), "finetune_sam", seed=0)
    by_split = assign_items(patient_of, patient_of, splits)
    assert_no_leakage(by_split, patient_of)
    together = [s for s, items in by_split.items() if {"RUNMC03_12", "RUNMC03_16"} & set(items)]
    assert len(together) == 1


def test_shipped_5shot_lists_leak_patient77(prostate_slices_dir):
    """The released train_5shot.csv / val_5shot.csv share patient77 (RUNMC03_12 train, RUNMC03_16 val)."""
    train = read_slice_list(prostate_slices_dir / "train_5shot.csv")
    val = read_slice_list(prostate_slices_dir / "val_5shot.csv")
    patient_of = {r.case_id: r.subject for r in train + val}
    splits = {"train": [r.case_id for r in train], "val": [r.case_id for r in val]}
    assert find_leaks(splits, patient_of) == {"patient77": ["train", "val"]}
    with pytest.raises(LeakageError, match="patient77") as info:
        assert_no_leakage(splits, patient_of)
    assert "RUNMC03_12" in str(info.value) and "RUNMC03_16" in str(info.value)


@pytest.mark.parametrize("k", [5, 10, 20])
def test_k_shot_from_distinct_volumes(k):
    patient_of = _slice_ids(200, 3)
    splits = split_patients(set(patient_of.values()), "finetune_sam", seed=0)  # 140 / 20 / 40 patients
    pools = assign_items(patient_of, patient_of, splits)
    shots = k_shot_splits(pools["train"], pools["val"], k, seed=7, volume_of=patient_of)
    assert len(shots["train"]) == k and len(shots["val"]) == k
    for items in shots.values():
        assert len({patient_of[s] for s in items}) == k  # one slice per volume
    assert set(shots["train"]) <= set(pools["train"]) and set(shots["val"]) <= set(pools["val"])
    assert shots == k_shot_splits(list(reversed(pools["train"])), pools["val"], k, seed=7, volume_of=patient_of)
    assert shots != k_shot_splits(pools["train"], pools["val"], k, seed=8, volume_of=patient_of)


def test_k_shot_errors_and_leaky_pools():
    patient_of = _slice_ids(4, 5)
    with pytest.raises(ValueError, match="5 distinct volumes, only 4"):
        sample_k_shot(list(patient_of), 5, volume_of=patient_of)
    # pools that share a patient are reported, not sampled from silently
    with pytest.raises(LeakageError):
        k_shot_splits(list(patient_of), list(patient_of), 4, volume_of=patient_of)


def test_splits_json_round_trip_and_checks(tmp_path):
    path = write_splits_json({"train": ["a", "b"], "val": ["c"], "test": []}, tmp_path / "splits.json")
    assert json.loads(path.read_text()) == {"train": ["a", "b"], "val": ["c"], "test": []}
    assert read_splits_json(path) == {"train": ["a", "b"], "val": ["c"], "test": []}
    path.write_text(json.dumps({"train": ["a"], "val": ["a"], "test": []}))
    with pytest.raises(ValueError, match="'a' is in both 'train' and 'val'"):
        read_splits_json(path)
    with pytest.raises(ValueError, match="unknown split"):
        write_splits_json({"holdout": []}, path)
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left behind
