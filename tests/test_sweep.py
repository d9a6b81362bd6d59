"""`samlab sweep`: grid expansion, done-markers, retries, merging, submitit executors, the torchrun launcher."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from conftest import REPO_ROOT
from samlab.config import ProfileError
from samlab.profiles import load_profile
from samlab.results import COLUMNS, make_rows, read_results, write_results
from samlab.runner import run_profile
from samlab.sweep import (
    DONE_MARKER,
    RUN_COLUMN,
    default_workers,
    describe_sweep,
    expand_grid,
    is_done,
    read_sweep_index,
    read_sweep_results,
    run_sweep,
)
from samlab.train.launch import (
    DistributedLaunchError,
    TorchrunSpec,
    launch_torchrun,
    torchrun_command,
    torchrun_spec_from_slurm,
)

# Notebook 01 only: seconds per job, no results (used where only the execution path matters).
CURATION_ONLY = {
    "name": "tiny-curation",
    "common": {"seed": 0},
    "notebooks": [{"notebook": "01_data_curation", "parameters": {"phantom_cases": 3, "phantom_shape": [8, 48, 48]}}],
}
# Notebooks 01 + 02 on one 8-slice test case: the smallest run that writes tidy results (~30 s on a free CPU).
# box_modes holds per_component too: notebook 02's comparison cell needs both single and per-component boxes.
WITH_RESULTS = {
    "name": "tiny-results",
    "common": {"seed": 0},
    "notebooks": [
        {"notebook": "01_data_curation", "parameters": {"phantom_cases": 3, "phantom_shape": [8, 64, 64]}},
        {"notebook": "02_zero_shot_probing", "parameters": {
            "models": ["litemedsam"], "max_cases": 1, "prompt_sources": ["oracle"],
            "box_modes": ["single", "per_component"], "expansions_px": [0],
            "orientation_sensitivity": False}},  # that section has its own tests; here it would cost 48 encoder passes per job
    ],
}


def _grid(tmp_path, base, grid, name="tiny-sweep", **extra):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": base, "grid": grid, **extra}, sort_keys=False))
    return path


def fake_runner(calls, fail_first=()):
    """A stand-in for run_profile: writes one Dice row whose value encodes seed and expansion; can fail once."""

    def run(profile_path, runs_root=None, progress=True):
        profile, steps = load_profile(profile_path)
        params = dict(steps)
        calls.append(profile.name)
        if profile.name in fail_first and calls.count(profile.name) == 1:
            raise RuntimeError(f"injected failure in {profile.name}")
        run_dir = runs_root / profile.name
        seed = params["01_data_curation"].seed
        expansion = params["02_zero_shot_probing"].expansions_px[0]
        rows = make_rows({"dataset": "fake", "subject": "s0", "structure": "bladder", "method": "litemedsam",
                          "seed": seed}, {"dice": seed + expansion / 10})
        write_results(rows, run_dir / "results" / "zero_shot.parquet")
        return run_dir

    return run


# ------------------------------------------------------------------------------------------------
# Expansion
# ------------------------------------------------------------------------------------------------


def test_grid_expands_into_named_validated_profiles(tmp_path):
    path = _grid(tmp_path, WITH_RESULTS, {"seed": [0, 1], "02_zero_shot_probing.expansions_px": [[0], [0, 5]]})
    grid, sweep_dir, jobs = expand_grid(path, runs_root=tmp_path / "runs")
    assert sweep_dir == tmp_path / "runs" / "tiny-sweep"
    assert [j.name for j in jobs] == [
        "seed-0__expansions_px-0", "seed-0__expansions_px-0-5", "seed-1__expansions_px-0", "seed-1__expansions_px-0-5"]
    assert jobs[1].overrides == {"seed": 0, "02_zero_shot_probing.expansions_px": [0, 5]}
    assert jobs[3].run_dir == sweep_dir / "jobs" / "seed-1__expansions_px-0-5"
    _, steps = load_profile(jobs[3].profile_path)  # the written profile is a valid, fully resolved profile
    params = dict(steps)
    assert params["01_data_curation"].seed == 1 and params["02_zero_shot_probing"].seed == 1  # bare key: both
    assert params["02_zero_shot_probing"].expansions_px == [0, 5]
    assert params["01_data_curation"].phantom_shape == [8, 64, 64]  # base values kept
    assert len({j.param_hash for j in jobs}) == 4
    # the hash is of parameters only: the same grid expanded elsewhere hashes alike ...
    _, _, again = expand_grid(path, runs_root=tmp_path / "elsewhere")
    assert [j.param_hash for j in again] == [j.param_hash for j in jobs]
    # ... and a change in the base profile (not in the grid) changes every hash
    changed = json.loads(json.dumps(WITH_RESULTS))
    changed["notebooks"][1]["parameters"]["nsd_tolerance_mm"] = 1.0
    _, _, other = expand_grid(_grid(tmp_path, changed, grid.grid, name="tiny-sweep"), runs_root=tmp_path / "runs")
    assert not {j.param_hash for j in other} & {j.param_hash for j in jobs}


def test_shared_field_names_get_notebook_prefixes_and_base_file_is_found(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(WITH_RESULTS))
    path = _grid(tmp_path, "base.yaml", {"01.seed": [3], "02.seed": [4]})
    _, _, jobs = expand_grid(path, runs_root=tmp_path / "runs")
    assert [j.name for j in jobs] == ["01.seed-3__02.seed-4"]
    params = dict(load_profile(jobs[0].profile_path)[1])
    assert (params["01_data_curation"].seed, params["02_zero_shot_probing"].seed) == (3, 4)


def test_notebooks_selects_a_subset_of_the_base(tmp_path):
    path = _grid(tmp_path, WITH_RESULTS, {"seed": [5]}, notebooks=["01_data_curation"])
    _, _, jobs = expand_grid(path, runs_root=tmp_path / "runs")
    assert [n for n, _ in load_profile(jobs[0].profile_path)[1]] == ["01_data_curation"]
    with pytest.raises(ProfileError, match="03_nnunet_baseline"):
        expand_grid(_grid(tmp_path, WITH_RESULTS, {"seed": [5]}, notebooks=["03_nnunet_baseline"]))


@pytest.mark.parametrize("grid, message", [
    ({"phantom_cases": [1]}, "phantom_cases"),                 # a bad value: names the job and the key
    ({"box_mode": [["single"]]}, "allowed"),                   # a key no notebook takes
    ({"03_nnunet_baseline.profile": ["paper"]}, "03_nnunet_baseline"),  # a notebook the base does not run
    ({"seed": []}, "no values"),
    ({"seed": 3}, "list of alternatives"),
    ({"02.run_dir": ["x"]}, "run directories"),
])
def test_bad_grids_are_refused_before_anything_is_written(tmp_path, grid, message):
    path = _grid(tmp_path, WITH_RESULTS, grid)
    with pytest.raises(ProfileError, match=message) as info:
        run_sweep(path, runs_root=tmp_path / "runs", progress=False)
    assert str(path) in str(info.value)
    assert not (tmp_path / "runs").exists()


def test_default_workers_is_one_per_two_cores():
    assert [default_workers(10, cpus=c) for c in (1, 2, 3, 16)] == [1, 1, 1, 8]
    assert default_workers(3, cpus=16) == 3


# ------------------------------------------------------------------------------------------------
# Done-markers, retries, merging (a fake runner: milliseconds per job)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["local", "debug"])
def test_retry_skip_rerun_on_change_and_merge(tmp_path, executor):
    grid = {"seed": [0, 1], "02_zero_shot_probing.expansions_px": [[0], [5]]}
    path = _grid(tmp_path, WITH_RESULTS, grid, attempts=2)
    root = tmp_path / "runs"
    calls: list[str] = []
    flaky = "seed-1__expansions_px-0"
    report = run_sweep(path, runs_root=root, executor=executor, workers=1, progress=False,
                       runner=fake_runner(calls, fail_first={flaky}))
    assert report.complete and sorted(report.executed) == sorted(j.name for j in report.jobs)
    assert calls.count(flaky) == 2 and len(calls) == 5  # retried once, the others ran once
    index = read_sweep_index(report.sweep_dir)
    assert index["jobs"][flaky]["attempts"] == 2 and "injected failure" in index["jobs"][flaky]["errors"][0]
    assert index["jobs"][flaky]["run_dir"] == f"jobs/{flaky}" and index["counts"]["done"] == 4
    merged = read_sweep_results(report.sweep_dir)
    assert len(merged) == 4 and list(merged.columns[1:1 + len(COLUMNS)]) == list(COLUMNS)
    expected = {("seed-0__expansions_px-0", 0, "[0]", 0.0), ("seed-0__expansions_px-5", 0, "[5]", 0.5),
                ("seed-1__expansions_px-0", 1, "[0]", 1.0), ("seed-1__expansions_px-5", 1, "[5]", 1.5)}
    got = set(zip(merged[RUN_COLUMN], merged["sweep.seed"], merged["sweep.02_zero_shot_probing.expansions_px"],
                  merged["value"]))
    assert got == expected

    # rerun: everything is done, nothing runs
    calls.clear()
    again = run_sweep(path, runs_root=root, executor=executor, workers=1, progress=False, runner=fake_runner(calls))
    assert calls == [] and sorted(again.skipped) == sorted(j.name for j in again.jobs) and again.executed == []

    # a changed parameter reruns the jobs (old run dirs are replaced, not mixed)
    stale = root / "tiny-sweep" / "jobs" / flaky / "stale.txt"
    stale.write_text("from the old parameters")
    changed = json.loads(json.dumps(WITH_RESULTS))
    changed["notebooks"][1]["parameters"]["nsd_tolerance_mm"] = 1.0
    path = _grid(tmp_path, changed, grid, attempts=2)
    third = run_sweep(path, runs_root=root, executor=executor, workers=1, progress=False, runner=fake_runner(calls))
    assert sorted(calls) == sorted(j.name for j in third.jobs) and third.skipped == []
    assert not stale.exists()


def test_a_job_failing_every_attempt_is_reported_and_left_out_of_the_merge(tmp_path):
    path = _grid(tmp_path, WITH_RESULTS, {"seed": [0, 1]}, attempts=1)
    calls: list[str] = []
    report = run_sweep(path, runs_root=tmp_path / "runs", workers=1, progress=False,
                       runner=fake_runner(calls, fail_first={"seed-1"}))
    assert report.failed == ["seed-1"] and report.executed == ["seed-0"] and not report.complete
    index = read_sweep_index(report.sweep_dir)
    assert index["jobs"]["seed-1"]["status"] == "failed" and index["counts"] == {
        "done": 1, "failed": 1, "pending": 0, "submitted": 0}
    assert not (report.sweep_dir / "jobs" / "seed-1" / DONE_MARKER).exists()
    assert set(read_sweep_results(report.sweep_dir)[RUN_COLUMN]) == {"seed-0"}


def test_only_runs_a_subset_but_the_index_covers_the_whole_grid(tmp_path):
    path = _grid(tmp_path, WITH_RESULTS, {"seed": [0, 1]})
    calls: list[str] = []
    report = run_sweep(path, runs_root=tmp_path / "runs", workers=1, only=["seed-1"], progress=False,
                       runner=fake_runner(calls))
    assert calls == ["seed-1"] and report.executed == ["seed-1"]
    index = read_sweep_index(report.sweep_dir)
    assert {n: e["status"] for n, e in index["jobs"].items()} == {"seed-0": "pending", "seed-1": "done"}
    with pytest.raises(ProfileError, match="seed-7"):
        run_sweep(path, runs_root=tmp_path / "runs", only=["seed-7"], progress=False)


def test_inline_base_errors_name_the_base(tmp_path):
    broken = {"notebooks": [{"notebook": "01_data_curation", "parameters": {"phantom_cases": 1}}]}
    with pytest.raises(ProfileError, match="(?s)inline base profile.*phantom_cases"):
        expand_grid(_grid(tmp_path, broken, {"seed": [0]}), runs_root=tmp_path / "runs")


def test_cli_sweep_dry_run_lists_jobs_and_rejects_bad_grids(tmp_path):
    path = _grid(tmp_path, WITH_RESULTS, {"seed": [0, 1]})
    done = subprocess.run([sys.executable, "-m", "samlab.cli", "sweep", str(path), "--dry-run", "--runs-root",
                           str(tmp_path / "runs")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "[todo] seed-0" in done.stdout and "[todo] seed-1" in done.stdout and "2 job(s)" in done.stdout
    bad = _grid(tmp_path, WITH_RESULTS, {"seeds": [0]}, name="bad")
    done = subprocess.run([sys.executable, "-m", "samlab.cli", "sweep", str(bad), "--runs-root", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "seeds" in done.stderr


def test_shipped_example_grid_expands():
    text = describe_sweep(REPO_ROOT / "params" / "sweep-quick.yaml", runs_root="/nonexistent-runs-root")
    assert "6 job(s)" in text and "[todo] seed-2__expansions_px-5" in text


# ------------------------------------------------------------------------------------------------
# SLURM through submitit
# ------------------------------------------------------------------------------------------------


def test_slurm_path_submits_one_array_with_the_grid_resources(tmp_path, monkeypatch):
    """A fake `srun`/`sbatch` on PATH: submitit writes the real sbatch script, which we read back."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, body in {"srun": "exit 0", "sbatch": 'echo "Submitted batch job 4242"'}.items():
        script = bin_dir / tool
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    slurm = {"partition": "gpu", "gpus_per_job": 2, "cpus_per_task": 6, "mem_gb": 16, "time_min": 90,
             "array_parallelism": 3, "account": "lab", "setup": ["module load cuda/12.4"]}
    path = _grid(tmp_path, WITH_RESULTS, {"seed": [0, 1], "02_zero_shot_probing.expansions_px": [[0], [5]]},
                 executor="slurm", slurm=slurm)
    report = run_sweep(path, runs_root=tmp_path / "runs", wait=False, progress=False)
    assert set(report.submitted) == {j.name for j in report.jobs}
    assert sorted(report.submitted.values()) == ["4242_0", "4242_1", "4242_2", "4242_3"]
    scripts = list((report.sweep_dir / "submitit").rglob("*_submission.sh"))
    assert len(scripts) == 1, scripts  # one array, not four jobs
    text = scripts[0].read_text()
    for flag in ("--array=0-3%3", "--partition=gpu", "--gpus-per-node=2", "--cpus-per-task=6", "--mem=16GB",
                 "--time=90", "--account=lab", "--job-name=samlab-tiny-sweep", "--nodes=1", "--ntasks-per-node=1"):
        assert f"#SBATCH {flag}" in text, flag
    assert "module load cuda/12.4" in text and "srun" in text
    index = read_sweep_index(report.sweep_dir)
    assert index["counts"]["submitted"] == 4 and index["jobs"]["seed-0__expansions_px-0"]["submitit_job"] == "4242_0"


def test_a_misspelt_slurm_setting_is_refused(tmp_path):
    path = _grid(tmp_path, WITH_RESULTS, {"seed": [0]}, slurm={"partitions": "gpu"})
    with pytest.raises(ProfileError, match="partitions"):
        run_sweep(path, runs_root=tmp_path / "runs", progress=False)


@pytest.mark.slow
def test_submitit_local_executor_runs_real_notebook_jobs(tmp_path):
    """The SLURM code path (pickled Checkpointable task, map_array) run by submitit.LocalExecutor subprocesses."""
    path = _grid(tmp_path, CURATION_ONLY, {"seed": [3, 4]}, executor="submitit-local",
                 slurm={"gpus_per_job": 0, "cpus_per_task": 1, "time_min": 10})
    report = run_sweep(path, runs_root=tmp_path / "runs", progress=False)
    assert report.complete and sorted(report.executed) == ["seed-3", "seed-4"], read_sweep_index(report.sweep_dir)
    hashes = []
    for job in report.jobs:
        record = json.loads((job.run_dir / "run.json").read_text())
        assert record["status"] == "ok" and record["notebooks"][0]["parameters"]["seed"] == job.overrides["seed"]
        hashes.append(record["data_hashes"])
        assert is_done(job)
    assert hashes[0] != hashes[1]  # different seeds drew different phantoms
    assert list((report.sweep_dir / "submitit").rglob("*_log.out"))  # submitit's per-job logs


# ------------------------------------------------------------------------------------------------
# The bar: a real sweep killed midway resumes only the missing jobs
# ------------------------------------------------------------------------------------------------


def _kill_tree(pid: int) -> None:
    """SIGKILL a process we started and every descendant (papermill kernels run in their own sessions)."""
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [parent, *parent.children(recursive=True)]
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


@pytest.mark.heavy
@pytest.mark.slow
def test_killed_sweep_resumes_only_missing_jobs_and_matches_a_single_process_run(tmp_path, monkeypatch):
    # Two jobs, the first launch with one worker: killed as soon as job 1 is done, while job 2 runs. (Four jobs
    # on two workers tested the same path at twice the cost: two or three of them ran twice.)
    path = _grid(tmp_path, WITH_RESULTS, {"seed": [0, 1]})
    root = tmp_path / "runs"
    sweep_dir = root / "tiny-sweep"
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen([sys.executable, "-m", "samlab.cli", "sweep", str(path), "--runs-root", str(root),
                              "--workers", "1", "--quiet"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 420
        while not list(sweep_dir.glob(f"jobs/*/{DONE_MARKER}")):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no job finished in time:\n" + (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.2)
    finally:
        _kill_tree(first.pid)
        log.close()
    done_before = {p.parent.name for p in sweep_dir.glob(f"jobs/*/{DONE_MARKER}")}
    all_jobs = {p.stem for p in (sweep_dir / "profiles").glob("*.yaml")}
    assert len(all_jobs) == 2 and len(done_before) == 1, done_before
    stamps = {n: ((sweep_dir / "jobs" / n / DONE_MARKER).stat().st_mtime_ns,
                  (sweep_dir / "jobs" / n / "run.json").stat().st_mtime_ns) for n in done_before}

    report = run_sweep(path, runs_root=root, workers=2, progress=False)
    assert set(report.skipped) == done_before
    assert set(report.executed) == all_jobs - done_before and not report.failed
    for name, stamp in stamps.items():  # done jobs were not touched, let alone re-executed
        assert ((sweep_dir / "jobs" / name / DONE_MARKER).stat().st_mtime_ns,
                (sweep_dir / "jobs" / name / "run.json").stat().st_mtime_ns) == stamp

    merged = read_sweep_results(sweep_dir)
    assert set(merged[RUN_COLUMN]) == all_jobs
    for name, rows in merged.groupby(RUN_COLUMN):
        job = next(j for j in report.jobs if j.name == name)
        assert (rows["sweep.seed"] == job.overrides["seed"]).all() and (rows["seed"] == job.overrides["seed"]).all()
        assert rows["prompt"].str.fullmatch("oracle_box").any()
    assert set(merged["metric"]) >= {"dice", "hd95"}

    # equal to a single-process run of the same profile (a job that was re-executed after the kill), with the
    # thread count the sweep gave its 2 workers here (cores // 2), which also keeps it fast on a busy machine
    monkeypatch.setenv("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // 2)))
    name = sorted(report.executed)[0]
    job = next(j for j in report.jobs if j.name == name)
    reference = read_results(run_profile(job.profile_path, runs_root=tmp_path / "reference", progress=False) / "results")
    mine = merged[merged[RUN_COLUMN] == name][list(COLUMNS)]
    key = [c for c in COLUMNS if c != "value"]
    pd.testing.assert_frame_equal(mine.sort_values(key).reset_index(drop=True),
                                  reference.sort_values(key).reset_index(drop=True), check_exact=False, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Multi-GPU launcher
# ------------------------------------------------------------------------------------------------


def test_the_sweep_reexports_the_launcher_without_loading_torch():
    # `samlab sweep --dry-run` stays light: the launcher (and torch) load only when a launcher name is used.
    code = ("import sys, samlab.sweep as s; light = 'torch' not in sys.modules; "
            "from samlab.sweep import TorchrunSpec; import samlab.train.launch as L; "
            "print(light, TorchrunSpec is L.TorchrunSpec, s.launch_torchrun is L.launch_torchrun)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True", "True"], done.stderr
    with pytest.raises(AttributeError, match="no attribute 'not_a_launcher'"):
        import samlab.sweep as sweep_module

        sweep_module.not_a_launcher  # noqa: B018


def test_torchrun_commands():
    assert torchrun_command("samlab.train", ["--config", "c.json"], TorchrunSpec(nproc_per_node=4), python="py") == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=4", "--max_restarts=0",
        "-m", "samlab.train", "--config", "c.json"]
    spec = TorchrunSpec(nproc_per_node=8, nnodes=2, rdzv_endpoint="gpu07:29500", rdzv_id="991", max_restarts=1)
    assert torchrun_command("train.py", [], spec, module=False, python="py") == [
        "py", "-m", "torch.distributed.run", "--nnodes=2", "--rdzv_backend=c10d", "--rdzv_endpoint=gpu07:29500",
        "--rdzv_id=991", "--nproc_per_node=8", "--max_restarts=1", "train.py"]
    assert torchrun_command("m")[:3] == [sys.executable, "-m", "torch.distributed.run"]
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        TorchrunSpec(nnodes=2)
    with pytest.raises(ValueError, match="host:port"):
        TorchrunSpec(nnodes=2, rdzv_endpoint="gpu07")
    with pytest.raises(ValueError, match="nproc_per_node"):
        TorchrunSpec(nproc_per_node=0)


def test_torchrun_spec_from_a_slurm_allocation(monkeypatch):
    for key, value in {"_TEST_CLUSTER_": "slurm", "SLURM_JOB_ID": "777", "SLURM_JOB_NUM_NODES": "2",
                       "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_NODEID": "1", "SLURM_GPUS_ON_NODE": "4"}.items():
        monkeypatch.setenv(key, value)
    assert torchrun_spec_from_slurm() == TorchrunSpec(nproc_per_node=4, nnodes=2, rdzv_endpoint="gpu07:29500",
                                                      rdzv_id="777")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "1")
    assert torchrun_spec_from_slurm(nproc_per_node=2) == TorchrunSpec(nproc_per_node=2)


DDP_PROBE = """
import json, os, sys
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
assert int(os.environ["LOCAL_RANK"]) == rank
total = torch.tensor([float(rank + 1)])
dist.all_reduce(total)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
with torch.autocast("cpu", dtype=torch.bfloat16):
    out = model(torch.ones(3, 4))
out.float().sum().backward()
if rank == 0:
    json.dump({"world": world, "sum": total.item(), "dtype": str(out.dtype)}, open(sys.argv[1], "w"))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_launch_torchrun_runs_ddp_workers_and_reports_failures(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(DDP_PROBE)
    out = tmp_path / "out.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = launch_torchrun(str(script), [str(out)], TorchrunSpec(nproc_per_node=2), module=False,
                          log_path=tmp_path / "logs" / "ddp.log", env=env)
    assert json.loads(out.read_text()) == {"world": 2, "sum": 3.0, "dtype": "torch.bfloat16"}
    assert log.read_text().startswith("$ ") and "--nproc_per_node=2" in log.read_text()
    broken = tmp_path / "broken.py"
    broken.write_text("raise SystemExit('no data for rank here')\n")
    with pytest.raises(DistributedLaunchError, match="no data for rank here"):
        launch_torchrun(str(broken), spec=TorchrunSpec(nproc_per_node=1), module=False, env=env)
