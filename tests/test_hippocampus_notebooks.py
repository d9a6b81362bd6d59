"""Notebooks 01 and 02 on real data nobody here wrote: the shared MSD hippocampus volumes (issue 21 item 7).

The dataset is used as a new user would: its own nnU-Net raw folder (images symlinked, dataset.json
copied with a ``samlab_structures`` union added), a profile with ``orientation: LPS`` (the files are
stored in RAS) and the Otsu foreground intensity profile, LiteMedSAM with one prompt mode. Checks: every case is scored (zero-shot's
default split evaluates all of them), and the orientation and clip settings change the model inputs as
documented (compared with an independent reading of the files).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

HIPPOCAMPUS = Path("/work/shared/data/msd-hippocampus-raw")

PROFILE = """
name: hippo
common: {{seed: 0}}
notebooks:
  - notebook: 01_data_curation
    parameters: {{data_source: nnunet_raw, raw_dir: "{raw}", min_object_px: 0, orientation: LPS,
                 intensity: percentile_foreground}}
  - notebook: 02_zero_shot_probing
    parameters: {{models: [litemedsam], prompt_sources: [oracle], box_modes: [single], expansions_px: [0],
                 orientation_sensitivity: false}}
"""


N_CASES = 2  # of the 6 shared volumes: LiteMedSAM encodes every labelled slice (~28 per case) on the CPU


def _user_copy(tmp: Path) -> tuple[Path, list[str]]:
    """The shared dataset as a user would set it up: images symlinked, dataset.json with a union structure."""
    raw = tmp / "Hippocampus"
    case_ids = sorted(p.name[: -len(".nii.gz")] for p in (HIPPOCAMPUS / "labelsTr").glob("*.nii.gz"))[:N_CASES]
    for cid in case_ids:
        for sub, name in (("imagesTr", f"{cid}_0000.nii.gz"), ("labelsTr", f"{cid}.nii.gz")):
            (raw / sub).mkdir(parents=True, exist_ok=True)
            (raw / sub / name).symlink_to(HIPPOCAMPUS / sub / name)
    meta = json.loads((HIPPOCAMPUS / "dataset.json").read_text())
    meta["numTraining"] = len(case_ids)
    meta["samlab_structures"] = {"anterior": [1], "posterior": [2], "hippocampus": [1, 2]}
    (raw / "dataset.json").write_text(json.dumps(meta))
    return raw, case_ids


def _printed(notebook: Path) -> str:
    """What an executed notebook printed (stream outputs), not its source."""
    cells = json.loads(notebook.read_text())["cells"]
    return "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))


@pytest.mark.heavy
@pytest.mark.slow
def test_notebooks_01_02_score_every_hippocampus_case(tmp_path):
    if not (HIPPOCAMPUS / "dataset.json").is_file():
        pytest.skip(f"shared hippocampus data not found at {HIPPOCAMPUS}")
    from samlab.data.preprocess import otsu_foreground
    from samlab.runner import run_profile
    from samlab.workspace import RunDir

    raw, case_ids = _user_copy(tmp_path)
    profile = tmp_path / "hippo.yaml"
    profile.write_text(PROFILE.format(raw=raw))
    run_dir = run_profile(profile, runs_root=tmp_path / "runs", progress=False)

    results = pd.read_parquet(run_dir / "results" / "zero_shot.parquet")
    assert sorted(results["subject"].unique()) == case_ids  # all of them, not the 1 of a test split
    assert set(results["structure"]) == {"anterior", "posterior", "hippocampus"}
    dice = results[results["metric"] == "dice"]
    assert dice["value"].between(0, 1).all() and dice["value"].mean() > 0.3  # real segmentations, not noise

    run = RunDir(run_dir)
    info = run.dataset_info()
    assert info["orientation"] == "LPS" and info["intensity"] == "percentile_foreground"
    manifest = pd.read_csv(run_dir / "curation" / "manifest.csv")
    assert set(manifest["orientation"]) == {"LPS"} and set(manifest["intensity"]) == {"percentile_foreground"}
    executed = _printed(run_dir / "notebooks" / "02_zero_shot_probing.ipynb")
    assert f"scoring all {N_CASES} case(s)" in executed and "Reference: none known" in executed
    assert "Table 1 (Dice)" not in executed  # the pelvic paper is not this dataset's reference

    # the inputs changed as documented: LPS = DICOMOrient of the stored arrays, clip = foreground percentiles
    cases = {c.case_id: c for c in run.load_cases("all")}
    first = case_ids[0]
    image = sitk.ReadImage(str(HIPPOCAMPUS / "imagesTr" / f"{first}_0000.nii.gz"), sitk.sitkFloat32)
    label = sitk.ReadImage(str(HIPPOCAMPUS / "labelsTr" / f"{first}.nii.gz"))
    stored = sitk.GetArrayFromImage(label)
    lps_labels = sitk.GetArrayFromImage(sitk.DICOMOrient(label, "LPS"))
    lps_image = sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS"))
    np.testing.assert_array_equal(cases[first].labels, lps_labels)
    assert not np.array_equal(lps_labels, stored)  # the files are stored in RAS: LPS flips x and y
    lo, hi = np.percentile(lps_image[otsu_foreground(lps_image)], [0.5, 99.5])
    np.testing.assert_allclose([cases[first].image.min(), cases[first].image.max()], [lo, hi], rtol=1e-5)
    lo_nz, _ = np.percentile(lps_image[lps_image != 0], [0.5, 99.5])
    assert lo > lo_nz  # the foreground profile clips differently from MedSAM's non-zero rule
