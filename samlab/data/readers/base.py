"""What every reader returns, and the one error every reader raises.

Why shared containers: the pelvic study reads 3D NIfTI volumes, the 18-config
study 2D PNG slices and MedSAM's tooling ``.npz`` archives; returning the same
:class:`Volume` / :class:`Slice2D` from each reader keeps everything downstream
(preprocessing, splits, the manifest) format-agnostic.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["CaseFiles", "DataValidationError", "MaskRule", "RawDataset", "Slice2D", "Volume", "ENDINGS", "SLICE_SUFFIX", "strip_ending"]

#: How a PNG mask becomes labels. ``"single"`` (the readers' default): the mask must
#: hold at most one non-zero value, which becomes the foreground (value 1); a mask
#: with two (e.g. 128 and 255) is an error naming them, never two labels merged
#: silently. ``"nonzero"``: every non-zero pixel is the one
#: foreground class (value 1) -- the finetune-SAM "combine_all" rule, which the
#: real prostate slices need because BMC26_16 and RUNMC03_12 hold two touching
#: labels (254 and 255) and RUNMC03_16 / RUNMC23_14 hold only 254.
#: ``"labels"``: keep the stored values as labels, checked against a label map.
MaskRule = Literal["single", "nonzero", "labels"]


class DataValidationError(ValueError):
    """Input data is unusable; the message names the file and the problem."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")


@dataclass(frozen=True, eq=False)  # arrays inside: compare fields explicitly
class Volume:
    """A 3D image with its label map, in SimpleITK order.

    ``image`` is float32 ``(z, y, x)``; ``labels`` uint8 ``(z, y, x)``;
    ``spacing`` ``(sz, sy, sx)`` in mm. ``origin`` and ``direction`` are kept
    (SimpleITK order, i.e. x first) so that predictions recompiled to 3D can be
    written back in the geometry of the source file.
    """

    case_id: str
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    label_map: dict[str, int]
    path: Path | None = None
    label_path: Path | None = None
    origin: tuple[float, ...] | None = None
    direction: tuple[float, ...] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.image.shape)  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)  # arrays inside: compare fields explicitly
class Slice2D:
    """One 2D image with its mask and the patient it belongs to.

    ``image`` is float32 ``(y, x)`` (or ``(y, x, 3)`` for colour sources);
    ``mask`` uint8 ``(y, x)``. ``subject`` is the patient identifier used for
    patient-level splits; ``slice_index`` is the position in the source volume
    when the file name tells it (``RUNMC03_12`` -> 12), otherwise -1.
    """

    case_id: str
    subject: str
    image: np.ndarray
    mask: np.ndarray
    label_map: dict[str, int]
    image_path: Path | None = None
    mask_path: Path | None = None
    slice_index: int = -1
    spacing: tuple[float, float] | None = None


@dataclass(frozen=True)
class CaseFiles:
    """The files of one training case of a raw dataset (one path per image channel)."""

    case_id: str
    images: tuple[Path, ...]
    label: Path


@dataclass(frozen=True)
class RawDataset:
    """A parsed ``dataset.json`` with the cases found on disk."""

    root: Path
    name: str
    label_map: dict[str, int]
    cases: tuple[CaseFiles, ...]
    channel_names: dict[str, str] = field(default_factory=dict)
    file_ending: str = ".nii.gz"
    layout: Literal["nnunet_v2", "msd"] = "nnunet_v2"
    resample_labels: bool = False  # opt-in: resample a label on another grid onto its image (nearest neighbour)


#: File endings a case id is stripped of (longest first where one is a suffix of another).
ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".tif", ".tiff", ".png")


def strip_ending(name: str, ending: str | None = None) -> str:
    """The case id in a file name: the name less its image ending (``case_001.nii.gz`` -> ``case_001``)."""
    for end in ((ending,) if ending else ()) + ENDINGS:
        if end and name.endswith(end):
            return name[: -len(end)]
    return Path(name).stem


#: ``RUNMC03_12`` -> slice 12: the position in the source volume, when a file name tells it.
SLICE_SUFFIX = re.compile(r"_(\d+)$")
