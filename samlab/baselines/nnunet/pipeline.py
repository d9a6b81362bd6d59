"""Plan + preprocess, train and predict through the installed ``nnunetv2`` package, one subprocess per step.

Every nnU-Net step runs in a subprocess (:mod:`samlab.baselines._nnunet_worker`)
with nnU-Net's folders set in its environment: nnU-Net reads them (and its process
counts) from ``os.environ``, partly at import time, and its data loaders spawn
processes. Each step's stdout/stderr go to ``<work_dir>/logs``.

Resume: training continues from nnU-Net's own checkpoints (``--c`` logic:
``checkpoint_final.pth``, else ``checkpoint_latest.pth``); the samlab trainer writes
``checkpoint_latest.pth`` every ``save_every`` epochs and atomically, so calling
:func:`train` again after a kill continues from the last saved epoch, and calling
it with more epochs extends a finished run.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from samlab.baselines.nnunet.layout import PLANS_NAME, NnUNetError, NnUNetRun, exported_test_cases
from samlab.baselines.nnunet.profiles import NnUNetProfile, get_profile
from samlab.io import read_json, write_json_atomic, write_text_atomic

__all__ = ["plan_and_preprocess", "predict", "train"]

_WORKER_BOOT = "import sys; from samlab.baselines._nnunet_worker import main; sys.exit(main())"
_EPOCH_LINE = re.compile(rb": Epoch (\d+)\s*$", re.MULTILINE)


def _run_worker(run: NnUNetRun, profile: NnUNetProfile, step: str, cfg: dict[str, Any], total_epochs: int = 0) -> dict:
    """Run one worker command; stdout/stderr go to ``logs/<step>.{stdout,stderr}.log`` (appended)."""
    from tqdm.auto import tqdm

    run.logs_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run.logs_dir / f"{step}.json"
    result_path = run.logs_dir / f"{step}.result.json"
    write_json_atomic(cfg_path, cfg)
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
    return read_json(result_path, f"result of nnU-Net step {step!r}")


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
    data = read_json(path, "timings file") if path.is_file() else {}
    data[key] = round(float(data.get(key, 0.0)) + float(seconds), 2)
    write_json_atomic(path, data)


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
        and read_json(cfg_file, "nnU-Net step config") == cfg
        and data_dir.is_dir()
        and any(data_dir.iterdir())
    ):
        return read_json(done, "result of nnU-Net step 'plan_and_preprocess'")
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
    write_json_atomic(path, folds)
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
    old_cfg = read_json(cfg_file, "nnU-Net step config")
    result = read_json(result_file, f"result of nnU-Net step {step!r}")
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
        "cases": sorted(exported_test_cases(run)),
    }
    stamp_file = out_dir / "samlab_predict.json"
    if not force and stamp_file.is_file() and read_json(stamp_file, "prediction stamp") == stamp:
        return out_dir
    tmp_dir = out_dir.with_name(f".tmp_{out_dir.name}")
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir(parents=True)
    cfg["output_dir"] = str(tmp_dir)
    t0 = time.perf_counter()
    _run_worker(run, profile, "predict", cfg)
    _record_timing(run, "predict_s", time.perf_counter() - t0)
    write_json_atomic(tmp_dir / "samlab_predict.json", stamp)
    # A folder swap, not a file write: atomic_path renames single files, and the point here is that
    # the predictions folder appears only with every test case in it.
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp_dir, out_dir)
    return out_dir
