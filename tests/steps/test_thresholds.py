"""Step ``thresholds`` (``medpipe thresholds``): the ensemble weights and the submission's rule,
searched on the OOF pool, written as thresholds.json, cv.json and thresholds.png."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from medpipe.layout import (
    SEGMENT,
    StageLayout,
    fusion_files,
    read_decision,
    read_seg_predictions,
    write_seg_predictions,
)
from tests.steps.conftest import FOLDS, GATE_MODEL, ORIGINAL, SEG, refused, step

RULES = ("seg_only", "seg_area", "seg_gate", "seg_gate_lgbm")


def _dirs(stage) -> tuple:
    return ("--data-dir", stage["data_dir"], "--stage-dir", stage["stage_dir"])


def _decided(stage, config=None) -> tuple[dict, dict]:
    layout = StageLayout(stage["stage_dir"])
    step(stage, "thresholds", *_dirs(stage), config=config)
    return json.loads(layout.thresholds.read_text()), json.loads(layout.cv.read_text())


def test_the_decision_and_the_cv_summary_say_what_the_oof_pool_shows(stage):
    files = fusion_files(StageLayout(stage["stage_dir"]).fusion_dir)
    step(stage, "features", *_dirs(stage), "--out", files["features"])
    step(stage, "fuse", "--features", files["features"], "--data-dir", stage["data_dir"],
         "--out-dir", files["features"].parent)  # fmt: skip
    decision, cv = _decided(stage)
    pool = pd.read_csv(stage["data_dir"] / "folds.csv")
    assert cv["n_images"] == len(pool) and cv["n_positive"] == pool["has_finding"].sum()
    assert cv["all_empty"] == pytest.approx(1 - pool["has_finding"].mean())
    for rule in RULES:
        assert math.isfinite(cv[rule]) and 0 <= cv[rule] <= 1
    # the fabricated U-Net finds every disc: far above all-empty, whatever the rule
    assert cv[decision["rule"]] > cv["all_empty"] + 0.2
    best = max(cv["nested"][r] for r in RULES)
    assert decision["rule"] == next(r for r in RULES if cv["nested"][r] >= best - 1e-12)
    assert decision["score"] == cv["ensemble"] == cv[decision["rule"]]
    assert cv["weights"] == {SEG: 1.0} and set(cv["gates"]) == {GATE_MODEL}
    assert cv["gates"][GATE_MODEL]["auc"] == pytest.approx(1.0)
    written = read_decision(StageLayout(stage["stage_dir"]).thresholds)
    assert written.rule == decision["rule"] and written.weights == {SEG: 1.0}
    assert StageLayout(stage["stage_dir"]).heatmap.read_bytes()[:4] == b"\x89PNG"


def _with_a_false_positive(stage) -> dict:
    """Every OOF map gets a 2x2 false positive: only min_area 160 original pixels (10 at the 64²
    cache) removes it and keeps every disc (78 cache pixels or more). No gate, no fusion."""
    for d in StageLayout(stage["stage_dir"]).folds_of(SEGMENT, SEG, range(FOLDS)):
        saved = read_seg_predictions(d.oof)
        maps = saved["prob"].astype(np.float32)
        maps[:, 1:3, 1:3] = 0.9
        write_seg_predictions(d.oof, saved["image_id"], maps, saved["cls_prob"])
    return {**stage["config"], "gate": {"models": {}}, "fusion": {"enabled": False}}


def test_areas_are_searched_in_cache_pixels_and_written_in_both_units(stage):
    decision, cv = _decided(stage, _with_a_false_positive(stage))
    scale = (stage["config"]["image_size"] / ORIGINAL) ** 2
    assert decision["area_scale"] == pytest.approx(scale)
    assert decision["min_area_original_px"] == 160
    assert decision["min_area"] == pytest.approx(160 * scale)
    assert decision["score"] == pytest.approx(1.0) and cv["all_empty"] < 1.0


def test_the_original_size_is_the_median_training_film(stage):
    meta = pd.read_csv(stage["data_dir"] / "meta.csv")
    sides = np.where(np.arange(len(meta)) % 3 == 0, 2048, 512)  # a third of the films are 2048²
    meta.assign(orig_height=sides, orig_width=sides).to_csv(
        stage["data_dir"] / "meta.csv", index=False
    )
    decision, _ = _decided(stage, _with_a_false_positive(stage))
    assert decision["area_scale"] == pytest.approx((stage["config"]["image_size"] / 512) ** 2)


def test_a_rule_the_stage_cannot_apply_is_refused_before_any_work(stage):
    config = {**stage["config"], "gate": {"models": {}}}
    config["postprocess"] = {**config["postprocess"], "rule": "seg_gate"}
    line = refused(stage, "thresholds", *_dirs(stage), config=config)
    assert "postprocess.rule: seg_gate needs" in line and "gate.models" in line
    assert not StageLayout(stage["stage_dir"]).thresholds.exists()
