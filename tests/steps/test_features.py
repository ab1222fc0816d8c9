"""Step ``features`` (``medpipe features``): one row per image, training rows from each image's
own (out-of-fold) fold file, test rows the fold mean, and the fitted embedding PCA beside it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medpipe.layout import GATE, StageLayout, fusion_files, read_gate_predictions
from tests.steps.conftest import FOLDS, GATE_MODEL, SEG, refused, step


def _features(stage) -> tuple[str, ...]:
    out = fusion_files(StageLayout(stage["stage_dir"]).fusion_dir)["features"]
    return ("--data-dir", stage["data_dir"], "--stage-dir", stage["stage_dir"], "--out", out)


def _run(stage) -> pd.DataFrame:
    args = _features(stage)
    step(stage, "features", *args)
    return pd.read_csv(args[-1], dtype={"image_id": str})


def test_training_rows_are_out_of_fold_and_test_rows_the_fold_mean(stage):
    features = _run(stage).set_index("image_id")
    pool = pd.read_csv(stage["data_dir"] / "folds.csv", dtype={"image_id": str})
    meta = pd.read_csv(stage["data_dir"] / "meta.csv", dtype={"image_id": str})
    test_ids = meta.loc[meta["split"] == "test", "image_id"]
    assert sorted(features.index) == sorted([*pool["image_id"], *test_ids])
    assert (features.loc[pool["image_id"], "fold"].to_numpy() == pool["fold"].to_numpy()).all()
    assert (features.loc[test_ids, "fold"] == -1).all()
    layout = StageLayout(stage["stage_dir"])
    folds = [read_gate_predictions(layout.fold(GATE, GATE_MODEL, k).oof) for k in range(FOLDS)]
    oof = pd.concat(folds).set_index("image_id")["prob"]
    column = f"gate_{GATE_MODEL}_prob"
    assert features.loc[oof.index, column].to_numpy() == pytest.approx(oof.to_numpy())
    tests = [read_gate_predictions(layout.fold(GATE, GATE_MODEL, k).test) for k in range(FOLDS)]
    mean = pd.concat(tests).groupby("image_id")["prob"].mean()
    assert features.loc[mean.index, column].to_numpy() == pytest.approx(mean.to_numpy())
    # the segmentation statistics say which images hold the disc; the metadata is encoded
    has = pool.set_index("image_id")["has_finding"]
    assert ((features.loc[has.index, f"seg_{SEG}_max"] > 0.5) == (has > 0)).all()
    assert set(features["sex_male"].dropna()) == {0, 1}
    assert [c for c in features if c.startswith(f"gate_{GATE_MODEL}_pc")] == [
        f"gate_{GATE_MODEL}_pc0",
        f"gate_{GATE_MODEL}_pc1",
    ]


def test_the_embedding_pca_is_saved_beside_the_table(stage):
    _run(stage)
    pca = fusion_files(StageLayout(stage["stage_dir"]).fusion_dir)["pca"]
    with np.load(pca, allow_pickle=False) as saved:
        assert any(GATE_MODEL in name for name in saved.files), saved.files


def test_an_oof_file_with_another_folds_image_is_refused(stage):
    """A fold's OOF row of an image that fold's model trained on would leak its label."""
    layout = StageLayout(stage["stage_dir"])
    gate0, gate1 = (layout.fold(GATE, GATE_MODEL, k).oof for k in (0, 1))
    frame = pd.concat([pd.read_csv(gate0), pd.read_csv(gate1).head(1)])
    frame.to_csv(gate0, index=False)
    line = refused(stage, "features", *_features(stage))
    assert "cls/fold0/oof.csv" in line and "in fold 1: that model trained on it" in line
    assert not (layout.fusion_dir / "features.csv").exists()
