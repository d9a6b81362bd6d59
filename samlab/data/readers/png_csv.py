"""2D PNG slices listed in finetune-SAM CSV files (``img_path,mask_path`` per line) into :class:`Slice2D`.

The 18-config study ships its slices as PNG files and its splits as CSV lists
whose paths carry the patient (``images/patient77/...``); the patient is what
patient-level splits need, so the reader keeps it with every slice.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Mapping

import numpy as np

from samlab.data.readers.base import SLICE_SUFFIX, DataValidationError, MaskRule, Slice2D, strip_ending
from samlab.data.readers.labels import mask_labels

__all__ = ["SliceRef", "load_slice", "read_png_pair", "read_slice_list", "subject_from_path"]

@dataclass(frozen=True)
class SliceRef:
    """One line of a finetune-SAM slice list, resolved to files on disk (not yet loaded)."""

    case_id: str
    subject: str
    image_path: Path
    mask_path: Path
    slice_index: int = -1
    source: Path | None = None  # the CSV it came from
    line: int = 0


_SUBJECT_PATTERN = r"patient\d+"


def subject_from_path(path: str | Path, pattern: str = _SUBJECT_PATTERN) -> str:
    """The patient id stored in a slice path (``images/patient77/...`` -> ``patient77``).

    Why this matters: slices of one patient are strongly correlated, so splits
    must be made per patient, and the CSV lists carry the patient only in the path.
    """
    text = PurePosixPath(str(path).replace("\\", "/")).as_posix()
    match = re.search(pattern, text)
    if match is None:
        raise DataValidationError(path, f"no patient id matching {pattern!r} in the path; pass subject_pattern=")
    return match.group(0)


def _resolve_listed(raw: str, dataset_dir: Path, csv_path: Path, line: int) -> Path:
    """Resolve ``MRI-Prostate/images/...`` or ``/MRI-Prostate/masks/...`` against the dataset folder.

    The finetune-SAM lists prefix every path with the dataset's own folder name
    (with or without a leading slash); the files live directly under the folder.
    """
    rel = PurePosixPath(raw.strip().replace("\\", "/").lstrip("/"))
    candidates = [dataset_dir.joinpath(*rel.parts)]
    if len(rel.parts) > 1:
        candidates.append(dataset_dir.joinpath(*rel.parts[1:]))
    for cand in candidates:
        if cand.is_file():
            return cand
    tried = ", ".join(str(c) for c in candidates)
    raise DataValidationError(csv_path, f"line {line}: listed file {raw.strip()!r} not found (tried {tried})")


def read_slice_list(
    csv_path: str | Path,
    dataset_dir: str | Path | None = None,
    *,
    subject_pattern: str = _SUBJECT_PATTERN,
) -> list[SliceRef]:
    """Parse a finetune-SAM slice list (``img_path,mask_path`` per line, no header).

    Paths are resolved relative to ``dataset_dir`` (default: the CSV's folder) by
    dropping their leading dataset-name component. The patient comes from the
    image path (``subject_pattern``); the case id is the image file stem.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataValidationError(csv_path, "file not found")
    dataset_dir = Path(dataset_dir) if dataset_dir is not None else csv_path.parent
    refs: list[SliceRef] = []
    with csv_path.open(newline="") as fh:
        for line_no, row in enumerate(csv.reader(fh), start=1):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 2:
                raise DataValidationError(csv_path, f"line {line_no}: expected 'img_path,mask_path', got {row!r}")
            image = _resolve_listed(row[0], dataset_dir, csv_path, line_no)
            mask = _resolve_listed(row[1], dataset_dir, csv_path, line_no)
            stem = strip_ending(image.name)
            m = SLICE_SUFFIX.search(stem)
            refs.append(
                SliceRef(
                    case_id=stem,
                    subject=subject_from_path(row[0], subject_pattern),
                    image_path=image,
                    mask_path=mask,
                    slice_index=int(m.group(1)) if m else -1,
                    source=csv_path,
                    line=line_no,
                )
            )
    if not refs:
        raise DataValidationError(csv_path, "lists no slices")
    return refs


def _png_array(path: Path, *, is_mask: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataValidationError(path, "file not found")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataValidationError(path, f"cannot be read as an image (corrupt?): {err}") from err
    if arr.ndim == 3:
        arr = arr[..., :3] if mode in ("RGBA", "LA", "PA") and arr.shape[-1] == 4 else arr
        if mode == "LA":
            arr = arr[..., 0]
        elif np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            arr = arr[..., 0]  # grey stored as RGB
        elif is_mask:
            raise DataValidationError(path, f"colour mask (mode {mode}) is ambiguous; store labels as one channel")
    if arr.ndim not in (2, 3):
        raise DataValidationError(path, f"unexpected image array shape {arr.shape}")
    return arr


def load_slice(
    ref: SliceRef,
    *,
    mask_rule: MaskRule = "single",
    label_map: Mapping[str, int] | None = None,
    foreground_name: str = "foreground",
) -> Slice2D:
    """Load the image and mask of a :class:`SliceRef` (see :func:`read_png_pair`)."""
    return read_png_pair(
        ref.image_path, ref.mask_path, subject=ref.subject, case_id=ref.case_id, slice_index=ref.slice_index,
        mask_rule=mask_rule, label_map=label_map, foreground_name=foreground_name,
    )


def read_png_pair(
    image_path: str | Path,
    mask_path: str | Path,
    *,
    subject: str | None = None,
    case_id: str | None = None,
    slice_index: int = -1,
    mask_rule: MaskRule = "single",
    label_map: Mapping[str, int] | None = None,
    foreground_name: str = "foreground",
    subject_pattern: str = _SUBJECT_PATTERN,
) -> Slice2D:
    """Read a 2D image and its mask (PNG or any format Pillow reads).

    ``mask_rule`` makes the binarisation explicit (see :data:`MaskRule`): the default
    ``"single"`` refuses a mask with more than one non-zero value (naming them);
    with ``"nonzero"`` the real prostate masks holding 254 and 255 both become the
    gland; with ``"labels"`` the stored values are kept and must be in ``label_map``.
    ``subject_pattern`` is the regular expression that finds the patient in
    ``image_path`` when ``subject`` is not given (default ``patient\\d+``, the
    finetune-SAM layout ``images/patient77/...``).
    """
    image_path, mask_path = Path(image_path), Path(mask_path)
    image = _png_array(image_path, is_mask=False).astype(np.float32)
    raw_mask = _png_array(mask_path, is_mask=True)
    if raw_mask.shape != image.shape[:2]:
        raise DataValidationError(mask_path, f"mask shape {raw_mask.shape} differs from image shape {image.shape[:2]} ({image_path})")
    mask, lmap = mask_labels(raw_mask, mask_rule, label_map, mask_path, foreground_name)
    if subject is None:
        subject = subject_from_path(image_path, subject_pattern)
    return Slice2D(
        case_id=case_id or strip_ending(image_path.name),
        subject=subject,
        image=image,
        mask=mask,
        label_map=lmap,
        image_path=image_path,
        mask_path=mask_path,
        slice_index=slice_index,
    )
