"""Many prompts on one image: the mask decoder's prompt-independent work done once, not once per prompt.

Why: every notebook that prompts (zero-shot, 3D propagation, interactive, the evaluation of fine-tuned
models) decodes several prompts against one slice's embedding. SAM's mask decoder (and LiteMedSAM's and
MedSAM's copies of it) first repeats the 64 x 64 image tokens and their positional encoding once per
prompt, then runs the two-way transformer on each copy. But until the first block's image-to-token
attention writes the tokens back, the image side does not depend on the prompt: the image tokens (plus
the dense prompt, which is the same "no mask" embedding for every box or click prompt), their key and
value projections for the token-to-image attention and their query projection for the image-to-token
attention are the same for every prompt. This module computes those once and lets broadcasting carry
them, and from the image-to-token attention's output on runs the upstream modules unchanged.

Measured by ``benchmarks/decoder_shared.py`` (per-prompt time, shared vs upstream, same rounds); equal
to the upstream decoder to float32 rounding (the projections of one image-token copy run as a smaller
GEMM), checked by ``tests/test_shared_decoder.py`` on LiteMedSAM's real weights, with a LoRA-adapted
decoder, and with prompts of every kind.

When it applies (:func:`shares_image_work`): one image embedding for all prompts, a dense prompt that is
the same for every prompt (an expanded tensor: no mask input), and a decoder whose first two-way block
still has the upstream attention modules (PEFT LoRA wraps their linear layers, which is fine; an
Adapter wraps the attention modules themselves, and then the upstream path runs). Anything else runs
the upstream ``mask_decoder(...)``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["decode_prompts", "shares_image_work"]

_BLOCK_ATTENTIONS = ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token")


def _is_upstream_attention(module: nn.Module) -> bool:
    return type(module).__name__ == "Attention" and all(
        hasattr(module, name) for name in ("q_proj", "k_proj", "v_proj", "out_proj", "num_heads", "_separate_heads",
                                           "_recombine_heads"))


def _decoder_qualifies(mask_decoder: nn.Module) -> bool:
    transformer = getattr(mask_decoder, "transformer", None)
    layers = getattr(transformer, "layers", None)
    if type(transformer).__name__ != "TwoWayTransformer" or not layers:
        return False
    first = layers[0]
    return (type(first).__name__ == "TwoWayAttentionBlock"
            and all(_is_upstream_attention(getattr(first, name, None)) for name in _BLOCK_ATTENTIONS)
            and hasattr(mask_decoder, "predict_masks") and hasattr(mask_decoder, "output_upscaling"))


def shares_image_work(mask_decoder: nn.Module, image_embeddings: torch.Tensor,
                      dense_prompt_embeddings: torch.Tensor) -> bool:
    """Whether :func:`decode_prompts` may share the image side (see the module docstring)."""
    dense_shared = dense_prompt_embeddings.shape[0] == 1 or dense_prompt_embeddings.stride(0) == 0
    return image_embeddings.shape[0] == 1 and dense_shared and _decoder_qualifies(mask_decoder)


def _attend(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Upstream ``Attention.forward`` on already projected q, k, v (batch dims broadcast), with its own head helpers."""
    q, k, v = (attn._separate_heads(t, attn.num_heads) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return attn.out_proj(attn._recombine_heads(weights @ v))


def _first_block(block: nn.Module, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                 key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``TwoWayAttentionBlock.forward`` with ``keys``/``key_pe`` of one image (1, HW, C) and N prompts' queries."""
    if block.skip_first_layer_pe:
        queries = block.self_attn(q=queries, k=queries, v=queries)
    else:
        q = queries + query_pe
        queries = queries + block.self_attn(q=q, k=q, v=queries)
    queries = block.norm1(queries)

    image = keys + key_pe  # once, not once per prompt
    to_image = block.cross_attn_token_to_image
    out = _attend(to_image, to_image.q_proj(queries + query_pe), to_image.k_proj(image), to_image.v_proj(keys))
    queries = block.norm2(queries + out)
    queries = block.norm3(queries + block.mlp(queries))

    to_token = block.cross_attn_image_to_token
    tokens = queries + query_pe
    out = _attend(to_token, to_token.q_proj(image), to_token.k_proj(tokens), to_token.v_proj(queries))
    keys = block.norm4(keys + out)  # (N, HW, C): from here on the image side is the prompt's own
    return queries, keys


def _shared_predict_masks(decoder: nn.Module, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                          sparse: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream ``MaskDecoder.predict_masks`` for N prompts on one image, image-side work shared."""
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1), sparse), dim=1)
    src = image_embeddings + dense[:1]
    _, c, h, w = src.shape
    transformer = decoder.transformer
    keys = src.flatten(2).transpose(1, 2)  # (1, HW, C)
    key_pe = image_pe.flatten(2).transpose(1, 2)
    queries, keys = _first_block(transformer.layers[0], tokens, keys, tokens, key_pe)
    for layer in transformer.layers[1:]:
        queries, keys = layer(queries=queries, keys=keys, query_pe=tokens, key_pe=key_pe)
    final = transformer.final_attn_token_to_image
    queries = transformer.norm_final_attn(queries + final(q=queries + tokens, k=keys + key_pe, v=keys))

    iou_token_out = queries[:, 0, :]
    mask_tokens_out = queries[:, 1:1 + decoder.num_mask_tokens, :]
    n = keys.shape[0]
    upscaled = decoder.output_upscaling(keys.transpose(1, 2).reshape(n, c, h, w))
    hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)],
                           dim=1)
    b, c2, h2, w2 = upscaled.shape
    masks = (hyper_in @ upscaled.reshape(b, c2, h2 * w2)).view(b, -1, h2, w2)
    return masks, decoder.iou_prediction_head(iou_token_out)


def decode_prompts(mask_decoder: nn.Module, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                   sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor,
                   multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``mask_decoder(...)`` with the same arguments and outputs; shares the image side where it may."""
    if not shares_image_work(mask_decoder, image_embeddings, dense_prompt_embeddings):
        return mask_decoder(image_embeddings=image_embeddings, image_pe=image_pe,
                            sparse_prompt_embeddings=sparse_prompt_embeddings,
                            dense_prompt_embeddings=dense_prompt_embeddings, multimask_output=multimask_output)
    masks, iou = _shared_predict_masks(mask_decoder, image_embeddings, image_pe, sparse_prompt_embeddings,
                                       dense_prompt_embeddings)
    chosen = slice(1, None) if multimask_output else slice(0, 1)
    return masks[:, chosen], iou[:, chosen]
