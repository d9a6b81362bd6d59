"""Which reader opens a given source: a registry of the formats samlab reads, as nnU-Net's ``imageio`` keeps one.

Why a registry: a profile or a user names a path -- a dataset folder, a slice list,
an archive -- and the right reader should follow from the path alone, with one
clear error naming the path when no reader fits. A new format is one new module
plus one :func:`register_format` call; nothing downstream changes, because every
reader returns :class:`~samlab.data.readers.base.Volume` /
:class:`~samlab.data.readers.base.Slice2D` (or a listing of them).

NIfTI image/label pairs are not a source of their own: they are the cases of an
nnU-Net raw / MSD folder, read by :func:`~samlab.data.readers.nifti.read_nifti_case`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from samlab.data.readers.base import DataValidationError
from samlab.data.readers.nnunet_raw import read_raw_dataset
from samlab.data.readers.npz import read_npz
from samlab.data.readers.png_csv import read_slice_list

__all__ = ["FORMATS", "SourceFormat", "format_of", "open_source", "register_format"]


@dataclass(frozen=True)
class SourceFormat:
    """One readable kind of source: how to recognise it from its path, and the function that reads it."""

    name: str
    description: str
    matches: Callable[[Path], bool]
    read: Callable[..., Any]


FORMATS: dict[str, SourceFormat] = {}


def register_format(fmt: SourceFormat) -> SourceFormat:
    """Add ``fmt`` to :data:`FORMATS` (a name may be registered once; formats are tried in registration order)."""
    if fmt.name in FORMATS:
        raise ValueError(f"reader format {fmt.name!r} is already registered")
    FORMATS[fmt.name] = fmt
    return fmt


register_format(SourceFormat(
    "nnunet_raw",
    "nnU-Net v2 raw or MSD dataset folder (dataset.json + NIfTI cases) -> RawDataset",
    lambda p: p.is_dir() and (p / "dataset.json").is_file(),
    read_raw_dataset,
))
register_format(SourceFormat(
    "png_csv",
    "finetune-SAM slice list (img_path,mask_path per line, PNG files) -> list[SliceRef]",
    lambda p: p.is_file() and p.suffix.lower() == ".csv",
    read_slice_list,
))
register_format(SourceFormat(
    "npz",
    "MedSAM .npz archive (imgs/gts) -> Volume (3D) or Slice2D (2D)",
    lambda p: p.is_file() and p.suffix.lower() == ".npz",
    read_npz,
))


def format_of(path: str | os.PathLike) -> SourceFormat:
    """The registered format that reads ``path``; :class:`DataValidationError` naming the path if none does."""
    path = Path(path)
    if not path.exists():
        raise DataValidationError(path, "not found")
    for fmt in FORMATS.values():
        if fmt.matches(path):
            return fmt
    known = "; ".join(f"{f.name}: {f.description}" for f in FORMATS.values())
    raise DataValidationError(path, f"no reader for this source (readable: {known})")


def open_source(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Read ``path`` with the reader its format calls for (``kwargs`` go to that reader)."""
    return format_of(path).read(path, **kwargs)
