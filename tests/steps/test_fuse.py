"""Step ``fuse`` (``medpipe fuse``): LightGBM's p(finding) out of fold for every pooled image and
for the test set, from the features step's table, on the same folds."""

from __future__ import annotations

import pandas as pd
from sklearn.metrics import roc_auc_score

from medpipe.layout import StageLayout, fusion_files
from tests.steps.conftest import step


def _fused(stage) -> dict:
    fusion = StageLayout(stage["stage_dir"]).fusion_dir
    files = fusion_files(fusion)
    dirs = ("--data-dir", stage["data_dir"])
    step(stage, "features", *dirs, "--stage-dir", stage["stage_dir"], "--out", files["features"])
    step(stage, "fuse", "--features", files["features"], *dirs, "--out-dir", fusion)
    return files


def test_fuse_writes_oof_and_test_probabilities_that_rank_the_findings(stage):
    files = _fused(stage)
    pool = pd.read_csv(stage["data_dir"] / "folds.csv", dtype={"image_id": str})
    meta = pd.read_csv(stage["data_dir"] / "meta.csv", dtype={"image_id": str})
    oof = pd.read_csv(files["oof"], dtype={"image_id": str})
    test = pd.read_csv(files["test"], dtype={"image_id": str})
    assert list(oof.columns) == list(test.columns) == ["image_id", "p_finding"]
    assert sorted(oof["image_id"]) == sorted(pool["image_id"])
    assert sorted(test["image_id"]) == sorted(meta.loc[meta["split"] == "test", "image_id"])
    for frame in (oof, test):
        assert frame["p_finding"].between(0, 1).all()
    # the features separate the findings (the fabricated models are good): so does LightGBM OOF
    y = pool.set_index("image_id").loc[oof["image_id"], "has_finding"]
    assert roc_auc_score(y, oof["p_finding"]) > 0.9


def test_fuse_is_deterministic_for_a_seed(stage):
    files = _fused(stage)
    first = {k: files[k].read_bytes() for k in ("oof", "test")}
    fusion = files["oof"].parent
    step(stage, "fuse", "--features", files["features"], "--data-dir", stage["data_dir"],
         "--out-dir", fusion)  # fmt: skip
    assert {k: files[k].read_bytes() for k in ("oof", "test")} == first
