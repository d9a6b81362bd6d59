"""Preprocessing profiles (medsam, finetune_sam), label cleaning, and the exact 3D -> 2D -> 3D round trip."""
from __future__ import annotations

import numpy as np
import pytest

from samlab.data.phantom import make_phantom_case
from samlab.data.preprocess import (
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
    ResizeInfo,
    SliceMeta,
    clip_percentiles,
    get_profile,
    iter_prepared_slices,
    minmax,
    nonempty_slices,
    normalize_intensity,
    prepare_slice,
    remove_small_objects,
    remove_small_objects_per_slice,
    resize_nearest,
    restore_mask,
    slice_volume,
    stack_slices,
)
from samlab.data.readers import Volume, iter_volumes, read_slice_list, load_slice


def _phantom_volume(shape=(8, 48, 40), seed=5) -> Volume:
    case = make_phantom_case(seed, shape=shape, spacing=(3.0, 1.2, 1.2))
    return Volume(case.case_id, case.image, case.labels, case.spacing, {"background": 0})


# --------------------------------------------------------------------------- intensity


def test_percentile_clip_hand_computed():
    x = np.arange(1, 1001, dtype=np.float32)  # 1..1000
    out = clip_percentiles(x, 0.5, 99.5, nonzero_only=False)
    # numpy linear interpolation: 1 + 0.005 * 999 = 5.995 and 1 + 0.995 * 999 = 995.005
    assert out.min() == pytest.approx(5.995, abs=1e-4)
    assert out.max() == pytest.approx(995.005, abs=1e-3)
    # zero-filled background must not move the percentiles when nonzero_only (MedSAM's rule)
    padded = np.concatenate([np.zeros(5000, np.float32), x])
    out = clip_percentiles(padded, 0.5, 99.5, nonzero_only=True)
    assert out[5000:].min() == pytest.approx(5.995, abs=1e-4)


def test_medsam_intensity_keeps_zero_background_and_spans_unit_range():
    x = np.array([0, 0, 1, 2, 3, 1000], dtype=np.float32)
    out = normalize_intensity(x, get_profile("medsam"))
    assert out[0] == 0 and out[1] == 0
    assert out.max() == pytest.approx(1.0)
    # 1 is the 0.5th percentile of the non-zero values (clip floor) -> 0 after min-max
    lo, hi = np.percentile([1, 2, 3, 1000], [0.5, 99.5])
    assert out[3] == pytest.approx((2 - lo) / (hi - lo), rel=1e-5)


def test_minmax_constant_image_is_zeros():
    assert np.array_equal(minmax(np.full((3, 3), 7.0)), np.zeros((3, 3), np.float32))


def test_sam_constants_are_the_ones_in_segment_anything():
    """SAM's pixel mean/std are ImageNet's x 255 and are the defaults in segment_anything's Sam."""
    import importlib.util
    from pathlib import Path

    assert SAM_PIXEL_MEAN == pytest.approx(tuple(255 * m for m in (0.485, 0.456, 0.406)))
    assert SAM_PIXEL_STD == pytest.approx(tuple(255 * s for s in (0.229, 0.224, 0.225)))
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or spec.origin is None:
        pytest.skip("segment_anything not installed")
    source = (Path(spec.origin).parent / "modeling" / "sam.py").read_text()  # read, not imported: no torch start-up
    assert "[123.675, 116.28, 103.53]" in source and "[58.395, 57.12, 57.375]" in source


def test_finetune_sam_hand_computed_and_equal_to_imagenet_normalize():
    """0-255 values, SAM mean/std; equal to finetune-SAM's ToTensor (/255) + ImageNet Normalize."""
    img = np.array([[0, 255], [255, 0]], dtype=np.float32)
    mask = np.array([[0, 1], [2, 0]], dtype=np.uint8)
    prof = get_profile("finetune_sam", input_size=4, image_order=0)
    out = prepare_slice(img, mask, prof)
    assert out.image.shape == (3, 4, 4) and out.image.dtype == np.float32
    # hand-computed: (0 - 123.675) / 58.395 = -2.1179039; (255 - 103.53) / 57.375 = 2.64
    assert out.image[0, 0, 0] == pytest.approx(-2.1179039, abs=1e-5)
    assert out.image[2, 0, 3] == pytest.approx(2.64, abs=1e-5)
    # nearest 2 -> 4 upsampling of the mask: every pixel becomes a 2x2 block
    np.testing.assert_array_equal(out.mask, np.kron(mask, np.ones((2, 2), np.uint8)))
    up = np.kron(img, np.ones((2, 2))) / 255.0
    imagenet = np.stack([(up - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    np.testing.assert_allclose(out.image, imagenet, atol=1e-5)
    # a stored 8-bit slice that does not span 0..255 is stretched by default, kept with "as_is"
    narrow = np.array([[3, 240], [240, 3]], dtype=np.float32)
    stretched = prepare_slice(narrow, None, prof)
    kept = prepare_slice(narrow, None, get_profile("finetune_sam", input_size=4, image_order=0, intensity="as_is"))
    assert stretched.image[0, 0, 0] == pytest.approx(-2.1179039, abs=1e-5)
    assert kept.image[0, 0, 0] == pytest.approx((3 - 123.675) / 58.395, abs=1e-5)


def test_finetune_sam_default_is_1024_three_channels_on_real_slice(prostate_slices_dir):
    ref = read_slice_list(prostate_slices_dir / "val_5shot.csv")[2]  # BMC26_16, labels 254 + 255
    sl = load_slice(ref, mask_rule="nonzero")  # two touching labels: merged by an explicit rule
    out = prepare_slice(sl.image, sl.mask, get_profile("finetune_sam"))
    assert out.image.shape == (3, 1024, 1024) and out.mask.shape == (1024, 1024)
    # the three channels hold the same grey value, each normalised with its own mean/std
    grey = [out.image[c] * SAM_PIXEL_STD[c] + SAM_PIXEL_MEAN[c] for c in range(3)]
    np.testing.assert_allclose(grey[0], grey[1], atol=1e-3)
    np.testing.assert_allclose(grey[0], grey[2], atol=1e-3)
    assert grey[0].min() >= -1e-3 and grey[0].max() <= 255 + 1e-3
    assert sorted(np.unique(out.mask).tolist()) == [0, 1]
    # 384 -> 1024 nearest: each source pixel covers 1024^2 / 384^2 = 7.11 pixels on average
    assert int(out.mask.sum()) == pytest.approx(10827 * (1024 / 384) ** 2, rel=0.01)
    np.testing.assert_array_equal(restore_mask(out.mask, out.resize), sl.mask)


def test_medsam_256_is_litemedsam_longest_side_and_pad():
    prof = get_profile("medsam", input_size=256)
    assert prof.resize == "longest_side_pad" and get_profile("medsam").resize == "square"
    img = np.random.default_rng(0).random((48, 40)).astype(np.float32) + 1
    out = prepare_slice(img, np.ones((48, 40), np.uint8), prof)
    # 40 * 256 / 48 = 213.33 -> 213 columns of content, the rest is zero padding
    assert out.resize == ResizeInfo((48, 40), (256, 213), 256)
    assert out.image.shape == (3, 256, 256)
    assert out.image[:, :, 213:].max() == 0 and out.mask[:, 213:].max() == 0
    assert out.image[:, :, :213].min() == 0.0 and out.image.max() == pytest.approx(1.0)
    assert int(out.mask.sum()) == 256 * 213


def test_medsam_256_resizes_with_opencv_area_as_litemedsams_script(prostate_slices_dir):
    """CVPR24_LiteMedSAM_infer.py resizes with cv2.INTER_AREA then min-maxes; the 1024 path stays skimage bicubic."""
    cv2 = pytest.importorskip("cv2")
    prof = get_profile("medsam", input_size=256)
    assert prof.interpolation == "cv2_area" and get_profile("medsam").interpolation == "skimage"
    image = load_slice(read_slice_list(prostate_slices_dir / "val_5shot.csv")[2], mask_rule="nonzero").image
    norm = normalize_intensity(image, prof)[:, 40:]  # non-square: 384 x 344 -> 256 x 229 + padding
    out = prepare_slice(norm, None, prof, normalized=True)
    expected = cv2.resize(norm, (229, 256), interpolation=cv2.INTER_AREA)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    assert out.resize.resized_hw == (256, 229)
    np.testing.assert_allclose(out.image[0, :, :229], expected, atol=1e-6)
    assert out.image[:, :, 229:].max() == 0


def test_unknown_profile_and_bad_input():
    with pytest.raises(ValueError, match="unknown preprocessing profile"):
        get_profile("sam2")
    with pytest.raises(ValueError, match="mask shape"):
        prepare_slice(np.zeros((4, 4)), np.zeros((4, 5)), get_profile("medsam", 16))


# --------------------------------------------------------------------------- labels


def test_remove_small_objects_hand_built():
    lab = np.zeros((40, 40), np.uint8)
    lab[0:10, 0:10] = 1  # 100 px: kept (only objects < 100 go)
    lab[20:29, 0:11] = 1  # 99 px: removed
    lab[0:6, 20:30] = 2  # 60 px of label 2 ...
    lab[6:12, 20:30] = 3  # ... touching 60 px of label 3: different labels are different objects
    lab[30:40, 30:35] = 4  # 50 px block
    lab[29, 35:40] = 4  # 5 px; (29, 35) touches the block's corner (30, 34) only diagonally
    lab[25:29, 36:40] = 4  # 16 px on top of that row: with 8-connectivity one object of 71 px
    out = remove_small_objects(lab, 100, connectivity=8)
    assert int((out == 1).sum()) == 100
    assert not (out[20:29, 0:11] == 1).any()
    assert not np.isin(out, [2, 3, 4]).any()
    # threshold 60 keeps labels 2 and 3 (60 px each) and the 71 px object
    out60 = remove_small_objects(lab, 60)
    assert int((out60 == 2).sum()) == 60 and int((out60 == 3).sum()) == 60 and int((out60 == 4).sum()) == 71
    # 4-connectivity splits the diagonal link: the 50 px block alone falls under 60
    out4 = remove_small_objects(lab, 60, connectivity=4)
    assert int((out4 == 4).sum()) == 0


def test_remove_small_objects_matches_cc3d_dust():
    """MedSAM's preprocessing uses cc3d.dust(threshold=100, connectivity=8) per slice."""
    cc3d = pytest.importorskip("cc3d")
    rng = np.random.default_rng(1)
    lab = (rng.random((64, 64)) < 0.45).astype(np.uint8) * rng.integers(1, 4, (64, 64)).astype(np.uint8)
    from scipy import ndimage

    lab = ndimage.median_filter(lab, size=3)  # blobs of varied size
    for threshold in (5, 20, 100):
        ref = cc3d.dust(lab.copy(), threshold=threshold, connectivity=8)
        np.testing.assert_array_equal(remove_small_objects(lab, threshold), ref)


def test_nonempty_slices_and_per_slice_cleaning():
    lab = np.zeros((4, 20, 20), np.uint8)
    lab[1, :10, :10] = 1  # 100 px
    lab[2, :5, :5] = 1  # 25 px
    assert nonempty_slices(lab).tolist() == [1, 2]
    clean = remove_small_objects_per_slice(lab, 100)
    assert nonempty_slices(clean).tolist() == [1]


# --------------------------------------------------------------------------- 3D <-> 2D


def test_slice_stack_round_trip_phantom():
    vol = _phantom_volume()
    slices = slice_volume(vol)
    assert len(slices) == 8 and slices[3].meta == SliceMeta(vol.case_id, 3, (3.0, 1.2, 1.2), (8, 48, 40))
    assert slices[3].meta.plane_spacing == (1.2, 1.2)
    np.testing.assert_array_equal(stack_slices(slices), vol.labels)
    np.testing.assert_array_equal(stack_slices(slices, [s.image for s in slices]), vol.image)


def test_round_trip_with_dropped_and_cleaned_slices():
    vol = _phantom_volume()
    kept = slice_volume(vol, drop_empty=True, min_object_px=60)
    clean = remove_small_objects_per_slice(vol.labels, 60)
    assert [s.meta.slice_index for s in kept] == nonempty_slices(clean).tolist() == [5, 6]
    assert not np.array_equal(clean, vol.labels)  # cleaning removed objects from the kept slices too
    np.testing.assert_array_equal(stack_slices(kept), clean)  # missing slices come back as zeros


@pytest.mark.parametrize("profile", [get_profile("medsam", 256), get_profile("finetune_sam", 1024)])
def test_model_size_predictions_recompile_exactly(profile):
    """slice -> model input -> (a perfect 'prediction') -> restore -> stack == original labels."""
    vol = _phantom_volume(shape=(8, 48, 40))
    prepared = list(iter_prepared_slices(vol, profile, drop_empty=True))
    assert all(p.image.shape == (3, profile.input_size, profile.input_size) for p in prepared)
    restored = [restore_mask(p.mask, p.resize) for p in prepared]
    np.testing.assert_array_equal(stack_slices([p.meta for p in prepared], restored), vol.labels)


def test_real_hippocampus_round_trip(hippocampus_raw_dir):
    vol = next(iter_volumes(hippocampus_raw_dir))  # (35, 52, 34), float32 labels on disk
    prof = get_profile("medsam", 256)
    prepared = list(iter_prepared_slices(vol, prof, drop_empty=True))
    assert len(prepared) == len(nonempty_slices(vol.labels))
    back = stack_slices([p.meta for p in prepared], [restore_mask(p.mask, p.resize) for p in prepared])
    np.testing.assert_array_equal(back, vol.labels)
    assert prepared[0].meta.spacing == (1.0, 1.0, 1.0)


def test_resize_nearest_is_exactly_invertible_when_upsampling():
    rng = np.random.default_rng(3)
    for hw in [(7, 5), (48, 40), (35, 52), (384, 384)]:
        a = rng.integers(0, 9, hw)
        for size in (hw[0] + 1, 256, 1024):
            if size < max(hw):
                continue
            up = resize_nearest(a, (size, size))
            np.testing.assert_array_equal(resize_nearest(up, hw), a)


def test_stack_slices_rejects_inconsistent_input():
    vol = _phantom_volume()
    other = _phantom_volume(seed=6)
    other = Volume("pelvis_other", other.image, other.labels, other.spacing, {})
    a, b = slice_volume(vol), slice_volume(other)
    with pytest.raises(ValueError, match="more than one case"):
        stack_slices([a[0], b[1]])
    with pytest.raises(ValueError, match="given twice"):
        stack_slices([a[0], a[0]])
    with pytest.raises(ValueError, match="restore_mask"):
        stack_slices([a[0].meta], [np.zeros((256, 256), np.uint8)])
