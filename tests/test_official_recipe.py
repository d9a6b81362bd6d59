"""samlab's LiteMedSAM inputs and masks reproduce the authors' official inference script.

The reference below is an independent re-implementation, written inside this test,
of ``CVPR24_LiteMedSAM_infer.py`` (branch ``LiteMedSAM`` of bowang-lab/MedSAM):
cv2 ``INTER_AREA`` resize of the uint8 image to longest side 256, min-max to [0, 1],
zero-pad bottom/right, boxes ``int(box * 256 / max(H, W))``, low-res logits cropped
to the resized content, bilinearly resized to (H, W), thresholded at sigmoid > 0.5.
Both sides use the real LiteMedSAM weights and the same boxes, so any difference
is samlab's preprocessing or postprocessing.

Measured before the recipe was adopted (skimage/torch antialiased resize): samlab
.897 tight where the official recipe gives .906, pixel agreement 99.82 %.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samlab.models import Predictor, prepare_image


def _official_input(image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    cv2 = pytest.importorskip("cv2")
    img3 = np.repeat(image[:, :, None], 3, axis=-1)
    h, w = img3.shape[:2]
    scale = 256 * 1.0 / max(h, w)
    newh, neww = int(h * scale + 0.5), int(w * scale + 0.5)
    img256 = cv2.resize(img3, (neww, newh), interpolation=cv2.INTER_AREA)
    img256 = (img256 - img256.min()) / np.clip(img256.max() - img256.min(), a_min=1e-8, a_max=None)
    img256 = np.pad(img256, ((0, 256 - newh), (0, 256 - neww), (0, 0)))
    return torch.tensor(img256).float().permute(2, 0, 1).unsqueeze(0), (newh, neww)


@torch.no_grad()
def _official_masks(module, image: np.ndarray, boxes: list[list[float]],
                    embedding: torch.Tensor | None = None) -> list[np.ndarray]:
    """The official script's masks; ``embedding`` (its encoder output for this image) skips the encoder pass."""
    tensor, (newh, neww) = _official_input(image)
    h, w = image.shape[:2]
    if embedding is None:
        embedding = module.image_encoder(tensor)
    masks = []
    for box in boxes:
        box256 = np.zeros(4)
        box256[:] = [int(v * 256 / max(h, w)) for v in box]
        sparse, dense = module.prompt_encoder(
            points=None, boxes=torch.as_tensor(box256[None, None], dtype=torch.float), masks=None
        )
        low_res, _ = module.mask_decoder(
            image_embeddings=embedding, image_pe=module.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False,
        )
        low_res = F.interpolate(low_res[..., :newh, :neww], size=(h, w), mode="bilinear", align_corners=False)
        masks.append(torch.sigmoid(low_res).squeeze().numpy() > 0.5)
    return masks


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def _slices(prostate_slices_dir):
    from PIL import Image

    for mask_path in sorted((prostate_slices_dir / "masks").glob("*.png")):
        image = np.array(Image.open(next((prostate_slices_dir / "images").rglob(mask_path.name))))
        yield mask_path.stem, image, np.array(Image.open(mask_path)) > 0  # labels 254/255: gland is > 0


@pytest.fixture(scope="module")
def encoded(litemedsam, real_slice_embeddings):
    """Both box sizes reuse one encoder pass per slice and side: the official embeddings kept here, samlab's in
    the session's in-memory cache (which test_models filled already: 10 encoder passes instead of 40). The
    official side always encodes afresh, so a cache bug cannot make the two sides agree."""
    return {}, Predictor(litemedsam, cache=real_slice_embeddings)


@pytest.mark.parametrize("expand, official_dice", [(0, 0.906), (5, 0.919)])
def test_litemedsam_matches_the_official_script_on_the_shared_slices(
    litemedsam, prostate_slices_dir, encoded, expand, official_dice
):
    from samlab.prompts import box_from_mask, expand_box

    official_embeddings, predictor = encoded
    ours, theirs, agreement = [], [], []
    for name, image, gt in _slices(prostate_slices_dir):
        assert image.dtype == np.uint8 and image.ndim == 2, name
        box = expand_box(box_from_mask(gt), expand, gt.shape)
        if name not in official_embeddings:
            with torch.no_grad():
                official_embeddings[name] = litemedsam.module.image_encoder(_official_input(image)[0])
        official = _official_masks(litemedsam.module, image, [box.tolist()], official_embeddings[name])[0]
        mask = predictor.predict_boxes(image, [box]).masks()[0]
        ours.append(_dice(mask, gt))
        theirs.append(_dice(official, gt))
        agreement.append(float((mask == official).mean()))
    print(
        f"+{expand} px boxes, n={len(ours)}: samlab Dice {np.mean(ours):.4f}, official recipe {np.mean(theirs):.4f}, "
        f"pixel agreement mean {100 * np.mean(agreement):.3f} % (min {100 * np.min(agreement):.3f} %)"
    )
    assert len(ours) == 10
    assert np.mean(agreement) >= 0.999
    assert np.mean(theirs) == pytest.approx(official_dice, abs=0.002)
    assert np.mean(ours) == pytest.approx(official_dice, abs=0.002)


def test_litemedsam_input_tensor_equals_the_official_one(prostate_slices_dir):
    """Same input tensor to within float rounding, on a square slice and on a non-square crop (padding)."""
    from samlab.models import get_spec

    spec = get_spec("litemedsam")
    _, image, _ = next(_slices(prostate_slices_dir))
    for crop in (image, image[:, 37:300]):
        ours, geometry = prepare_image(spec, crop)
        theirs, new_hw = _official_input(crop)
        assert geometry.resized_size == new_hw
        assert ours.shape == theirs.shape == (1, 3, 256, 256)
        assert torch.allclose(ours, theirs, atol=1e-6), float((ours - theirs).abs().max())


def _uint8_slice(shape=(300, 220), seed=3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(np.cumsum(rng.random(shape), axis=0), axis=1)
    return (255 * (smooth - smooth.min()) / (smooth.max() - smooth.min()) * 0.8 + rng.integers(0, 40, shape)).astype(np.uint8)


def test_medsam_input_equals_medsam_inference_script():
    """MedSAM_Inference.py: skimage order-3 resize of the 3-channel uint8 image to 1024, astype(uint8), min-max."""
    from skimage import transform

    from samlab.models import get_spec

    image = _uint8_slice()
    img3 = np.repeat(image[:, :, None], 3, axis=-1)
    img1024 = transform.resize(img3, (1024, 1024), order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)
    img1024 = (img1024 - img1024.min()) / np.clip(img1024.max() - img1024.min(), a_min=1e-8, a_max=None)
    theirs = torch.tensor(img1024).float().permute(2, 0, 1).unsqueeze(0)
    ours, geometry = prepare_image(get_spec("medsam_vit_b"), image)
    assert geometry.resized_size == (1024, 1024)
    assert torch.allclose(ours, theirs, atol=1e-6), float((ours - theirs).abs().max())


def test_sam_input_equals_segment_anything_predictor():
    """SamPredictor.set_image: ResizeLongestSide (PIL bilinear) on the uint8 RGB image, then mean/std and pad."""
    from segment_anything.utils.transforms import ResizeLongestSide

    from samlab.models import get_spec

    image = _uint8_slice()
    resized = ResizeLongestSide(1024).apply_image(np.repeat(image[:, :, None], 3, axis=-1))
    x = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None].float()
    mean = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    x = (x - mean) / std
    theirs = F.pad(x, (0, 1024 - x.shape[-1], 0, 1024 - x.shape[-2]))
    ours, geometry = prepare_image(get_spec("sam_vit_b"), image)
    assert geometry.resized_size == tuple(resized.shape[:2])
    assert torch.allclose(ours, theirs, atol=1e-5), float((ours - theirs).abs().max())


def test_float_slices_follow_the_same_recipe_within_two_grey_levels(prostate_slices_dir):
    """Curated volumes are float in [0, 1]: same recipe without 8-bit rounding, within 2 grey levels of the uint8 path."""
    from samlab.models import get_spec

    _, image, _ = next(_slices(prostate_slices_dir))
    for name in ("litemedsam", "medsam_vit_b", "sam_vit_b"):
        spec = get_spec(name)
        as_uint8, _ = prepare_image(spec, image)
        as_float, _ = prepare_image(spec, image.astype(np.float32) / 255.0)
        grey_level = 1.0 / 255 if spec.normalization == "minmax01" else 1.0 / 57.12  # SAM: 0-255 / pixel std
        difference = float((as_uint8 - as_float).abs().max())
        assert 0 < difference <= 2 * grey_level, (name, difference)


def test_every_model_names_an_official_recipe():
    from samlab.models import get_spec, list_models
    from samlab.models.recipes import get_recipe

    for name in list_models():
        spec = get_spec(name)
        recipe = get_recipe(spec.recipe)
        assert (recipe.normalization, recipe.resize) == (spec.normalization, spec.resize), name
    assert get_spec("litemedsam").recipe == "litemedsam_cvpr24"
    assert get_spec("medsam_vit_b").recipe == "medsam_inference"
    with pytest.raises(ValueError, match="unknown input recipe"):
        get_recipe("nope")
