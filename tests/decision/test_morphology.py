"""Connected components: 8-connected, never across images, small ones removed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage import measure

from medpipe.decision.morphology import label_images, remove_small_components
from medpipe.predictions.stored import image_chunks


def test_components_are_8_connected_and_never_span_images() -> None:
    masks = np.zeros((2, 4, 4), bool)
    masks[:, 0, 0] = masks[:, 1, 1] = True  # diagonal neighbours, same place in both images
    labels, sizes, image = label_images(masks)
    assert sizes.tolist() == [2, 2] and image.tolist() == [0, 1]
    assert remove_small_components(masks, 3).sum() == 0
    assert remove_small_components(masks, 2).sum() == 4


def test_component_images_do_not_rely_on_scipys_numbering(monkeypatch: pytest.MonkeyPatch) -> None:
    masks = np.zeros((3, 6, 6), bool)
    masks[0, 0, 0] = masks[0, 4, 4] = masks[2, 2:4, 2:4] = True
    expected = label_images(masks)
    real = ndimage.label

    def reversed_ids(mask, structure):
        labels, n = real(mask, structure=structure)
        return np.where(labels > 0, n + 1 - labels, 0), n

    monkeypatch.setattr("medpipe.decision.morphology.ndimage.label", reversed_ids)
    labels, sizes, image = label_images(masks)
    assert sizes.tolist() == expected[1][::-1].tolist() == [4, 1, 1]
    assert image.tolist() == [2, 0, 0] and expected[2].tolist() == [0, 0, 2]


def test_min_area_removes_small_keeps_large() -> None:
    mask = np.zeros((1, 20, 20), bool)
    mask[0, 1:3, 1:3] = True  # 4 pixels
    mask[0, 10:15, 10:15] = True  # 25 pixels
    out = remove_small_components(mask, 5)
    assert out.dtype == bool
    assert not out[0, 1:3, 1:3].any()
    assert out[0, 10:15, 10:15].all() and out.sum() == 25


def test_component_exactly_min_area_is_kept() -> None:
    mask = np.zeros((1, 8, 8), bool)
    mask[0, 0, :5] = True
    assert remove_small_components(mask, 5).sum() == 5
    assert remove_small_components(mask, 6).sum() == 0


def test_min_area_up_to_one_keeps_everything_in_a_copy() -> None:
    mask = np.eye(6, dtype=bool)[None]
    for min_area in (0, 1):
        out = remove_small_components(mask, min_area)
        np.testing.assert_array_equal(out, mask)
        assert out is not mask


def test_diagonal_pixels_are_one_component() -> None:
    mask = np.eye(6, dtype=bool)[None]  # 8-connected: one component of 6 pixels
    assert remove_small_components(mask, 6).sum() == 6


def test_matches_skimage_reference_on_random_stack() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((4, 32, 32)) > 0.6
    out = remove_small_components(masks, 4)
    for m, o in zip(masks, out, strict=True):
        labels = measure.label(m, connectivity=2)
        sizes = np.bincount(labels.ravel())
        keep = sizes >= 4
        keep[0] = False
        np.testing.assert_array_equal(o, keep[labels])


def test_stack_components_do_not_cross_images() -> None:
    masks = np.zeros((2, 5, 5), bool)
    masks[0, 2, 2] = masks[1, 2, 2] = True  # one pixel in each: never merged into a 2-pixel blob
    assert not remove_small_components(masks, 2).any()


def test_chunks_cover_the_stack_in_order() -> None:
    chunks = image_chunks(5, 1 << 23)
    assert [(s.start, s.stop) for s in chunks] == [(0, 2), (2, 4), (4, 5)]
    assert image_chunks(0, 100) == []


def test_label_images_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError, match="label_images"):
        label_images(np.zeros((4, 4), bool))
