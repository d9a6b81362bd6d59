"""The shared file helpers: atomic writes keep the user's umask, JSON errors name the file."""
from __future__ import annotations

import os

import pytest

from samlab.io import InputFileError, read_json, write_json_atomic


def test_atomic_write_uses_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "out.json", {"a": 1})
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert read_json(path) == {"a": 1}


def test_read_json_names_file_and_position(tmp_path):
    bad = tmp_path / "dataset.json"
    bad.write_text('{"labels": {"background": 0,}')
    with pytest.raises(InputFileError, match=r"dataset\.json: dataset description is not valid JSON \(line 1"):
        read_json(bad, "dataset description")
    with pytest.raises(InputFileError, match="not found"):
        read_json(tmp_path / "missing.json")
