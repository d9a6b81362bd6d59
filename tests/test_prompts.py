import numpy as np
import pytest

from samlab import prompts as P


def _two_squares():
    mask = np.zeros((40, 60), bool)
    mask[5:15, 5:15] = True
    mask[20:30, 40:55] = True
    return mask


def test_box_is_tight_and_inclusive():
    mask = np.zeros((20, 30), bool)
    mask[3:8, 10:21] = True
    assert P.box_from_mask(mask).tolist() == [10, 3, 20, 7]
    assert P.box_from_mask(np.zeros((5, 5), bool)) is None


def test_expansion_is_isotropic_and_clipped():
    box = np.array([2, 10, 20, 30], np.float32)
    assert P.expand_box(box, 5, (35, 50)).tolist() == [0, 5, 25, 34]


def test_component_boxes_split_bilateral_structures():
    boxes = P.component_boxes(_two_squares())
    assert [b.tolist() for b in boxes] == [[40, 20, 54, 29], [5, 5, 14, 14]]  # largest first
    assert P.box_from_mask(_two_squares()).tolist() == [5, 5, 54, 29]


def test_interior_point_is_deepest_and_inside_a_ring():
    ring = np.zeros((41, 41), bool)
    yy, xx = np.mgrid[:41, :41]
    r = np.hypot(yy - 20, xx - 20)
    ring[(r >= 8) & (r <= 16)] = True
    x, y = P.interior_point(ring)
    assert ring[int(y), int(x)], "the point must lie on the structure, not in the lumen"
    square = np.zeros((21, 21), bool)
    square[5:16, 5:16] = True
    assert P.interior_point(square).tolist() == [10, 10]


def test_noisy_box_sd_is_capped():
    rng = np.random.default_rng(0)
    box = np.array([100, 100, 499, 499], np.float32)  # 400 px wide: 10 % would be 40 px, capped at 20
    shifts = np.array([P.noisy_box(box, rng, (800, 800)) - box for _ in range(2000)])
    assert np.all(np.abs(shifts) <= 20.0 + 1e-4)
    assert 10 < shifts.std() < 20


def test_deep_point_is_farther_than_median_from_edge():
    from scipy import ndimage

    mask = np.zeros((60, 60), bool)
    mask[10:50, 10:50] = True
    dist = ndimage.distance_transform_edt(mask)
    rng = np.random.default_rng(1)
    for _ in range(50):
        x, y = P.sample_deep_point(mask, rng)
        assert dist[int(y), int(x)] > np.median(dist[mask])


def test_non_2d_mask_is_refused():
    with pytest.raises(ValueError, match="2D"):
        P.box_from_mask(np.zeros((2, 3, 4)))


def _crescent(size: int = 80) -> np.ndarray:
    """A half annulus bulging to the right: solidity well below 0.8."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 4)
    return (r >= 22) & (r <= 30) & (xx > size / 4)


def test_convex_parts_leave_convex_components_whole():
    mask = _two_squares()
    parts = P.convex_parts(mask)
    assert len(parts) == 2 and all(np.array_equal(a, b) for a, b in zip(parts, P.connected_components(mask)))
    assert [b.tolist() for b in P.part_boxes(mask)] == [b.tolist() for b in P.component_boxes(mask)]
    assert P.solidity(mask[0:20, 0:20]) == 1.0


def test_convex_parts_split_a_crescent_into_near_convex_pieces_that_tile_it():
    crescent = _crescent()
    assert P.solidity(crescent) < 0.6
    parts = P.convex_parts(crescent, min_solidity=0.8, max_depth=3)
    assert 2 <= len(parts) <= 8
    union = np.zeros_like(crescent)
    for part in parts:
        assert not (union & part).any(), "parts must not overlap"
        union |= part
    assert np.array_equal(union, crescent), "parts must tile the component exactly"
    assert np.mean([P.solidity(p) for p in parts]) > P.solidity(crescent) + 0.2
    # each part's box covers far less of the crescent's hollow than the whole box does
    hollow = P.convex_hull(crescent) & ~crescent
    def covered(box):
        x0, y0, x1, y1 = box.astype(int)
        return hollow[y0:y1 + 1, x0:x1 + 1].sum()
    assert sum(covered(b) for b in P.part_boxes(crescent)) < 0.5 * covered(P.box_from_mask(crescent))


def test_convex_parts_respect_depth_and_size_limits():
    crescent = _crescent()
    assert len(P.convex_parts(crescent, max_depth=0)) == 1
    assert len(P.convex_parts(crescent, max_depth=1)) <= 2
    assert len(P.convex_parts(crescent, min_pixels=10_000)) == 1
    with pytest.raises(ValueError, match="min_solidity"):
        P.convex_parts(crescent, min_solidity=0.0)
    assert P.convex_parts(np.zeros((5, 5), bool)) == []
