"""Export a raw dataset and the study's split to nnU-Net's raw layout (``nnUNet_raw/DatasetXXX_Name``).

Why samlab exports instead of pointing nnU-Net at the source folder: nnU-Net
trains on everything in ``imagesTr``, so the test cases must move to ``imagesTs``
(their labels kept aside in ``labelsTs`` for evaluation only), and the split must
be the one notebook 01 wrote, read through :mod:`samlab.data.splits` like every
other notebook reads it.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from samlab.baselines.nnunet.layout import EXPORT_MANIFEST, MANIFEST, TRAINER_NAME, NnUNetRun
from samlab.data.splits import read_splits_json, validate_splits
from samlab.io import atomic_path, read_json, write_json_atomic, write_text_atomic

__all__ = ["export_dataset", "structures_from_dataset_json"]


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



def _nnunet_splits(splits: Mapping[str, Sequence[str]] | str | os.PathLike) -> dict[str, list[str]]:
    """The study's split (a ``splits.json`` path or a mapping), plus what nnU-Net's fold 0 needs on top."""
    if isinstance(splits, Mapping):
        source = "splits"
        split_map = validate_splits(splits, source)
    else:
        source = str(splits)
        split_map = read_splits_json(splits)
    if not split_map["train"]:
        raise ValueError(f"{source}['train'] is empty: nnU-Net needs training cases")
    if not split_map["val"]:
        raise ValueError(f"{source}['val'] is empty: nnU-Net's fold 0 needs validation cases")
    return split_map


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
    split_map = _nnunet_splits(splits)
    if not (isinstance(dataset_id, int) and 1 <= dataset_id <= 999):
        raise ValueError(f"dataset_id must be an integer in 1..999 (nnU-Net's three digits), got {dataset_id!r}")
    src_json = read_json(source / "dataset.json", "nnU-Net dataset.json")
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
    manifest_path = work / MANIFEST
    if manifest_path.is_file():
        old = read_json(manifest_path, "nnU-Net run manifest")
        if old.get("dataset_name") != name:
            raise ValueError(
                f"{work} already holds nnU-Net dataset {old.get('dataset_name')}; export {name} into a new work_dir"
            )
    export_info = {"source": str(source.resolve()), "splits": split_map, "dataset_name": name}
    if (run.raw_dir / EXPORT_MANIFEST).is_file():
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
    write_json_atomic(run.raw_dir / "dataset.json", dataset_json)
    write_json_atomic(run.raw_dir / EXPORT_MANIFEST, export_info)
    # nnU-Net finds trainers by class name; this folder (nnUNet_extTrainer) lets it find ours for inference.
    write_text_atomic(
        run.trainers_dir / "samlab_nnunet_trainers.py",
        '"""Makes samlab\'s nnU-Net trainer findable through nnUNet_extTrainer."""\n'
        f"from samlab.baselines._nnunet_worker import {TRAINER_NAME}  # noqa: F401\n",
    )
    write_json_atomic(manifest_path, {"dataset_id": dataset_id, "dataset_name": name})
    return run
