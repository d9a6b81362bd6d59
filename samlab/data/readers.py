"""Readers for the image formats the two reproduced studies use.

Why one module with several readers: the pelvic study reads 3D NIfTI volumes in
the nnU-Net raw / Medical Segmentation Decathlon (MSD) layout, the 18-config
study reads 2D PNG slices listed in CSV files, and MedSAM's own tooling exchanges
``.npz`` archives. Every reader returns the same two containers so that everything
downstream (preprocessing, splits, the manifest) is format-agnostic:

* :class:`Volume` -- a 3D image with labels, ``(z, y, x)`` arrays, spacing
  ``(sz, sy, sx)`` in millimetres read from the file header via SimpleITK;
* :class:`Slice2D` -- one 2D image with its mask, ``(y, x)`` arrays, and the
  patient it came from (needed for patient-level splits).

Bad input never passes silently: every problem raises :class:`DataValidationError`
naming the file and what is wrong with it (missing file, corrupt NIfTI, shape or
spacing mismatch between image and labels, non-integral or out-of-map labels,
NaN/inf intensities, empty label maps).
"""
from __future__ import annotations

import csv
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

__all__ = [
    "DataValidationError",
    "Volume",
    "Slice2D",
    "CaseFiles",
    "RawDataset",
    "SliceRef",
    "MaskRule",
    "read_raw_dataset",
    "read_nifti_case",
    "read_case",
    "iter_volumes",
    "validate_volume",
    "as_label_array",
    "read_slice_list",
    "read_png_pair",
    "load_slice",
    "read_npz",
    "subject_from_path",
]

#: How a PNG mask becomes labels. ``"nonzero"``: every non-zero pixel is the one
#: foreground class (value 1) -- the finetune-SAM "combine_all" rule, which the
#: real prostate slices need because BMC26_16 and RUNMC03_12 hold two touching
#: labels (254 and 255) and RUNMC03_16 / RUNMC23_14 hold only 254.
#: ``"labels"``: keep the stored values as labels, checked against a label map.
MaskRule = Literal["nonzero", "labels"]

_SPACING_RTOL = 1e-4  # relative tolerance when comparing image and label spacing
_GEOMETRY_ATOL = 1e-3  # absolute tolerance (mm / cosines) for origin and direction


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


# --------------------------------------------------------------------------- labels


def _normalise_label_map(raw: Mapping[str, Any], source: Path) -> dict[str, int]:
    """Accept both label-map spellings and return ``{name: value}``.

    nnU-Net v2 writes ``{"background": 0, "liver": 1}``; the MSD (and nnU-Net v1)
    writes ``{"0": "background", "1": "liver"}``. Region-based nnU-Net labels
    (a list of values per name) have no single voxel value and are rejected.
    """
    if not isinstance(raw, Mapping) or not raw:
        raise DataValidationError(source, '"labels" must be a non-empty mapping')
    out: dict[str, int] = {}
    for key, value in raw.items():
        if isinstance(value, str) and str(key).lstrip("-").isdigit():  # MSD: {"0": "background"}
            name, val = value, int(key)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataValidationError(
                source,
                f'label {key!r} has value {value!r}; region-based or non-integer labels are not supported '
                "(expected {name: int} or {\"int\": name})",
            )
        else:
            if float(value) != int(value):
                raise DataValidationError(source, f"label {key!r} has non-integral value {value!r}")
            name, val = str(key), int(value)
        if name in out:
            raise DataValidationError(source, f"label name {name!r} appears twice")
        if not 0 <= val <= 255:
            raise DataValidationError(source, f"label {name!r} = {val} does not fit in uint8 (0..255)")
        out[name] = val
    if len(set(out.values())) != len(out):
        raise DataValidationError(source, f"two label names share a value: {out}")
    if 0 not in out.values():
        raise DataValidationError(source, f"the label map has no background (value 0): {out}")
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def as_label_array(array: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    """Convert a stored label array to uint8, refusing anything that is not a label.

    Why: some real files store labels as float32 (case 003 of the MSD hippocampus
    set). Integral floats (0.0, 1.0, 2.0) are labels; 0.5 or NaN are not, and a
    silent cast would invent a wrong segmentation.
    """
    arr = np.asarray(array)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise DataValidationError(path, f"label array holds {int((~np.isfinite(arr)).sum())} NaN/inf values")
        frac = arr != np.round(arr)
        if frac.any():
            bad = np.unique(arr[frac])[:5]
            raise DataValidationError(
                path, f"label array (dtype {arr.dtype}) holds {int(frac.sum())} non-integral values, e.g. {bad.tolist()}"
            )
    elif not np.issubdtype(arr.dtype, np.integer):
        raise DataValidationError(path, f"label array has unsupported dtype {arr.dtype}")
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi > 255:
            raise DataValidationError(path, f"label values span [{lo}, {hi}], outside uint8 (0..255)")
    return arr.astype(np.uint8)


def validate_volume(volume: Volume, *, allow_empty: bool = False) -> Volume:
    """Check the content of a volume; return it unchanged or raise naming the file.

    Checks: image and labels have the same 3D shape; intensities are finite; the
    image is not constant (min-max normalisation would divide by zero); every
    label value is in the label map; unless ``allow_empty``, at least one
    foreground voxel exists (an empty case has nothing to prompt or score).
    """
    img_path = volume.path
    lab_path = volume.label_path or volume.path
    if volume.image.ndim != 3:
        raise DataValidationError(img_path, f"image must be 3D (z, y, x), got shape {volume.image.shape}")
    if volume.image.shape != volume.labels.shape:
        raise DataValidationError(
            lab_path, f"label shape {volume.labels.shape} differs from image shape {volume.image.shape} ({img_path})"
        )
    if volume.image.size == 0:
        raise DataValidationError(img_path, f"image is empty (shape {volume.image.shape})")
    finite = np.isfinite(volume.image)
    if not finite.all():
        n_nan = int(np.isnan(volume.image).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise DataValidationError(img_path, f"image holds {n_nan} NaN and {n_inf} inf intensities")
    lo, hi = float(volume.image.min()), float(volume.image.max())
    if lo == hi:
        raise DataValidationError(img_path, f"image is constant (every voxel = {lo}); nothing to normalise")
    values, counts = np.unique(volume.labels, return_counts=True)
    known = set(volume.label_map.values())
    unknown = {int(v): int(c) for v, c in zip(values, counts) if int(v) not in known}
    if unknown:
        raise DataValidationError(
            lab_path,
            f"label values {sorted(unknown)} (voxel counts {unknown}) are not in the label map {volume.label_map}",
        )
    if not allow_empty and not (volume.labels > 0).any():
        raise DataValidationError(lab_path, "label volume is empty (no foreground voxel)")
    return volume


# --------------------------------------------------------------------------- NIfTI / nnU-Net raw


def _read_itk(path: Path):
    """Read one image with SimpleITK, turning its errors into a message naming the file."""
    import SimpleITK as sitk

    if not path.is_file():
        raise DataValidationError(path, "file not found")
    if path.stat().st_size == 0:
        raise DataValidationError(path, "file is empty (0 bytes)")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as err:  # SimpleITK reports corrupt/truncated files as RuntimeError
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise DataValidationError(path, f"cannot be read as an image (corrupt or truncated file?): {first}") from err


def _nifti_nonfinite(path: Path) -> tuple[int, int]:
    """Integrity pass over a NIfTI file with nibabel: (NaN count, inf count).

    Why a second reader: SimpleITK's NIfTI reader silently turns NaN/inf into 0
    and zero-fills a truncated ``.nii.gz``; both would enter the study as
    plausible-looking data. nibabel reads the stored values and fails on a
    truncated stream, so it guards the SimpleITK read.
    """
    import nibabel as nib

    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return 0, 0
    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except (EOFError, OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise DataValidationError(path, f"cannot be read as NIfTI (corrupt or truncated file?): {err}") from err
    if not np.issubdtype(data.dtype, np.floating):
        return 0, 0
    return int(np.isnan(data).sum()), int(np.isinf(data).sum())


def _itk_geometry(img) -> tuple[tuple[float, float, float], tuple[float, ...], tuple[float, ...]]:
    """Spacing (sz, sy, sx), origin and direction of a 3D (or the first 3 axes of a 4D) image."""
    spacing = tuple(float(s) for s in img.GetSpacing())
    origin = tuple(float(o) for o in img.GetOrigin())
    direction = tuple(float(d) for d in img.GetDirection())
    dim = img.GetDimension()
    if dim == 4:  # keep the spatial 3x3 block of the 4x4 direction matrix
        d4 = np.asarray(direction).reshape(4, 4)
        direction = tuple(float(d) for d in d4[:3, :3].ravel())
        origin = origin[:3]
    # NIfTI stores spacing as float32: 1.2 reads back as 1.2000000476837158. Keep the
    # shortest decimal that is the same float32 (1.2), so manifests and comparisons stay clean.
    sx, sy, sz = (float(str(np.float32(s))) for s in spacing[:3])
    return (sz, sy, sx), origin, direction


def _channel_array(img, path: Path, channel: int) -> np.ndarray:
    """Array of one channel as ``(z, y, x)``; 4D MSD files store channels first."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(img)
    if img.GetNumberOfComponentsPerPixel() > 1:  # vector pixel: (z, y, x, c)
        if arr.ndim != 4 or not 0 <= channel < arr.shape[-1]:
            raise DataValidationError(path, f"no channel {channel} in vector image of shape {arr.shape}")
        arr = arr[..., channel]
    elif arr.ndim == 4:  # 4D NIfTI, e.g. MSD prostate (T2, ADC): (c, z, y, x)
        if not 0 <= channel < arr.shape[0]:
            raise DataValidationError(path, f"no channel {channel} in 4D image with {arr.shape[0]} channels")
        arr = arr[channel]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DataValidationError(path, f"expected a 3D image, got array shape {arr.shape}")
    return arr


def read_nifti_case(
    image_path: str | Path,
    label_path: str | Path,
    label_map: Mapping[str, int],
    case_id: str | None = None,
    *,
    channel: int = 0,
    validate: bool = True,
    allow_empty: bool = False,
) -> Volume:
    """Read one image/label pair (any format SimpleITK reads) into a :class:`Volume`.

    Spacing comes from the file header. Image and label geometry must agree:
    shape and spacing mismatches raise (a label drawn on another grid would score
    against the wrong voxels); origin/direction mismatches only warn, as nnU-Net
    does, because rounding in converters commonly produces them.
    """
    image_path, label_path = Path(image_path), Path(label_path)
    img = _read_itk(image_path)
    lab = _read_itk(label_path)
    n_nan, n_inf = _nifti_nonfinite(image_path)
    if n_nan or n_inf:
        raise DataValidationError(image_path, f"image holds {n_nan} NaN and {n_inf} inf intensities")
    n_nan, n_inf = _nifti_nonfinite(label_path)
    if n_nan or n_inf:
        raise DataValidationError(label_path, f"label array holds {n_nan + n_inf} NaN/inf values")
    image = _channel_array(img, image_path, channel).astype(np.float32, copy=False)
    labels_raw = _channel_array(lab, label_path, 0)
    spacing, origin, direction = _itk_geometry(img)
    lab_spacing, lab_origin, lab_direction = _itk_geometry(lab)
    if labels_raw.shape != image.shape:
        raise DataValidationError(
            label_path, f"label shape {labels_raw.shape} differs from image shape {image.shape} ({image_path})"
        )
    if not np.allclose(spacing, lab_spacing, rtol=_SPACING_RTOL, atol=0):
        raise DataValidationError(
            label_path, f"label spacing {lab_spacing} differs from image spacing {spacing} ({image_path}), as (sz, sy, sx) mm"
        )
    if not (
        np.allclose(origin, lab_origin, atol=_GEOMETRY_ATOL) and np.allclose(direction, lab_direction, atol=_GEOMETRY_ATOL)
    ):
        warnings.warn(f"{label_path}: origin/direction differ from {image_path}; using the image's geometry", stacklevel=2)
    labels = as_label_array(labels_raw, label_path)
    vol = Volume(
        case_id=case_id or _strip_ending(label_path.name),
        image=image,
        labels=labels,
        spacing=spacing,
        label_map=dict(label_map),
        path=image_path,
        label_path=label_path,
        origin=origin,
        direction=direction,
    )
    return validate_volume(vol, allow_empty=allow_empty) if validate else vol


_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".tif", ".tiff", ".png")


def _strip_ending(name: str, ending: str | None = None) -> str:
    for end in ((ending,) if ending else ()) + _ENDINGS:
        if end and name.endswith(end):
            return name[: -len(end)]
    return Path(name).stem


def read_raw_dataset(root: str | Path) -> RawDataset:
    """Parse ``root/dataset.json`` and list every training case found on disk.

    Two layouts are accepted:

    * nnU-Net v2 raw: ``labels`` is ``{name: value}``, cases are discovered as
      ``imagesTr/<case>_0000<file_ending>`` + ``labelsTr/<case><file_ending>``;
    * MSD / nnU-Net v1: a ``training`` list of ``{"image", "label"}`` paths and
      ``labels`` as ``{"0": "background"}``. Multi-modal MSD images are 4D files
      (one path per case); nnU-Net v1 converted sets split them into ``_0000``…
      files, which are found when the listed path itself is absent.

    A case with only an image or only a label is an error naming the missing file.
    """
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise DataValidationError(meta_path, "file not found (expected an nnU-Net raw / MSD dataset folder)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise DataValidationError(meta_path, f"is not valid JSON: {err}") from err
    if "labels" not in meta:
        raise DataValidationError(meta_path, 'has no "labels" entry')
    label_map = _normalise_label_map(meta["labels"], meta_path)
    name = str(meta.get("name", root.name))
    file_ending = str(meta.get("file_ending", ".nii.gz"))
    channels = meta.get("channel_names") or meta.get("modality") or {"0": "image"}
    channel_names = {str(k): str(v) for k, v in dict(channels).items()}

    if meta.get("training"):
        cases = _msd_cases(root, meta["training"], meta_path, len(channel_names))
        layout: Literal["nnunet_v2", "msd"] = "msd"
    else:
        cases = _nnunet_v2_cases(root, file_ending, len(channel_names))
        layout = "nnunet_v2"
    if not cases:
        raise DataValidationError(root / "imagesTr", "no training cases found")
    n_declared = meta.get("numTraining")
    if n_declared is not None and int(n_declared) != len(cases):
        raise DataValidationError(meta_path, f"numTraining = {n_declared} but {len(cases)} cases were found on disk")
    return RawDataset(root, name, label_map, tuple(cases), channel_names, file_ending, layout)


def _nnunet_v2_cases(root: Path, ending: str, n_channels: int) -> list[CaseFiles]:
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise DataValidationError(d, "folder not found")
    suffix = f"_0000{ending}"
    ids = {p.name[: -len(suffix)] for p in images_dir.iterdir() if p.name.endswith(suffix) and not p.name.startswith(".")}
    ids |= {p.name[: -len(ending)] for p in labels_dir.iterdir() if p.name.endswith(ending) and not p.name.startswith(".")}
    cases = []
    for cid in sorted(ids):
        images = tuple(images_dir / f"{cid}_{c:04d}{ending}" for c in range(n_channels))
        label = labels_dir / f"{cid}{ending}"
        for p in (*images, label):
            if not p.is_file():
                raise DataValidationError(p, f"file not found (case {cid!r} is incomplete)")
        cases.append(CaseFiles(cid, images, label))
    return cases


def _msd_cases(root: Path, training: Sequence[Mapping[str, str]], meta_path: Path, n_channels: int) -> list[CaseFiles]:
    cases = []
    for i, entry in enumerate(training):
        if not isinstance(entry, Mapping) or "image" not in entry or "label" not in entry:
            raise DataValidationError(meta_path, f'training entry {i} must have "image" and "label" keys, got {entry!r}')
        image = Path(os.path.normpath(root / entry["image"]))  # normpath, not resolve: keep the user's paths
        label = Path(os.path.normpath(root / entry["label"]))
        cid = _strip_ending(label.name)
        if image.is_file():
            images: tuple[Path, ...] = (image,)
        else:  # nnU-Net v1 converted layout: <case>_0000.nii.gz … listed as <case>.nii.gz
            stem, end = _strip_ending(image.name), image.name[len(_strip_ending(image.name)) :]
            images = tuple(image.with_name(f"{stem}_{c:04d}{end}") for c in range(n_channels))
            missing = [p for p in images if not p.is_file()]
            if missing:
                raise DataValidationError(image, f"file not found (listed in {meta_path.name}, training entry {i})")
        if not label.is_file():
            raise DataValidationError(label, f"file not found (listed in {meta_path.name}, training entry {i})")
        cases.append(CaseFiles(cid, images, label))
    return sorted(cases, key=lambda c: c.case_id)


def read_case(dataset: RawDataset, case: CaseFiles | str, *, channel: int = 0, validate: bool = True,
              allow_empty: bool = False) -> Volume:
    """Read one case of a :class:`RawDataset` (by :class:`CaseFiles` or case id)."""
    if isinstance(case, str):
        found = [c for c in dataset.cases if c.case_id == case]
        if not found:
            raise KeyError(f"case {case!r} not in dataset {dataset.root} (cases: {[c.case_id for c in dataset.cases]})")
        case = found[0]
    if len(case.images) == 1:  # MSD 4D file or a single-channel nnU-Net case
        image_path, ch = case.images[0], channel
    else:
        if not 0 <= channel < len(case.images):
            raise ValueError(f"channel {channel} out of range for case {case.case_id!r} with {len(case.images)} channels")
        image_path, ch = case.images[channel], 0
    return read_nifti_case(image_path, case.label, dataset.label_map, case.case_id, channel=ch,
                           validate=validate, allow_empty=allow_empty)


def iter_volumes(root: str | Path, *, channel: int = 0, validate: bool = True, allow_empty: bool = False):
    """Yield every training :class:`Volume` of an nnU-Net raw / MSD dataset folder."""
    ds = read_raw_dataset(root)
    for case in ds.cases:
        yield read_case(ds, case, channel=channel, validate=validate, allow_empty=allow_empty)


# --------------------------------------------------------------------------- 2D PNG + CSV lists


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
_SLICE_SUFFIX = re.compile(r"_(\d+)$")


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
            stem = _strip_ending(image.name)
            m = _SLICE_SUFFIX.search(stem)
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


def _mask_labels(raw: np.ndarray, rule: MaskRule, label_map: Mapping[str, int] | None, path: Path,
                 foreground_name: str) -> tuple[np.ndarray, dict[str, int]]:
    raw = as_label_array(raw, path)
    if rule == "nonzero":
        return (raw > 0).astype(np.uint8), {"background": 0, foreground_name: 1}
    if rule == "labels":
        if label_map is None:
            raise ValueError(f"{path}: mask_rule='labels' needs a label_map (e.g. {{'background': 0, 'gland': 255}})")
        known = set(label_map.values())
        present = set(np.unique(raw).tolist())
        unknown = sorted(present - known)
        if unknown:
            raise DataValidationError(path, f"mask values {unknown} are not in the label map {dict(label_map)}")
        return raw, dict(label_map)
    raise ValueError(f"mask_rule must be 'nonzero' or 'labels', got {rule!r}")


def load_slice(
    ref: SliceRef,
    *,
    mask_rule: MaskRule = "nonzero",
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
    mask_rule: MaskRule = "nonzero",
    label_map: Mapping[str, int] | None = None,
    foreground_name: str = "foreground",
) -> Slice2D:
    """Read a 2D image and its mask (PNG or any format Pillow reads).

    ``mask_rule`` makes the binarisation explicit (see :data:`MaskRule`): with
    ``"nonzero"`` the real prostate masks holding 254 and 255 both become the
    gland; with ``"labels"`` the stored values are kept and must be in ``label_map``.
    """
    image_path, mask_path = Path(image_path), Path(mask_path)
    image = _png_array(image_path, is_mask=False).astype(np.float32)
    raw_mask = _png_array(mask_path, is_mask=True)
    if raw_mask.shape != image.shape[:2]:
        raise DataValidationError(mask_path, f"mask shape {raw_mask.shape} differs from image shape {image.shape[:2]} ({image_path})")
    mask, lmap = _mask_labels(raw_mask, mask_rule, label_map, mask_path, foreground_name)
    if subject is None:
        subject = subject_from_path(image_path)
    return Slice2D(
        case_id=case_id or _strip_ending(image_path.name),
        subject=subject,
        image=image,
        mask=mask,
        label_map=lmap,
        image_path=image_path,
        mask_path=mask_path,
        slice_index=slice_index,
    )


# --------------------------------------------------------------------------- MedSAM .npz

_NPZ_IMAGE_KEYS = ("imgs", "image", "img")
_NPZ_MASK_KEYS = ("gts", "mask", "gt", "label")


def _first_key(npz: Mapping[str, np.ndarray], keys: Iterable[str], path: Path, what: str) -> np.ndarray:
    for key in keys:
        if key in npz:
            return np.asarray(npz[key])
    raise DataValidationError(path, f"no {what} array; expected one of {list(keys)}, found {list(npz)}")


def read_npz(
    path: str | Path,
    *,
    label_map: Mapping[str, int] | None = None,
    subject: str | None = None,
    mask_rule: MaskRule = "labels",
) -> Volume | Slice2D:
    """Read a MedSAM-style ``.npz`` (``imgs``/``gts``, or ``image``/``mask``).

    3D arrays ``(z, y, x)`` give a :class:`Volume` (spacing from a ``spacing``
    entry in SimpleITK order ``(sx, sy, sz)`` as MedSAM writes it; 1 mm with a
    warning when absent); 2D ``(y, x)`` or ``(y, x, 3)`` give a :class:`Slice2D`.
    Loaded with ``allow_pickle=False``: an archive never executes code.
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(path, "file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError) as err:
        raise DataValidationError(path, f"cannot be read as .npz (corrupt, or holds pickled objects): {err}") from err
    image = _first_key(data, _NPZ_IMAGE_KEYS, path, "image").astype(np.float32)
    raw_mask = _first_key(data, _NPZ_MASK_KEYS, path, "mask")
    case_id = path.stem
    is_2d = image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3 and raw_mask.ndim == 2)
    if is_2d:
        if raw_mask.shape != image.shape[:2]:
            raise DataValidationError(path, f"mask shape {raw_mask.shape} differs from image shape {image.shape[:2]}")
        mask, lmap = _mask_labels(raw_mask, mask_rule, label_map or _default_map(raw_mask), path, "foreground")
        if not np.isfinite(image).all():
            raise DataValidationError(path, "image holds NaN/inf intensities")
        m = _SLICE_SUFFIX.search(case_id)
        return Slice2D(case_id, subject or case_id, image, mask, lmap, path, path, int(m.group(1)) if m else -1)
    if image.ndim != 3:
        raise DataValidationError(path, f"image must be (y, x), (y, x, 3) or (z, y, x); got {image.shape}")
    if raw_mask.shape != image.shape:
        raise DataValidationError(path, f"mask shape {raw_mask.shape} differs from image shape {image.shape}")
    if "spacing" in data:
        sp = np.asarray(data["spacing"], dtype=float).ravel()
        if sp.size != 3:
            raise DataValidationError(path, f"spacing must have 3 values, got {sp.tolist()}")
        spacing = (float(sp[2]), float(sp[1]), float(sp[0]))
    else:
        warnings.warn(f"{path}: no 'spacing' entry; assuming 1 mm isotropic", stacklevel=2)
        spacing = (1.0, 1.0, 1.0)
    labels = as_label_array(raw_mask, path)
    lmap = dict(label_map) if label_map is not None else _default_map(labels)
    vol = Volume(case_id, image, labels, spacing, lmap, path, path)
    return validate_volume(vol, allow_empty=True)


def _default_map(mask: np.ndarray) -> dict[str, int]:
    """A label map naming each stored value, for archives that carry no map."""
    values = sorted({0, *np.unique(mask).astype(int).tolist()})
    return {("background" if v == 0 else f"label_{v}"): v for v in values}
