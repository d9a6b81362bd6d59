"""The mask decoder's image tokens laid out token-major: the same arithmetic, fewer memory copies.

Why: SAM's mask decoder (and LiteMedSAM's and MedSAM's copies of it) flattens the B x C x H x W image
embedding to B x HW x C with ``flatten(2).permute(0, 2, 1)``. On a row-major (NCHW) tensor that view is
strided, so every add and linear layer of the two-way transformer first copies it; on a 2-core CPU those
copies and strided adds were ~60 % of a decode (torch profiler, 8 prompts). Handing the transformer its
inputs in channels_last memory format makes the same view contiguous: one copy per call instead of one per
operation, and the same outputs at inference: bit-identical where the CPU's GEMM kernels treat both layouts
alike (Intel AVX-512/AMX), equal to float32 rounding where they do not (an AVX2 AMD EPYC: up to 9e-6 on logits
of about 20); checked by ``tests/test_decoder_layout.py`` on LiteMedSAM's real weights, measured by
``benchmarks/decoder_layout.py``. In training the gradients agree to float rounding: their sums over the 4096
image tokens run in another order.

Applied by :func:`samlab.models.registry.load_model` to every model it builds, so zero-shot, 3D propagation,
interactive and training decode the same way. A forward pre-hook keeps the upstream module code untouched.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["use_token_major_layout", "remove_token_major_layout", "uses_token_major_layout"]

_HANDLE = "_samlab_token_major_handle"


def _to_channels_last(module: nn.Module, args: tuple) -> tuple:
    image_embedding, image_pe, *rest = args
    return (image_embedding.contiguous(memory_format=torch.channels_last),
            image_pe.contiguous(memory_format=torch.channels_last), *rest)


def use_token_major_layout(mask_decoder: nn.Module) -> bool:
    """Give ``mask_decoder.transformer`` channels_last inputs; idempotent. False if it has no such transformer.

    Only SAM-style decoders qualify: a ``transformer`` called as ``transformer(image_embedding, image_pe,
    tokens)`` with 4-D image tensors. Anything else is left alone.
    """
    transformer = getattr(mask_decoder, "transformer", None)
    if transformer is None or not hasattr(transformer, "layers"):
        return False
    if getattr(transformer, _HANDLE, None) is None:
        setattr(transformer, _HANDLE, transformer.register_forward_pre_hook(_to_channels_last))
    return True


def remove_token_major_layout(mask_decoder: nn.Module) -> None:
    """Back to the upstream layout (for the benchmark's plain path and the equality test)."""
    transformer = getattr(mask_decoder, "transformer", None)
    handle = getattr(transformer, _HANDLE, None)
    if handle is not None:
        handle.remove()
        setattr(transformer, _HANDLE, None)


def uses_token_major_layout(mask_decoder: nn.Module) -> bool:
    return getattr(getattr(mask_decoder, "transformer", None), _HANDLE, None) is not None
