"""Atomic file writes: the one mechanism behind "nothing already written is lost".

Every output of the study (manifests, splits, results, checkpoints, cached
embeddings, NIfTI volumes) is written to a temporary file in the target's folder
and renamed over the target only once complete. A crash, a full disk or an
exception mid-write leaves the previous file untouched and no half-written one.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, else delete it.

    The temporary name keeps the target's suffixes (``.nii.gz``, ``.parquet``...)
    so writers that choose a format from the extension behave the same.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp_", suffix="".join(path.suffixes))
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: Any, **kwargs: Any) -> Path:
    kwargs.setdefault("indent", 2)
    return write_text_atomic(path, json.dumps(data, **kwargs) + "\n")
