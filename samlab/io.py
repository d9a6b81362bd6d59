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
        if os.path.isfile(tmp):
            _apply_umask(Path(tmp))
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


class InputFileError(ValueError):
    """A file the user gave cannot be read as what it should be; the message names the file first."""


def _apply_umask(path: Path) -> None:
    """``mkstemp`` creates files 0600; give outputs the mode a plain ``open`` would (0666 less the umask),
    so collaborators on a shared cluster can read a run directory."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a JSON file; a missing or malformed file is an :class:`InputFileError` naming it and the problem.

    The one JSON reader of the package: every "read a JSON the user or an earlier step wrote" goes
    through here so that a broken file is reported with its path and the line/column of the error.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{path}: {what} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                             f"{exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: {what} cannot be read ({exc})") from None
