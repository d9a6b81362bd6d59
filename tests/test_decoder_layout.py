"""The mask decoder's token-major layout (samlab.models.decoder_layout) changes outputs only by float rounding.

Real LiteMedSAM weights on a phantom slice: boxes, points and multimask outputs are compared with the
upstream layout. Whether they agree bit for bit depends on the CPU's matrix kernels: identical on the Intel
AVX-512/AMX machine where the fast path was built, different in the last bits (about 1e-6 relative) on an
AVX2 AMD EPYC, where the contiguous layout takes another GEMM kernel. So outputs are compared to a tolerance
of float32 rounding (1e-5 relative to the largest logit, a thousand times below any mask decision), and the
masks themselves (logit > 0) must be identical wherever a logit is not within that tolerance of 0.
The gradients of a decoder-training step agree to float rounding (sums over the image tokens in another order).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from samlab.data.phantom import STRUCTURES, make_phantom_case
from samlab.models import Predictor
from samlab.models.decoder_layout import remove_token_major_layout, use_token_major_layout, uses_token_major_layout


@pytest.fixture(scope="module")
def slice_and_boxes():
    case = make_phantom_case(3, shape=(8, 96, 96))
    present = sum(np.isin(case.labels, ids).any(axis=(1, 2)).astype(int) for ids in STRUCTURES.values())
    z = int(np.argmax(present))  # the slice with the most structures
    boxes = []
    for ids in STRUCTURES.values():
        ys, xs = np.nonzero(np.isin(case.labels[z], ids))
        if len(xs):
            boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
    image = case.image[z].astype(np.float32)
    return image, np.asarray(boxes, dtype=np.float32)


def _decode_both(decoder, run):
    assert uses_token_major_layout(decoder)  # load_model installs it
    try:
        fast = run()
        remove_token_major_layout(decoder)
        assert not uses_token_major_layout(decoder)
        plain = run()
    finally:
        use_token_major_layout(decoder)
    return fast, plain


def test_decoding_is_bit_identical(litemedsam, slice_and_boxes):
    image, boxes = slice_and_boxes
    predictor = Predictor(litemedsam)
    embedding = predictor.embed(image)
    centres = ((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None, :]

    def run():
        return (predictor.decode(embedding, boxes=boxes), predictor.decode(embedding, points=centres),
                predictor.decode(embedding, boxes=boxes[:2], multimask=True))

    fast, plain = _decode_both(litemedsam.module.mask_decoder, run)
    assert len(boxes) >= 4
    for a, b in zip(fast, plain):
        _assert_equal_to_rounding(a.logits, b.logits)
        np.testing.assert_allclose(a.iou, b.iou, rtol=1e-5, atol=1e-6)
    assert (fast[0].logits > 0).any()  # real masks, not an all-background pair that agrees trivially


def _assert_equal_to_rounding(fast: np.ndarray, plain: np.ndarray) -> None:
    """Logits equal to float32 rounding, and the same mask wherever a logit is clearly on one side of 0."""
    tol = 1e-5 * float(np.abs(plain).max())
    np.testing.assert_allclose(fast, plain, rtol=0, atol=tol)
    decided = np.abs(plain) > tol
    assert np.array_equal(fast[decided] > 0, plain[decided] > 0)


def test_training_gradients_agree_to_float_rounding(litemedsam, slice_and_boxes):
    image, boxes = slice_and_boxes
    module = litemedsam.module
    features = Predictor(litemedsam).embed(image).features
    box_t = torch.as_tensor(boxes[:3] * 256 / 96)[:, None, :]

    def run():
        module.mask_decoder.zero_grad()
        with torch.enable_grad():
            sparse, dense = module.prompt_encoder(points=None, boxes=box_t, masks=None)
            low_res, iou = module.mask_decoder(image_embeddings=features, image_pe=module.prompt_encoder.get_dense_pe(),
                                               sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                               multimask_output=False)
            (low_res.sigmoid().mean() + iou.mean()).backward()
        return low_res.detach().clone(), {n: p.grad.clone() for n, p in module.mask_decoder.named_parameters()
                                          if p.grad is not None}

    try:
        (fast_out, fast_grads), (plain_out, plain_grads) = _decode_both(module.mask_decoder, run)
    finally:
        module.mask_decoder.zero_grad(set_to_none=True)
    _assert_equal_to_rounding(fast_out.numpy(), plain_out.numpy())
    assert fast_grads.keys() == plain_grads.keys() and len(fast_grads) > 10
    # Gradients sum over the 4096 image tokens in another order: equal to float rounding, not bit for bit
    # (e.g. the key-bias gradients, ~1e-10 -- exactly 0 in exact arithmetic -- differ in their last bits).
    scale = max(float(g.abs().max()) for g in plain_grads.values())
    for name in fast_grads:
        assert torch.allclose(fast_grads[name], plain_grads[name], rtol=1e-4, atol=1e-6 * scale), name


def test_a_decoder_without_a_two_way_transformer_is_left_alone():
    assert use_token_major_layout(torch.nn.Linear(2, 2)) is False
