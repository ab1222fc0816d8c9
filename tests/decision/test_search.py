"""The vectorised grid search: known best settings, and scores equal to a per-image brute force."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import remove_small_objects

from medpipe.decision.search import dice_tables, grid_values, public_setting, search_rule
from medpipe.metrics import dice_per_image
from tests.decision.oof_data import GRIDS, S, constructed


def _brute_force(prob, truth, keep_image, pixel, min_area) -> float:
    masks = np.stack(
        [
            remove_small_objects(m, max_size=max(int(min_area) - 1, 0), connectivity=2)
            if min_area > 1
            else m
            for m in prob.astype(np.float32) > pixel
        ]
    )
    masks[~keep_image] = False
    return float(dice_per_image(masks, truth).mean())


@pytest.fixture()
def random_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    smooth = ndimage.gaussian_filter(rng.standard_normal((30, S, S)), (0, 1.5, 1.5))
    prob = (1 / (1 + np.exp(-smooth / smooth.std() * 2))).astype(np.float16)
    truth = ndimage.gaussian_filter(rng.standard_normal((30, S, S)), (0, 2, 2)) > 0.15
    truth[:12] = False
    return prob, truth, rng.random(30)


def test_search_finds_the_known_best_triplet() -> None:
    prob, truth, p = constructed()
    tables = dice_tables(prob, truth, GRIDS["pixel_grid"], GRIDS["area_grid"])
    best = search_rule(tables, "fusion", p, GRIDS["cls_grid"], GRIDS["area_grid"])
    assert best["mode"] == "fusion"
    assert (best["cls_threshold"], best["pixel_threshold"], best["min_area"]) == (0.5, 0.5, 5.0)
    assert best["score"] == pytest.approx(1.0)
    assert best["_cube"].shape == (5, 3, 4)
    assert best["_cube"].max() == pytest.approx(1.0)
    assert "nested_score" not in best


def test_public_setting_is_json_with_the_grid_of_its_mode() -> None:
    prob, truth, p = constructed()
    tables = dice_tables(prob, truth, GRIDS["pixel_grid"], GRIDS["area_grid"], GRIDS["cls_grid"])
    grids = {
        "cls_threshold": GRIDS["cls_grid"],
        "top_score_threshold": GRIDS["cls_grid"],
        "min_confident_area": tables.area_grid,
        "pixel_threshold": tables.pixel_grid,
        "min_area": tables.area_grid,
    }
    for mode, axes, shape in (
        ("fusion", ["cls_threshold", "pixel_threshold", "min_area"], (5, 3, 4)),
        (
            "area",
            ["top_score_threshold", "min_confident_area", "pixel_threshold", "min_area"],
            (5, 4, 3, 4),
        ),
        ("seg_only", ["pixel_threshold", "min_area"], (3, 4)),
    ):
        setting = public_setting(
            search_rule(tables, mode, p, GRIDS["cls_grid"], tables.area_grid), grids
        )
        json.dumps(setting)  # thresholds.json must serialise as is
        assert not any(k.startswith("_") for k in setting)
        assert setting["grid"]["axes"] == axes
        assert np.asarray(setting["grid"]["scores"]).shape == shape


def test_vectorised_scores_match_a_per_image_brute_force(random_maps) -> None:
    prob, truth, p = random_maps
    grids = dict(cls_grid=[0.2, 0.5, 0.8], pixel_grid=[0.4, 0.6, 0.8], area_grid=[0, 2, 6, 15])
    tables = dice_tables(prob, truth, grids["pixel_grid"], grids["area_grid"])
    cube = search_rule(tables, "fusion", p, grids["cls_grid"], grids["area_grid"])["_cube"]
    for (c, cls), (t, pixel), (a, area) in itertools.product(
        *(enumerate(grids[k]) for k in ("cls_grid", "pixel_grid", "area_grid"))
    ):
        assert cube[c, t, a] == pytest.approx(
            _brute_force(prob, truth, p >= cls, pixel, area), abs=1e-6
        )


def test_area_rule_matches_brute_force(random_maps) -> None:
    prob, truth, _ = random_maps
    tables = dice_tables(prob, truth, [0.5, 0.7], [0, 4], [0.7, 0.9])
    result = search_rule(tables, "area", None, [0.7, 0.9], [0, 3, 30])
    assert result["mode"] == "area" and result["cls_threshold"] is None
    cube = result["_cube"]
    assert cube.shape == (2, 3, 2, 2)
    p32 = prob.astype(np.float32)
    for (i, top), (j, conf), (t, pixel), (a, area) in itertools.product(
        enumerate([0.7, 0.9]), enumerate([0, 3, 30]), enumerate([0.5, 0.7]), enumerate([0, 4])
    ):
        keep = (p32 > top).reshape(len(p32), -1).sum(axis=1) >= conf
        assert cube[i, j, t, a] == pytest.approx(
            _brute_force(prob, truth, keep, pixel, area), abs=1e-6
        )


def test_nested_score_chooses_on_the_other_folds() -> None:
    prob, truth, p = constructed()
    tables = dice_tables(prob, truth, GRIDS["pixel_grid"], GRIDS["area_grid"])
    folds = np.arange(len(p)) % 4
    result = search_rule(tables, "fusion", p, GRIDS["cls_grid"], [0], folds)
    assert result["nested_score"] <= result["score"] + 1e-12
    assert result["_nested_per_image"].shape == (len(p),)
    assert result["nested_score"] == pytest.approx(result["_nested_per_image"].mean())


def test_bad_inputs_name_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="cls_grid is empty"):
        grid_values([], "cls_grid")
    with pytest.raises(ValueError, match="must be equal"):
        dice_tables(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), [0.5], [0])
    with pytest.raises(ValueError, match="no images"):
        dice_tables(np.zeros((0, 4, 4)), np.zeros((0, 4, 4)), [0.5], [0])
