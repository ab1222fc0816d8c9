"""Step ``thresholds``: the ensemble weights and the submission's rule, searched on the OOF pool,
written as thresholds.json, cv.json and thresholds.png."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from medpipe.decision.thresholds import cache_area_scale
from medpipe.layout import (
    SEGMENT,
    StageLayout,
    read_decision,
    read_seg_predictions,
    write_seg_predictions,
)
from medpipe.steps.features import run_features
from medpipe.steps.fuse import run_fuse
from medpipe.steps.thresholds import run_thresholds
from tests.steps.conftest import FOLDS, GATE_MODEL, ORIGINAL, SEG

RULES = ("seg_only", "seg_area", "seg_gate", "seg_gate_lgbm")


@pytest.fixture
def decided(stage) -> tuple[dict, dict, dict]:
    layout = StageLayout(stage["stage_dir"])
    features = layout.fusion_dir / "features.csv"
    run_features(stage["config"], stage["data_dir"], stage["stage_dir"], features)
    run_fuse(stage["config"], features, stage["data_dir"], layout.fusion_dir)
    decision = run_thresholds(stage["config"], stage["data_dir"], stage["stage_dir"])
    return stage, decision, json.loads(layout.cv.read_text())


def test_the_decision_and_the_cv_summary_say_what_the_oof_pool_shows(decided):
    stage, decision, cv = decided
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


def test_areas_are_searched_in_cache_pixels_and_written_in_both_units(stage):
    """Every OOF map gets a 2x2 false positive: only min_area 160 original pixels (10 at the 64²
    cache) removes it and keeps every disc (78 cache pixels or more)."""
    for d in StageLayout(stage["stage_dir"]).folds_of(SEGMENT, SEG, range(FOLDS)):
        saved = read_seg_predictions(d.oof)
        maps = saved["prob"].astype(np.float32)
        maps[:, 1:3, 1:3] = 0.9
        write_seg_predictions(d.oof, saved["image_id"], maps, saved["cls_prob"])
    config = {**stage["config"], "gate": {"models": {}}, "fusion": {"enabled": False}}
    decision = run_thresholds(config, stage["data_dir"], stage["stage_dir"])
    scale = cache_area_scale(stage["data_dir"], stage["config"]["image_size"])
    assert scale == pytest.approx((stage["config"]["image_size"] / ORIGINAL) ** 2)
    assert decision["area_scale"] == pytest.approx(scale)
    assert decision["min_area_original_px"] == 160
    assert decision["min_area"] == pytest.approx(160 * scale)
    assert decision["score"] == pytest.approx(1.0)


def test_the_original_size_comes_from_meta_and_an_empty_table_is_named(stage, tmp_path):
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"orig_height": [1024, 1024, 8], "orig_width": [1024, 1024, 8]}).to_csv(
        meta, index=False
    )
    assert cache_area_scale(tmp_path, 256) == pytest.approx(1 / 16)  # the median film
    pd.DataFrame({"orig_height": [], "orig_width": []}).to_csv(meta, index=False)
    with pytest.raises(ValueError, match=r"meta.csv: no images to take the original size from"):
        cache_area_scale(tmp_path, 256)


def test_a_rule_the_stage_cannot_apply_is_refused_before_any_work(stage):
    config = {**stage["config"], "postprocess": {**stage["config"]["postprocess"]}}
    config["gate"] = {"models": {}}
    config["postprocess"]["rule"] = "seg_gate"
    with pytest.raises(ValueError, match=r"postprocess.rule: seg_gate needs .*gate.models"):
        run_thresholds(config, stage["data_dir"], stage["stage_dir"])
    assert not StageLayout(stage["stage_dir"]).thresholds.exists()
