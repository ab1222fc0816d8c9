"""The competition metric against a slow per-image reference, and its edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from medpipe.metrics import competition_dice, dice_per_image


def reference_score(preds: np.ndarray, truths: np.ndarray) -> float:
    """The SIIM definition, one image and one pixel at a time."""
    scores = []
    for pred, truth in zip(preds, truths, strict=True):
        inter = sum(bool(p) and bool(t) for p, t in zip(pred.flat, truth.flat, strict=True))
        total = int(np.sum(pred != 0)) + int(np.sum(truth != 0))
        scores.append(1.0 if total == 0 else 2.0 * inter / total)
    return sum(scores) / len(scores)


@st.composite
def mask_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    shape = (draw(st.integers(1, 6)), draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    preds = draw(arrays(bool, shape))
    truths = draw(arrays(bool, shape))
    # make empty/empty and one-sided images common, as they are in SIIM
    for i in range(shape[0]):
        kind = draw(st.sampled_from(["random", "both_empty", "pred_empty", "truth_empty"]))
        if kind in ("both_empty", "pred_empty"):
            preds[i] = False
        if kind in ("both_empty", "truth_empty"):
            truths[i] = False
    return preds, truths


@settings(max_examples=200, deadline=None)
@given(mask_pairs())
def test_matches_per_image_reference(pair: tuple[np.ndarray, np.ndarray]) -> None:
    preds, truths = pair
    assert competition_dice(preds, truths) == pytest.approx(reference_score(preds, truths))


@settings(max_examples=100, deadline=None)
@given(mask_pairs())
def test_list_input_equals_stacked_input(pair: tuple[np.ndarray, np.ndarray]) -> None:
    preds, truths = pair
    stacked = dice_per_image(preds, truths)
    listed = dice_per_image(list(preds), list(truths))
    np.testing.assert_allclose(listed, stacked)


def test_empty_vs_empty_scores_one() -> None:
    empty = np.zeros((3, 5, 5), bool)
    assert competition_dice(empty, empty) == 1.0


def test_one_sided_scores_zero() -> None:
    empty = np.zeros((1, 5, 5), bool)
    full = np.ones((1, 5, 5), bool)
    assert competition_dice(empty, full) == 0.0
    assert competition_dice(full, empty) == 0.0


def test_partial_overlap_value() -> None:
    pred = np.zeros((1, 4, 4), bool)
    truth = np.zeros((1, 4, 4), bool)
    pred[0, 0, :2] = True  # 2 pixels
    truth[0, 0, 1:4] = True  # 3 pixels, 1 shared
    assert competition_dice(pred, truth) == pytest.approx(2 * 1 / 5)


def test_mean_over_images_not_pixels() -> None:
    # a perfect small image and a missed large one average to 0.5, whatever their areas
    preds = [np.ones((2, 2), bool), np.zeros((50, 50), bool)]
    truths = [np.ones((2, 2), bool), np.ones((50, 50), bool)]
    assert competition_dice(preds, truths) == pytest.approx(0.5)


def test_list_of_differently_sized_images() -> None:
    preds = [np.ones((3, 4), bool), np.zeros((6, 2), bool)]
    truths = [np.ones((3, 4), bool), np.zeros((6, 2), bool)]
    np.testing.assert_array_equal(dice_per_image(preds, truths), [1.0, 1.0])


def test_errors() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 truths"):
        competition_dice(np.zeros((2, 3, 3), bool), np.zeros((1, 3, 3), bool))
    with pytest.raises(ValueError, match="no images"):
        competition_dice([], [])
    with pytest.raises(ValueError, match="image 0: prediction shape"):
        # would broadcast silently without the shape check
        competition_dice([np.ones((1, 4), bool)], [np.ones((4, 4), bool)])
    with pytest.raises(ValueError, match="shape"):
        competition_dice(np.zeros((2, 4, 6), bool), np.zeros((2, 6, 4), bool))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        competition_dice(np.zeros((4, 4), bool), np.zeros((4, 4), bool))
