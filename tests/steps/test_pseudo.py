"""Step ``pseudo_label`` (``medpipe pseudo-label``): one fold's confident test images, as a small
cache of their own (the images as ingest cached them, the masks the fold's U-Net drew), labelled
by that fold's models. (tests/training/test_pseudo_labels.py trains on them, with the guards.)"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from medpipe.layout import GATE, SEGMENT, StageLayout, read_gate_predictions
from tests.steps.conftest import GATE_MODEL, SEG, maps_of, refused, step
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


def _args(stage, fold: int) -> tuple:
    return ("--model", VARIANT, "--fold", fold, "--data-dir", stage["data_dir"], "--stage-dir",
            stage["stage_dir"])  # fmt: skip


def _label(stage, fold: int, **settings) -> dict:
    step(stage, "pseudo-label", *_args(stage, fold), config=_config(stage, **settings))
    out = StageLayout(stage["stage_dir"]).fold(SEGMENT, VARIANT, fold)
    return json.loads(out.pseudo_provenance.read_text())


def test_the_confident_images_and_their_masks_become_the_variants_pseudo_cache(stage):
    made = _label(stage, 1)
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
    assert made["n_images"] == len(gate) and made["fold"] == 1
    assert {family: m["fold"] for family, m in made["made_by"].items()} == {SEGMENT: 1, GATE: 1}
    assert made["made_by"][SEGMENT]["model"] == SEG


def test_a_small_or_unsure_mask_is_no_pseudo_finding(stage):
    """The discs' maps are 0.9 inside: above a min_pixel_confidence of 0.95 none is confident."""
    made = _label(stage, 0, min_pixel_confidence=0.95)
    assert made["n_finding"] == 0 and made["n_empty"] > 0
    assert _label(stage, 0, min_area=256 * 256)["n_finding"] == 0  # a mask the size of the film


def test_maps_of_images_outside_the_test_split_are_refused(stage):
    seg_test = StageLayout(stage["stage_dir"]).fold(SEGMENT, SEG, 0).test
    meta = pd.read_csv(stage["data_dir"] / "meta.csv", dtype={"image_id": str})
    first_test = meta.index[meta["split"] == "test"][0]
    meta.loc[first_test, "split"] = "stage2_test"
    meta.to_csv(stage["data_dir"] / "meta.csv", index=False)
    line = refused(stage, "pseudo-label", *_args(stage, 0), config=_config(stage))
    assert f"{seg_test}: image" in line and "is not in split 'test' of" in line
