"""What the fuse and features steps now save for the bundle reproduces their test rows exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medpipe.fusion import features as fusion_features
from medpipe.fusion.lgbm import fuse, load_boosters, predict_test
from medpipe.layout import fusion_files

PARAMS = {"num_leaves": 7, "min_data_in_leaf": 5, "num_boost_round": 60, "num_threads": 1}


def _features(n_train: int = 120, n_test: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.random(n) < 0.3
    patients = np.arange(n) // 2
    features = pd.DataFrame(
        {
            "image_id": [f"i{k:04d}" for k in range(n)],
            "split": ["train"] * n_train + ["test"] * n_test,
            "fold": np.concatenate([patients[:n_train] % 3, np.full(n_test, -1)]),
            "signal": y + rng.normal(0, 0.5, n),
            "noise": rng.standard_normal(n),
        }
    )
    folds = pd.DataFrame(
        {
            "image_id": features["image_id"][:n_train],
            "patient_key": [f"p{k}" for k in patients[:n_train]],
            "has_finding": y[:n_train].astype(int),
            "fold": features["fold"][:n_train],
        }
    )
    return features, folds


def test_saved_boosters_reproduce_the_test_p_finding_exactly(tmp_path: Path) -> None:
    features, folds = _features()
    _, test = fuse(features, folds.set_index("image_id")["has_finding"], folds, PARAMS, 0, tmp_path)
    index = json.loads(fusion_files(tmp_path)["boosters"].read_text())
    assert [f["fold"] for f in index["folds"]] == [0, 1, 2]
    assert all((tmp_path / f["file"]).read_text().startswith("tree") for f in index["folds"])
    columns, boosters = load_boosters(tmp_path)
    assert columns == ["signal", "noise"]
    x_test = features[features["fold"] < 0][columns].to_numpy(np.float64)
    assert np.array_equal(predict_test(boosters, x_test), test["p_finding"].to_numpy())


def test_saved_embedding_maps_reproduce_the_test_pcs_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    oof = {
        f: (np.array([f"o{f}_{k}" for k in range(20)]), rng.normal(size=(20, 6))) for f in (0, 1)
    }
    test = {f: rng.normal(size=(9, 6)) + f for f in (0, 1)}
    fitted: dict = {}
    _, pcs_test = fusion_features._embedding_pcs(oof, test, 3, seed=0, transforms=fitted)
    path = tmp_path / "pca.npz"
    fusion_features.save_transforms(path, {"gate_a": fitted}, 3)
    loaded, n_components = fusion_features.load_transforms(path)
    assert n_components == 3 and set(loaded["gate_a"]) == {0, 1}
    again = fusion_features.fold_mean_embedding_features(test, loaded["gate_a"], 3)
    assert np.array_equal(again, pcs_test)
    # not vacuous: the alignment matters (fold 1's map is not the identity)
    assert bool(loaded["gate_a"][1]["aligned"]) and not np.allclose(
        loaded["gate_a"][1]["rotation"], np.eye(6)
    )
