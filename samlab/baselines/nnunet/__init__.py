"""nnU-Net v2 baseline: profiles, export, plan + preprocess, train, predict, evaluate, boxes.

The pelvic zero-shot study benchmarks MedSAM against nnU-Net v2 ``3d_fullres``
(1000 epochs, SGD lr 0.01, batch 2, single train/validation split) and uses
nnU-Net's predictions as a source of box prompts. This package drives the real,
installed ``nnunetv2`` package -- nothing of nnU-Net is re-implemented -- so that
the baseline is the one the field knows.

One file per job, imports pointing down the list:

* :mod:`.profiles` -- :class:`NnUNetProfile`, the named ``smoke``/``quick``/``paper`` settings;
* :mod:`.layout` -- :class:`NnUNetRun`, the run directory's paths and manifests;
* :mod:`.export` -- the raw dataset + the study's split (via :mod:`samlab.data.splits`) to nnU-Net's layout;
* :mod:`.pipeline` -- plan/preprocess, train, predict, each in a worker subprocess
  (:mod:`samlab.baselines._nnunet_worker`);
* :mod:`.evaluate` -- tidy results rows from the test predictions;
* :mod:`.boxes` -- box prompts from the predictions and their CSV;
* :mod:`.baseline` -- :func:`run_baseline`, everything in one call (notebook 03).
"""
from __future__ import annotations

from samlab.baselines.nnunet.baseline import NnUNetBaseline, run_baseline
from samlab.baselines.nnunet.boxes import BOX_COLUMNS, boxes_from_label_volume, derive_boxes, load_boxes, write_boxes
from samlab.baselines.nnunet.evaluate import evaluate
from samlab.baselines.nnunet.export import export_dataset, structures_from_dataset_json
from samlab.baselines.nnunet.layout import PLANS_NAME, TRAINER_NAME, NnUNetError, NnUNetRun
from samlab.baselines.nnunet.pipeline import plan_and_preprocess, predict, train
from samlab.baselines.nnunet.profiles import PROFILES, NnUNetProfile, get_profile

__all__ = [
    "BOX_COLUMNS",
    "NnUNetBaseline",
    "NnUNetError",
    "NnUNetProfile",
    "NnUNetRun",
    "PLANS_NAME",
    "PROFILES",
    "TRAINER_NAME",
    "boxes_from_label_volume",
    "derive_boxes",
    "evaluate",
    "export_dataset",
    "get_profile",
    "load_boxes",
    "plan_and_preprocess",
    "predict",
    "run_baseline",
    "structures_from_dataset_json",
    "train",
    "write_boxes",
]
