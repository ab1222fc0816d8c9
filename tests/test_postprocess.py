"""Post-processing: small components go, large stay; nearest resize keeps values."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import measure

from medpipe.postprocess import binarize, resize_mask


def test_min_area_removes_small_keeps_large() -> None:
    prob = np.zeros((20, 20), np.float32)
    prob[1:3, 1:3] = 0.9  # 4 pixels
    prob[10:15, 10:15] = 0.8  # 25 pixels
    out = binarize(prob, pixel_threshold=0.5, min_area=5)
    assert out.dtype == bool
    assert not out[1:3, 1:3].any()
    assert out[10:15, 10:15].all() and out.sum() == 25


def test_component_exactly_min_area_is_kept() -> None:
    prob = np.zeros((8, 8), np.float32)
    prob[0, :5] = 1.0
    assert binarize(prob, 0.5, min_area=5).sum() == 5
    assert binarize(prob, 0.5, min_area=6).sum() == 0


def test_threshold_is_strict_and_min_area_zero_keeps_everything() -> None:
    prob = np.array([[0.5, 0.51], [0.0, 0.9]], np.float32)
    np.testing.assert_array_equal(binarize(prob, 0.5, 0), [[False, True], [False, True]])


def test_diagonal_pixels_are_one_component() -> None:
    prob = np.eye(6, dtype=np.float32)  # 8-connected: one component of 6 pixels
    assert binarize(prob, 0.5, min_area=6).sum() == 6


def test_matches_skimage_reference_on_random_stack() -> None:
    rng = np.random.default_rng(0)
    prob = rng.random((4, 32, 32)).astype(np.float32)
    out = binarize(prob, 0.6, min_area=4)
    for p, o in zip(prob, out, strict=True):
        labels = measure.label(p > 0.6, connectivity=2)
        sizes = np.bincount(labels.ravel())
        keep = sizes >= 4
        keep[0] = False
        np.testing.assert_array_equal(o, keep[labels])


def test_stack_components_do_not_cross_images() -> None:
    prob = np.zeros((2, 5, 5), np.float32)
    prob[0, 2, 2] = prob[1, 2, 2] = 1.0  # one pixel in each: never merged into a 2-pixel blob
    assert not binarize(prob, 0.5, min_area=2).any()


def test_binarize_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError, match="binarize"):
        binarize(np.zeros(5), 0.5, 1)


def test_resize_nearest_preserves_values_and_blocks() -> None:
    mask = np.array([[0, 1], [2, 3]], np.uint8)
    out = resize_mask(mask, 4, 6)
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(out[:2, :3], 0)
    np.testing.assert_array_equal(out[2:, 3:], 3)


def test_resize_bool_up_and_down_round_trip() -> None:
    rng = np.random.default_rng(1)
    small = rng.random((64, 64)) > 0.7
    big = resize_mask(small, 1024, 1024)
    assert big.dtype == bool and big.shape == (1024, 1024)
    assert big.sum() == small.sum() * 16 * 16
    np.testing.assert_array_equal(resize_mask(big, 64, 64), small)


@pytest.mark.parametrize(("src", "dst"), [((256, 256), (1024, 1024)), ((300, 200), (1024, 1000))])
def test_resize_matches_pillow_nearest(src: tuple[int, int], dst: tuple[int, int]) -> None:
    rng = np.random.default_rng(2)
    mask = rng.integers(0, 255, src, dtype=np.uint8)
    pil = np.asarray(Image.fromarray(mask).resize((dst[1], dst[0]), Image.NEAREST))
    np.testing.assert_array_equal(resize_mask(mask, *dst), pil)


def test_resize_stack_and_same_size() -> None:
    stack = np.zeros((3, 4, 4), bool)
    stack[1, 0, 0] = True
    out = resize_mask(stack, 8, 8)
    assert out.shape == (3, 8, 8) and out[1, :2, :2].all() and out.sum() == 4
    same = resize_mask(stack[1], 4, 4)
    np.testing.assert_array_equal(same, stack[1])
    assert same is not stack[1]


def test_resize_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="positive"):
        resize_mask(np.zeros((4, 4), bool), 0, 4)
