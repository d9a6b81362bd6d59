"""One predictor API for every model: ``embed`` once, ``decode`` many prompts.

Why split embed/decode: the image encoder costs ~20x the prompt encoder + mask
decoder (DESIGN.md budgets), so prompt sweeps and decoder-only training must reuse
one embedding per slice. Prompts and outputs are in *original image* pixel
coordinates; the predictor owns the mapping to and from each model's input frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .accelerate import EncoderRunner, configure_threads, default_batch_size
from .cache import EmbeddingCache
from .recipes import content_size, get_recipe, resize_content, to_grey_scale_255
from .registry import LoadedModel, ModelSpec
from .shared_decoder import decode_prompts

_SAM_MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
_SAM_STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


@dataclass(frozen=True)
class Geometry:
    """How an original (H, W) image maps into the model's square input frame."""

    original_size: tuple[int, int]
    resized_size: tuple[int, int]  # (h, w) of the image content inside the input frame
    input_size: int

    def scale_xy(self) -> tuple[float, float]:
        h, w = self.original_size
        rh, rw = self.resized_size
        return rw / w, rh / h


@dataclass
class Embedding:
    features: torch.Tensor  # (1, 256, 64, 64)
    geometry: Geometry


@dataclass
class Decoded:
    logits: np.ndarray  # (N, H, W) or (N, 3, H, W) at the original image size
    iou: np.ndarray  # (N,) or (N, 3) predicted IoU

    def masks(self, threshold: float = 0.0) -> np.ndarray:
        return self.logits > threshold


def _geometry(spec: ModelSpec, height: int, width: int) -> Geometry:
    """Where the (height, width) slice lands in the model input, rounded as the model's official code rounds."""
    size = spec.image_size
    return Geometry((height, width), content_size(get_recipe(spec.recipe), size, height, width), size)


def prepare_image(spec: ModelSpec, image: np.ndarray) -> tuple[torch.Tensor, Geometry]:
    """Turn a 2D (H, W) or (H, W, 3) slice into the model's (1, 3, S, S) input tensor.

    Follows the model's official recipe (``spec.recipe``, :mod:`samlab.models.recipes`):
    LiteMedSAM resizes with OpenCV area interpolation, then min-max to [0, 1] and pads;
    MedSAM resizes square with skimage bicubic, then min-max; SAM resizes with PIL bilinear,
    then pixel mean/std, then pads. uint8 slices are used as stored (the official scripts'
    input); other dtypes are min-max scaled to 0-255 first. Volume-level intensity clipping
    (percentiles) belongs to curation, not here.
    """
    recipe = get_recipe(spec.recipe)
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 3 and array.dtype != np.uint8:
        array = array.astype(np.float32)
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
        raise ValueError(f"expected a 2D slice (H, W) or (H, W, 3), got shape {np.shape(image)}")
    if array.dtype != np.uint8 and not np.isfinite(np.asarray(array, dtype=np.float64)).all():
        raise ValueError("image slice contains NaN or infinite values")
    height, width = array.shape[:2]
    geometry = _geometry(spec, height, width)
    resized = resize_content(recipe, to_grey_scale_255(array), geometry.resized_size)
    if resized.ndim == 2:
        resized = np.repeat(resized[..., None], 3, axis=-1)
    if recipe.normalization == "minmax01":
        lo, hi = float(resized.min()), float(resized.max())
        resized = (resized.astype(np.float64) - lo) / max(hi - lo, 1e-8)
    tensor = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32))[None]
    if recipe.normalization == "sam_meanstd":
        tensor = (tensor - _SAM_MEAN) / _SAM_STD
    pad_h = geometry.input_size - geometry.resized_size[0]
    pad_w = geometry.input_size - geometry.resized_size[1]
    tensor = F.pad(tensor, (0, pad_w, 0, pad_h))
    return tensor.contiguous(), geometry


#: Prompts per mask-decoder call. SAM's decoder runs its two-way transformer on a full copy of the
#: 64 x 64 image tokens per prompt; on a 2-core CPU (LiteMedSAM, 24 boxes) a batch of 24 took 0.107 s per
#: prompt, of 8 0.096 s, of 4 0.064-0.071 s, of 2 0.060 s, of 1 0.055-0.060 s (memory traffic of the
#: B x 256 x 64 x 64 activations), so the CPU decodes two prompts at a time. Absolute times vary by machine
#: (a later 2-core machine: ~125 ms per prompt at chunk 2 before the token-major layout of
#: decoder_layout.py, ~94 ms after; chunk 16: 176 ms), the ordering did not. On accelerators large batches
#: pay (not measured here: no GPU was available). Since the prompts of a call share the image side of the decoder
#: (shared_decoder.py), a call of 3-4 prompts pays on the CPU too (AMD EPYC, 2 cores, 10 shared slices,
#: ``benchmarks/decoder_shared.py``: 128 ms per prompt in chunks of 2, 110 ms in chunks of 4; upstream 158 / 156).
DECODE_CHUNK = {"cpu": 4}
DEFAULT_DECODE_CHUNK = 64


class Predictor:
    """Embed slices and decode box/point prompts for any registered model.

    The encoder runs through :class:`samlab.models.accelerate.EncoderRunner`: inference mode,
    channels_last, several slices per call (:meth:`embed_many`), threads from the available cores, and
    ``torch.compile`` when it pays (``compile``: ``auto``/``on``/``off``, default ``$SAMLAB_COMPILE`` or
    ``auto``). ``precision='bf16'`` (or ``$SAMLAB_PRECISION``) is the measured reduced-precision option.
    ``batch_size`` is slices per encoder call (default: from free memory).
    """

    def __init__(self, model: LoadedModel, device: str | torch.device = "cpu", cache: EmbeddingCache | None = None,
                 decode_chunk: int | None = None, compile: str | None = None, precision: str | None = None,
                 batch_size: int | None = None, threads: int | None = None):
        self.model = model
        self.spec = model.spec
        self.device = torch.device(device)
        if self.device.type == "cpu":
            configure_threads(threads)
        self.decode_chunk = decode_chunk or DECODE_CHUNK.get(self.device.type, DEFAULT_DECODE_CHUNK)
        self.module = model.module.to(self.device).eval()
        self.cache = cache
        self.encoder_calls = 0
        self.runner = EncoderRunner(self.module.image_encoder, self.device, self.spec.name, compile=compile,
                                    precision_name=precision)
        self.precision = self.runner.precision
        self.batch_size = batch_size or default_batch_size(self.spec.image_size, self.device)
        self._digest: str | None = None  # hash of a random-init encoder, see cache_namespace

    @property
    def cache_namespace(self) -> str:
        """Everything besides the pixels that changes an embedding.

        Weights without a file hash (random init) are identified by a hash of the encoder's
        parameters and buffers, so two different random models never share cached embeddings.
        Reduced-precision embeddings carry their precision, so they never stand in for exact ones
        (fp32 keeps the key it always had: existing caches stay valid).
        """
        s = self.spec
        weights = self.model.sha256 or f"encoder-{self._encoder_digest()}"
        reduced = "" if self.precision == "fp32" else f"|{self.precision}"
        return f"{s.name}|{weights}|{s.image_size}|{s.normalization}|{s.resize}|{s.recipe}{reduced}"

    def _encoder_digest(self) -> str:
        """Computed once per predictor: its encoder is frozen while it embeds."""
        if self._digest is None:
            import hashlib

            digest = hashlib.sha256()
            for name, tensor in self.module.image_encoder.state_dict().items():
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            self._digest = digest.hexdigest()[:16]
        return self._digest

    def embed(self, image: np.ndarray) -> Embedding:
        return self.embed_many([image])[0]

    def embed_many(self, images: Sequence[np.ndarray], batch_size: int | None = None) -> list[Embedding]:
        """Embed several slices, ``batch_size`` (default ``self.batch_size``) per encoder call.

        Cached slices are not re-encoded; ``encoder_calls`` counts slices encoded. Knowing how many
        slices are still to embed lets ``compile='auto'`` judge whether a compile pays off.
        """
        batch_size = batch_size or self.batch_size
        prepared = [prepare_image(self.spec, image) for image in images]
        features: list[torch.Tensor | None] = [None] * len(prepared)
        keys: list[str | None] = [None] * len(prepared)
        if self.cache is not None:
            namespace = self.cache_namespace
            for i, image in enumerate(images):
                keys[i] = self.cache.key(namespace, image)
                features[i] = self.cache.get(keys[i])
        todo = [i for i, f in enumerate(features) if f is None]
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            out = self._encode(torch.cat([prepared[i][0] for i in chunk]), items_left=len(todo) - start)
            for j, i in enumerate(chunk):
                features[i] = out[j:j + 1].clone()
                if self.cache is not None:
                    self.cache.put(keys[i], features[i])
        return [Embedding(f.to(self.device), geometry) for f, (_, geometry) in zip(features, prepared)]

    def _encode(self, tensor: torch.Tensor, items_left: int | None = None) -> torch.Tensor:
        self.encoder_calls += tensor.shape[0]
        return self.runner(tensor, items_left=items_left)

    def _to_input_frame(self, coords: np.ndarray, geometry: Geometry, boxes: bool = False) -> np.ndarray:
        """Original-pixel x, y coordinates -> the input frame, scaled (and rounded) as the official code does.

        LiteMedSAM's script scales by ``256 / max(H, W)`` and truncates box corners with ``int()``;
        SAM and MedSAM scale each axis by new/old size without rounding.
        """
        coords = np.asarray(coords, dtype=np.float32).copy()
        if get_recipe(self.spec.recipe).coords == "longest_side_ratio_trunc_boxes":
            coords *= np.float32(geometry.input_size / max(geometry.original_size))
            return np.trunc(coords) if boxes else coords
        sx, sy = geometry.scale_xy()
        coords[..., 0::2] *= sx
        coords[..., 1::2] *= sy
        return coords

    @torch.inference_mode()
    def decode(
        self,
        embedding: Embedding,
        boxes: Sequence[Sequence[float]] | np.ndarray | None = None,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        multimask: bool = False,
    ) -> Decoded:
        """Decode N prompts against one embedding.

        ``boxes``: (N, 4) x0, y0, x1, y1 in original pixels. ``points``: (N, P, 2)
        x, y with ``point_labels`` (N, P), 1 = foreground, 0 = background. With
        neither, the prompt encoder is called with no prompt (automatic mode).
        """
        geometry = embedding.geometry
        box_t = pts = None
        n = 1
        if boxes is not None:
            boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
            box_t = torch.from_numpy(self._to_input_frame(boxes, geometry, boxes=True)).to(self.device)[:, None, :]
            n = len(boxes)
        if points is not None:
            points = np.asarray(points, dtype=np.float32)
            if points.ndim == 2:
                points = points[None]
            if point_labels is None:
                point_labels = np.ones(points.shape[:2], dtype=np.int64)
            labels = torch.as_tensor(np.asarray(point_labels).reshape(points.shape[:2]), device=self.device)
            pts = (torch.from_numpy(self._to_input_frame(points, geometry)).to(self.device), labels)
            if box_t is not None and len(points) != n:
                raise ValueError(f"got {n} boxes but {len(points)} point sets; they must pair up")
            n = len(points)
        prompt_encoder, mask_decoder = self.module.prompt_encoder, self.module.mask_decoder
        sparse, dense = prompt_encoder(points=pts, boxes=box_t, masks=None)
        if box_t is None and pts is None:
            sparse = sparse.expand(n, -1, -1)
            dense = dense.expand(n, -1, -1, -1)
        image_pe = prompt_encoder.get_dense_pe()
        chunks = [  # the image side of the decoder computed once per chunk (shared_decoder.py)
            decode_prompts(mask_decoder, embedding.features, image_pe, sparse[i:i + self.decode_chunk],
                           dense[i:i + self.decode_chunk], multimask)
            for i in range(0, n, self.decode_chunk)
        ]
        low_res, iou = torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])
        logits = self.postprocess(low_res, geometry)
        if not multimask:
            logits, iou = logits[:, 0], iou[:, 0]
        return Decoded(logits.cpu().numpy(), iou.cpu().numpy())

    def postprocess(self, low_res: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        """Low-res decoder logits -> logits at the original image size (crop padding, resize).

        MedSAM's script resizes the sigmoid probabilities straight to (H, W) and thresholds at 0.5;
        the logit of those probabilities (clamped to +-13.8) keeps ``logits > 0`` identical to it.
        """
        if get_recipe(self.spec.recipe).postprocess == "sigmoid_direct":
            probs = F.interpolate(torch.sigmoid(low_res), size=geometry.original_size, mode="bilinear",
                                  align_corners=False)
            return torch.logit(probs, eps=1e-6)
        size = geometry.input_size
        up = F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)
        up = up[..., : geometry.resized_size[0], : geometry.resized_size[1]]
        return F.interpolate(up, size=geometry.original_size, mode="bilinear", align_corners=False)

    def predict_boxes(self, image: np.ndarray, boxes: np.ndarray, multimask: bool = False) -> Decoded:
        """Convenience: embed (cached) + decode boxes in one call."""
        return self.decode(self.embed(image), boxes=boxes, multimask=multimask)
