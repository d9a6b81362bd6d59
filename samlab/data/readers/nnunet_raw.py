"""nnU-Net v2 raw and Medical Segmentation Decathlon (MSD) dataset folders: ``dataset.json`` + cases.

Both layouts describe a dataset with a ``dataset.json``; they differ in how labels
are spelt and how cases are found (see :func:`read_raw_dataset`). Each case is then
read by :func:`samlab.data.readers.nifti.read_nifti_case`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

from samlab.data.readers.base import CaseFiles, DataValidationError, RawDataset, Volume, strip_ending
from samlab.data.readers.nifti import read_nifti_case
from samlab.io import InputFileError, read_json

__all__ = ["iter_volumes", "read_case", "read_raw_dataset"]


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


def read_raw_dataset(root: str | Path, *, resample_labels: bool = False) -> RawDataset:
    """Parse ``root/dataset.json`` and list every training case found on disk.

    Two layouts are accepted:

    * nnU-Net v2 raw: ``labels`` is ``{name: value}``, cases are discovered as
      ``imagesTr/<case>_0000<file_ending>`` + ``labelsTr/<case><file_ending>``;
    * MSD / nnU-Net v1: a ``training`` list of ``{"image", "label"}`` paths and
      ``labels`` as ``{"0": "background"}``. Multi-modal MSD images are 4D files
      (one path per case); nnU-Net v1 converted sets split them into ``_0000``…
      files, which are found when the listed path itself is absent.

    A case with only an image or only a label is an error naming the missing file.
    ``resample_labels`` is kept on the dataset and passed to every case read (see
    :func:`~samlab.data.readers.nifti.read_nifti_case`): the explicit opt-in that
    resamples a label whose grid differs from its image instead of refusing it.
    """
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise DataValidationError(meta_path, "file not found (expected an nnU-Net raw / MSD dataset folder)")
    try:
        meta = read_json(meta_path, "dataset.json")
    except InputFileError as err:  # keep this module's one error type, still naming file, line and column
        raise DataValidationError(meta_path, str(err).removeprefix(f"{meta_path}: ")) from None
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
    return RawDataset(root, name, label_map, tuple(cases), channel_names, file_ending, layout, resample_labels)


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
        cid = strip_ending(label.name)
        if image.is_file():
            images: tuple[Path, ...] = (image,)
        else:  # nnU-Net v1 converted layout: <case>_0000.nii.gz … listed as <case>.nii.gz
            stem, end = strip_ending(image.name), image.name[len(strip_ending(image.name)) :]
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
    # one file per channel (nnU-Net v2) holds 1; an MSD 4D file holds every declared channel
    expected = len(dataset.channel_names) if len(case.images) == 1 else 1
    return read_nifti_case(image_path, case.label, dataset.label_map, case.case_id, channel=ch,
                           validate=validate, allow_empty=allow_empty, resample_labels=dataset.resample_labels,
                           expected_channels=expected)


def iter_volumes(
    root: str | Path, *, channel: int = 0, validate: bool = True, allow_empty: bool = False,
    resample_labels: bool = False,
) -> Iterator[Volume]:
    """Yield every training :class:`Volume` of an nnU-Net raw / MSD dataset folder."""
    ds = read_raw_dataset(root, resample_labels=resample_labels)
    for case in ds.cases:
        yield read_case(ds, case, channel=channel, validate=validate, allow_empty=allow_empty)
