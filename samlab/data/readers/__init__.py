"""Readers for the image formats the two reproduced studies use, one module per format.

Why several readers behind one import: the pelvic study reads 3D NIfTI volumes in
the nnU-Net raw / Medical Segmentation Decathlon (MSD) layout, the 18-config
study reads 2D PNG slices listed in CSV files, and MedSAM's own tooling exchanges
``.npz`` archives. Every reader returns the same two containers so that everything
downstream (preprocessing, splits, the manifest) is format-agnostic:

* :class:`Volume` -- a 3D image with labels, ``(z, y, x)`` arrays, spacing
  ``(sz, sy, sx)`` in millimetres read from the file header via SimpleITK;
* :class:`Slice2D` -- one 2D image with its mask, ``(y, x)`` arrays, and the
  patient it came from (needed for patient-level splits).

Modules: :mod:`.base` (containers, the error), :mod:`.labels` (label checks),
:mod:`.nifti`, :mod:`.nnunet_raw` (nnU-Net raw and MSD folders), :mod:`.png_csv`,
:mod:`.npz`, and :mod:`.registry` (which reader opens a given path).

Bad input never passes silently: every problem raises :class:`DataValidationError`
naming the file and what is wrong with it (missing file, corrupt NIfTI, shape or
spacing mismatch between image and labels, non-integral or out-of-map labels,
NaN/inf intensities, empty label maps).
"""
from __future__ import annotations

from samlab.data.readers.base import CaseFiles, DataValidationError, MaskRule, RawDataset, Slice2D, Volume
from samlab.data.readers.labels import as_label_array, validate_volume
from samlab.data.readers.nifti import read_nifti_case
from samlab.data.readers.nnunet_raw import iter_volumes, read_case, read_raw_dataset
from samlab.data.readers.npz import read_npz
from samlab.data.readers.png_csv import SliceRef, load_slice, read_png_pair, read_slice_list, subject_from_path
from samlab.data.readers.registry import FORMATS, SourceFormat, format_of, open_source, register_format

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
    "FORMATS",
    "SourceFormat",
    "format_of",
    "open_source",
    "register_format",
]
