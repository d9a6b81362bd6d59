"""An independent corpus of 31 broken inputs, each run through the entry point a user would use.

Why a benchmark and not only tests: ``tests/test_bad_inputs.py`` checks each fix with the
inputs its author had in mind. This script builds its own broken inputs with its own code
(its own tiny NIfTI dataset, checkpoints, PNG/CSV lists and profiles -- nothing imported from
``tests/``), runs each through ``samlab validate`` / ``samlab run`` where a user would, else
through the public reader function a notebook calls, and prints one row per case:

    case | handled | stage | first line of the message

A case counts as *handled* when the entry point refuses it with an error whose first line
names the broken file (or folder) and carries no traceback, and -- where it applies -- nothing
was executed (the pickled checkpoint) or overwritten (the live run's lock). The last line is
``handled N of 31``. Tiny arrays, no model forward pass, no notebook executed: about a minute
on two cores.

Usage: ``python benchmarks/bad_input_corpus.py [--keep DIR]``
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

SHAPE = (6, 32, 32)  # z, y, x
SPACING = (2.5, 1.0, 1.0)  # z, y, x in mm
LABELS = {"background": 0, "gland": 1, "lesion": 2}


@dataclass
class Outcome:
    handled: bool
    stage: str
    message: str


# --------------------------------------------------------------------------- building blocks (own code)
def _write_volume(array: np.ndarray, path: Path, spacing=SPACING, origin=(0.0, 0.0, 0.0), direction=None) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))


def build_dataset(root: Path, n_cases: int = 2, seed: int = 7) -> Path:
    """A two-case nnU-Net v2 raw folder: a bright ellipsoid (label 1) with a small cube inside (label 2)."""
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    z, y, x = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    for i in range(n_cases):
        inside = ((z - 3) / 3.0) ** 2 + ((y - 16 - i) / 9.0) ** 2 + ((x - 15) / 8.0) ** 2 <= 1.0
        label = inside.astype(np.uint8)
        label[2:4, 14:18, 13:17] = 2
        image = (rng.normal(100, 10, SHAPE) + 80 * inside + 40 * (label == 2)).astype(np.float32)
        _write_volume(image, root / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        _write_volume(label, root / "labelsTr" / f"case_{i:03d}.nii.gz")
    meta = {"name": "Corpus", "channel_names": {"0": "MRI"}, "labels": LABELS,
            "numTraining": n_cases, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


def _read(path: Path):
    import SimpleITK as sitk

    return sitk.ReadImage(str(path))


def _array(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(_read(path))


def _profile(path: Path, notebooks: list[dict] | None, name: str = "corpus", **top) -> Path:
    path.write_text(json.dumps({"name": name, **top, "notebooks": notebooks}))  # JSON is YAML
    return path


def _phantom_steps(zero_shot: dict | None = None) -> list[dict]:
    return [{"notebook": "01_data_curation", "parameters": {"phantom_shape": [8, 32, 32], "phantom_cases": 4}},
            {"notebook": "02_zero_shot_probing", "parameters": zero_shot or {}}]


def _raw_steps(raw: Path) -> list[dict]:
    return [{"notebook": "01_data_curation", "parameters": {"data_source": "nnunet_raw", "raw_dir": str(raw)}}]


def _png(array: np.ndarray, path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


# --------------------------------------------------------------------------- entry points
def cli(*argv: str) -> tuple[int, str]:
    """``samlab <argv>`` in this process (the console script's ``main``); returns (exit code, stderr)."""
    from samlab import cli as samlab_cli

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = samlab_cli.main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return int(code or 0), err.getvalue()


def _verdict(names: str, code: int, message: str, stage: str, problem: str = "") -> Outcome:
    """Handled = refused, the first line names ``names`` (the broken file) and matches ``problem`` (a regex
    for what is wrong, so that an unrelated error naming the same file does not count), no traceback."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    handled = (code != 0 and names in first and "Traceback" not in message
               and re.search(problem, first, flags=re.IGNORECASE) is not None)
    return Outcome(handled, stage, first)


def via_validate(profile: Path, runs: Path, names: str, *extra: str, command: str = "validate",
                 problem: str = "") -> Outcome:
    code, err = cli(command, str(profile), "--runs-root", str(runs), *extra)
    return _verdict(names, code, err, f"samlab {command}", problem)


def via_dataset(raw: Path, runs: Path, work: Path, names: str, problem: str) -> Outcome:
    """``samlab validate`` on a profile naming the dataset; if it passes, read every case as notebook 01 does."""
    profile = _profile(work / "dataset_profile.yaml", _raw_steps(raw))
    code, err = cli("validate", str(profile), "--runs-root", str(runs))
    if code != 0:
        return _verdict(names, code, err, "samlab validate", problem)
    from samlab.data.readers import read_case, read_raw_dataset

    try:
        dataset = read_raw_dataset(raw)
        for case in dataset.cases:
            read_case(dataset, case.case_id)
    except Exception as exc:  # noqa: BLE001 -- the point is to see what a user would see
        return _verdict(names, 1, str(exc) or type(exc).__name__, "validate ok; read_case", problem)
    return Outcome(False, "validate ok; read_case ok", "(accepted: no error)")


def via_call(fn: Callable[[], object], names: str, stage: str, problem: str) -> Outcome:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        return _verdict(names, 1, str(exc) or type(exc).__name__, stage, problem)
    return Outcome(False, stage, "(accepted: no error)")


# --------------------------------------------------------------------------- the corpus
def corpus(base: Path) -> list[tuple[str, Callable[[], Outcome]]]:
    pristine = build_dataset(base / "pristine")
    runs = base / "runs"
    counter = iter(range(1000))

    def fresh() -> tuple[Path, Path]:
        work = base / f"w{next(counter):02d}"
        work.mkdir()
        return Path(shutil.copytree(pristine, work / "raw")), work

    def dataset_case(mutate: Callable[[Path], Path], problem: str) -> Callable[[], Outcome]:
        def run() -> Outcome:
            raw, work = fresh()
            named = mutate(raw)
            return via_dataset(raw, runs, work, str(named), problem)
        return run

    # ---- datasets
    def mirrored(raw: Path) -> Path:
        path = raw / "labelsTr" / "case_000.nii.gz"
        _write_volume(_array(path), path, direction=(1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))
        return path

    def shifted(raw: Path) -> Path:
        path = raw / "labelsTr" / "case_001.nii.gz"
        _write_volume(_array(path), path, origin=(0.0, 7.0, 0.0))
        return path

    def spacing(raw: Path) -> Path:
        path = raw / "labelsTr" / "case_000.nii.gz"
        _write_volume(_array(path), path, spacing=(2.5, 1.1, 1.0))
        return path

    def four_d(raw: Path) -> Path:
        import SimpleITK as sitk

        path = raw / "imagesTr" / "case_001_0000.nii.gz"
        image = _read(path)
        sitk.WriteImage(sitk.JoinSeries([image, image]), str(path))
        return path

    def missing_label(raw: Path) -> Path:
        path = raw / "labelsTr" / "case_001.nii.gz"
        path.unlink()
        return Path("case_001")

    def undeclared_value(raw: Path) -> Path:
        path = raw / "labelsTr" / "case_000.nii.gz"
        label = _array(path)
        label[0, 0, 0] = 9
        _write_volume(label, path)
        return path

    def nan_image(raw: Path) -> Path:
        path = raw / "imagesTr" / "case_000_0000.nii.gz"
        image = _array(path)
        image[3, 10:12, 10:12] = np.nan
        _write_volume(image, path)
        return path

    def constant_image(raw: Path) -> Path:
        path = raw / "imagesTr" / "case_001_0000.nii.gz"
        _write_volume(np.full(SHAPE, 42.0, np.float32), path)
        return path

    def truncated(raw: Path) -> Path:
        path = raw / "imagesTr" / "case_000_0000.nii.gz"
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path

    def malformed_json(raw: Path) -> Path:
        path = raw / "dataset.json"
        path.write_text(path.read_text().replace('"labels"', '"labels" :', 1))
        return path

    def json_without_labels(raw: Path) -> Path:
        path = raw / "dataset.json"
        meta = json.loads(path.read_text())
        del meta["labels"]
        path.write_text(json.dumps(meta))
        return path

    def empty_images(raw: Path) -> Path:
        for f in (raw / "imagesTr").iterdir():
            f.unlink()
        return raw

    # ---- checkpoints (LiteMedSAM: its skeleton is small; the profile names it explicitly)
    def checkpoint_case(make: Callable[[Path], tuple[Path, str, str]], problem: str) -> Callable[[], Outcome]:
        def run() -> Outcome:
            work = base / f"w{next(counter):02d}"
            work.mkdir()
            path, model, names = make(work)
            steps = _phantom_steps({"models": [model], "checkpoints": {model: str(path)}})
            return via_validate(_profile(work / "ckpt.yaml", steps), runs, names, problem=problem)
        return run

    def pickled(work: Path) -> tuple[Path, str, str]:
        import torch

        path = work / "evil.pth"
        torch.save({"model": _Payload(str(work / "EXECUTED"))}, path)
        return path, "litemedsam", str(path)

    def ckpt_truncated(work: Path) -> tuple[Path, str, str]:
        import torch

        path = work / "cut.pth"
        torch.save({"image_encoder.w": torch.zeros(64, 64)}, path)
        path.write_bytes(path.read_bytes()[:300])
        return path, "litemedsam", str(path)

    def ckpt_wrong_keys(work: Path) -> tuple[Path, str, str]:
        import torch

        path = work / "keys.pth"
        torch.save({f"backbone.layer{i}.weight": torch.zeros(3) for i in range(50)}, path)
        return path, "litemedsam", str(path)

    def ckpt_wrong_shapes(work: Path) -> tuple[Path, str, str]:
        import torch

        from samlab.models import load_model

        state = {k: torch.zeros_like(v) for k, v in load_model("litemedsam", allow_random_init=True).module.state_dict().items()}
        key = next(k for k in state if k.startswith("mask_decoder") and state[k].ndim == 2)
        state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
        path = work / "shapes.pth"
        torch.save(state, path)
        return path, "litemedsam", str(path)

    def ckpt_missing(work: Path) -> tuple[Path, str, str]:
        path = work / "nowhere" / "medsam_vit_b.pth"
        return path, "medsam_vit_b", str(path)

    def model_typo() -> Outcome:
        work = base / f"w{next(counter):02d}"
        work.mkdir()
        (work / "x.pth").write_bytes(b"")
        steps = _phantom_steps({"checkpoints": {"medsam_vit_typo": str(work / "x.pth")}})
        profile = _profile(work / "typo.yaml", steps)
        return via_validate(profile, runs, str(profile), problem="medsam_vit_typo")

    # ---- PNG / CSV lists: the public readers (notebook-free path of the finetune-SAM data)
    def png_dir() -> Path:
        work = base / f"w{next(counter):02d}"
        image = ((np.arange(40 * 40) * 7) % 253).reshape(40, 40).astype(np.uint8)
        mask = np.zeros((40, 40), np.uint8)
        mask[5:15, 5:15] = 255
        _png(image, work / "MRI-X" / "images" / "patient01" / "slice_003.png")
        _png(mask, work / "MRI-X" / "masks" / "patient01" / "slice_003.png")
        return work

    def png_two_values() -> Outcome:
        from samlab.data.readers import read_png_pair

        work = png_dir()
        mask_path = work / "MRI-X" / "masks" / "patient01" / "slice_003.png"
        mask = np.zeros((40, 40), np.uint8)
        mask[5:15, 5:15], mask[20:30, 20:30] = 128, 255
        _png(mask, mask_path)
        return via_call(lambda: read_png_pair(work / "MRI-X" / "images" / "patient01" / "slice_003.png", mask_path),
                        str(mask_path), "read_png_pair", "128")

    def png_size() -> Outcome:
        from samlab.data.readers import read_png_pair

        work = png_dir()
        mask_path = work / "MRI-X" / "masks" / "patient01" / "slice_003.png"
        _png(np.zeros((40, 36), np.uint8), mask_path)
        return via_call(lambda: read_png_pair(work / "MRI-X" / "images" / "patient01" / "slice_003.png", mask_path),
                        str(mask_path), "read_png_pair", "shape|size")

    def png_missing() -> Outcome:
        from samlab.data.readers import read_png_pair

        work = png_dir()
        image_path = work / "MRI-X" / "images" / "patient01" / "slice_003.png"
        image_path.unlink()
        return via_call(lambda: read_png_pair(image_path, work / "MRI-X" / "masks" / "patient01" / "slice_003.png"),
                        str(image_path), "read_png_pair", "not found|missing")

    def csv_missing_column() -> Outcome:
        from samlab.data.readers import read_slice_list

        work = png_dir()
        csv_path = work / "MRI-X" / "train_5shot.csv"
        csv_path.write_text("MRI-X/images/patient01/slice_003.png\n")
        return via_call(lambda: read_slice_list(csv_path), str(csv_path), "read_slice_list", "column|expected")

    def csv_missing_file() -> Outcome:
        from samlab.data.readers import read_slice_list

        work = png_dir()
        csv_path = work / "MRI-X" / "train_5shot.csv"
        csv_path.write_text("MRI-X/images/patient01/slice_003.png,MRI-X/masks/patient01/slice_003.png\n"
                            "MRI-X/images/patient02/slice_009.png,MRI-X/masks/patient02/slice_009.png\n")
        return via_call(lambda: read_slice_list(csv_path), str(csv_path), "read_slice_list", "not found|missing")

    # ---- profiles
    def profile_case(build: Callable[[Path], tuple[Path, str, tuple[str, ...], str]], problem: str) -> Callable[[], Outcome]:
        def run() -> Outcome:
            work = base / f"w{next(counter):02d}"
            work.mkdir()
            profile, names, extra, command = build(work)
            return via_validate(profile, runs, names, *extra, command=command, problem=problem)
        return run

    def unknown_key(work: Path):
        steps = _phantom_steps({"expansion_px": [0, 5]})  # misspelt expansions_px
        p = _profile(work / "p.yaml", steps)
        return p, str(p), (), "validate"

    def huge_expansion(work: Path):
        p = _profile(work / "p.yaml", _phantom_steps({"expansions_px": [100000]}))
        return p, str(p), (), "run"

    def missing_raw(work: Path):
        p = _profile(work / "p.yaml", _raw_steps(work / "no_such_raw"))
        return p, str(work / "no_such_raw"), (), "run"

    def bad_only(work: Path):
        p = _profile(work / "p.yaml", _phantom_steps())
        return p, str(p), ("--only", "02_zero_shot"), "run"

    def negative_epochs(work: Path):
        p = _profile(work / "p.yaml", [{"notebook": "04_finetuning_grid", "parameters": {"max_epochs": -3}}])
        return p, str(p), (), "validate"

    def no_notebooks(work: Path):
        p = _profile(work / "p.yaml", [])
        return p, str(p), (), "validate"

    def read_only_run_dir() -> Outcome:
        """As an unprivileged user (root writes anywhere): `samlab validate` into a read-only run directory."""
        work = base / f"w{next(counter):02d}"
        ro_runs = work / "ro_runs"
        (ro_runs / "corpus").mkdir(parents=True)
        p = _profile(work / "p.yaml", _phantom_steps())
        os.chmod(ro_runs / "corpus", 0o555)
        cmd = [sys.executable, "-m", "samlab.cli", "validate", str(p), "--runs-root", str(ro_runs)]
        env = {**os.environ, "MPLCONFIGDIR": str(work / "mpl"), "HOME": str(work)}
        if os.geteuid() == 0:  # root without capabilities obeys file permissions as a user would
            cmd = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        os.chmod(ro_runs / "corpus", 0o755)
        return _verdict(str(ro_runs / "corpus"), done.returncode, done.stderr,
                        "samlab validate (no caps)" if os.geteuid() == 0 else "samlab validate", "writable")

    def second_live_run() -> Outcome:
        work = base / f"w{next(counter):02d}"
        work.mkdir()
        run_dir = work / "runs" / "corpus"
        run_dir.mkdir(parents=True)
        from samlab.runlock import LOCK_NAME

        lock = run_dir / LOCK_NAME
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2026-12-02T00:00:00"}
        lock.write_text(json.dumps(record))
        p = _profile(work / "p.yaml", _phantom_steps())
        out = via_validate(p, work / "runs", str(lock), command="run", problem="in use|running|lock")
        out.handled = out.handled and json.loads(lock.read_text()) == record and not (run_dir / "run.json").exists()
        return out

    def pickled_not_executed() -> Outcome:
        out = checkpoint_case(pickled, "weights.only|pickle|not allowed|unsupported global")()
        executed = any(base.rglob("EXECUTED"))
        out.handled = out.handled and not executed
        if executed:
            out.message = "EXECUTED the pickled payload! " + out.message
        return out

    return [
        ("dataset: label direction mirrored", dataset_case(mirrored, "direction")),
        ("dataset: label origin shifted", dataset_case(shifted, "origin")),
        ("dataset: label spacing differs", dataset_case(spacing, "spacing")),
        ("dataset: 4D image with 2 channels", dataset_case(four_d, "4D|channel")),
        ("dataset: label file missing", dataset_case(missing_label, "not found|missing")),
        ("dataset: label value not in dataset.json", dataset_case(undeclared_value, r"\b9\b")),
        ("dataset: NaN in image", dataset_case(nan_image, "NaN")),
        ("dataset: constant image", dataset_case(constant_image, "constant")),
        ("dataset: truncated .nii.gz", dataset_case(truncated, "corrupt|truncated|cannot")),
        ("dataset: malformed dataset.json", dataset_case(malformed_json, "JSON")),
        ("dataset: dataset.json without labels", dataset_case(json_without_labels, "labels")),
        ("dataset: empty imagesTr", dataset_case(empty_images, "imagesTr|not found|no case|empty")),
        ("checkpoint: pickled object", pickled_not_executed),
        ("checkpoint: truncated file", checkpoint_case(ckpt_truncated, "corrupt|truncated|cannot|not .*loadable")),
        ("checkpoint: wrong keys", checkpoint_case(ckpt_wrong_keys, "missing|unexpected")),
        ("checkpoint: wrong shapes", checkpoint_case(ckpt_wrong_shapes, "shape")),
        ("checkpoint: missing file", checkpoint_case(ckpt_missing, "not found")),
        ("checkpoint: model name typo", model_typo),
        ("png: mask values 128 and 255", png_two_values),
        ("png: mask size != image size", png_size),
        ("png: missing PNG", png_missing),
        ("csv: missing column", csv_missing_column),
        ("csv: points to a missing file", csv_missing_file),
        ("profile: unknown key", profile_case(unknown_key, "expansion_px")),
        ("profile: expansions_px [100000]", profile_case(huge_expansion, "expansions_px")),
        ("profile: missing raw_dir", profile_case(missing_raw, "not found")),
        ("profile: read-only run dir", read_only_run_dir),
        ("profile: bad --only", profile_case(bad_only, "02_zero_shot")),
        ("profile: negative epochs", profile_case(negative_epochs, "max_epochs")),
        ("profile: empty notebooks list", profile_case(no_notebooks, "notebooks")),
        ("profile: second live run", second_live_run),
    ]


class _Payload:
    """Pickles to ``open(marker, "w")``: if a loader ever executes it, the marker file appears."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def control(base: Path) -> str:
    """The unbroken dataset must pass, or every dataset row would measure the generator, not samlab."""
    raw = build_dataset(base / "control")
    profile = _profile(base / "control.yaml", _raw_steps(raw))
    code, err = cli("validate", str(profile), "--runs-root", str(base / "control_runs"))
    if code != 0:
        raise SystemExit(f"control dataset refused by samlab validate: {err.strip()}")
    from samlab.data.readers import read_case, read_raw_dataset

    dataset = read_raw_dataset(raw)
    for case in dataset.cases:
        read_case(dataset, case.case_id)
    return f"control: the unbroken {len(dataset.cases)}-case dataset passes samlab validate and read_case"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", default=None, help="build the corpus in this folder and keep it")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="samlab_corpus_"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        print(control(base / "ctl"))
        cases = corpus(base)
        assert len(cases) == 31, len(cases)
        rows = []
        for name, run in cases:
            try:
                outcome = run()
            except Exception as exc:  # noqa: BLE001 -- a crash of the harness is a row, not the end
                outcome = Outcome(False, "harness", f"{type(exc).__name__}: {exc}".splitlines()[0])
            rows.append((name, outcome))
            print(f"{name:<42} | {'yes' if outcome.handled else 'NO ':<3} | {outcome.stage:<26} | "
                  f"{outcome.message.replace(str(base), '<tmp>')[:220]}", flush=True)
        handled = sum(o.handled for _, o in rows)
        executed = [str(p.relative_to(base)) for pattern in ("run.json", "*.ipynb") for p in base.rglob(pattern)]
        print(f"written by the refused runs: {executed or 'nothing (no run.json, no executed notebook)'}")
        print(f"handled {handled} of {len(rows)}  ({time.perf_counter() - start:.0f} s)")
        return 0 if handled == len(rows) else 1
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
