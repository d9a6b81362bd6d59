"""Data curation: the one call notebook 01 makes.

:func:`curate_nnunet_raw` reads every case of an nnU-Net raw / MSD folder (the
phantom or real data travel the same path), validates it, splits the patients,
and writes the two files every later notebook reads:

* ``out_dir/manifest.csv`` -- every case and slice (:mod:`samlab.data.manifest`);
* ``out_dir/splits.json`` -- ``{"train": [case ids], "val": [...], "test": [...]}``.

Why validate everything before writing anything: a study that silently skips a
corrupt case changes its denominator. All bad cases are reported together, each
with its file and problem, and no output is (over)written until all are good.

An evaluation structure missing from a case is not an error but a fact about the
case: the manifest records, per case and slice, which structures are present
(``present_structures``), and later notebooks skip the absent ones instead of
scoring them (see :mod:`samlab.metrics`). A case whose whole label volume is
empty is kept the same way, with every structure absent, and a printed note.

:func:`curate_slice_lists` does the same for 2D PNG slice lists (the
finetune-SAM CSV format) and reports patient-level leakage between the lists.
:func:`convert_paired_to_nnunet_raw` turns the pelvic MR download
(``<uid>_img.nii`` / ``<uid>_mask.nii``) into the nnU-Net raw layout.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from samlab.data.download import file_digest
from samlab.io import atomic_path, write_json_atomic
from samlab.data.manifest import (
    INTENSITY_COLUMN,
    ORIENTATION_COLUMN,
    PRESENT_COLUMN,
    build_manifest,
    count_column,
    format_structures,
    present_structures,
    slice2d_row,
    volume_rows,
    write_manifest,
)
from samlab.data.orientation import reorient_volume
from samlab.data.preprocess import ct_window_range, intensity_clip_range, remove_small_objects, remove_small_objects_per_slice
from samlab.data.readers import (
    DataValidationError,
    MaskRule,
    as_label_array,
    load_slice,
    read_case,
    read_raw_dataset,
    read_slice_list,
)
from samlab.data.splits import (
    SPLIT_NAMES,
    LeakageError,
    assert_no_leakage,
    find_leaks,
    split_patients,
    write_splits_json,
)

__all__ = [
    "CurationResult",
    "curate_nnunet_raw",
    "curate_slice_lists",
    "convert_paired_to_nnunet_raw",
]


@dataclass(frozen=True)
class CurationResult:
    """What curation produced: the tables for the notebook and the paths of the files written."""

    manifest: pd.DataFrame  # every case (slice = -1) and slice
    splits: dict[str, list[str]]  # the content of splits.json
    cases: pd.DataFrame  # one row per case: subject, split, shape, spacing, slice counts, voxel counts
    summary: pd.DataFrame  # one row per split: patients, cases, slices, usable slices, voxels per label
    label_map: dict[str, int]
    manifest_path: Path
    splits_path: Path
    leaks: dict[str, list[str]]  # patients found in more than one split (empty unless tolerated)


def _progress(iterable, total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False)


def _subject_fn(subject_of: Mapping[str, str] | Callable[[str], str] | None) -> Callable[[str], str]:
    if subject_of is None:
        return lambda cid: cid
    if callable(subject_of):
        return subject_of

    def lookup(cid: str) -> str:
        if cid not in subject_of:
            raise ValueError(f"the subject mapping (subject_csv) has no patient for case {cid!r}")
        return subject_of[cid]

    return lookup


def curate_nnunet_raw(
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str | Mapping[str, float] = "pelvic",
    seed: int = 0,
    min_object_px: int = 100,
    *,
    dataset: str | None = None,
    subject_of: Mapping[str, str] | Callable[[str], str] | None = None,
    strata: Mapping[str, Hashable] | None = None,
    include_slices: bool = True,
    channel: int = 0,
    allow_empty: bool = True,
    structures: Mapping[str, Sequence[int]] | None = None,
    progress: bool = True,
    resample_labels: bool = False,
    orientation: str = "as_stored",
    intensity: str = "percentile_nonzero",
    ct_window: str | Sequence[float] | None = None,
) -> CurationResult:
    """Validate an nnU-Net raw / MSD folder, split it by patient and write manifest + splits.

    ``split`` is a scheme of :mod:`samlab.data.splits` (``"pelvic"``: 80:20 then
    80:20; ``"finetune_sam"``: 7:1:2) or explicit fractions. ``subject_of`` maps a
    case id to its patient (default: each case is its own patient). ``min_object_px``
    marks, per slice, whether any labelled object of at least that many pixels
    remains (column ``usable``); labels on disk are never modified. Raises
    :class:`DataValidationError` listing every bad file before writing anything.

    ``structures`` (name -> label values; default one per non-background label)
    are the evaluation structures whose presence is recorded per case and slice
    (manifest column ``present_structures``, and ``present_structures`` /
    ``n_absent_structures`` in the cases table). A case with an empty label volume
    is recorded with every structure absent and a printed note; ``allow_empty=False``
    makes it a validation error instead.

    ``orientation`` (:mod:`samlab.data.orientation`): ``as_stored`` slices the
    SimpleITK array as stored (MedSAM's convention), ``RAS`` / ``LPS`` re-orient
    image and label first; the manifest's ``slice`` indexes the chosen orientation.
    ``intensity`` / ``ct_window`` (:func:`samlab.data.preprocess.intensity_clip_range`)
    name the clip of the model inputs; each case's ``clip_low`` / ``clip_high`` is in
    the cases table. Both are recorded in every manifest row (columns ``orientation``,
    ``intensity``); later notebooks read them from the run's dataset record.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    intensity_label = intensity if intensity != "ct_window" else \
        "ct_window:" + ",".join(f"{v:g}" for v in _ct_range(ct_window))
    ds = read_raw_dataset(raw_dir, resample_labels=resample_labels)  # opt-in: see read_nifti_case
    name = dataset or ds.name
    subject = _subject_fn(subject_of)
    if structures is None:
        structures = {k: (v,) for k, v in ds.label_map.items() if v != 0}
    structures = {str(k): tuple(int(v) for v in vals) for k, vals in structures.items()}
    errors: list[DataValidationError] = []
    records: list[tuple] = []
    for case in _progress(ds.cases, len(ds.cases), f"validating {name}", progress):
        try:
            vol = reorient_volume(read_case(ds, case, channel=channel, validate=True, allow_empty=allow_empty),
                                  orientation)
        except DataValidationError as err:
            errors.append(err)
            continue
        clean = remove_small_objects_per_slice(vol.labels, min_object_px) if min_object_px > 0 else vol.labels
        fg_clean = clean.reshape(clean.shape[0], -1).astype(bool).sum(axis=1)
        nonempty = vol.labels.reshape(vol.labels.shape[0], -1).any(axis=1)
        records.append((vol, fg_clean, nonempty, file_digest(vol.path), file_digest(vol.label_path)))
    if errors:
        listing = "\n".join(f"  - {e}" for e in errors)
        err = DataValidationError(errors[0].path, f"{len(errors)} of {len(ds.cases)} case(s) failed validation "
                                  f"in {raw_dir}:\n{listing}")
        err.errors = errors  # type: ignore[attr-defined]
        raise err

    case_ids = [r[0].case_id for r in records]
    subjects = {cid: str(subject(cid)) for cid in case_ids}
    patient_splits = split_patients(sorted(set(subjects.values())), split, seed, strata=strata)
    split_of_patient = {p: s for s, ps in patient_splits.items() for p in ps}
    splits = {s: sorted(cid for cid in case_ids if split_of_patient[subjects[cid]] == s) for s in SPLIT_NAMES}
    assert_no_leakage(splits, subjects)

    rows, case_rows = [], []
    for vol, fg_clean, nonempty, img_sha, lab_sha in records:
        cid = vol.case_id
        s = split_of_patient[subjects[cid]]
        usable = fg_clean > 0
        present = present_structures(vol.labels, structures)
        per_slice = [format_structures(present_structures(z, structures)) for z in vol.labels] if include_slices else []
        rows += volume_rows(
            vol, dataset=name, subject=subjects[cid], split=s, image_sha256=img_sha, label_sha256=lab_sha,
            include_slices=include_slices,
            slice_extra={"n_foreground_clean": fg_clean.tolist(), "usable": usable.tolist(),
                         PRESENT_COLUMN: per_slice} if include_slices else None,
            volume_extra={"n_foreground_clean": int(fg_clean.sum()), "usable": bool(usable.any()),
                          PRESENT_COLUMN: format_structures(present)},
        )
        for row in rows[-(1 + (vol.labels.shape[0] if include_slices else 0)):]:
            row[ORIENTATION_COLUMN], row[INTENSITY_COLUMN] = orientation, intensity_label
        clip_low, clip_high = intensity_clip_range(vol.image, intensity, window=ct_window)
        counts = np.bincount(vol.labels.ravel(), minlength=256)
        case_rows.append({
            "case_id": cid, "subject": subjects[cid], "split": s,
            "shape": vol.labels.shape, "spacing": vol.spacing,
            "n_slices": int(vol.labels.shape[0]), "n_nonempty_slices": int(nonempty.sum()),
            "n_usable_slices": int(usable.sum()),
            **{count_column(k): int(counts[v]) for k, v in ds.label_map.items()},
            PRESENT_COLUMN: format_structures(present), "n_absent_structures": len(structures) - len(present),
            "clip_low": clip_low, "clip_high": clip_high,
        })
    _note_absent(case_rows, structures)
    manifest = build_manifest(rows)
    cases = pd.DataFrame(case_rows)
    summary = _summary(cases, ds.label_map)

    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = write_manifest(manifest, out_dir / "manifest.csv")
    splits_path = write_splits_json(splits, out_dir / "splits.json")
    return CurationResult(manifest, splits, cases, summary, dict(ds.label_map), manifest_path, splits_path, {})


def _ct_range(window: str | Sequence[float] | None) -> tuple[float, float]:
    if window is None:
        raise ValueError("intensity 'ct_window' needs ct_window: soft_tissue, lung, brain, bone or [low, high]")
    return ct_window_range(window)


def _note_absent(case_rows: list[dict], structures: Mapping[str, Sequence[int]]) -> None:
    """Print which cases have an empty label volume and how many (case, structure) pairs are absent."""
    empty = [r["case_id"] for r in case_rows if r["n_nonempty_slices"] == 0]
    if empty:
        print(f"NOTE: {len(empty)} case(s) have an empty label volume, recorded with all {len(structures)} "
              f"structure(s) absent (not scored): {', '.join(empty)}")
    n_absent = sum(r["n_absent_structures"] for r in case_rows)
    if n_absent:
        print(f"NOTE: {n_absent} (case, structure) pair(s) absent from the labels (see {PRESENT_COLUMN} in the "
              "manifest); they are not scored")


def _summary(cases: pd.DataFrame, label_map: Mapping[str, int]) -> pd.DataFrame:
    count_cols = [count_column(k) for k in label_map]
    agg = {"subject": "nunique", "case_id": "count", "n_slices": "sum", "n_nonempty_slices": "sum",
           "n_usable_slices": "sum", "n_absent_structures": "sum", **{c: "sum" for c in count_cols}}
    agg = {k: v for k, v in agg.items() if k in cases.columns}
    table = cases.groupby("split").agg(agg).rename(columns={"subject": "n_patients", "case_id": "n_cases"})
    table = table.reindex([s for s in SPLIT_NAMES if s in table.index])
    total = table.sum(numeric_only=True).to_frame("total").T
    total["n_patients"] = cases["subject"].nunique()
    return pd.concat([table, total]).rename_axis("split").reset_index()


# --------------------------------------------------------------------------- 2D slice lists


def curate_slice_lists(
    dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    lists: Mapping[str, str | os.PathLike] | None = None,
    *,
    resplit: str | Mapping[str, float] | None = None,
    seed: int = 0,
    mask_rule: MaskRule = "nonzero",
    label_map: Mapping[str, int] | None = None,
    foreground_name: str = "foreground",
    min_object_px: int = 0,
    on_leakage: Literal["raise", "warn"] = "raise",
    dataset: str | None = None,
    progress: bool = True,
    subject_pattern: str | None = None,
) -> CurationResult:
    """Curate 2D PNG slices listed in finetune-SAM CSV files into manifest + splits.

    ``lists`` maps split name -> CSV (default: ``train_5shot.csv`` / ``val_5shot.csv``
    when present). With ``resplit`` (a split scheme), the listed slices are pooled
    and re-split *by patient* instead. The shipped lists of the real prostate
    slices share patient77 between train and val: that leakage raises
    :class:`~samlab.data.splits.LeakageError` unless ``on_leakage="warn"``, in
    which case it is reported in ``CurationResult.leaks`` and the files are written.
    ``subject_pattern`` (a regex, default :func:`~samlab.data.readers.read_slice_list`'s
    ``patient\\d+``) finds the patient in each image path.
    """
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    if lists is None:
        lists = {s: dataset_dir / f"{s}_5shot.csv" for s in ("train", "val", "test")
                 if (dataset_dir / f"{s}_5shot.csv").is_file()}
        if not lists:
            raise DataValidationError(dataset_dir, "no train_5shot.csv / val_5shot.csv found; pass lists=")
    unknown = set(lists) - set(SPLIT_NAMES)
    if unknown:
        raise ValueError(f"unknown split name(s) {sorted(unknown)} in lists; expected {SPLIT_NAMES}")
    pattern = {} if subject_pattern is None else {"subject_pattern": subject_pattern}
    listed = {s: read_slice_list(Path(p), dataset_dir, **pattern) for s, p in lists.items()}
    refs = [(s, r) for s, rs in listed.items() for r in rs]
    subjects = {r.case_id: r.subject for _, r in refs}
    if resplit is not None:
        patient_splits = split_patients(sorted(set(subjects.values())), resplit, seed)
        where = {p: s for s, ps in patient_splits.items() for p in ps}
        refs = [(where[r.subject], r) for _, r in refs]
    splits = {s: sorted({r.case_id for t, r in refs if t == s}) for s in SPLIT_NAMES}
    leaks = find_leaks(splits, subjects)
    if leaks:
        try:
            assert_no_leakage(splits, subjects)
        except LeakageError as err:
            if on_leakage == "raise":
                raise
            warnings.warn(str(err), stacklevel=2)

    rows, case_rows, errors = [], [], []
    lmap: dict[str, int] = {}
    for s, ref in _progress(refs, len(refs), "reading slices", progress):
        try:
            sl = load_slice(ref, mask_rule=mask_rule, label_map=label_map, foreground_name=foreground_name)
            if not np.isfinite(sl.image).all():
                raise DataValidationError(ref.image_path, "image holds NaN/inf intensities")
        except DataValidationError as err:
            errors.append(err)
            continue
        lmap = sl.label_map
        clean = remove_small_objects(sl.mask, min_object_px) if min_object_px > 0 else sl.mask
        n_clean = int((clean > 0).sum())
        extra = {"n_foreground_clean": n_clean, "usable": n_clean > 0}
        rows.append(slice2d_row(sl, dataset=dataset or dataset_dir.name, split=s,
                                image_sha256=file_digest(ref.image_path), label_sha256=file_digest(ref.mask_path),
                                extra=extra))
        counts = np.bincount(as_label_array(sl.mask).ravel(), minlength=256)
        case_rows.append({"case_id": sl.case_id, "subject": sl.subject, "split": s, "shape": sl.mask.shape,
                          "spacing": sl.spacing, "n_slices": 1, "n_nonempty_slices": int(sl.mask.any()),
                          "n_usable_slices": int(n_clean > 0),
                          **{count_column(k): int(counts[v]) for k, v in sl.label_map.items()}})
    if errors:
        listing = "\n".join(f"  - {e}" for e in errors)
        raise DataValidationError(errors[0].path, f"{len(errors)} of {len(refs)} slice(s) failed validation:\n{listing}")
    manifest = build_manifest(rows)
    cases = pd.DataFrame(case_rows)
    summary = _summary(cases, lmap)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = write_manifest(manifest, out_dir / "manifest.csv")
    splits_path = write_splits_json(splits, out_dir / "splits.json")
    return CurationResult(manifest, splits, cases, summary, lmap, manifest_path, splits_path, leaks)


# --------------------------------------------------------------------------- layout conversion


def convert_paired_to_nnunet_raw(
    src_dir: str | os.PathLike,
    dst_dir: str | os.PathLike,
    label_map: Mapping[str, int],
    *,
    image_suffix: str = "_img.nii",
    label_suffix: str = "_mask.nii",
    case_prefix: str = "",
    dataset_name: str = "PelvicMR",
    progress: bool = True,
) -> Path:
    """Rewrite ``<uid><image_suffix>`` / ``<uid><label_suffix>`` pairs as an nnU-Net v2 raw folder.

    This is the layout of the pelvic MR download (Zenodo 7013610). Files are
    re-written as ``.nii.gz`` through SimpleITK (geometry preserved), each to a
    temporary name then renamed; ``dataset.json`` is written last, so a folder
    with a ``dataset.json`` is complete. Unpaired files raise naming the file.
    """
    import SimpleITK as sitk

    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not src_dir.is_dir():
        raise DataValidationError(src_dir, "folder not found")
    images = {p.name[: -len(image_suffix)]: p for p in src_dir.iterdir() if p.name.endswith(image_suffix)}
    labels = {p.name[: -len(label_suffix)]: p for p in src_dir.iterdir() if p.name.endswith(label_suffix)}
    for uid in sorted(set(images) ^ set(labels)):
        missing = src_dir / (uid + (label_suffix if uid in images else image_suffix))
        raise DataValidationError(missing, "file not found (unpaired case)")
    if not images:
        raise DataValidationError(src_dir, f"no '*{image_suffix}' files found")
    (dst_dir / "imagesTr").mkdir(parents=True, exist_ok=True)
    (dst_dir / "labelsTr").mkdir(parents=True, exist_ok=True)

    def rewrite(src: Path, dst: Path) -> None:
        try:
            img = sitk.ReadImage(str(src))
        except RuntimeError as err:
            raise DataValidationError(src, f"cannot be read as an image: {str(err).strip().splitlines()[-1]}") from err
        with atomic_path(dst) as tmp:
            sitk.WriteImage(img, str(tmp), useCompression=True)

    uids = sorted(images)
    for uid in _progress(uids, len(uids), "converting", progress):
        cid = f"{case_prefix}{uid}"
        rewrite(images[uid], dst_dir / "imagesTr" / f"{cid}_0000.nii.gz")
        rewrite(labels[uid], dst_dir / "labelsTr" / f"{cid}.nii.gz")
    meta = {"name": dataset_name, "channel_names": {"0": "T2"}, "labels": dict(label_map),
            "numTraining": len(uids), "file_ending": ".nii.gz", "source": str(src_dir)}
    write_json_atomic(dst_dir / "dataset.json", meta)
    return dst_dir
