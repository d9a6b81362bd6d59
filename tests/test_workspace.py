"""The run-directory contract: notebook 01's outputs feed 02; notebook 03's predictions and boxes feed 02."""
import json
import re

import numpy as np
import pytest
import SimpleITK as sitk

from samlab.baselines.nnunet import derive_boxes, load_boxes, write_boxes
from samlab.data.curate import curate_nnunet_raw
from samlab.data.phantom import STRUCTURES, write_phantom_dataset
from samlab.io import InputFileError
from samlab.workspace import MissingStageError, RunDir, default_structures
from samlab.zeroshot import PromptVariant, _prompts_for, structure_mask


@pytest.fixture()
def curated_run(tmp_path):
    raw = write_phantom_dataset(tmp_path / "raw", n_cases=5, shape=(8, 48, 48))
    run = RunDir.at(tmp_path / "run")
    curate_nnunet_raw(raw, run.curation, split="pelvic", seed=0, progress=False)
    run.write_dataset_info(raw, STRUCTURES, name="PelvisPhantom")
    return run


def test_missing_curation_names_the_notebook_to_run(tmp_path):
    with pytest.raises(MissingStageError, match="01_data_curation"):
        RunDir.at(tmp_path / "empty").load_cases("test")


def test_malformed_json_inputs_name_the_file_line_and_column(curated_run, tmp_path):
    """A broken dataset.json or splits.json is one line naming the file, not a bare JSONDecodeError."""
    raw = tmp_path / "broken_raw"
    raw.mkdir()
    (raw / "dataset.json").write_text('{"labels": {"background": 0,\n "bladder": 1,}}')
    with pytest.raises(InputFileError) as info:
        default_structures(raw)
    assert str(info.value).startswith(f"{raw / 'dataset.json'}: dataset.json is not valid JSON (line 2, column")
    assert "\n" not in str(info.value)
    splits = curated_run.root / "curation" / "splits.json"
    splits.write_text('{"train": ["a"], "val": [], "test": [}')
    with pytest.raises(InputFileError, match=rf"^{re.escape(str(splits))}: splits file is not valid JSON \(line 1"):
        curated_run.splits()
    splits.write_text('{"train": ["a"], "val": [], "test": [], "seed": 0}')
    with pytest.raises(ValueError, match=r"unknown split name\(s\) \['seed'\]"):
        curated_run.load_cases("test")


def test_cases_of_a_split_are_read_and_clipped(curated_run):
    splits = curated_run.splits()
    cases = curated_run.load_cases("test")
    assert [c.case_id for c in cases] == splits["test"]
    raw = curated_run.load_cases("test", clip_percentiles=False)[0].image
    assert cases[0].image.max() <= np.percentile(raw[raw != 0], 99.5) + 1e-3
    assert curated_run.structures() == {k: tuple(v) for k, v in STRUCTURES.items()}


def test_nnunet_boxes_file_matches_the_prompts_notebook_02_sends(curated_run, tmp_path):
    """Notebook 03 writes predictions + nnunet_boxes.csv; 02 prompts from those predictions.

    Simulate nnU-Net's prediction by a ground truth with one femoral head erased, write it where
    notebook 03 does, and check 02's prompts on every slice equal the rows of the boxes file.
    """
    case = curated_run.load_cases("test")[0]
    prediction = case.labels.copy()
    prediction[:, :, : prediction.shape[2] // 4][prediction[:, :, : prediction.shape[2] // 4] == 2] = 0
    pred_dir = curated_run.nnunet / "predictions" / "2d"
    pred_dir.mkdir(parents=True)
    image = sitk.GetImageFromArray(prediction)
    image.SetSpacing(tuple(reversed(case.spacing)))
    sitk.WriteImage(image, str(pred_dir / f"{case.case_id}.nii.gz"))
    boxes_path = write_boxes(derive_boxes(pred_dir, STRUCTURES), curated_run.nnunet / "nnunet_boxes.csv")
    (curated_run.nnunet / "baseline.json").write_text(json.dumps({"predictions_dir": str(pred_dir), "boxes": str(boxes_path)}))

    volumes = curated_run.nnunet_predictions([case.case_id, "not_a_case"])
    assert list(volumes) == [case.case_id] and np.array_equal(volumes[case.case_id], prediction)
    table = load_boxes(boxes_path)
    checked = 0
    for name, values in STRUCTURES.items():
        for z in range(prediction.shape[0]):
            mask = structure_mask(volumes[case.case_id][z], values)
            rows = table[(table.case_id == case.case_id) & (table.structure == name) & (table.slice == z)]
            if not mask.any():
                assert rows.empty
                continue
            single, _ = _prompts_for(mask, PromptVariant("nnunet", "single"))
            per_component, _ = _prompts_for(mask, PromptVariant("nnunet", "per_component"))
            whole = rows[rows.component == -1][["x0", "y0", "x1", "y1"]].to_numpy()
            parts = rows[rows.component >= 0].sort_values("component")[["x0", "y0", "x1", "y1"]].to_numpy()
            assert np.array_equal(whole, np.array(single)), (name, z)
            assert np.array_equal(parts, np.array(per_component)), (name, z)
            checked += 1
    assert checked > 10
    bone = table[(table.structure == "bone") & (table.component >= 0)].groupby("slice").size()
    assert bone.max() == 1, "the erased femoral head must not get a box"
