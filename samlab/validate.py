"""Every check of a profile that needs no heavy work: ``samlab validate`` and the first step of ``samlab run``.

Why a separate pass: a profile runs unattended for hours, and until now a missing
raw folder, a checkpoint that does not fit its model or a box expansion larger than
the image surfaced only once a notebook reached it (30 s to hours in). Everything
here reads headers, folder listings and checkpoint key names -- no volume is
loaded, no model is run -- so it takes seconds and runs before anything is written.

Each problem is a :class:`InputProblem`: the file, the problem, what to do. All
problems are collected and raised together as one :class:`ProfileCheckError`
whose first line is the first problem.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ProfileError
from .profiles import load_profile

__all__ = ["InputProblem", "ProfileCheckError", "ProfileCheck", "check_profile", "profile_run_dir", "writable_dir_problem"]


@dataclass(frozen=True)
class InputProblem:
    """One bad input: the file (or folder), what is wrong with it, and what to do."""

    path: str
    problem: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}" + (f" -- {self.fix}" if self.fix else "")


class ProfileCheckError(ProfileError):
    """One or more bad inputs of a profile; the first line names the first file and problem."""

    def __init__(self, problems: list[InputProblem]) -> None:
        self.problems = problems
        lines = [str(problems[0])]
        if len(problems) > 1:
            lines.append(f"  ({len(problems)} problems in all:)")
            lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


@dataclass
class ProfileCheck:
    """What :func:`check_profile` found: the validated profile, its run directory and the checks that passed."""

    profile: Any
    steps: list[tuple[str, Any]]
    run_dir: Path
    passed: list[str] = field(default_factory=list)


def profile_run_dir(profile_name: str, runs_root: str | os.PathLike | None = None) -> Path:
    """The run directory ``samlab run`` uses for a profile: ``<runs_root>/<name>``, default ``runs/<name>``."""
    from .paths import resolve_run_dir

    return Path(runs_root).resolve() / profile_name if runs_root else resolve_run_dir(Path("runs") / profile_name)


def writable_dir_problem(path: Path) -> InputProblem | None:
    """A problem if ``path`` (or, when it does not exist yet, its nearest existing parent) is not writable."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return InputProblem(str(probe), "is not a folder, so the run directory cannot be created there",
                            "choose another --runs-root")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "run directory is not writable" if probe == path else f"cannot create the run directory {path} here (not writable)"
        return InputProblem(str(probe), what, "fix its permissions or choose another --runs-root")
    return None


def _image_header(path: Path):
    """SimpleITK header of one image file (size, spacing, origin, direction, channels) without reading voxels."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def _header_geometry(reader) -> tuple[tuple[int, ...], int, tuple]:
    """(spatial size x-first, channels, (spacing zyx, origin, direction)) from a header, as the NIfTI reader compares them."""
    import numpy as np

    size = tuple(int(v) for v in reader.GetSize())
    dim = reader.GetDimension()
    channels = int(reader.GetNumberOfComponents())
    if channels == 1 and dim == 4:
        channels = size[3]
    spacing = [float(str(np.float32(s))) for s in reader.GetSpacing()[:3]]
    origin = tuple(float(o) for o in reader.GetOrigin()[:3])
    direction = np.asarray(reader.GetDirection(), dtype=float).reshape(dim, dim)[:3, :3].ravel() if dim >= 3 \
        else np.asarray(reader.GetDirection(), dtype=float)
    return size[:3], channels, (tuple(reversed(spacing)), origin, tuple(float(d) for d in direction))


def _check_raw_dir(raw_dir: str, resample_labels: bool, problems: list[InputProblem]) -> int | None:
    """Check a raw dataset folder from headers only; return the smallest in-plane image size (or None)."""
    from .data.readers import DataValidationError, read_raw_dataset
    from .data.readers.nifti import geometry_difference

    root = Path(raw_dir).expanduser()
    if not root.is_dir():
        problems.append(InputProblem(str(root), "raw_dir not found" if not root.exists() else "raw_dir is not a folder",
                                     "set raw_dir to the folder holding dataset.json, imagesTr/, labelsTr/"))
        return None
    if not os.access(root, os.R_OK | os.X_OK):
        problems.append(InputProblem(str(root), "raw_dir is not readable", "fix its permissions"))
        return None
    try:
        dataset = read_raw_dataset(root)
    except DataValidationError as err:
        problems.append(InputProblem(str(err.path or root), err.problem, "fix the dataset folder"))
        return None
    in_plane = None
    for case in dataset.cases:
        try:
            image = _image_header(case.images[0])
            label = _image_header(case.label)
        except RuntimeError as err:
            bad = case.label if case.images[0].is_file() and "label" in str(err).lower() else case.images[0]
            problems.append(InputProblem(str(bad), f"cannot read the image header ({str(err).strip().splitlines()[-1]})",
                                         "replace the corrupt file"))
            continue
        size, channels, geometry = _header_geometry(image)
        lab_size, lab_channels, lab_geometry = _header_geometry(label)
        expected = len(dataset.channel_names) if len(case.images) == 1 else 1
        if channels != expected:
            kind = f"a 4D image of size {tuple(image.GetSize())}" if image.GetDimension() == 4 else \
                f"a vector image with {channels} components"
            problems.append(InputProblem(str(case.images[0]), f"is {kind} ({channels} channels) but dataset.json declares "
                                         f"{expected} channel(s) in channel_names",
                                         "store one channel per file (<case>_0000, _0001, ...) or fix channel_names"))
        difference = geometry_difference(geometry, lab_geometry)
        if lab_size != size:
            difference = f"size {lab_size} vs image {size}" + (f"; {difference}" if difference else "")
        if difference and not resample_labels:
            problems.append(InputProblem(str(case.label), f"label grid differs from its image {case.images[0]}: {difference}",
                                         "fix the label file, or set resample_labels: true in notebook 01's parameters"))
        plane = min(size[:2])
        in_plane = plane if in_plane is None else min(in_plane, plane)
    return in_plane


def _check_checkpoints(step: str, params: Any, where: str, problems: list[InputProblem], checked: dict) -> None:
    from .models.registry import CheckpointError, check_checkpoint, get_spec

    for model in getattr(params, "models", []):
        if get_spec(model).needs_checkpoint and model not in params.checkpoints and not params.allow_random_init:
            problems.append(InputProblem(where, f"model {model} ({step}) needs a checkpoint file",
                                         f"add `checkpoints: {{{model}: /path/to/file.pth}}`"))
    for model, path in params.checkpoints.items():
        key = (model, str(Path(path).expanduser().resolve()))
        if key in checked:  # the same file for another notebook: checked (and reported) once
            continue
        try:
            check_checkpoint(model, path)
            checked[key] = None
        except CheckpointError as err:
            first, _, details = str(err).partition("\n")
            checked[key] = err
            path_text, _, problem = first.partition(": ")
            problems.append(InputProblem(path_text, problem + (f"\n{details}" if details else "")))


def check_profile(profile_path: str | os.PathLike, runs_root: str | os.PathLike | None = None,
                  only: list[str] | None = None) -> ProfileCheck:
    """Validate a profile and every input it names, without loading data or running a model.

    Checks: the schema (:func:`samlab.profiles.load_profile`); ``--only`` names; the run
    directory is writable; ``raw_dir`` exists, is readable, its ``dataset.json`` parses
    and every case's image and label headers agree (channels, size, spacing, origin,
    direction); checkpoint files exist, load under ``weights_only`` and fit the named
    model (keys and shapes, model built on the meta device); ``expansions_px`` is smaller
    than the images (phantom_shape, or the raw images' headers). Raises
    :class:`ProfileCheckError` listing every problem; returns a :class:`ProfileCheck`.
    """
    profile, steps = load_profile(profile_path)
    names = [name for name, _ in steps]
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ProfileError(f"{profile_path}: --only {', '.join(unknown)}: not a notebook of profile {profile.name} "
                               f"-- valid names: {', '.join(names)}")
    run_dir = profile_run_dir(profile.name, runs_root)
    problems: list[InputProblem] = []
    passed: list[str] = []
    bad = writable_dir_problem(run_dir)
    if bad:
        problems.append(bad)
    else:
        passed.append(f"run directory {run_dir} is writable")
    image_size: int | None = None
    checked: dict = {}
    for name, params in steps:
        where = f"{profile_path} (notebook {name})"
        if name == "01_data_curation":
            if params.data_source == "phantom":
                image_size = min(params.phantom_shape[1:])
            elif params.raw_dir is None:
                problems.append(InputProblem(where, "data_source nnunet_raw needs raw_dir", "set raw_dir"))
            else:
                n_before = len(problems)
                image_size = _check_raw_dir(params.raw_dir, getattr(params, "resample_labels", False), problems)
                if len(problems) == n_before:
                    passed.append(f"raw_dir {params.raw_dir}: dataset.json and every case header agree")
        if hasattr(params, "checkpoints"):
            n_before = len(problems)
            _check_checkpoints(name, params, where, problems, checked)
            if len(problems) == n_before and params.checkpoints:
                passed.append(f"{name}: checkpoints {', '.join(params.checkpoints)} load and fit their models")
        expansions = getattr(params, "expansions_px", None)
        if expansions and image_size is not None:
            too_big = [e for e in expansions if e >= image_size]
            if too_big:
                problems.append(InputProblem(where, f"expansions_px {too_big} not smaller than the images "
                                             f"({image_size} px in-plane): the box would cover the whole image",
                                             f"use expansions below {image_size}"))
    if problems:
        raise ProfileCheckError(problems)
    return ProfileCheck(profile, steps, run_dir, passed)
