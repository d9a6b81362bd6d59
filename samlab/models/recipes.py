"""Each model's official input recipe: how its authors' inference code resizes, normalises and pads.

Why a recipe per model and not one generic resize: a SAM-family model only gives
its published numbers on inputs prepared the way it was trained and evaluated.
Small interpolation differences matter: LiteMedSAM fed skimage/torch-antialiased
resizes instead of OpenCV ``INTER_AREA`` differs per pixel by up to 0.17 after
min-max scaling, and its mean oracle Dice on the shared prostate slices drops
from .906 (official script) to .897.

The three recipes (read from the authors' code, re-implemented here):

* ``litemedsam_cvpr24`` -- ``CVPR24_LiteMedSAM_infer.py`` (branch ``LiteMedSAM`` of
  bowang-lab/MedSAM): longest side to 256 with ``cv2.resize(..., INTER_AREA)``
  (new size ``int(x + 0.5)``), min-max to [0, 1], zero-pad bottom/right to
  256 x 256; boxes ``int(box * 256 / max(H, W))``; the 256 x 256 low-res logits
  are cropped to the resized content, bilinearly resized to (H, W) and
  thresholded at sigmoid > 0.5.
* ``medsam_inference`` -- ``MedSAM_Inference.py`` (main branch): 3 channels,
  ``skimage.transform.resize`` to 1024 x 1024 (``order=3, preserve_range=True,
  anti_aliasing=True``), cast to uint8, min-max to [0, 1]; boxes
  ``box / [W, H, W, H] * 1024``; sigmoid of the low-res logits resized straight
  to (H, W), threshold 0.5.
* ``sam_resize_longest_side`` -- segment-anything's ``SamPredictor``:
  ``ResizeLongestSide`` (PIL bilinear resize of the uint8 image to longest side
  1024), pixel mean/std normalisation, zero-pad bottom/right; coordinates scaled
  per axis by new/old size; low-res logits upsampled to 1024, cropped, resized
  to (H, W), threshold 0.

The official scripts take 8-bit images: a ``uint8`` slice goes through the recipe
exactly as stored (including the 8-bit rounding of the resized image). Any other
dtype (samlab's curated volumes are float in [0, 1]) is min-max scaled to 0-255
and kept in float32: the same recipe without 8-bit quantisation, which differs
from storing the slice as uint8 first by less than one grey level.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["InputRecipe", "RECIPES", "get_recipe", "to_grey_scale_255", "resize_content", "content_size"]


@dataclass(frozen=True)
class InputRecipe:
    """One official preprocessing/postprocessing recipe, named after the script it reproduces."""

    name: str
    source: str  # the authors' script this reproduces
    interpolation: Literal["cv2_area", "skimage_cubic_uint8", "pil_bilinear"]
    normalization: Literal["minmax01", "sam_meanstd"]
    resize: Literal["longest_side_pad", "square"]
    coords: Literal["longest_side_ratio_trunc_boxes", "per_axis"]
    postprocess: Literal["via_input_size", "sigmoid_direct"]


RECIPES: dict[str, InputRecipe] = {
    "litemedsam_cvpr24": InputRecipe(
        "litemedsam_cvpr24",
        "bowang-lab/MedSAM@LiteMedSAM:CVPR24_LiteMedSAM_infer.py",
        "cv2_area", "minmax01", "longest_side_pad", "longest_side_ratio_trunc_boxes", "via_input_size",
    ),
    "medsam_inference": InputRecipe(
        "medsam_inference",
        "bowang-lab/MedSAM@main:MedSAM_Inference.py",
        "skimage_cubic_uint8", "minmax01", "square", "per_axis", "sigmoid_direct",
    ),
    "sam_resize_longest_side": InputRecipe(
        "sam_resize_longest_side",
        "facebookresearch/segment-anything:segment_anything/predictor.py (ResizeLongestSide)",
        "pil_bilinear", "sam_meanstd", "longest_side_pad", "per_axis", "via_input_size",
    ),
}


def get_recipe(name: str) -> InputRecipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown input recipe {name!r}; available: {', '.join(sorted(RECIPES))}") from None


def content_size(recipe: InputRecipe, size: int, height: int, width: int) -> tuple[int, int]:
    """(h, w) of the image content inside the ``size`` x ``size`` input, rounded as the official code does."""
    if recipe.resize == "square":
        return size, size
    scale = size * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def to_grey_scale_255(image: np.ndarray) -> np.ndarray:
    """A 2D (H, W) slice on the 0-255 scale the official scripts expect.

    ``uint8`` stays as stored; anything else is min-max scaled to [0, 255] in float32
    (a constant slice becomes zeros). Three-channel inputs must have equal channels
    or be 2D already; see :func:`samlab.models.predictor.prepare_image`.
    """
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError("image slice contains NaN or infinite values")
    lo, hi = float(array.min()), float(array.max())
    if hi <= lo:
        return np.zeros_like(array)
    return ((array - lo) * (255.0 / (hi - lo))).astype(np.float32)


def resize_content(recipe: InputRecipe, image: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W) or (H, W, C) 0-255 image with the recipe's interpolation; float32 out.

    uint8 in: the official 8-bit arithmetic (OpenCV and PIL round to uint8, MedSAM
    truncates with ``astype(np.uint8)``); float in: the same filter in float.
    """
    h, w = int(out_hw[0]), int(out_hw[1])
    if recipe.interpolation == "cv2_area":
        import cv2

        return np.asarray(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA), dtype=np.float32)
    if recipe.interpolation == "skimage_cubic_uint8":
        from skimage.transform import resize

        out = resize(image, (h, w) + image.shape[2:], order=3, preserve_range=True, anti_aliasing=True)
        return (out.astype(np.uint8) if image.dtype == np.uint8 else out).astype(np.float32)
    if recipe.interpolation == "pil_bilinear":
        from PIL import Image

        if image.ndim == 3:
            return np.stack([resize_content(recipe, image[..., c], out_hw) for c in range(image.shape[2])], axis=-1)
        mode_image = Image.fromarray(image) if image.dtype == np.uint8 else Image.fromarray(image.astype(np.float32), "F")
        return np.asarray(mode_image.resize((w, h), Image.BILINEAR), dtype=np.float32)
    raise ValueError(f"recipe {recipe.name!r}: unknown interpolation {recipe.interpolation!r}")
