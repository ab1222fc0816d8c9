"""Step ``choose_variants`` (``medpipe choose-variants``, stage 2, ``retrain: auto``): each model
keeps the variant with the better CV on the same OOF images; a tie keeps the retrained one.
(tests/test_variants.py follows a segmentation model's choice through the later steps.)"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medpipe.config import RunConfig
from medpipe.layout import GATE, StageLayout
from tests.steps.conftest import FOLDS, GATE_MODEL, refused, step

KEPT = GATE_MODEL + "@kept"


def _auto(stage, kept_prob) -> dict:
    """The fabricated stage as a stage 2 (its own data and stage folders), the gate on
    ``retrain: auto``, its @kept variant's OOF from ``kept_prob``."""
    config = {**stage["config"], "stage": 2, "stage2": {"retrain": {GATE_MODEL: "auto"}}}
    run = RunConfig(config).layout
    data_dir, stage_dir = run.data_dir(2), run.stage_dir(2)
    shutil.copytree(stage["data_dir"], data_dir)
    shutil.copytree(stage["stage_dir"], stage_dir, dirs_exist_ok=True)  # beside its data/
    layout = StageLayout(stage_dir)
    shutil.copytree(layout.model_dir(GATE, GATE_MODEL), layout.model_dir(GATE, KEPT))
    for k in range(FOLDS):
        oof = layout.fold(GATE, KEPT, k).oof
        frame = pd.read_csv(oof, dtype={"image_id": str})
        frame.assign(prob=kept_prob(frame["prob"])).to_csv(oof, index=False)
    return {**stage, "config": config, "data_dir": data_dir, "stage_dir": stage_dir}


def _choose(two) -> dict:
    step(two, "choose-variants", "--data-dir", two["data_dir"], "--stage-dir", two["stage_dir"])
    return json.loads(StageLayout(two["stage_dir"]).retrain_choice.read_text())[GATE_MODEL]


@pytest.mark.parametrize(
    "kept_prob",
    [lambda p: 1 - p, lambda p: p, lambda p: p * 0 + 0.5],
    ids=["kept-ranks-backwards", "tie", "kept-ranks-nothing"],
)
def test_the_retrained_gate_is_kept_unless_the_kept_one_scores_better(stage, kept_prob):
    """A tie keeps the model trained on more data."""
    two = _auto(stage, kept_prob)
    row = _choose(two)
    assert row["task"] == GATE and row["choice"] == "retrained"
    assert row["retrained"]["measure"] == row["kept"]["measure"] == "OOF ROC AUC"
    # the measure is the variant's OOF AUC over the pool
    layout = StageLayout(two["stage_dir"])
    frame = pd.concat(
        pd.read_csv(layout.fold(GATE, GATE_MODEL, k).oof, dtype={"image_id": str})
        for k in range(FOLDS)
    )
    pool = pd.read_csv(two["data_dir"] / "folds.csv", dtype={"image_id": str})
    y = pool.set_index("image_id").loc[frame["image_id"], "has_finding"]
    assert row["retrained"]["cv"] == pytest.approx(roc_auc_score(y, frame["prob"]))


def test_a_better_kept_variant_is_kept(stage):
    two = _auto(stage, lambda p: p)
    layout = StageLayout(two["stage_dir"])
    for k in range(FOLDS):  # now the retrained gate ranks backwards
        oof = layout.fold(GATE, GATE_MODEL, k).oof
        frame = pd.read_csv(oof, dtype={"image_id": str})
        frame.assign(prob=1 - frame["prob"]).to_csv(oof, index=False)
    row = _choose(two)
    assert row["choice"] == "kept" and row["kept"]["cv"] > row["retrained"]["cv"]


def test_without_an_auto_model_the_step_is_refused(stage):
    line = refused(
        stage, "choose-variants", "--data-dir", stage["data_dir"], "--stage-dir", stage["stage_dir"]
    )
    assert "no model has stage2.retrain: auto" in line
