"""The ablation table and the choice of the submission's rule: best nested score, ties simplest."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medpipe.decision.policy import RULES, ablation, check_rule
from medpipe.decision.search import dice_tables, search_rule
from tests.decision.oof_data import GRIDS, constructed, fold_shifted


def _searched(data: dict, mode: str, p: np.ndarray | None) -> dict:
    """The setting the search finds for one mode alone, without its arrays."""
    tables = dice_tables(
        data["prob"], data["truth"], GRIDS["pixel_grid"], GRIDS["area_grid"], GRIDS["cls_grid"]
    )
    result = search_rule(tables, mode, p, GRIDS["cls_grid"], GRIDS["area_grid"])
    return {k: v for k, v in result.items() if not k.startswith("_")}


def test_ablation_numbers_behave() -> None:
    prob, truth, p = constructed()
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


def test_the_rule_is_the_variant_with_the_best_nested_score() -> None:
    data = fold_shifted()
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
    # the setting is the one the search finds with the gate probability
    searched = _searched(data, "fusion", data["p_gate"])
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
    prob, truth, p = constructed()
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
    prob, truth, p = constructed()
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


def test_the_config_can_force_a_rule() -> None:
    data = fold_shifted()
    for rule in RULES:
        cv = ablation(**data, rule=rule, **GRIDS)
        assert (cv["ensemble_rule"], cv["rule_choice"]) == (rule, "config")
        assert cv["ensemble"] == cv[rule] and cv["decision"]["rule"] == rule
    area = ablation(**data, rule="seg_area", **GRIDS)["decision"]
    searched = _searched(data, "area", None)
    assert {k: area[k] for k in searched} == searched
    assert area["grid"]["axes"][:2] == ["top_score_threshold", "min_confident_area"]


def test_forcing_a_rule_the_run_cannot_score_says_what_is_missing() -> None:
    data = fold_shifted()
    with pytest.raises(ValueError, match=r"postprocess.rule: seg_gate_lgbm needs .*fusion.enabled"):
        ablation(**{**data, "p_fused": None}, rule="seg_gate_lgbm", **GRIDS)
    with pytest.raises(ValueError, match=r"postprocess.rule: seg_gate needs .*gate.models"):
        ablation(**{**data, "p_gate": None}, rule="seg_gate", **GRIDS)
    with pytest.raises(ValueError, match=r"postprocess.rule: 'lgbm' is not a rule"):
        check_rule("lgbm", gate=True, fused=True)
    check_rule("auto", gate=False, fused=False)


def test_folds_must_cover_every_image() -> None:
    data = fold_shifted()
    with pytest.raises(ValueError, match="ablation: folds has 3 values for 40 images"):
        ablation(**{**data, "folds": np.zeros(3)}, **GRIDS)
