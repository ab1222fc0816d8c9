"""LightGBM fusion on synthetic features."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medpipe.fusion import lgbm
from medpipe.fusion.lgbm import fuse, inner_split

PARAMS = {
    "learning_rate": 0.1,
    "num_leaves": 7,
    "min_data_in_leaf": 10,
    "num_boost_round": 200,
    "early_stopping_rounds": 20,
    "num_threads": 1,
}


def _synthetic(
    n_train: int = 300, n_test: int = 40, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``signal`` carries the label; the other columns are noise; two images per patient."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.random(n) < 0.3
    patients = np.arange(n) // 2
    features = pd.DataFrame(
        {
            "image_id": [f"i{k:04d}" for k in range(n)],
            "split": ["train"] * n_train + ["test"] * n_test,
            "fold": np.concatenate([patients[:n_train] % 5, np.full(n_test, -1)]),
            "signal": y + rng.normal(0, 0.6, n),
            "row": np.arange(n, dtype=float),  # identifies rows for the early-stopping check
            **{f"noise{k}": rng.standard_normal(n) for k in range(4)},
        }
    )
    features.loc[rng.random(n) < 0.1, "noise0"] = np.nan  # LightGBM takes missing values
    folds = pd.DataFrame(
        {
            "image_id": features["image_id"][:n_train],
            "patient_key": [f"p{k}" for k in patients[:n_train]],
            "has_finding": y[:n_train].astype(int),
            "fold": features["fold"][:n_train],
        }
    )
    return features, folds


def test_fusion_learns_the_signal_and_writes_importance(tmp_path: Path) -> None:
    features, folds = _synthetic()
    labels = folds.set_index("image_id")["has_finding"]
    oof, test = fuse(features, labels, folds, PARAMS, seed=0, out_dir=tmp_path)
    assert list(oof.columns) == ["image_id", "p_finding"] == list(test.columns)
    assert oof["image_id"].tolist() == folds["image_id"].tolist()
    assert test["image_id"].tolist() == features.loc[features["fold"] == -1, "image_id"].tolist()
    assert oof["p_finding"].notna().all() and test["p_finding"].between(0, 1).all()
    assert roc_auc_score(labels.loc[oof["image_id"]], oof["p_finding"]) > 0.8
    importance = pd.read_csv(tmp_path / "feature_importance.csv")
    assert importance["feature"].iloc[0] == "signal"
    assert set(importance["feature"]) == {"signal", "row", "noise0", "noise1", "noise2", "noise3"}
    assert (tmp_path / "feature_importance.png").read_bytes()[:4] == b"\x89PNG"


def test_early_stopping_never_sees_the_outer_fold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    features, folds = _synthetic(n_train=120, n_test=0)
    calls = []
    real_train = lgbm.train_booster

    def spy(lgb, params, x_fit, y_fit, x_stop, y_stop, rounds, patience):
        row = lgbm.feature_columns(features).index("row")
        calls.append((x_fit[:, row].astype(int), x_stop[:, row].astype(int)))
        return real_train(lgb, params, x_fit, y_fit, x_stop, y_stop, rounds, patience)

    monkeypatch.setattr(lgbm, "train_booster", spy)
    fuse(
        features,
        folds.set_index("image_id")["has_finding"],
        folds,
        PARAMS,
        seed=0,
        out_dir=tmp_path,
    )
    assert len(calls) == 5
    patient = folds["patient_key"].to_numpy()
    for f, (fit, stop) in enumerate(calls):
        outer = set(np.flatnonzero(folds["fold"].to_numpy() == f))
        assert not outer & set(fit) and not outer & set(stop)
        assert not set(patient[fit]) & set(patient[stop])
        assert len(fit) + len(stop) == len(folds) - len(outer)


def test_inner_split_groups_patients() -> None:
    groups = np.repeat(np.arange(30), 2)
    labels = (groups % 3 == 0).astype(int)
    fit, stop = inner_split(groups, labels, seed=1)
    assert not set(groups[fit]) & set(groups[stop])
    assert 0.1 < len(stop) / len(groups) < 0.35 and labels[stop].any()


def test_optuna_trials_without_optuna_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # as without the [tune] extra
    features, folds = _synthetic(n_train=100, n_test=10)
    with caplog.at_level(logging.WARNING, logger="medpipe.fusion.lgbm"):
        oof, _ = fuse(
            features,
            folds.set_index("image_id")["has_finding"],
            folds,
            {**PARAMS, "optuna_trials": 3},
            seed=0,
            out_dir=tmp_path,
        )
    assert "optuna is not installed" in caplog.text
    assert oof["p_finding"].notna().all()


def test_single_class_labels_are_refused(tmp_path: Path) -> None:
    features, folds = _synthetic(n_train=50, n_test=0)
    with pytest.raises(ValueError, match="single class"):
        fuse(
            features,
            folds.set_index("image_id")["has_finding"] * 0,
            folds,
            PARAMS,
            seed=0,
            out_dir=tmp_path,
        )
