"""Fine-tuning engine: recipes, losses, training data, the training loop and its checkpoints.

``samlab.train.train(loaded, train_slices, val_slices, structures, recipe, mode="box")``
fine-tunes a SAM-family model adapted with :func:`samlab.peft.apply_peft`; recipes are in
:data:`RECIPES` (``finetune_sam``, ``litemedsam_refine``). See :mod:`samlab.train.loop`.

Layout (one job per file): ``configs`` (a grid configuration and the model it builds),
``data`` (slices, items, augmentations), ``forward`` (the model's training forward and
train mode), ``losses``, ``recipes``, ``loop`` (the loop), ``checkpoint``, ``distributed``
(DDP helpers), ``job`` (a job file's parameters), ``launch`` (torchrun). Nothing here
imports the notebook API (``finetune``, ``fewshot``, ``sweep``, ``workspace``):
``tests/test_layers.py`` checks it.
"""
from .checkpoint import TrainCheckpointError, load_checkpoint, load_trainable_state, save_checkpoint, trainable_state
from .configs import GridConfig, build_model, make_grid
from .data import SliceRecord, TrainItem, class_values, make_items, sample_slices, slices_from_volume
from .forward import decode, encoder_is_trainable, set_train_mode, to_original
from .losses import segmentation_loss
from .loop import BEST, LAST, TrainResult, train
from .recipes import RECIPES, Recipe, get_recipe

__all__ = [
    "BEST",
    "GridConfig",
    "LAST",
    "RECIPES",
    "Recipe",
    "SliceRecord",
    "TrainCheckpointError",
    "TrainItem",
    "TrainResult",
    "build_model",
    "class_values",
    "decode",
    "encoder_is_trainable",
    "get_recipe",
    "load_checkpoint",
    "load_trainable_state",
    "make_grid",
    "make_items",
    "save_checkpoint",
    "sample_slices",
    "segmentation_loss",
    "set_train_mode",
    "slices_from_volume",
    "to_original",
    "train",
    "trainable_state",
]
