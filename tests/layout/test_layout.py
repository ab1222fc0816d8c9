"""The layout module: one answer to "where is fold i of this model, and what is in it"."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medpipe.config import RunConfig
from medpipe.layout import (
    Decision,
    FoldDir,
    RunLayout,
    StageLayout,
    identify_test_set,
    read_decision,
    read_gate_predictions,
    read_seg_predictions,
    write_decision,
    write_gate_predictions,
    write_seg_predictions,
)
from medpipe.predictions.sources import stage_sources


def test_a_fold_knows_its_number_and_its_files(tmp_path):
    fold = RunLayout(tmp_path).fold(1, "segment", "unet", 3)
    assert fold.fold == 3 and fold.path == tmp_path / "stage1" / "segment" / "unet" / "fold3"
    assert fold.oof.parent == fold.test.parent == fold.checkpoint.parent == fold.path
    assert fold.oof.suffix == ".npz"
    assert RunLayout(tmp_path).fold(1, "gate", "g", 0).oof.suffix == ".csv"
    with pytest.raises(ValueError, match="unknown task"):
        RunLayout(tmp_path).fold(1, "segmentation", "unet", 0)


def test_wildcards_give_the_rule_patterns():
    run = RunLayout("runs/x")
    assert (
        str(run.fold_dir("{stage}", "gate", "{model}", "{fold}"))
        == "runs/x/stage{stage}/gate/{model}/fold{fold}"
    )
    assert str(run.thresholds("{stage}")) == "runs/x/stage{stage}/thresholds.json"
    assert str(run.log("train_seg", run.fold_job("{model}", "{fold}"), stage="{stage}")) == (
        "runs/x/logs/stage{stage}/train_seg/{model}_fold{fold}.log"
    )


def test_stage_two_keeps_stage_one_weights_unless_retrained(tmp_path):
    cfg = RunConfig(
        {
            "run_dir": str(tmp_path),
            "folds": 2,
            "segmentation": {"models": {"kept": {}, "new": {}}},
            "stage2": {"retrain": {"new": True}},
        }
    )
    assert cfg.trained_fold(2, "segment", "kept", 1).path == tmp_path / "stage1/segment/kept/fold1"
    assert cfg.trained_fold(2, "segment", "new", 1).path == tmp_path / "stage2/segment/new/fold1"
    assert [d.fold for d in stage_sources(cfg, cfg.layout.stage(1), "segment")["kept"]] == [0, 1]


def test_a_fold_number_is_data_not_a_folder_name(tmp_path):
    """A fold folder may be anywhere and named anything: its number travels with it."""
    d = FoldDir("segment", "m", 4, tmp_path / "renamed")
    d.path.mkdir()
    write_seg_predictions(d.oof, ["a"], np.zeros((1, 2, 2)), np.array([0.5]))
    assert read_seg_predictions(d.oof)["image_id"].tolist() == ["a"] and d.fold == 4


def test_predictions_round_trip_with_their_dtypes(tmp_path):
    stage = StageLayout(tmp_path)
    seg, gate = stage.fold("segment", "u", 0), stage.fold("gate", "g", 0)
    seg.path.mkdir(parents=True)
    gate.path.mkdir(parents=True)
    write_seg_predictions(seg.test, ["b", "a"], np.full((2, 3, 3), 0.25), np.array([0.1, 0.2]))
    back = read_seg_predictions(seg.test)
    assert back["prob"].dtype == np.float16 and back["cls_prob"].dtype == np.float32
    assert back["image_id"].tolist() == ["b", "a"]
    write_gate_predictions(gate.oof, ["007"], np.array([0.3]), np.zeros((1, 2)))
    frame = read_gate_predictions(gate.oof, embeddings=True)
    assert frame["image_id"].tolist() == ["007"]  # an id stays a string
    assert list(frame.columns) == ["image_id", "prob", "emb_0", "emb_1"]
    with pytest.raises(FileNotFoundError, match="fold output not found"):
        read_seg_predictions(seg.oof)


def test_an_old_decision_file_is_decoded_once(tmp_path):
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps({"cls_threshold": 0.6, "pixel_threshold": 0.5, "min_area": 3}))
    old = read_decision(path)
    assert (old.rule, old.mode) == ("seg_gate_lgbm", "fusion") and old.uses_gate
    assert old.thresholds() == {
        "mode": "fusion",
        "cls_threshold": 0.6,
        "pixel_threshold": 0.5,
        "min_area": 3,
    }
    path.write_text(
        json.dumps({"pixel_threshold": 0.5, "top_score_threshold": 0.7, "min_confident_area": 9})
    )
    assert read_decision(path).rule == "seg_area"
    with pytest.raises(ValueError, match="lacks"):
        Decision.from_dict({"rule": "seg_gate", "mode": "fusion", "pixel_threshold": 0.5})


def test_writing_a_decision_keeps_every_field(tmp_path):
    fields = {
        "rule": "seg_only",
        "mode": "seg_only",
        "pixel_threshold": 0.4,
        "min_area": 2.0,
        "score": 0.81,
        "weights": {"u": 1.0},
        "area_scale": 0.0625,
    }
    decision = write_decision(tmp_path / "thresholds.json", fields)
    assert json.loads((tmp_path / "thresholds.json").read_text()) == fields
    assert decision.weights == {"u": 1.0} and decision.get("area_scale") == 0.0625


def test_the_test_set_includes_quarantined_files_that_named_an_image():
    meta = pd.DataFrame(
        {
            "image_id": ["a", "b", "t"],
            "split": ["test", "test", "train"],
            "orig_height": [10, 20, 30],
            "orig_width": [11, 21, 31],
        }
    )
    quarantine = pd.DataFrame(
        {
            "source": ["x.dcm", "y.dcm", "z.dcm"],
            "split": ["test", "test", "train"],
            "reason": ["bad pixels", "not DICOM", "bad"],
            "image_id": ["q", None, "r"],
            "orig_height": [40, None, 5],
            "orig_width": [41, None, 5],
        }
    )
    assert identify_test_set(meta, quarantine, "test") == {
        "a": (10, 11),
        "b": (20, 21),
        "q": (40, 41),
    }
    assert identify_test_set(meta, None, "test") == {"a": (10, 11), "b": (20, 21)}
