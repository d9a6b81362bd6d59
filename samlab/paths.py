"""Where the project lives: the checkout root and run directories resolved from it.

Kept apart from :mod:`samlab.runner` (which executes notebooks) so that the profile checks, the
workspace and the report can find a run directory without importing the notebook runner.
"""
from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The checkout this package lives in (notebooks/ and params/ are found from here)."""
    here = Path(__file__).resolve().parent.parent
    if (here / "notebooks").is_dir():
        return here
    return Path.cwd()


def resolve_run_dir(run_dir: str | os.PathLike) -> Path:
    """Absolute run directory: relative paths are taken from the project root, not the notebook's folder."""
    path = Path(run_dir).expanduser()
    return path if path.is_absolute() else project_root() / path
