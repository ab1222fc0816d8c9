"""Step ``choose_variants`` (stage 2, ``retrain: auto``): each model keeps the variant with the
better CV on the same OOF images; a tie keeps the retrained one. (tests/test_variants.py follows
a segmentation model's choice through the later steps.)"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medpipe.config import RunConfig
from medpipe.layout import GATE, StageLayout
from medpipe.steps.variants import choose_variants, variant_cv
from tests.steps.conftest import FOLDS, GATE_MODEL

KEPT = GATE_MODEL + "@kept"


def _auto(stage, kept_prob) -> dict:
    """The fabricated stage as a stage 2 (its own data and stage folders), the gate on
    ``retrain: auto``, its @kept variant's OOF from ``kept_prob``. Returns the stage-2 paths."""
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
    return {"config": config, "data_dir": data_dir, "stage_dir": stage_dir}


@pytest.mark.parametrize(
    ("kept_prob", "choice"),
    [
        (lambda p: 1 - p, "retrained"),  # the kept gate ranks backwards
        (lambda p: p, "retrained"),  # a tie keeps the model trained on more data
        (lambda p: p * 0 + 0.5, "retrained"),  # no ranking at all
    ],
    ids=["worse", "tie", "constant"],
)
def test_the_gate_keeps_the_variant_with_the_better_oof_auc(stage, kept_prob, choice):
    two = _auto(stage, kept_prob)
    made = choose_variants(two["config"], two["data_dir"], two["stage_dir"])
    row = made[GATE_MODEL]
    assert row["task"] == GATE and row["choice"] == choice
    assert row["retrained"]["measure"] == "OOF ROC AUC"
    saved = json.loads(StageLayout(two["stage_dir"]).retrain_choice.read_text())
    assert saved == json.loads(json.dumps(made))


def test_a_better_kept_variant_is_kept(stage):
    two = _auto(stage, lambda p: p)
    layout = StageLayout(two["stage_dir"])
    for k in range(FOLDS):  # now the retrained gate ranks backwards
        oof = layout.fold(GATE, GATE_MODEL, k).oof
        frame = pd.read_csv(oof, dtype={"image_id": str})
        frame.assign(prob=1 - frame["prob"]).to_csv(oof, index=False)
    row = choose_variants(two["config"], two["data_dir"], two["stage_dir"])[GATE_MODEL]
    assert row["choice"] == "kept" and row["kept"]["cv"] > row["retrained"]["cv"]


def test_variant_cv_of_a_gate_is_its_oof_auc(stage):
    layout = StageLayout(stage["stage_dir"])
    dirs = layout.folds_of(GATE, GATE_MODEL, range(FOLDS))
    frame = pd.concat(pd.read_csv(d.oof, dtype={"image_id": str}) for d in dirs)
    pool = pd.read_csv(stage["data_dir"] / "folds.csv", dtype={"image_id": str})
    y = pool.set_index("image_id").loc[frame["image_id"], "has_finding"]
    cv = variant_cv(stage["config"], stage["data_dir"], GATE, dirs)
    assert cv["cv"] == pytest.approx(roc_auc_score(y, frame["prob"]))


def test_without_an_auto_model_the_step_is_refused(stage):
    with pytest.raises(ValueError, match=r"no model has stage2.retrain: auto"):
        choose_variants(stage["config"], stage["data_dir"], stage["stage_dir"])
