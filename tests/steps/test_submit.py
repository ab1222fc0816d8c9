"""Step ``submit`` (``medpipe submit``): the test maps blended with the decided weights, the
decided rule applied, each mask encoded at its film's size, one row per test image."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from medpipe.io import rle
from medpipe.layout import StageLayout
from tests.steps.conftest import ORIGINAL, SEG, maps_of, refused, step
from tests.training import tiny_data


def _decide(stage, **setting) -> None:
    decision = {"pixel_threshold": 0.5, "min_area": 0, "weights": {SEG: 1.0}, **setting}
    StageLayout(stage["stage_dir"]).thresholds.write_text(json.dumps(decision))


def _args(stage, out) -> tuple:
    return ("--data-dir", stage["data_dir"], "--stage-dir", stage["stage_dir"], "--out", out)


def _submitted(stage, tmp_path) -> pd.DataFrame:
    out = tmp_path / "submission.csv"
    step(stage, "submit", *_args(stage, out))
    return pd.read_csv(out, dtype=str, keep_default_na=False)


def _test_truth(stage) -> dict[str, np.ndarray]:
    """Each test image's disc at the film's size (the cache is the film shrunk 4x)."""
    meta = pd.read_csv(stage["data_dir"] / "meta.csv", dtype={"image_id": str})
    test = meta[meta["split"] == "test"]
    images = np.load(stage["data_dir"] / f"test_images_{tiny_data.SIZE}.npy")
    factor = ORIGINAL // tiny_data.SIZE
    return {
        i: np.kron(maps_of(images[c]) > 0.5, np.ones((factor, factor), bool))
        for i, c in zip(test["image_id"], test["cache_index"], strict=True)
    }


def test_the_submission_has_each_test_image_once_with_its_decided_mask(stage, tmp_path):
    _decide(stage, rule="seg_only", mode="seg_only")
    sub = _submitted(stage, tmp_path)
    truth = _test_truth(stage)
    assert list(sub.columns) == ["ImageId", "EncodedPixels"]
    assert sorted(sub["ImageId"]) == sorted(truth) and sub["ImageId"].is_unique
    for image_id, encoded in zip(sub["ImageId"], sub["EncodedPixels"], strict=True):
        mask = rle.decode(encoded, ORIGINAL, ORIGINAL)  # at the DICOM size, not the cache's
        assert np.array_equal(mask, truth[image_id]), image_id
    assert 0 < sum(m.any() for m in truth.values()) < len(truth)


def test_the_gate_rule_empties_the_images_the_gate_rejects(stage, tmp_path):
    """seg_gate at 0.99: no fabricated gate probability reaches it, every row is empty."""
    _decide(stage, rule="seg_gate", mode="fusion", cls_threshold=0.99)
    assert (_submitted(stage, tmp_path)["EncodedPixels"].str.strip() == "-1").all()
    _decide(stage, rule="seg_gate", mode="fusion", cls_threshold=0.0)
    assert (_submitted(stage, tmp_path)["EncodedPixels"].str.strip() != "-1").any()


def test_predictions_of_images_of_no_single_split_are_refused(stage, tmp_path):
    _decide(stage, rule="seg_only", mode="seg_only")
    meta = pd.read_csv(stage["data_dir"] / "meta.csv", dtype={"image_id": str})
    first_test = meta.index[meta["split"] == "test"][0]
    meta.loc[first_test, "split"] = "stage2_test"  # the predictions now span two splits
    meta.to_csv(stage["data_dir"] / "meta.csv", index=False)
    line = refused(stage, "submit", *_args(stage, tmp_path / "submission.csv"))
    assert "meta.csv: the test predictions are not the images of one split" in line
    assert not (tmp_path / "submission.csv").exists()
