"""One fine-tuning configuration as a self-contained job file (run by ``python -m samlab.finetune_job --job``).

Why a job file: a configuration too large for one GPU (ViT-H, encoder + decoder) trains
under ``torchrun`` in processes of its own, one per GPU. Those processes cannot share
the notebook's objects, so everything they need -- the run directory (its split and
structures), the configuration, the recipe and the slice sampling -- is written to a
JSON file with the same fields and validation as notebook 04's parameters. Every rank
rebuilds the same model (seeded) and the same slices; rank 0 writes the checkpoints and
``result.json``; the notebook then loads ``best.pt`` and evaluates as usual
(:func:`samlab.finetune_job.run_job_distributed`).

This module holds only the job's *parameters* (what a job is, how it is read and
written); running one needs the run directory and lives above the engine, in
:mod:`samlab.finetune_job`.
"""
from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError, model_validator

from ..config import FinetuneParams
from ..io import read_json, write_json_atomic

RESULT_FILE = "result.json"


class TrainJob(FinetuneParams):
    """Notebook 04's parameters narrowed to one configuration, plus where its checkpoints go."""

    out_dir: str

    @model_validator(mode="after")
    def _one_configuration(self) -> "TrainJob":
        many = {k: v for k, v in (("models", self.models), ("scopes", self.scopes), ("methods", self.methods),
                                  ("modes", self.modes)) if len(v) != 1}
        if len(self.inits) > 1:
            many["inits"] = self.inits
        if many:
            raise ValueError(f"a training job is one configuration; these name several: {many}")
        return self

    @property
    def mode(self) -> str:
        """The job's one training mode."""
        return self.modes[0]

    @classmethod
    def read(cls, path: str | os.PathLike) -> "TrainJob":
        """Load and validate a job file; errors name the file and the bad field."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training job file {path} does not exist")
        data = read_json(path, "training job file")
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise ValueError(f"training job file {path} is invalid:\n{error}") from error

    def write(self, path: str | os.PathLike) -> Path:
        """Write the job atomically (a rank never reads a half-written file)."""
        return write_json_atomic(path, self.model_dump(mode="json"))
