"""Fine-tuning engine: recipes, losses, training data, the training loop and its checkpoints.

``samlab.train.train(loaded, train_slices, val_slices, structures, recipe, mode="box")``
fine-tunes a SAM-family model adapted with :func:`samlab.peft.apply_peft`; recipes are in
:data:`RECIPES` (``finetune_sam``, ``litemedsam_refine``). See :mod:`samlab.train.loop`.
"""
from .checkpoint import TrainCheckpointError, load_checkpoint, load_trainable_state, save_checkpoint, trainable_state
from .data import SliceRecord, TrainItem, class_values, make_items, slices_from_volume
from .losses import segmentation_loss
from .loop import BEST, LAST, TrainResult, decode, encoder_is_trainable, set_train_mode, to_original, train
from .recipes import RECIPES, Recipe, get_recipe

__all__ = [
    "BEST",
    "LAST",
    "RECIPES",
    "Recipe",
    "SliceRecord",
    "TrainCheckpointError",
    "TrainItem",
    "TrainResult",
    "class_values",
    "decode",
    "encoder_is_trainable",
    "get_recipe",
    "load_checkpoint",
    "load_trainable_state",
    "make_items",
    "save_checkpoint",
    "segmentation_loss",
    "set_train_mode",
    "slices_from_volume",
    "to_original",
    "train",
    "trainable_state",
]
