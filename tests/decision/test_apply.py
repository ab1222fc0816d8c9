"""The decided rule applied: masks score what the search found; nearest resize keeps values."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import measure

from medpipe.decision.apply import apply_triplet, check_p_finding, resize_mask
from medpipe.decision.policy import ablation
from medpipe.metrics import competition_dice
from tests.decision.oof_data import GRIDS, constructed, fold_shifted


def _seg_only(pixel_threshold: float, min_area: float) -> dict:
    return {"mode": "seg_only", "pixel_threshold": pixel_threshold, "min_area": min_area}


@pytest.mark.parametrize("rule", ["seg_only", "seg_area", "seg_gate", "seg_gate_lgbm"])
def test_applied_masks_score_what_the_search_found(rule) -> None:
    data = fold_shifted()
    decision = ablation(**data, rule=rule, **GRIDS)["decision"]
    p = {"seg_gate": data["p_gate"], "seg_gate_lgbm": data["p_fused"]}.get(rule)
    masks = apply_triplet(data["prob"], p, decision)
    assert masks.dtype == bool and masks.shape == data["prob"].shape
    assert competition_dice(masks, data["truth"]) == pytest.approx(decision["score"])


def test_the_known_best_triplet_gives_perfect_masks() -> None:
    prob, truth, p = constructed()
    decision = ablation(prob, truth, p_fused=p, rule="seg_gate_lgbm", **GRIDS)["decision"]
    assert (decision["cls_threshold"], decision["pixel_threshold"], decision["min_area"]) == (
        0.5,
        0.5,
        5.0,
    )
    assert competition_dice(apply_triplet(prob, p, decision), truth) == pytest.approx(1.0)


def test_apply_triplet_empties_images_below_the_classification_threshold() -> None:
    prob = np.full((3, 8, 8), 0.9, np.float32)
    masks = apply_triplet(
        prob,
        np.array([0.1, 0.6, 0.9]),
        {"mode": "fusion", "cls_threshold": 0.5, "pixel_threshold": 0.5, "min_area": 0},
    )
    assert masks.reshape(3, -1).any(axis=1).tolist() == [False, True, True]
    with pytest.raises(ValueError, match="p_finding"):
        apply_triplet(
            prob,
            None,
            {"mode": "fusion", "cls_threshold": 0.5, "pixel_threshold": 0.5, "min_area": 0},
        )
    with pytest.raises(ValueError, match="top_score_threshold"):
        apply_triplet(prob, None, {"mode": "area", "pixel_threshold": 0.5, "min_area": 0})


def test_a_setting_without_mode_is_refused() -> None:
    """Old thresholds.json files are decoded once, by layout.Decision; apply needs the mode."""
    with pytest.raises(ValueError, match="mode"):
        apply_triplet(np.zeros((1, 4, 4)), None, {"cls_threshold": 0.5, "pixel_threshold": 0.5})


def test_threshold_is_strict_and_min_area_zero_keeps_everything() -> None:
    prob = np.array([[[0.5, 0.51], [0.0, 0.9]]], np.float32)
    np.testing.assert_array_equal(
        apply_triplet(prob, None, _seg_only(0.5, 0)), [[[False, True], [False, True]]]
    )


def test_seg_only_matches_skimage_reference_on_random_stack() -> None:
    rng = np.random.default_rng(0)
    prob = rng.random((4, 32, 32)).astype(np.float32)
    out = apply_triplet(prob, None, _seg_only(0.6, 4))
    for p, o in zip(prob, out, strict=True):
        labels = measure.label(p > 0.6, connectivity=2)
        sizes = np.bincount(labels.ravel())
        keep = sizes >= 4
        keep[0] = False
        np.testing.assert_array_equal(o, keep[labels])


def test_apply_triplet_rejects_wrong_rank_and_unknown_modes() -> None:
    with pytest.raises(ValueError, match="apply_triplet: expected"):
        apply_triplet(np.zeros((4, 4)), None, _seg_only(0.5, 1))
    with pytest.raises(ValueError, match="unknown mode 'lgbm'"):
        apply_triplet(np.zeros((1, 4, 4)), None, {"mode": "lgbm", "pixel_threshold": 0.5})


def test_check_p_finding_names_the_probability() -> None:
    with pytest.raises(ValueError, match="p_gate has 2 values for 3 images"):
        check_p_finding(np.zeros(2), 3, "p_gate")
    with pytest.raises(ValueError, match="p_fused has 1 NaN/inf values"):
        check_p_finding(np.array([0.1, np.nan]), 2, "p_fused")


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
