"""Step ``pseudo_label``: one fold's confident test images, as a small cache of their own (the
images as ingest cached them, the masks the fold's U-Net drew), labelled by that fold's models.
(tests/training/test_pseudo_labels.py trains on them and follows the guards.)"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medpipe.layout import GATE, SEGMENT, StageLayout, read_gate_predictions
from medpipe.steps.pseudo import label_fold
from tests.steps.conftest import GATE_MODEL, SEG, maps_of
from tests.training import tiny_data

VARIANT = SEG + "@pl1"


def _config(stage, **settings) -> dict:
    pseudo = {
        "models": [SEG],
        "finding": GATE_MODEL,
        "negative_below": 0.3,
        "positive_above": 0.6,
        "pixel_threshold": 0.5,
        "min_pixel_confidence": 0.8,
        "min_area": 160,  # original-image pixels: 10 at the 64² cache
        **settings,
    }
    return {**stage["config"], "pseudo_label": pseudo}


def test_the_confident_images_and_their_masks_become_the_variants_pseudo_cache(stage):
    config = _config(stage)
    made = label_fold(config, stage["data_dir"], stage["stage_dir"], VARIANT, 1)
    layout = StageLayout(stage["stage_dir"])
    out = layout.fold(SEGMENT, VARIANT, 1)
    rows = pd.read_csv(out.pseudo_rows, dtype={"image_id": str})
    gate = read_gate_predictions(layout.fold(GATE, GATE_MODEL, 1).test).set_index("image_id")
    p = gate.loc[rows["image_id"], "prob"].to_numpy()
    assert ((rows["has_finding"] == 1) == (p >= 0.6)).all()
    assert ((rows["has_finding"] == 0) == (p <= 0.3)).all()
    left_out = gate.index.difference(rows["image_id"])
    assert gate.loc[left_out, "prob"].between(0.3, 0.6, inclusive="neither").all()
    assert made["n_finding"] == (rows["has_finding"] == 1).sum() > 0
    assert made["n_empty"] == (rows["has_finding"] == 0).sum() > 0
    # the cache: the test images as ingest cached them, the U-Net's masks for the findings
    size = tiny_data.SIZE
    meta = pd.read_csv(stage["data_dir"] / "meta.csv", dtype={"image_id": str})
    at = meta[meta["split"] == "test"].set_index("image_id")["cache_index"]
    source = np.load(stage["data_dir"] / f"test_images_{size}.npy")[at.loc[rows["image_id"]]]
    images = np.load(out.pseudo_cache("images", size))
    masks = np.load(out.pseudo_cache("masks", size))
    assert np.array_equal(images, source)
    drawn = (maps_of(source) >= 0.5) & (rows["has_finding"].to_numpy() == 1)[:, None, None]
    assert np.array_equal(masks.astype(bool), drawn)
    saved = json.loads(out.pseudo_provenance.read_text())
    assert saved == made
    assert {task: m["fold"] for task, m in made["made_by"].items()} == {SEGMENT: 1, GATE: 1}
    assert made["made_by"][SEGMENT]["model"] == SEG


def test_a_small_or_unsure_mask_is_no_pseudo_finding(stage):
    """The discs' maps are 0.9 inside: above a min_pixel_confidence of 0.95 none is confident."""
    made = label_fold(
        _config(stage, min_pixel_confidence=0.95), stage["data_dir"], stage["stage_dir"], VARIANT, 0
    )
    assert made["n_finding"] == 0 and made["n_empty"] > 0
    huge = _config(stage, min_area=256 * 256)  # a whole film
    assert label_fold(huge, stage["data_dir"], stage["stage_dir"], VARIANT, 0)["n_finding"] == 0


def test_maps_of_images_outside_the_test_split_are_refused(stage):
    layout = StageLayout(stage["stage_dir"])
    gate_test = layout.fold(GATE, GATE_MODEL, 0).test
    frame = pd.read_csv(gate_test, dtype={"image_id": str})
    # the segmentation fold's test file is the labeller: point the data at another test split
    meta = pd.read_csv(stage["data_dir"] / "meta.csv", dtype={"image_id": str})
    meta.loc[meta["image_id"] == frame["image_id"].iloc[0], "split"] = "stage2_test"
    meta.to_csv(stage["data_dir"] / "meta.csv", index=False)
    with pytest.raises(ValueError, match=r"test.npz: image .* is not in split 'test' of"):
        label_fold(_config(stage), stage["data_dir"], stage["stage_dir"], VARIANT, 0)
