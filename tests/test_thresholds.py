"""Threshold triplet search, its application and the ablation table."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import remove_small_objects

from medpipe.metrics import competition_dice, dice_per_image
from medpipe.thresholds import (
    RULES,
    ablation,
    apply_triplet,
    check_rule,
    label_images,
    plot_heatmap,
    remove_small_components,
    search_triplet,
)

S = 24


def _constructed(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Data whose only perfect setting is cls 0.5, pixel 0.5, min_area 5.

    Positives: a 3x3 truth blob (centre 0.8, edge 0.65: pixel 0.7 loses the edge) in a ring
    of 0.45 (pixel 0.3 adds the ring). Every image: a 2x2 spurious square at 0.9 (min_area 3
    keeps it, 10 also removes the 9-pixel blob). Half the negatives have a blob at 0.8 that
    only the classifier can remove: p_finding 0.55..0.95 for positives, up to 0.45 for negatives.
    """
    rng = np.random.default_rng(seed)
    prob = np.full((n, S, S), 0.05, np.float32)
    truth = np.zeros((n, S, S), np.uint8)
    positive = np.arange(n) % 2 == 0
    p = np.where(positive, rng.uniform(0.55, 0.95, n), rng.uniform(0.0, 0.45, n))
    p[np.flatnonzero(positive)[0]] = 0.55
    p[np.flatnonzero(~positive)[0]] = 0.45
    for i in range(n):
        prob[i, 18:20, 18:20] = 0.9
        if positive[i] or i % 4 == 1:
            prob[i, 4:9, 4:9] = 0.45
            prob[i, 5:8, 5:8] = 0.65
            prob[i, 6, 6] = 0.8
        if positive[i]:
            truth[i, 5:8, 5:8] = 1
    return prob.astype(np.float16), truth, p


GRIDS = dict(
    cls_grid=[0.3, 0.4, 0.5, 0.6, 0.7], pixel_grid=[0.3, 0.5, 0.7], area_grid=[0, 3, 5, 10]
)


def test_search_finds_the_known_best_triplet() -> None:
    prob, truth, p = _constructed()
    best = search_triplet(prob, truth, p, **GRIDS)
    assert best["mode"] == "fusion"
    assert (best["cls_threshold"], best["pixel_threshold"], best["min_area"]) == (0.5, 0.5, 5.0)
    assert best["score"] == pytest.approx(1.0)
    json.dumps(best)  # thresholds.json must serialise as is
    assert np.asarray(best["grid"]["scores"]).shape == (5, 3, 4)
    assert np.asarray(best["grid"]["scores"]).max() == pytest.approx(1.0)
    masks = apply_triplet(prob, p, best)
    assert competition_dice(masks, truth) == pytest.approx(1.0)


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


def test_vectorised_scores_match_a_per_image_brute_force(random_maps) -> None:
    prob, truth, p = random_maps
    grids = dict(cls_grid=[0.2, 0.5, 0.8], pixel_grid=[0.4, 0.6, 0.8], area_grid=[0, 2, 6, 15])
    cube = np.asarray(search_triplet(prob, truth, p, **grids)["grid"]["scores"])
    for (c, cls), (t, pixel), (a, area) in itertools.product(
        *(enumerate(grids[k]) for k in ("cls_grid", "pixel_grid", "area_grid"))
    ):
        assert cube[c, t, a] == pytest.approx(
            _brute_force(prob, truth, p >= cls, pixel, area), abs=1e-6
        )


def test_area_rule_matches_brute_force_and_apply(random_maps) -> None:
    prob, truth, _ = random_maps
    result = search_triplet(
        prob, truth, None, [0.7, 0.9], [0.5, 0.7], [0, 4], confident_area_grid=[0, 3, 30]
    )
    assert result["mode"] == "area" and result["cls_threshold"] is None
    cube = np.asarray(result["grid"]["scores"])
    assert cube.shape == (2, 3, 2, 2)
    p32 = prob.astype(np.float32)
    for (i, top), (j, conf), (t, pixel), (a, area) in itertools.product(
        enumerate([0.7, 0.9]), enumerate([0, 3, 30]), enumerate([0.5, 0.7]), enumerate([0, 4])
    ):
        keep = (p32 > top).reshape(len(p32), -1).sum(axis=1) >= conf
        assert cube[i, j, t, a] == pytest.approx(
            _brute_force(prob, truth, keep, pixel, area), abs=1e-6
        )
    assert competition_dice(apply_triplet(prob, None, result), truth) == pytest.approx(
        result["score"]
    )


def test_components_are_8_connected_and_never_span_images() -> None:
    masks = np.zeros((2, 4, 4), bool)
    masks[:, 0, 0] = masks[:, 1, 1] = True  # diagonal neighbours, same place in both images
    labels, sizes, image = label_images(masks)
    assert sizes.tolist() == [2, 2] and image.tolist() == [0, 1]
    assert remove_small_components(masks, 3).sum() == 0
    assert remove_small_components(masks, 2).sum() == 4


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


def test_ablation_numbers_behave() -> None:
    prob, truth, p = _constructed()
    noisy_gate = np.clip(p + np.where(np.arange(len(p)) % 3 == 0, 0.3, 0.0), 0, 1)
    folds = np.arange(len(p)) % 4
    cv = ablation(
        prob,
        truth,
        p_gate=noisy_gate,
        p_fused=p,
        model_probs={"a": prob, "b": np.zeros_like(prob)},
        folds=folds,
        **GRIDS,
    )
    negatives = float((truth.reshape(len(truth), -1).sum(axis=1) == 0).mean())
    assert cv["all_empty"] == pytest.approx(negatives)
    assert cv["n_positive"] == int(round((1 - negatives) * len(truth)))
    # the fake blobs on negatives cost the segmentation-only rule; a perfect classifier fixes them
    assert cv["seg_only"] < cv["seg_gate"] < cv["seg_gate_lgbm"] == pytest.approx(1.0)
    assert cv["ensemble"] == cv["seg_gate_lgbm"] and cv["ensemble_rule"] == "seg_gate_lgbm"
    assert cv["models"]["b"]["seg_only"] == pytest.approx(negatives)
    assert cv["models"]["a"]["seg_only"] == pytest.approx(cv["seg_only"])
    assert set(cv["nested"]) >= {"seg_only", "seg_area", "seg_gate", "seg_gate_lgbm", "models"}
    assert all(cv["nested"][k] <= cv[k] + 1e-12 for k in ("seg_only", "seg_gate", "seg_gate_lgbm"))
    assert cv["triplets"]["seg_gate_lgbm"]["cls_threshold"] == 0.5
    # Dice on the positive images, per variant, OOF and nested: a perfect classifier loses none
    assert set(cv["dice_pos"]) == set(cv["dice_pos_nested"]) >= {"seg_only", "seg_gate_lgbm"}
    assert cv["dice_pos"]["seg_gate_lgbm"] == pytest.approx(1.0)
    for variant, dice in cv["dice_pos"].items():
        # the score is made of the positives' Dice and the negatives kept empty
        assert 0.0 <= dice <= 1.0 and (1 - negatives) * dice <= cv[variant] + 1e-12
    json.dumps(cv)


def test_plot_heatmap_writes_a_png(tmp_path) -> None:
    prob, truth, p = _constructed()
    for result in (
        search_triplet(prob, truth, p, **GRIDS),
        search_triplet(prob, truth, None, **GRIDS),
    ):
        out = tmp_path / f"{result['mode']}.png"
        plot_heatmap(result, out)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_component_images_do_not_rely_on_scipys_numbering(monkeypatch: pytest.MonkeyPatch) -> None:
    masks = np.zeros((3, 6, 6), bool)
    masks[0, 0, 0] = masks[0, 4, 4] = masks[2, 2:4, 2:4] = True
    expected = label_images(masks)
    real = ndimage.label

    def reversed_ids(mask, structure):
        labels, n = real(mask, structure=structure)
        return np.where(labels > 0, n + 1 - labels, 0), n

    monkeypatch.setattr("medpipe.thresholds.ndimage.label", reversed_ids)
    labels, sizes, image = label_images(masks)
    assert sizes.tolist() == expected[1][::-1].tolist() == [4, 1, 1]
    assert image.tolist() == [2, 0, 0] and expected[2].tolist() == [0, 0, 2]


def _fold_shifted() -> dict:
    """A LightGBM p that overfits the grid and a gate that does not, with two folds.

    The fused p separates fold 0 at cls 0.5 and fold 1 only at 0.7, so its OOF best (0.5 for
    all) beats the gate's, while a setting chosen on one fold fails the other. The gate lets 6
    of the 10 negatives with a blob through, the same way in both folds.
    """
    prob, truth, p = _constructed()
    n = len(p)
    positive = np.arange(n) % 2 == 0
    folds = (np.arange(n) // 4) % 2
    fused = np.where(folds == 0, np.where(positive, 0.6, 0.4), np.where(positive, 0.8, 0.65))
    gate = p.copy()
    gate[np.flatnonzero(np.arange(n) % 4 == 1)[:6]] = 0.9
    return dict(prob=prob, truth=truth, p_gate=gate, p_fused=fused, folds=folds)


def test_the_rule_is_the_variant_with_the_best_nested_score() -> None:
    data = _fold_shifted()
    cv = ablation(**data, **GRIDS)
    assert cv["seg_gate_lgbm"] > cv["seg_gate"]  # OOF alone would pick LightGBM
    assert cv["nested"]["seg_gate"] > cv["nested"]["seg_gate_lgbm"]
    assert cv["nested"]["seg_gate"] == max(cv["nested"][k] for k in RULES)
    assert (cv["ensemble_rule"], cv["rule_choice"]) == ("seg_gate", "nested")
    assert cv["ensemble"] == cv["seg_gate"] and cv["nested"]["ensemble"] == cv["nested"]["seg_gate"]
    decision = cv["decision"]
    assert (decision["rule"], decision["mode"], decision["p_finding_source"]) == (
        "seg_gate",
        "fusion",
        "gate",
    )
    assert decision["score"] == cv["seg_gate"]
    assert decision["nested_score"] == cv["nested"]["seg_gate"]
    # the setting is the one search_triplet finds with the gate probability
    searched = search_triplet(data["prob"], data["truth"], data["p_gate"], **GRIDS)
    assert {k: decision[k] for k in searched} == searched
    json.dumps(cv)

    without_folds = ablation(**{**data, "folds": None}, **GRIDS)
    assert (without_folds["ensemble_rule"], without_folds["rule_choice"]) == (
        "seg_gate_lgbm",
        "oof",
    )


@pytest.mark.parametrize(
    ("informative", "noise", "expected"),
    [("p_gate", "p_fused", "seg_gate"), ("p_fused", "p_gate", "seg_gate_lgbm")],
)
def test_the_informative_classifier_wins(informative, noise, expected) -> None:
    prob, truth, p = _constructed()
    rng = np.random.default_rng(1)
    cv = ablation(
        prob,
        truth,
        folds=(np.arange(len(p)) // 4) % 4,
        **{informative: p, noise: rng.uniform(0, 1, len(p))},
        **GRIDS,
    )
    assert cv["ensemble_rule"] == expected
    assert cv["decision"]["cls_threshold"] == 0.5
    assert cv["decision"]["p_finding_source"] == {"seg_gate": "gate"}.get(expected, "fusion")


def test_ties_go_to_the_simpler_rule() -> None:
    prob, truth, p = _constructed()
    folds = (np.arange(len(p)) // 4) % 4  # every fold holds each kind of image
    # without negatives that carry a blob, no classifier can add anything
    clean = np.arange(len(p)) % 4 != 1
    cv = ablation(
        prob[clean], truth[clean], p_gate=p[clean], p_fused=p[clean], folds=folds[clean], **GRIDS
    )
    assert all(cv["nested"][k] == pytest.approx(1.0) for k in RULES)
    assert cv["ensemble_rule"] == "seg_only" and cv["decision"]["cls_threshold"] is None
    # a gate and LightGBM that are equally perfect: the gate, the simpler of the two
    cv = ablation(prob, truth, p_gate=p, p_fused=p.copy(), folds=folds, **GRIDS)
    assert cv["nested"]["seg_gate"] == cv["nested"]["seg_gate_lgbm"] == pytest.approx(1.0)
    assert cv["ensemble_rule"] == "seg_gate"


def test_the_config_can_force_a_rule(tmp_path) -> None:
    data = _fold_shifted()
    for rule in RULES:
        cv = ablation(**data, rule=rule, **GRIDS)
        assert (cv["ensemble_rule"], cv["rule_choice"]) == (rule, "config")
        assert cv["ensemble"] == cv[rule] and cv["decision"]["rule"] == rule
        plot_heatmap(cv["decision"], tmp_path / f"{rule}.png")
        assert (tmp_path / f"{rule}.png").read_bytes()[:4] == b"\x89PNG"
    area = ablation(**data, rule="seg_area", **GRIDS)["decision"]
    searched = search_triplet(data["prob"], data["truth"], None, **GRIDS)
    assert {k: area[k] for k in searched} == searched
    masks = apply_triplet(data["prob"], None, area)
    assert competition_dice(masks, data["truth"]) == pytest.approx(area["score"])


def test_forcing_a_rule_the_run_cannot_score_says_what_is_missing() -> None:
    data = _fold_shifted()
    with pytest.raises(ValueError, match=r"postprocess.rule: seg_gate_lgbm needs .*fusion.enabled"):
        ablation(**{**data, "p_fused": None}, rule="seg_gate_lgbm", **GRIDS)
    with pytest.raises(ValueError, match=r"postprocess.rule: seg_gate needs .*gate.models"):
        ablation(**{**data, "p_gate": None}, rule="seg_gate", **GRIDS)
    with pytest.raises(ValueError, match=r"postprocess.rule: 'lgbm' is not a rule"):
        check_rule("lgbm", gate=True, fused=True)
    check_rule("auto", gate=False, fused=False)
