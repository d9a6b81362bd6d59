"""Segmentation losses of the two recipes, built from MONAI's ``DiceLoss``.

Why MONAI: its ``DiceLoss`` with ``squared_pred=True`` is exactly the pelvic paper's
soft Dice ``1 - 2 sum(g s) / (sum g^2 + sum s^2)``, and with ``jaccard=True`` it is the
paper's soft IoU loss ``1 - sum(g s) / (sum g^2 + sum s^2 - sum(g s))`` (MONAI sets the
denominator to ``2 (G + S - I)``), so no loss formula is re-derived here. Both are
computed per image and averaged over the batch (``reduction="mean"``), with MONAI's
smoothing of 1e-5.

Box mode: one output channel and a binary target -> sigmoid Dice (+ soft IoU) and
``BCEWithLogits``. Automatic mode: one channel per class (background first) and a
class-index target -> softmax Dice over one-hot classes and ``CrossEntropy``.
The IoU-head term (LiteMedSAM's training script, not in the paper's equation) is the
MSE between the decoder's predicted IoU and the IoU of the thresholded mask; the
target carries no gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import monai_import  # noqa: F401  -- imports MONAI without a 4.5 s grammar build
from monai.losses import DiceLoss

_BINARY_DICE = DiceLoss(sigmoid=True, squared_pred=True, reduction="mean")
_BINARY_IOU = DiceLoss(sigmoid=True, squared_pred=True, jaccard=True, reduction="mean")
_MULTI_DICE = DiceLoss(softmax=True, to_onehot_y=True, squared_pred=True, reduction="mean")
_MULTI_IOU = DiceLoss(softmax=True, to_onehot_y=True, squared_pred=True, jaccard=True, reduction="mean")


def hard_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of ``logits > 0`` with a binary target, per image (B,); 1 when both are empty."""
    pred = logits.detach() > 0
    gt = target > 0.5
    dims = tuple(range(1, pred.ndim))
    inter = (pred & gt).sum(dims).float()
    union = (pred | gt).sum(dims).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def segmentation_loss(
    kind: str,
    logits: torch.Tensor,
    target: torch.Tensor,
    iou_pred: torch.Tensor | None = None,
    train_iou_head: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts.

    Args:
        kind: ``"dice_ce"`` or ``"dice_bce_iou"`` (see :class:`samlab.train.Recipe`).
        logits: (B, 1, H, W) for a binary target, (B, C, H, W) for class indices.
        target: (B, 1, H, W) float 0/1 (binary) or (B, H, W) long class indices.
        iou_pred: (B, 1) predicted IoU from the decoder (binary only).
        train_iou_head: add the MSE of ``iou_pred`` against the true IoU.
    """
    logits = logits.float()
    if kind not in ("dice_ce", "dice_bce_iou"):
        raise ValueError(f"unknown loss {kind!r}; use dice_ce or dice_bce_iou")
    parts: dict[str, torch.Tensor] = {}
    if target.ndim == logits.ndim:  # binary
        if logits.shape[1] != 1 or target.shape != logits.shape:
            raise ValueError(f"binary loss needs logits and target of shape (B, 1, H, W); got {tuple(logits.shape)} "
                             f"and {tuple(target.shape)}")
        target = target.float()
        parts["dice"] = _BINARY_DICE(logits, target)
        parts["bce"] = F.binary_cross_entropy_with_logits(logits, target)
        if kind == "dice_bce_iou":
            parts["iou"] = _BINARY_IOU(logits, target)
        if train_iou_head:
            if iou_pred is None:
                raise ValueError("train_iou_head needs the decoder's iou_pred")
            parts["iou_head"] = F.mse_loss(iou_pred[:, 0].float(), hard_iou(logits, target))
    else:  # class indices
        if target.ndim != logits.ndim - 1 or target.shape[1:] != logits.shape[2:]:
            raise ValueError(f"multi-class loss needs logits (B, C, H, W) and target (B, H, W); got "
                             f"{tuple(logits.shape)} and {tuple(target.shape)}")
        target = target.long()
        parts["dice"] = _MULTI_DICE(logits, target[:, None])
        parts["ce"] = F.cross_entropy(logits, target)
        if kind == "dice_bce_iou":
            parts["iou"] = _MULTI_IOU(logits, target[:, None])
    total = sum(parts.values())
    return total, {k: float(v.detach()) for k, v in parts.items()}
