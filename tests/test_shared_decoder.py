"""Many prompts on one image (samlab.models.shared_decoder) give what the upstream mask decoder gives.

Real LiteMedSAM weights on a phantom slice; boxes, clicks (with background and padding labels) and no
prompt, single and multimask; a LoRA-adapted decoder (LoRA weights made non-zero, so the adapted path is
really exercised); SAM's own decoder class (random weights: only the two code paths are compared). The
outputs are compared to float32 rounding (1e-5 of the largest logit) and the masks must be identical;
where sharing is not allowed (an Adapter around the attention, a mask input, several images) the upstream
decoder runs.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from samlab.data.phantom import make_phantom_case
from samlab.models import Predictor
from samlab.models.shared_decoder import decode_prompts, shares_image_work


@pytest.fixture(scope="module")
def embedding(litemedsam):
    case = make_phantom_case(3, shape=(8, 96, 96))
    return Predictor(litemedsam).embed(case.image[4].astype(np.float32)).features


def _prompts(prompt_encoder, kind: str, n: int = 5):
    g = torch.Generator().manual_seed(0)
    if kind == "box":
        corners = torch.rand(n, 2, 2, generator=g) * 256
        boxes = torch.cat([corners.min(1).values, corners.max(1).values], dim=1)
        return prompt_encoder(points=None, boxes=boxes[:, None, :], masks=None)
    if kind == "point":
        coords = torch.rand(n, 4, 2, generator=g) * 256
        labels = torch.tensor([[1, 1, -1, -1], [1, 0, 1, -1], [1, -1, -1, -1], [0, 1, 1, 1], [1, 0, -1, -1]])[:n]
        return prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    sparse, dense = prompt_encoder(points=None, boxes=None, masks=None)
    return sparse.expand(n, -1, -1), dense.expand(n, -1, -1, -1)


def _assert_same(upstream, shared):
    (logits_a, iou_a), (logits_b, iou_b) = upstream, shared
    assert logits_a.shape == logits_b.shape and iou_a.shape == iou_b.shape
    scale = float(logits_a.abs().max())
    torch.testing.assert_close(logits_b, logits_a, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(iou_b, iou_a, rtol=0, atol=1e-5)
    undecided = logits_a.abs() <= 1e-5 * scale
    assert torch.equal((logits_a > 0) | undecided, (logits_b > 0) | undecided), "a mask pixel changed"


def _both(module, features, kind, multimask):
    pe = module.prompt_encoder
    sparse, dense = _prompts(pe, kind)
    image_pe = pe.get_dense_pe()
    assert shares_image_work(module.mask_decoder, features, dense)
    upstream = module.mask_decoder(image_embeddings=features, image_pe=image_pe, sparse_prompt_embeddings=sparse,
                                   dense_prompt_embeddings=dense, multimask_output=multimask)
    return upstream, decode_prompts(module.mask_decoder, features, image_pe, sparse, dense, multimask)


@pytest.mark.parametrize("kind", ["box", "point", "none"])
def test_shared_image_work_equals_the_upstream_decoder(litemedsam, embedding, kind):
    with torch.inference_mode():
        for multimask in (False, True):
            _assert_same(*_both(litemedsam.module, embedding, kind, multimask))


def test_a_lora_decoder_shares_and_an_adapter_decoder_falls_back(embedding):
    from samlab.models import load_model
    from samlab.peft import apply_peft

    lora = load_model("litemedsam")
    apply_peft(lora.module, "lora", "decoder")
    with torch.no_grad():
        for name, p in lora.module.mask_decoder.named_parameters():
            if "lora_B" in name:  # peft starts B at zero (an identity update); make the adaptation real
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        _assert_same(*_both(lora.module, embedding, "box", False))

    adapter = load_model("litemedsam")
    apply_peft(adapter.module, "adapter", "decoder")
    pe = adapter.module.prompt_encoder
    sparse, dense = _prompts(pe, "box")
    assert not shares_image_work(adapter.module.mask_decoder, embedding, dense)
    with torch.inference_mode():
        upstream = adapter.module.mask_decoder(image_embeddings=embedding, image_pe=pe.get_dense_pe(),
                                               sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                               multimask_output=False)
        fallback = decode_prompts(adapter.module.mask_decoder, embedding, pe.get_dense_pe(), sparse, dense, False)
    assert all(torch.equal(a, b) for a, b in zip(upstream, fallback))


def test_no_sharing_with_a_mask_input_or_several_images(litemedsam, embedding):
    pe = litemedsam.module.prompt_encoder
    decoder = litemedsam.module.mask_decoder
    sparse, dense = _prompts(pe, "box", 2)
    assert shares_image_work(decoder, embedding, dense) and dense.stride(0) == 0
    assert not shares_image_work(decoder, embedding, dense.contiguous()), "a per-prompt dense (mask) input"
    assert not shares_image_work(decoder, embedding.expand(2, -1, -1, -1), dense), "one embedding per prompt"


def test_sams_own_decoder_class_shares_too():
    """segment-anything's MaskDecoder (MedSAM, SAM ViT-B/H); random weights: the two paths are compared."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

    torch.manual_seed(0)
    decoder = MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=256,
                          mlp_dim=2048, num_heads=8), transformer_dim=256).eval()
    pe = PromptEncoder(embed_dim=256, image_embedding_size=(16, 16), input_image_size=(64, 64), mask_in_chans=16)
    features = torch.randn(1, 256, 16, 16)
    sparse, dense = pe(points=None, boxes=torch.tensor([[[4.0, 5.0, 40.0, 50.0]], [[10.0, 2.0, 60.0, 30.0]]]),
                       masks=None)
    with torch.inference_mode():
        for multimask in (False, True):
            upstream = decoder(image_embeddings=features, image_pe=pe.get_dense_pe(), sparse_prompt_embeddings=sparse,
                               dense_prompt_embeddings=dense, multimask_output=multimask)
            _assert_same(upstream, decode_prompts(decoder, features, pe.get_dense_pe(), sparse, dense, multimask))
