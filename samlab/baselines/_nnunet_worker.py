"""Subprocess entry point that drives the installed ``nnunetv2`` package.

Why a separate process: nnU-Net reads its folders (``nnUNet_raw``,
``nnUNet_preprocessed``, ``nnUNet_results``) and its process counts
(``nnUNet_def_n_proc``, ``nnUNet_n_proc_DA``) from the environment, some of them
at import time, and its data loaders and exporters start child processes. Running
every step in a fresh interpreter with the environment set by
:mod:`samlab.baselines.nnunet.pipeline` keeps the notebook's process clean, lets a killed
step be resumed, and sends nnU-Net's own output to log files.

Usage (done for you by :mod:`samlab.baselines.nnunet.pipeline`, which starts it with
``python -c "...import main; main()"`` so that nnU-Net's spawned pool workers do
not re-import this module and torch)::

    python -m samlab.baselines._nnunet_worker CONFIG.json

``CONFIG.json`` holds ``{"command": "plan_and_preprocess" | "train" | "predict", ...}``.

This module also defines :class:`nnUNetTrainerSamlab`, nnU-Net's own trainer with
a configurable schedule (epochs, iterations per epoch, learning rate, checkpoint
interval) and atomic checkpoint writes. nnU-Net looks trainers up by class name;
for inference it finds this one through the ``nnUNet_extTrainer`` folder that
:mod:`samlab.baselines.nnunet.export` writes next to the run.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json, save_json
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from samlab.io import atomic_path, read_json, write_json_atomic

#: Trainer attributes a schedule may set, with nnU-Net 2.8.1's defaults.
SCHEDULE_DEFAULTS: dict[str, Any] = {
    "num_epochs": 1000,
    "num_iterations_per_epoch": 250,
    "num_val_iterations_per_epoch": 50,
    "initial_lr": 1e-2,
    "oversample_foreground_percent": 0.33,
    "save_every": 50,
}

#: Key under which the schedule travels inside the plans dict (popped before nnU-Net sees it).
SCHEDULE_KEY = "samlab_schedule"


class nnUNetTrainerSamlab(nnUNetTrainer):  # noqa: N801 - nnU-Net's naming convention for trainers
    """``nnUNetTrainer`` with a schedule taken from ``plans["samlab_schedule"]``.

    nnU-Net's own pattern for short trainers is a subclass that sets
    ``num_epochs`` and friends; taking the values from the plans dict lets one
    class serve every profile (the quick CPU run and the paper's 1000 epochs).
    The ``__init__`` signature must equal the base class's: nnU-Net records its
    arguments by name for the checkpoint. Without a schedule (e.g. when started
    by ``nnUNetv2_train -tr nnUNetTrainerSamlab``) nnU-Net's defaults apply.
    """

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ):
        schedule = dict(plans.pop(SCHEDULE_KEY, None) or {})
        unknown = set(schedule) - set(SCHEDULE_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown nnU-Net schedule key(s) {sorted(unknown)}; allowed: {sorted(SCHEDULE_DEFAULTS)}")
        super().__init__(plans, configuration, fold, dataset_json, device)
        for key, value in schedule.items():
            setattr(self, key, value)
        self.print_to_log_file(f"samlab schedule: {json.dumps({k: getattr(self, k) for k in SCHEDULE_DEFAULTS})}")

    def save_checkpoint(self, filename: str) -> None:
        """Write the checkpoint to a temporary name, then rename it.

        A run killed while saving keeps its previous checkpoint instead of a
        truncated file that ``--c`` (resume) could not load.
        """
        if self.local_rank != 0 or self.disable_checkpointing:
            return  # nnU-Net's own save_checkpoint writes nothing in these cases either
        with atomic_path(filename) as tmp:
            super().save_checkpoint(str(tmp))


class FingerprintExtractorSamlab(DatasetFingerprintExtractor):
    """nnU-Net's fingerprint extractor that draws no more intensity samples per case than a case has voxels.

    nnU-Net samples 1e8 foreground intensities in all, split evenly over the cases
    (with replacement), whatever the dataset's size: 16.7 million per case for the
    quick profile's 6 training volumes of 110,592 voxels, whose sampling, transfer
    from the pool worker and percentiles took 22-57 s of a 10-minute budget.
    Drawing at most as many samples per case as the largest case has voxels keeps
    every case's weight equal (the point of nnU-Net's even split) and samples each
    foreground at least once in expectation. Where the cap does not bind (the
    paper's 117 volumes of millions of voxels: 1e8 / 117 = 855,000 per case) this
    is nnU-Net's extractor unchanged. The samples only feed the intensity
    statistics of CT normalisation; MR volumes are z-scored per image.
    """

    def __init__(self, dataset_name_or_id: str | int, num_processes: int = 8, verbose: bool = False):
        super().__init__(dataset_name_or_id, num_processes, verbose)
        largest = max(_voxel_count(case["label"]) for case in self.dataset.values())
        self.num_foreground_voxels_for_intensitystats = min(
            self.num_foreground_voxels_for_intensitystats, float(largest * len(self.dataset))
        )


def _voxel_count(image_file: str) -> int:
    """Voxels in an image, from its header alone."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(image_file)
    reader.ReadImageInformation()
    return int(np.prod(reader.GetSize()))


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _device(name: str, threads: int | None = None) -> torch.device:
    """The torch device, with nnU-Net's CLI thread policy unless ``threads`` says otherwise."""
    if name == "cpu":
        # nnU-Net's own CLI uses every core for CPU training/inference.
        torch.set_num_threads(threads or os.cpu_count() or 1)
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("nnU-Net profile asks for device 'cuda' but torch sees no CUDA device")
        torch.set_num_threads(threads or 1)
        torch.set_num_interop_threads(1)
        return torch.device("cuda")
    if name == "mps":
        return torch.device("mps")
    raise ValueError(f"unknown device {name!r}; use 'cpu', 'cuda' or 'mps'")


def plan_and_preprocess(cfg: dict) -> dict:
    """Fingerprint (with dataset-integrity check), plan, optionally override the batch size, preprocess."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiments,
        preprocess,
    )
    from nnunetv2.paths import nnUNet_preprocessed

    dataset_id, configuration, n_proc = cfg["dataset_id"], cfg["configuration"], cfg["num_processes"]
    timings = {}
    t0 = time.perf_counter()
    extract_fingerprint_dataset(
        dataset_id,
        FingerprintExtractorSamlab,
        num_processes=n_proc,
        check_dataset_integrity=cfg["verify_dataset_integrity"],
        clean=True,
    )
    timings["fingerprint_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    plans_identifier = plan_experiments([dataset_id])
    plans_file = join(str(nnUNet_preprocessed), cfg["dataset_name"], plans_identifier + ".json")
    plans = load_json(plans_file)
    if configuration not in plans["configurations"]:
        raise RuntimeError(
            f"nnU-Net did not plan configuration {configuration!r} for {cfg['dataset_name']} "
            f"(planned: {sorted(plans['configurations'])}); pick one of those in the profile"
        )
    if cfg.get("batch_size"):
        plans["configurations"][configuration]["batch_size"] = int(cfg["batch_size"])
        save_json(plans, plans_file, sort_keys=False)
    timings["plan_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    preprocess([dataset_id], plans_identifier, configurations=[configuration], num_processes=[n_proc])
    timings["preprocess_s"] = time.perf_counter() - t0
    return {"plans_file": plans_file, "timings": timings}


def train(cfg: dict) -> dict:
    """Train one fold with :class:`nnUNetTrainerSamlab`; resume from nnU-Net's checkpoints when asked."""
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.run.run_training import maybe_load_checkpoint

    _seed(int(cfg.get("seed", 0)))
    device = _device(cfg["device"], cfg.get("torch_threads"))
    base = join(str(nnUNet_preprocessed), cfg["dataset_name"])
    plans = load_json(join(base, "nnUNetPlans.json"))
    plans["continue_training"] = bool(cfg["resume"])
    plans[SCHEDULE_KEY] = cfg["schedule"]
    dataset_json = load_json(join(base, "dataset.json"))
    trainer = nnUNetTrainerSamlab(
        plans=plans, configuration=cfg["configuration"], fold=int(cfg["fold"]), dataset_json=dataset_json, device=device
    )
    # nnU-Net's own --c logic: checkpoint_final, else checkpoint_latest, else checkpoint_best, else a fresh start.
    maybe_load_checkpoint(trainer, continue_training=bool(cfg["resume"]), validation_only=False)
    start_epoch = int(trainer.current_epoch)
    print(f"samlab: training starts at epoch {start_epoch} of {trainer.num_epochs}", flush=True)
    summary_file = join(trainer.output_folder, "validation", "summary.json")
    if start_epoch >= trainer.num_epochs and (not cfg["run_validation"] or isfile(summary_file)):
        print("samlab: training already complete; nothing to do", flush=True)
        return {"output_folder": trainer.output_folder, "start_epoch": start_epoch, "end_epoch": start_epoch}
    t0 = time.perf_counter()
    trainer.run_training()
    train_s = time.perf_counter() - t0
    validation_s = 0.0
    if cfg["run_validation"]:
        t0 = time.perf_counter()
        trainer.perform_actual_validation(False)
        validation_s = time.perf_counter() - t0
    return {
        "output_folder": trainer.output_folder,
        "start_epoch": start_epoch,
        "end_epoch": int(trainer.current_epoch),
        "timings": {"train_s": train_s, "validation_s": validation_s},
    }


def predict(cfg: dict) -> dict:
    """Predict every image in ``input_dir`` with the trained fold(s) into ``output_dir``."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    device = _device(cfg["device"], cfg.get("torch_threads"))
    predictor = nnUNetPredictor(
        tile_step_size=float(cfg["tile_step_size"]),
        use_gaussian=True,
        use_mirroring=bool(cfg["use_mirroring"]),
        perform_everything_on_device=device.type == "cuda",
        device=device,
        allow_tqdm=True,
    )
    predictor.initialize_from_trained_model_folder(
        cfg["model_dir"], use_folds=tuple(cfg["folds"]), checkpoint_name=cfg["checkpoint"]
    )
    t0 = time.perf_counter()
    if int(cfg["num_processes"]) <= 1:
        predictor.predict_from_files_sequential(cfg["input_dir"], cfg["output_dir"], save_probabilities=False)
    else:
        n = int(cfg["num_processes"])
        predictor.predict_from_files(
            cfg["input_dir"],
            cfg["output_dir"],
            save_probabilities=False,
            overwrite=True,
            num_processes_preprocessing=n,
            num_processes_segmentation_export=n,
        )
    return {"output_dir": cfg["output_dir"], "timings": {"predict_s": time.perf_counter() - t0}}


COMMANDS = {"plan_and_preprocess": plan_and_preprocess, "train": train, "predict": predict}


def exit_with_parent(poll_s: float = 2.0) -> None:
    """Stop this worker and its process group (nnU-Net's data-loader children) when its parent dies.

    Why: the worker runs in a session of its own (so that a Ctrl-C in the notebook reaches the parent,
    which stops the worker cleanly), so a parent that is *killed* (a kernel killed with ``samlab run``,
    SIGKILL, a crashed notebook) cannot stop it. Measured: a 12-epoch training went on for minutes after
    its run was killed, and a rerun, which takes the dead run's lock over, would start a second training
    into the same folder. Checkpoints are written atomically, so stopping at any moment loses at most the
    epoch under way, which nnU-Net's ``--c`` resume repeats.
    """
    import signal
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        print(f"samlab: the parent process {parent} is gone; stopping this nnU-Net step", file=sys.stderr, flush=True)
        try:
            if os.getpgid(0) == os.getpid():  # a group of its own (start_new_session): take the children along
                os.killpg(os.getpid(), signal.SIGTERM)
        finally:
            os._exit(3)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Run the command described by the JSON file ``argv[0]``; write its result next to it."""
    exit_with_parent()
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m samlab.baselines._nnunet_worker CONFIG.json", file=sys.stderr)
        return 2
    config_path = Path(argv[0])
    cfg = read_json(config_path, "nnU-Net worker config")
    command = cfg.get("command")
    if command not in COMMANDS:
        print(f"unknown command {command!r} in {config_path}; expected one of {sorted(COMMANDS)}", file=sys.stderr)
        return 2
    result = COMMANDS[command](cfg)
    write_json_atomic(config_path.with_name(config_path.stem + ".result.json"), result, default=str)
    return 0


if __name__ == "__main__":
    # The guard matters: nnU-Net's data loaders and exporters start child processes
    # that re-import the main module. Import main from the canonical module name so
    # that the trainer class is pickled by reference as samlab.baselines._nnunet_worker.
    from samlab.baselines._nnunet_worker import main as _main

    sys.exit(_main())
