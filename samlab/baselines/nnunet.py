"""nnU-Net v2 baseline: export, plan + preprocess, train, predict, evaluate, boxes.

The pelvic zero-shot study benchmarks MedSAM against nnU-Net v2 ``3d_fullres``
(1000 epochs, SGD lr 0.01, batch 2, single train/validation split) and uses
nnU-Net's predictions as a source of box prompts. This module drives the real,
installed ``nnunetv2`` package — nothing of nnU-Net is re-implemented — so that
the baseline is the one the field knows.

Every nnU-Net step runs in a subprocess (:mod:`samlab.baselines._nnunet_worker`)
with nnU-Net's folders set in its environment: nnU-Net reads them (and its process
counts) from ``os.environ``, partly at import time, and its data loaders spawn
processes. Each step's stdout/stderr go to ``<work_dir>/logs``.

Layout of a run directory (one per profile)::

    work_dir/
      samlab_nnunet.json          which dataset this run holds (re-open with NnUNetRun.open)
      nnUNet_raw/DatasetXXX_Name/ imagesTr, labelsTr (train+val), imagesTs, labelsTs (test; labelsTs is ours)
      nnUNet_preprocessed/        nnU-Net's plans, preprocessed data, splits_final.json
      nnUNet_results/             nnU-Net's trained folds and checkpoints
      nnunet_trainers/            makes nnUNetTrainerSamlab findable (nnUNet_extTrainer)
      predictions/<configuration>/  test-set predictions
      logs/                       per-step configs, results, stdout/stderr logs, timings.json

Resume: training continues from nnU-Net's own checkpoints (``--c`` logic:
``checkpoint_final.pth``, else ``checkpoint_latest.pth``); the samlab trainer writes
``checkpoint_latest.pth`` every ``save_every`` epochs and atomically, so calling
:func:`train` again after a kill continues from the last saved epoch, and calling
it with more epochs extends a finished run.

Outside Python, the same trained model can be used with nnU-Net's commands after
``export nnUNet_results=<work_dir>/nnUNet_results nnUNet_extTrainer=<work_dir>/nnunet_trainers``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from samlab.io import atomic_path, write_text_atomic
from samlab.results import make_rows, to_frame, write_results

__all__ = [
    "BOX_COLUMNS",
    "NnUNetError",
    "NnUNetProfile",
    "NnUNetRun",
    "PROFILES",
    "boxes_from_label_volume",
    "derive_boxes",
    "evaluate",
    "export_dataset",
    "get_profile",
    "load_boxes",
    "plan_and_preprocess",
    "predict",
    "read_splits",
    "run_baseline",
    "structures_from_dataset_json",
    "train",
    "write_boxes",
]

TRAINER_NAME = "nnUNetTrainerSamlab"
PLANS_NAME = "nnUNetPlans"
_MANIFEST = "samlab_nnunet.json"
_EXPORT_MANIFEST = "samlab_export.json"
_SPLIT_KEYS = ("train", "val", "test")

#: Columns of ``nnunet_boxes.csv``. ``component`` is -1 for the whole-structure box,
#: else the index of a connected component on that slice (raster order of first pixel);
#: ``n_pixels`` is the area the box was derived from (lets callers drop specks).
BOX_COLUMNS: tuple[str, ...] = ("case_id", "slice", "structure", "component", "x0", "y0", "x1", "y1", "n_pixels")


class NnUNetError(RuntimeError):
    """An nnU-Net step failed; the message names the step's log files."""


# ---------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------


class NnUNetProfile(BaseModel):
    """Everything that decides how the nnU-Net baseline is planned, trained and applied.

    ``split="given"`` trains the single fold 0 on the study's own train/val split
    (what the pelvic paper did); ``split="cv5"`` runs nnU-Net's 5-fold
    cross-validation over train+val and ensembles the folds listed in ``folds``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    configuration: Literal["2d", "3d_fullres", "3d_lowres"] = "3d_fullres"
    num_epochs: PositiveInt = 1000
    num_iterations_per_epoch: PositiveInt = 250
    num_val_iterations_per_epoch: PositiveInt = 50
    initial_lr: PositiveFloat = 1e-2
    save_every: PositiveInt = Field(50, description="epochs between checkpoint_latest.pth writes (resume granularity)")
    batch_size: PositiveInt | None = Field(None, description="override nnU-Net's planned batch size (paper: 2)")
    split: Literal["given", "cv5"] = "given"
    folds: tuple[int, ...] = (0,)
    device: Literal["cpu", "cuda", "mps"] = "cuda"
    checkpoint: Literal["checkpoint_final.pth", "checkpoint_best.pth"] = "checkpoint_final.pth"
    use_mirroring: bool = Field(True, description="test-time mirroring (8x slower in 3D)")
    tile_step_size: float = Field(0.5, gt=0.0, le=1.0)
    run_validation: bool = Field(True, description="nnU-Net's own validation of the fold after training")
    verify_dataset_integrity: bool = True
    num_processes: PositiveInt = Field(2, description="nnU-Net worker processes for preprocessing and export")
    num_data_augmentation_processes: int | None = Field(
        None, ge=0, description="nnUNet_n_proc_DA; 0 = augment in the training process; None = nnU-Net's default"
    )
    torch_threads: PositiveInt | None = Field(
        None, description="torch threads in nnU-Net's processes; None = nnU-Net's choice (all cores on CPU, 1 on GPU)"
    )
    seed: int = 0

    @model_validator(mode="after")
    def _check_folds(self) -> "NnUNetProfile":
        if not self.folds or len(set(self.folds)) != len(self.folds):
            raise ValueError(f"folds must be a non-empty list without repeats, got {self.folds}")
        if self.split == "given" and self.folds != (0,):
            raise ValueError(f"split='given' defines only fold 0, got folds={self.folds}; use split='cv5' for more")
        if self.split == "cv5" and not set(self.folds) <= set(range(5)):
            raise ValueError(f"split='cv5' has folds 0..4, got folds={self.folds}")
        return self

    def schedule(self) -> dict[str, Any]:
        """The trainer attributes :class:`nnUNetTrainerSamlab` sets from this profile."""
        return {
            "num_epochs": self.num_epochs,
            "num_iterations_per_epoch": self.num_iterations_per_epoch,
            "num_val_iterations_per_epoch": self.num_val_iterations_per_epoch,
            "initial_lr": self.initial_lr,
            "save_every": self.save_every,
        }


#: ``quick``: minutes on 2 CPU cores on a small phantom; ``paper``: the pelvic study's setting (GPU).
PROFILES: dict[str, NnUNetProfile] = {
    "quick": NnUNetProfile(
        name="quick",
        configuration="2d",
        num_epochs=6,
        num_iterations_per_epoch=25,
        num_val_iterations_per_epoch=2,
        initial_lr=1e-2,
        save_every=1,
        batch_size=None,
        device="cpu",
        checkpoint="checkpoint_final.pth",
        use_mirroring=False,
        run_validation=False,
        num_processes=1,
        num_data_augmentation_processes=0,
        # On a shared 2-core machine one thread is ~10x faster than two (0.3 vs 3.7 s per 2d iteration measured
        # under contention): busy-waiting OpenMP threads fight the other processes.
        torch_threads=1,
    ),
    "paper": NnUNetProfile(
        name="paper",
        configuration="3d_fullres",
        num_epochs=1000,
        num_iterations_per_epoch=250,
        num_val_iterations_per_epoch=50,
        initial_lr=1e-2,
        save_every=50,
        batch_size=2,
        split="given",
        folds=(0,),
        device="cuda",
        # "the checkpoint with the best validation loss was chosen" (nnU-Net's best = EMA pseudo-Dice)
        checkpoint="checkpoint_best.pth",
        use_mirroring=True,
        run_validation=True,
        num_processes=4,
        num_data_augmentation_processes=None,
    ),
}


def get_profile(profile: str | NnUNetProfile | Mapping[str, Any], **overrides: Any) -> NnUNetProfile:
    """Resolve a profile by name (``"quick"``, ``"paper"``), dict or instance, with validated overrides."""
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ValueError(f"unknown nnU-Net profile {profile!r}; choose one of {sorted(PROFILES)}")
        base = PROFILES[profile].model_dump()
    elif isinstance(profile, NnUNetProfile):
        base = profile.model_dump()
    elif isinstance(profile, Mapping):
        base = dict(profile)
    else:
        raise TypeError(f"profile must be a name, a mapping or an NnUNetProfile, got {type(profile).__name__}")
    return NnUNetProfile.model_validate({**base, **overrides})


# ---------------------------------------------------------------------------------------------
# Run directory
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NnUNetRun:
    """Paths of one nnU-Net run directory; everything else is derived from these three values."""

    work_dir: Path
    dataset_id: int
    dataset_name: str  # e.g. "Dataset501_PelvisPhantom"

    @classmethod
    def open(cls, work_dir: str | os.PathLike) -> "NnUNetRun":
        """Re-open a run directory written by :func:`export_dataset`."""
        path = Path(work_dir) / _MANIFEST
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {work_dir} is not an nnU-Net run directory (run export_dataset)"
            )
        data = json.loads(path.read_text())
        return cls(Path(work_dir).resolve(), int(data["dataset_id"]), str(data["dataset_name"]))

    @property
    def raw_root(self) -> Path:
        return self.work_dir / "nnUNet_raw"

    @property
    def preprocessed_root(self) -> Path:
        return self.work_dir / "nnUNet_preprocessed"

    @property
    def results_root(self) -> Path:
        return self.work_dir / "nnUNet_results"

    @property
    def trainers_dir(self) -> Path:
        return self.work_dir / "nnunet_trainers"

    @property
    def logs_dir(self) -> Path:
        return self.work_dir / "logs"

    @property
    def raw_dir(self) -> Path:
        return self.raw_root / self.dataset_name

    @property
    def preprocessed_dir(self) -> Path:
        return self.preprocessed_root / self.dataset_name

    @property
    def images_ts(self) -> Path:
        return self.raw_dir / "imagesTs"

    @property
    def labels_ts(self) -> Path:
        """Test labels, kept beside nnU-Net's raw data for evaluation only (nnU-Net never reads them)."""
        return self.raw_dir / "labelsTs"

    @property
    def dataset_json(self) -> dict[str, Any]:
        return json.loads((self.raw_dir / "dataset.json").read_text())

    @property
    def export_manifest(self) -> dict[str, Any]:
        return json.loads((self.raw_dir / _EXPORT_MANIFEST).read_text())

    def model_dir(self, profile: NnUNetProfile) -> Path:
        """nnU-Net's training output folder (one per trainer, plans and configuration)."""
        return self.results_root / self.dataset_name / f"{TRAINER_NAME}__{PLANS_NAME}__{profile.configuration}"

    def predictions_dir(self, profile: NnUNetProfile) -> Path:
        return self.work_dir / "predictions" / profile.configuration

    def environment(self, profile: NnUNetProfile, training: bool = False) -> dict[str, str]:
        """The environment nnU-Net's worker process runs with.

        ``nnUNet_n_proc_DA`` is set for training only: nnU-Net's planner also calls
        ``torch.set_num_threads(nnUNet_n_proc_DA)``, which refuses 0.
        """
        import samlab

        env = dict(os.environ)
        env.update(
            nnUNet_raw=str(self.raw_root),
            nnUNet_preprocessed=str(self.preprocessed_root),
            nnUNet_results=str(self.results_root),
            nnUNet_extTrainer=str(self.trainers_dir),
            nnUNet_def_n_proc=str(profile.num_processes),
        )
        if training and profile.num_data_augmentation_processes is not None:
            env["nnUNet_n_proc_DA"] = str(profile.num_data_augmentation_processes)
        else:
            env.pop("nnUNet_n_proc_DA", None)
        if profile.torch_threads is not None:
            env["OMP_NUM_THREADS"] = str(profile.torch_threads)
        package_root = str(Path(samlab.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        return env


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def _atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` unless an identical-size copy is already there (cheap re-export)."""
    if dst.is_file() and dst.stat().st_size == src.stat().st_size:
        return
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _camel_name(text: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", text)
    name = "".join(w[:1].upper() + w[1:] for w in words)[:40]
    return name or "Samlab"


def read_splits(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read notebook 01's ``splits.json`` ({"train": [...], "val": [...], "test": [...]})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"splits file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"splits file {path} is not valid JSON: {exc}") from exc
    return _validate_splits(data, source=str(path))  # tolerant of extra keys, unlike read_splits_json


def _validate_splits(splits: Mapping[str, Any], source: str = "splits") -> dict[str, list[str]]:
    if not isinstance(splits, Mapping):
        raise TypeError(f"{source} must be a mapping with keys {_SPLIT_KEYS}, got {type(splits).__name__}")
    missing = [k for k in _SPLIT_KEYS if k not in splits]
    if missing:
        raise ValueError(f"{source} lacks key(s) {missing}; expected {list(_SPLIT_KEYS)}")
    out: dict[str, list[str]] = {}
    for key in _SPLIT_KEYS:
        ids = splits[key]
        if isinstance(ids, str) or not all(isinstance(i, str) and i for i in ids):
            raise ValueError(f"{source}[{key!r}] must be a list of case-id strings, got {ids!r}")
        if len(set(ids)) != len(ids):
            twice = sorted({i for i in ids if list(ids).count(i) > 1})
            raise ValueError(f"{source}[{key!r}] lists case(s) twice: {twice}")
        out[key] = list(ids)
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        overlap = sorted(set(out[a]) & set(out[b]))
        if overlap:
            raise ValueError(f"{source}: case(s) {overlap} are in both {a!r} and {b!r}")
    if not out["train"]:
        raise ValueError(f"{source}['train'] is empty: nnU-Net needs training cases")
    if not out["val"]:
        raise ValueError(f"{source}['val'] is empty: nnU-Net's fold 0 needs validation cases")
    return out


def structures_from_dataset_json(dataset_json: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Evaluation structures: ``samlab_structures`` when the dataset defines them, else one per label."""
    if "samlab_structures" in dataset_json:
        return {str(k): tuple(int(v) for v in vs) for k, vs in dataset_json["samlab_structures"].items()}
    labels = dataset_json.get("labels")
    if not isinstance(labels, Mapping):
        raise ValueError("dataset.json has no 'labels' mapping to derive evaluation structures from")
    out = {}
    for name, value in labels.items():
        values = tuple(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
        if name != "background" and values != (0,):
            out[str(name)] = values
    return out


def _source_cases(source: Path, dataset_json: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    ending = dataset_json["file_ending"]
    n_channels = len(dataset_json["channel_names"])
    labels_dir, images_dir = source / "labelsTr", source / "imagesTr"
    if not labels_dir.is_dir() or not images_dir.is_dir():
        raise FileNotFoundError(f"{source} is not an nnU-Net raw dataset: imagesTr/ or labelsTr/ is missing")
    cases = {}
    for label in sorted(labels_dir.glob(f"*{ending}")):
        if label.name.startswith("."):
            continue
        case = label.name[: -len(ending)]
        images = [images_dir / f"{case}_{c:04d}{ending}" for c in range(n_channels)]
        missing = [str(p) for p in images if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"case {case!r} in {source} lacks image file(s) {missing}")
        cases[case] = {"label": label, "images": images}
    if not cases:
        raise FileNotFoundError(f"no label files '*{ending}' in {labels_dir}")
    return cases


# ---------------------------------------------------------------------------------------------
# 1. Export
# ---------------------------------------------------------------------------------------------


def export_dataset(
    source_dir: str | os.PathLike,
    splits: Mapping[str, Sequence[str]] | str | os.PathLike,
    work_dir: str | os.PathLike,
    dataset_id: int = 501,
    dataset_name: str | None = None,
) -> NnUNetRun:
    """Build ``<work_dir>/nnUNet_raw/DatasetXXX_Name`` from a raw dataset and the study's split.

    Train and validation cases go to ``imagesTr``/``labelsTr`` (nnU-Net trains on
    them; ``splits_final.json``, written at training time, makes fold 0 use our
    train/val split), test cases to ``imagesTs`` with their labels kept aside in
    ``labelsTs`` for :func:`evaluate`. Re-exporting the same split is cheap;
    exporting a different split into an existing run is refused (use a new
    ``work_dir``), so a run never mixes two splits.
    """
    source = Path(source_dir)
    if not (source / "dataset.json").is_file():
        raise FileNotFoundError(f"{source / 'dataset.json'} not found: source_dir must be an nnU-Net raw dataset")
    if not isinstance(splits, Mapping):
        split_map = read_splits(splits)
    else:
        split_map = _validate_splits(splits)
    if not (isinstance(dataset_id, int) and 1 <= dataset_id <= 999):
        raise ValueError(f"dataset_id must be an integer in 1..999 (nnU-Net's three digits), got {dataset_id!r}")
    try:
        src_json = json.loads((source / "dataset.json").read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source / 'dataset.json'} is not valid JSON: {exc}") from exc
    for key in ("channel_names", "labels", "file_ending"):
        if key not in src_json:
            raise ValueError(f"{source / 'dataset.json'} lacks the nnU-Net key {key!r}")
    cases = _source_cases(source, src_json)
    unknown = sorted(set(sum(split_map.values(), [])) - set(cases))
    if unknown:
        raise ValueError(f"split lists case(s) {unknown} that are not in {source / 'labelsTr'}")

    name = f"Dataset{dataset_id:03d}_{_camel_name(dataset_name or str(src_json.get('name') or source.name))}"
    work = Path(work_dir).resolve()
    run = NnUNetRun(work, dataset_id, name)
    manifest_path = work / _MANIFEST
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("dataset_name") != name:
            raise ValueError(
                f"{work} already holds nnU-Net dataset {old.get('dataset_name')}; export {name} into a new work_dir"
            )
    export_info = {"source": str(source.resolve()), "splits": split_map, "dataset_name": name}
    if (run.raw_dir / _EXPORT_MANIFEST).is_file():
        old = run.export_manifest
        if old.get("splits") != split_map or old.get("source") != export_info["source"]:
            raise ValueError(
                f"{run.raw_dir} was exported from another source or split; use a new work_dir for a new split"
            )
    if run.raw_root.is_dir():
        clash = [p.name for p in run.raw_root.glob(f"Dataset{dataset_id:03d}_*") if p.name != name]
        if clash:
            raise ValueError(f"{run.raw_root} already has dataset id {dataset_id} as {clash}; choose another id")

    ending = src_json["file_ending"]
    for case in split_map["train"] + split_map["val"]:
        for c, img in enumerate(cases[case]["images"]):
            _atomic_copy(img, run.raw_dir / "imagesTr" / f"{case}_{c:04d}{ending}")
        _atomic_copy(cases[case]["label"], run.raw_dir / "labelsTr" / f"{case}{ending}")
    for case in split_map["test"]:
        for c, img in enumerate(cases[case]["images"]):
            _atomic_copy(img, run.raw_dir / "imagesTs" / f"{case}_{c:04d}{ending}")
        _atomic_copy(cases[case]["label"], run.raw_dir / "labelsTs" / f"{case}{ending}")
    (run.raw_dir / "imagesTs").mkdir(parents=True, exist_ok=True)

    dataset_json = {
        "name": name,
        "description": f"samlab export of {source.resolve()} ({src_json.get('name', source.name)})",
        "channel_names": src_json["channel_names"],
        "labels": src_json["labels"],
        "numTraining": len(split_map["train"]) + len(split_map["val"]),
        "file_ending": ending,
        "samlab_structures": {k: list(v) for k, v in structures_from_dataset_json(src_json).items()},
    }
    write_text_atomic(run.raw_dir / "dataset.json", json.dumps(dataset_json, indent=2) + "\n")
    write_text_atomic(run.raw_dir / _EXPORT_MANIFEST, json.dumps(export_info, indent=2) + "\n")
    # nnU-Net finds trainers by class name; this folder (nnUNet_extTrainer) lets it find ours for inference.
    write_text_atomic(
        run.trainers_dir / "samlab_nnunet_trainers.py",
        '"""Makes samlab\'s nnU-Net trainer findable through nnUNet_extTrainer."""\n'
        f"from samlab.baselines._nnunet_worker import {TRAINER_NAME}  # noqa: F401\n",
    )
    write_text_atomic(
        manifest_path, json.dumps({"dataset_id": dataset_id, "dataset_name": name}, indent=2) + "\n"
    )
    return run


# ---------------------------------------------------------------------------------------------
# 2. Worker subprocesses: plan + preprocess, train, predict
# ---------------------------------------------------------------------------------------------

_WORKER_BOOT = "import sys; from samlab.baselines._nnunet_worker import main; sys.exit(main())"
_EPOCH_LINE = re.compile(rb": Epoch (\d+)\s*$", re.MULTILINE)


def _run_worker(run: NnUNetRun, profile: NnUNetProfile, step: str, cfg: dict[str, Any], total_epochs: int = 0) -> dict:
    """Run one worker command; stdout/stderr go to ``logs/<step>.{stdout,stderr}.log`` (appended)."""
    from tqdm.auto import tqdm

    run.logs_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run.logs_dir / f"{step}.json"
    result_path = run.logs_dir / f"{step}.result.json"
    write_text_atomic(cfg_path, json.dumps(cfg, indent=2) + "\n")
    result_path.unlink(missing_ok=True)
    stdout_path, stderr_path = run.logs_dir / f"{step}.stdout.log", run.logs_dir / f"{step}.stderr.log"
    header = f"\n===== samlab {step} {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n"
    with open(stdout_path, "ab") as out, open(stderr_path, "ab") as err:
        out.write(header.encode())
        err.write(header.encode())
        out.flush()
        err.flush()
        start_offset = out.tell()
        proc = subprocess.Popen(
            # "-c" rather than "-m": nnU-Net's spawned pool workers then need not re-import
            # the worker module (and with it nnU-Net's trainer and torch: ~5-10 s each here).
            [sys.executable, "-c", _WORKER_BOOT, str(cfg_path)],
            stdout=out,
            stderr=err,
            env=run.environment(profile, training=cfg["command"] == "train"),
            cwd=run.work_dir,
            start_new_session=True,  # its data-loader children share its process group: one kill stops all
        )
        # The worker's process-group id, so a user (or a test) can stop a runaway step by id.
        pid_path = run.logs_dir / f"{step}.pid"
        write_text_atomic(pid_path, f"{proc.pid}\n")
        bar = tqdm(total=total_epochs, desc=f"nnU-Net {step}", unit="epoch") if total_epochs else None
        try:
            while proc.poll() is None:
                time.sleep(1.0)
                if bar is not None:
                    with open(stdout_path, "rb") as fh:
                        fh.seek(start_offset)
                        epochs = [int(m) for m in _EPOCH_LINE.findall(fh.read())]
                    if epochs and epochs[-1] > bar.n:  # "Epoch N" starts epoch N: N epochs are done
                        bar.update(epochs[-1] - bar.n)
            if bar is not None and proc.returncode == 0:
                bar.update(bar.total - bar.n)
        except BaseException:
            # Interrupted (e.g. Ctrl-C in a notebook): stop the worker and its children, keep checkpoints.
            _stop_process_group(proc)
            raise
        finally:
            if bar is not None:
                bar.close()
            pid_path.unlink(missing_ok=True)
    if proc.returncode != 0:
        tail = stderr_path.read_text(errors="replace")[-3000:]
        raise NnUNetError(
            f"nnU-Net step {step!r} failed with exit code {proc.returncode}; logs: {stderr_path}, {stdout_path}\n"
            f"--- end of stderr ---\n{tail}"
        )
    if not result_path.is_file():
        raise NnUNetError(f"nnU-Net step {step!r} exited without writing {result_path}; see {stderr_path}")
    return json.loads(result_path.read_text())


def _stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the worker's process group, SIGKILL it if it has not ended within 30 s."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _record_timing(run: NnUNetRun, key: str, seconds: float) -> None:
    """Add ``seconds`` to the step's total in ``logs/timings.json`` (a resumed training adds up its pieces)."""
    path = run.logs_dir / "timings.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[key] = round(float(data.get(key, 0.0)) + float(seconds), 2)
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def plan_and_preprocess(run: NnUNetRun, profile: NnUNetProfile | str = "quick", force: bool = False) -> dict:
    """nnU-Net fingerprint (with ``verify_dataset_integrity``), planning and preprocessing.

    Only the profile's configuration is preprocessed. Skipped when a previous call
    for the same configuration and batch size completed, unless ``force``.
    Returns the worker's result (plans file and per-phase timings).
    """
    profile = get_profile(profile)
    done = run.logs_dir / "plan_and_preprocess.result.json"
    cfg = {
        "command": "plan_and_preprocess",
        "dataset_id": run.dataset_id,
        "dataset_name": run.dataset_name,
        "configuration": profile.configuration,
        "batch_size": profile.batch_size,
        "num_processes": profile.num_processes,
        "verify_dataset_integrity": profile.verify_dataset_integrity,
    }
    cfg_file = run.logs_dir / "plan_and_preprocess.json"
    data_dir = run.preprocessed_dir / f"{PLANS_NAME}_{profile.configuration}"
    if (
        not force
        and done.is_file()
        and cfg_file.is_file()
        and json.loads(cfg_file.read_text()) == cfg
        and data_dir.is_dir()
        and any(data_dir.iterdir())
    ):
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    result = _run_worker(run, profile, "plan_and_preprocess", cfg)
    _record_timing(run, "plan_and_preprocess_s", time.perf_counter() - t0)
    return result


def _write_splits_final(run: NnUNetRun, profile: NnUNetProfile) -> Path:
    """Make nnU-Net's folds follow the study: fold 0 = our train/val, or nnU-Net's own 5-fold CV."""
    if not (run.preprocessed_dir / f"{PLANS_NAME}.json").is_file():
        raise FileNotFoundError(
            f"{run.preprocessed_dir / (PLANS_NAME + '.json')} not found: run plan_and_preprocess before train"
        )
    split = run.export_manifest["splits"]
    if profile.split == "given":
        folds = [{"train": sorted(split["train"]), "val": sorted(split["val"])}]
    else:
        # nnU-Net's own seeded 5-fold split (what it writes when splits_final.json is absent).
        from nnunetv2.utilities.crossval_split import generate_crossval_split

        keys = sorted(split["train"] + split["val"])
        if len(keys) < 5:
            raise ValueError(f"split='cv5' needs at least 5 train+val cases, {run.dataset_name} has {len(keys)}")
        folds = [
            {"train": [str(k) for k in f["train"]], "val": [str(k) for k in f["val"]]}
            for f in generate_crossval_split(keys, seed=12345, n_splits=5)
        ]
    path = run.preprocessed_dir / "splits_final.json"
    write_text_atomic(path, json.dumps(folds, indent=2) + "\n")
    return path


def train(
    run: NnUNetRun, profile: NnUNetProfile | str = "quick", folds: Sequence[int] | None = None, resume: bool = True
) -> dict[int, dict]:
    """Train the profile's folds with nnU-Net (a subprocess per fold).

    ``resume=True`` uses nnU-Net's ``--c`` logic: continue from
    ``checkpoint_final.pth`` / ``checkpoint_latest.pth`` when present (a killed run
    continues, a finished run with more epochs requested is extended, a finished
    run is not retrained), else start fresh. ``resume=False`` starts over.
    Returns, per fold, the epoch training started at and ended at, and timings.
    """
    profile = get_profile(profile)
    _write_splits_final(run, profile)
    results = {}
    for fold in folds if folds is not None else profile.folds:
        step = f"train_fold{fold}"
        cfg = {
            "command": "train",
            "dataset_name": run.dataset_name,
            "configuration": profile.configuration,
            "fold": int(fold),
            "device": profile.device,
            "resume": bool(resume),
            "schedule": profile.schedule(),
            "run_validation": profile.run_validation,
            "seed": profile.seed,
            "torch_threads": profile.torch_threads,
        }
        finished = _finished_training(run, profile, step, cfg)
        if resume and finished is not None:
            results[int(fold)] = {**finished, "start_epoch": finished["end_epoch"], "skipped": True}
            continue
        t0 = time.perf_counter()
        results[int(fold)] = _run_worker(run, profile, step, cfg, total_epochs=profile.num_epochs)
        _record_timing(run, f"{step}_s", time.perf_counter() - t0)
    return results


def _finished_training(run: NnUNetRun, profile: NnUNetProfile, step: str, cfg: dict) -> dict | None:
    """The last result of ``step`` if it completed this very schedule (saves a worker start on re-runs)."""
    cfg_file, result_file = run.logs_dir / f"{step}.json", run.logs_dir / f"{step}.result.json"
    if not (cfg_file.is_file() and result_file.is_file()):
        return None
    old_cfg, result = json.loads(cfg_file.read_text()), json.loads(result_file.read_text())
    same = {k: v for k, v in old_cfg.items() if k != "resume"} == {k: v for k, v in cfg.items() if k != "resume"}
    fold_dir = Path(result.get("output_folder", ""))
    complete = (
        same
        and result.get("end_epoch") == profile.num_epochs
        and (fold_dir / "checkpoint_final.pth").is_file()
        and (not profile.run_validation or (fold_dir / "validation" / "summary.json").is_file())
    )
    return result if complete else None


def predict(run: NnUNetRun, profile: NnUNetProfile | str = "quick", force: bool = False) -> Path:
    """Predict the test images (``imagesTs``) with the trained fold(s); returns the predictions folder.

    Predictions are written to a temporary folder and renamed when complete, so the
    folder either holds every test case or does not exist. A re-run is skipped when
    the folder was made by the same checkpoint files and settings (a retrained or
    extended model is predicted again), unless ``force``.
    """
    profile = get_profile(profile)
    out_dir = run.predictions_dir(profile)
    model_dir = run.model_dir(profile)
    checkpoints = [model_dir / f"fold_{f}" / profile.checkpoint for f in profile.folds]
    missing = [str(c) for c in checkpoints if not c.is_file()]
    if missing:
        raise FileNotFoundError(f"no trained checkpoint {missing}: run train first")
    cfg = {
        "command": "predict",
        "model_dir": str(model_dir),
        "folds": list(profile.folds),
        "checkpoint": profile.checkpoint,
        "input_dir": str(run.images_ts),
        "output_dir": "",
        "device": profile.device,
        "use_mirroring": profile.use_mirroring,
        "tile_step_size": profile.tile_step_size,
        "torch_threads": profile.torch_threads,
        # multiprocessing pools only pay off when the network runs on a GPU
        "num_processes": profile.num_processes if profile.device == "cuda" else 1,
    }
    stamp = {
        "settings": {k: cfg[k] for k in ("model_dir", "folds", "checkpoint", "input_dir", "use_mirroring", "tile_step_size")},
        "checkpoints": {str(c): [c.stat().st_size, c.stat().st_mtime_ns] for c in checkpoints},
        "cases": sorted(_test_cases(run)),
    }
    stamp_file = out_dir / "samlab_predict.json"
    if not force and stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        return out_dir
    tmp_dir = out_dir.with_name(f".tmp_{out_dir.name}")
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir(parents=True)
    cfg["output_dir"] = str(tmp_dir)
    t0 = time.perf_counter()
    _run_worker(run, profile, "predict", cfg)
    _record_timing(run, "predict_s", time.perf_counter() - t0)
    write_text_atomic(tmp_dir / "samlab_predict.json", json.dumps(stamp, indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp_dir, out_dir)
    return out_dir


# ---------------------------------------------------------------------------------------------
# 4. Evaluation
# ---------------------------------------------------------------------------------------------


def _read_labels(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    import SimpleITK as sitk

    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"cannot read label file {path}: {exc}") from exc
    array = sitk.GetArrayFromImage(image)
    if array.ndim != 3:
        raise ValueError(f"{path} holds a {array.ndim}D image; expected a 3D label volume")
    return array, tuple(float(s) for s in reversed(image.GetSpacing()))


def _test_cases(run: NnUNetRun) -> list[str]:
    return list(run.export_manifest["splits"]["test"])


def evaluate(
    run: NnUNetRun,
    predictions_dir: str | os.PathLike | None = None,
    profile: NnUNetProfile | str = "quick",
    structures: Mapping[str, Sequence[int]] | None = None,
    dataset: str | None = None,
) -> pd.DataFrame:
    """Dice, HD95 and NSD of every test case and structure, as tidy results rows.

    Rows carry ``method="nnunet"``, ``prompt="none"``, ``backbone`` = the nnU-Net
    configuration and ``init="scratch"``. Metrics come from
    ``samlab.metrics.evaluate_label_volumes`` on the test labels kept in
    ``labelsTs``, in millimetres from the label file's spacing.
    """
    from samlab.metrics import evaluate_label_volumes

    profile = get_profile(profile)
    pred_dir = Path(predictions_dir) if predictions_dir is not None else run.predictions_dir(profile)
    structures = dict(structures) if structures is not None else structures_from_dataset_json(run.dataset_json)
    ending = run.dataset_json["file_ending"]
    dataset = dataset or run.dataset_name
    rows: list[dict[str, Any]] = []
    for case in _test_cases(run):
        gt, spacing = _read_labels(run.labels_ts / f"{case}{ending}")
        pred, pred_spacing = _read_labels(pred_dir / f"{case}{ending}")
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {pred_dir / (case + ending)} has shape {pred.shape}, its label {gt.shape}")
        if not np.allclose(pred_spacing, spacing, rtol=1e-3):
            raise ValueError(f"prediction for {case} has spacing {pred_spacing}, its label {spacing}")
        scores = evaluate_label_volumes(pred, gt, spacing, structures)
        for structure, values in scores.items():
            context = {
                "dataset": dataset,
                "subject": case,
                "slice": -1,
                "structure": structure,
                "method": "nnunet",
                "backbone": profile.configuration,
                "init": "scratch",
                "prompt": "none",
                "seed": profile.seed,
            }
            rows.extend(make_rows(context, values))
    return to_frame(rows)


# ---------------------------------------------------------------------------------------------
# 5. Boxes for the zero-shot notebook
# ---------------------------------------------------------------------------------------------


def boxes_from_label_volume(
    labels: np.ndarray,
    structures: Mapping[str, Sequence[int]],
    case_id: str,
    min_component_pixels: int = 1,
) -> list[dict[str, Any]]:
    """Per axial slice and structure: the whole-structure box and one box per connected component.

    Uses :mod:`samlab.prompts` (the zero-shot code's own box rules) so the file
    holds exactly the boxes notebook 02 would derive from these predictions:
    ``(x0, y0, x1, y1)`` inclusive pixel coordinates of the ``(y, x)`` slice,
    8-connected components numbered largest first. Components smaller than
    ``min_component_pixels`` get no box of their own (they still count for the
    whole-structure box).
    """
    from samlab import prompts

    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels of {case_id} must be a 3D (z, y, x) volume, got shape {labels.shape}")
    rows: list[dict[str, Any]] = []
    for structure, values in structures.items():
        mask3d = np.isin(labels, np.asarray(list(values)))
        for z in np.flatnonzero(mask3d.any(axis=(1, 2))):
            mask = mask3d[z]
            base = {"case_id": case_id, "slice": int(z), "structure": structure}
            boxes = [(-1, prompts.box_from_mask(mask), int(mask.sum()))]
            components = prompts.connected_components(mask, min_pixels=min_component_pixels)
            boxes += [(k, prompts.box_from_mask(c), int(c.sum())) for k, c in enumerate(components)]
            for component, box, n_pixels in boxes:
                x0, y0, x1, y1 = (int(round(float(v))) for v in box)
                rows.append({**base, "component": component, "x0": x0, "y0": y0, "x1": x1, "y1": y1,
                             "n_pixels": n_pixels})
    return rows


def derive_boxes(
    predictions_dir: str | os.PathLike,
    structures: Mapping[str, Sequence[int]],
    case_ids: Sequence[str] | None = None,
    file_ending: str = ".nii.gz",
    min_component_pixels: int = 1,
) -> pd.DataFrame:
    """Boxes (see :func:`boxes_from_label_volume`) for every predicted case in ``predictions_dir``."""
    pred_dir = Path(predictions_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"predictions folder not found: {pred_dir}")
    if case_ids is None:
        files = [p for p in pred_dir.glob(f"*{file_ending}") if not p.name.startswith(".")]
        case_ids = sorted(p.name[: -len(file_ending)] for p in files)
    if not case_ids:
        raise FileNotFoundError(f"no predictions '*{file_ending}' in {pred_dir}")
    rows: list[dict[str, Any]] = []
    for case in case_ids:
        labels, _ = _read_labels(pred_dir / f"{case}{file_ending}")
        rows.extend(boxes_from_label_volume(labels, structures, case, min_component_pixels))
    frame = pd.DataFrame(rows, columns=list(BOX_COLUMNS))
    return frame.astype({c: "int64" for c in BOX_COLUMNS if c not in ("case_id", "structure")})


def write_boxes(boxes: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a boxes table as CSV atomically (validated first)."""
    boxes = _validate_boxes(boxes, source="boxes")
    path = Path(path)
    write_text_atomic(path, boxes.to_csv(index=False))
    return path


def _validate_boxes(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = [c for c in BOX_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{source} lacks column(s) {missing}; expected {list(BOX_COLUMNS)}")
    frame = frame[list(BOX_COLUMNS)].copy()
    numeric = [c for c in BOX_COLUMNS if c not in ("case_id", "structure")]
    if frame[list(BOX_COLUMNS)].isna().any().any():
        raise ValueError(f"{source} has empty/NaN values")
    try:
        frame[numeric] = frame[numeric].astype("int64")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: columns {numeric} must be integers: {exc}") from exc
    frame["case_id"] = frame["case_id"].astype(str)
    frame["structure"] = frame["structure"].astype(str)
    bad = frame[(frame.x0 > frame.x1) | (frame.y0 > frame.y1) | (frame[["x0", "y0", "slice"]] < 0).any(axis=1)]
    if len(bad):
        raise ValueError(
            f"{source} has {len(bad)} invalid box(es) (x0>x1, y0>y1 or negative), first: {bad.iloc[0].to_dict()}"
        )
    if (frame.component < -1).any():
        raise ValueError(f"{source}: component must be -1 (whole structure) or a component index >= 0")
    return frame.reset_index(drop=True)


def load_boxes(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``nnunet_boxes.csv``: one row per box, columns :data:`BOX_COLUMNS`, inclusive pixel coordinates.

    ``component == -1`` selects the whole-structure box of a slice; ``>= 0`` the
    per-connected-component boxes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"boxes file not found: {path}")
    try:
        frame = pd.read_csv(path, dtype={"case_id": str, "structure": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read boxes file {path}: {exc}") from exc
    return _validate_boxes(frame, source=str(path))


# ---------------------------------------------------------------------------------------------
# Everything in one call (notebook 03)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NnUNetBaseline:
    """What :func:`run_baseline` produced."""

    run: NnUNetRun
    profile: NnUNetProfile
    predictions_dir: Path
    results: pd.DataFrame
    results_path: Path
    boxes_path: Path
    timings: dict[str, float]


def run_baseline(
    source_dir: str | os.PathLike,
    splits: Mapping[str, Sequence[str]] | str | os.PathLike,
    work_dir: str | os.PathLike,
    profile: NnUNetProfile | str = "quick",
    dataset: str | None = None,
    dataset_id: int = 501,
    structures: Mapping[str, Sequence[int]] | None = None,
) -> NnUNetBaseline:
    """Export, plan + preprocess, train (resuming), predict the test split, evaluate, derive boxes.

    Writes ``<work_dir>/nnunet_results.parquet`` (tidy schema) and
    ``<work_dir>/nnunet_boxes.csv``. Each step that already finished is skipped on
    a re-run, and an interrupted training continues from its checkpoint.
    """
    profile = get_profile(profile)
    run = export_dataset(source_dir, splits, work_dir, dataset_id=dataset_id)
    plan_and_preprocess(run, profile)
    train(run, profile, resume=True)
    pred_dir = predict(run, profile)
    structures = dict(structures) if structures is not None else structures_from_dataset_json(run.dataset_json)
    results = evaluate(run, pred_dir, profile, structures=structures, dataset=dataset)
    results_path = write_results(results, run.work_dir / "nnunet_results.parquet")
    boxes = derive_boxes(pred_dir, structures, case_ids=_test_cases(run), file_ending=run.dataset_json["file_ending"])
    boxes_path = write_boxes(boxes, run.work_dir / "nnunet_boxes.csv")
    timings_file = run.logs_dir / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    return NnUNetBaseline(run, profile, pred_dir, results, results_path, boxes_path, timings)
