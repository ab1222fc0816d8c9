"""LightGBM fusion: p(finding) per image from the fusion features, on the same folds.

For each outer fold the booster trains on the other folds' rows. Early stopping needs a
validation set, and the outer fold must stay unseen (its rows get the OOF prediction), so the
training rows are split again by patient into a fitting part and an early-stopping part.
Test predictions are the mean over the fold boosters. Each fold's booster is saved in
LightGBM's text format (``booster_fold<f>.txt``, truncated at its best iteration) with an index
(``boosters.json``), so the bundle's ``medpipe infer`` predicts new images without refitting.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

from medpipe.io.atomic import atomic_path, atomic_write_csv
from medpipe.layout import fusion_files, read_boosters_index, write_boosters_index
from medpipe.layout.paths import booster_file

__all__ = [
    "fuse",
    "inner_split",
    "booster_params",
    "train_booster",
    "feature_columns",
    "ID_COLUMNS",
    "predict_test",
    "load_boosters",
]

log = logging.getLogger(__name__)

ID_COLUMNS = ("image_id", "split", "fold")
_OWN_KEYS = ("num_boost_round", "early_stopping_rounds", "optuna_trials", "inner_fraction")


def feature_columns(features: pd.DataFrame) -> list[str]:
    """Every column of a features table except the identifiers."""
    return [c for c in features.columns if c not in ID_COLUMNS]


def inner_split(
    groups: np.ndarray, labels: np.ndarray, seed: int, fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(fit, stop)`` of an inner split by patient, stratified on the label when possible.

    Example:
        >>> fit, stop = inner_split(np.array(list("aabbccddee")), np.array([0, 0, 1, 1, 0, 0, 1, 1, 0, 0]), 0)
        >>> sorted(set(np.array(list("aabbccddee"))[fit]) & set(np.array(list("aabbccddee"))[stop]))
        []
    """
    groups, labels = np.asarray(groups), np.asarray(labels)
    idx = np.arange(len(groups))
    n_splits = max(2, round(1 / fraction))
    n_groups = len(np.unique(groups))
    per_class = [len(np.unique(groups[labels == c])) for c in np.unique(labels)]
    if n_groups >= n_splits and min(per_class) >= n_splits:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        fit, stop = next(splitter.split(idx, labels, groups))
    elif n_groups >= 2:
        fit, stop = next(
            GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed).split(
                idx, labels, groups
            )
        )
    else:
        raise ValueError(
            f"fuse: {n_groups} patient(s) in a fold's training rows; cannot split for early stopping"
        )
    return fit, stop


def booster_params(
    params: Mapping[str, Any],
    seed: int,
    n_rows: int,
    *,
    threads: int | None = None,
    defaults: Mapping[str, Any] | None = None,
    own_keys: tuple[str, ...] = _OWN_KEYS,
) -> dict[str, Any]:
    """LightGBM parameters of one binary booster: deterministic, ``seed``; ``threads`` (default:
    ``params.num_threads`` or every core); ``defaults`` under the configured ``params`` (less the
    caller's own keys, ``own_keys``); ``min_data_in_leaf`` capped for ``n_rows`` training rows.
    Shared by the SIIM fusion and the multi-label per-class fusion."""
    out = {
        "objective": "binary",
        "metric": "binary_logloss",
        "verbosity": -1,
        "seed": seed,
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": max(1, int(threads))
        if threads is not None
        else int(params.get("num_threads") or os.cpu_count() or 1),
        **dict(defaults or {}),
    }
    out.update({k: v for k, v in params.items() if k not in own_keys and k != "num_threads"})
    # A leaf needs room to exist: on tiny data the configured minimum would forbid every split.
    leaf = int(out.get("min_data_in_leaf", 20))
    cap = max(2, n_rows // 10)
    if leaf > cap:
        log.info("fuse: min_data_in_leaf %d capped to %d for %d training rows", leaf, cap, n_rows)
        out["min_data_in_leaf"] = cap
    return out


def train_booster(
    lgb, params: dict[str, Any], x_fit, y_fit, x_stop, y_stop, rounds: int, patience: int
):
    """One booster on the fitting rows, early-stopped on the stopping rows."""
    fit_set = lgb.Dataset(x_fit, label=y_fit, free_raw_data=False)
    stop_set = lgb.Dataset(x_stop, label=y_stop, reference=fit_set, free_raw_data=False)
    return lgb.train(
        params,
        fit_set,
        num_boost_round=rounds,
        valid_sets=[stop_set],
        valid_names=["early_stop"],
        callbacks=[lgb.early_stopping(patience, verbose=False)],
    )


def _tune(
    lgb,
    base: dict[str, Any],
    x_fit,
    y_fit,
    x_stop,
    y_stop,
    rounds: int,
    patience: int,
    trials: int,
    seed: int,
) -> dict[str, Any]:
    """Optuna search of the booster's shape on the inner split (the outer fold stays unseen)."""
    try:
        import optuna
    except ImportError:
        log.warning(
            "fuse: optuna_trials=%d but optuna is not installed; using the configured parameters",
            trials,
        )
        return base
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial) -> float:
        params = {
            **base,
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 4, 63, log=True),
            "min_data_in_leaf": trial.suggest_int(
                "min_data_in_leaf", 2, max(3, int(base.get("min_data_in_leaf", 20)) * 2)
            ),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        }
        booster = train_booster(lgb, params, x_fit, y_fit, x_stop, y_stop, rounds, patience)
        return float(booster.best_score["early_stop"]["binary_logloss"])

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    return {**base, **study.best_params}


def _write_importance(importance: pd.DataFrame, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    atomic_write_csv(importance, fusion_files(out_dir)["importance"])
    top = importance.head(30).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.25 * len(top)))
    ax.barh(top["feature"], top["gain_mean"], xerr=top["gain_std"], color="tab:blue")
    ax.set_xlabel("gain (mean over folds)")
    ax.set_title("LightGBM fusion: feature importance")
    fig.tight_layout()
    with atomic_path(fusion_files(out_dir)["importance_png"]) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _save_booster(booster, best: int, fold: int, out_dir: Path) -> None:
    with atomic_path(booster_file(out_dir, fold)) as tmp:
        booster.save_model(str(tmp), num_iteration=best)


def load_boosters(fusion_dir: str | Path) -> tuple[list[str], list[tuple[int, Any, int]]]:
    """``(feature columns, [(fold, booster, best iteration)])`` that :func:`fuse` saved."""
    import lightgbm as lgb  # the bundle's infer loads LightGBM only when its rule needs it

    index = read_boosters_index(fusion_files(fusion_dir)["boosters"])
    boosters = []
    for entry in index["folds"]:
        path = Path(fusion_dir) / entry["file"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: LightGBM booster of fold {entry['fold']} not found")
        boosters.append(
            (int(entry["fold"]), lgb.Booster(model_file=str(path)), int(entry["best_iteration"]))
        )
    return list(index["features"]), boosters


def predict_test(boosters: list[tuple[int, Any, int]], x_test: np.ndarray) -> np.ndarray:
    """Test p(finding): the mean over the fold boosters, summed in fold order as :func:`fuse` does."""
    test_pred = np.zeros(len(x_test))
    for _, booster, best in boosters:
        test_pred += booster.predict(x_test, num_iteration=best) / len(boosters)
    return test_pred


def fuse(
    features: pd.DataFrame,
    labels: pd.Series,
    folds: pd.DataFrame,
    params: Mapping[str, Any],
    seed: int,
    out_dir: str | Path,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-fold and test p(finding) from LightGBM on the fusion features.

    Args:
        features: :func:`medpipe.fusion.features.build_features` output (``fold`` -1 = test).
        labels: ``has_finding`` indexed by ``image_id`` (training rows only are read).
        folds: ``folds.csv`` (``image_id, patient_key, fold``); the outer folds and the patient
            groups of the inner early-stopping split.
        params: LightGBM parameters plus ``num_boost_round`` (500), ``early_stopping_rounds``
            (50), ``num_threads`` (default ``os.cpu_count()``), ``inner_fraction`` (0.2) and
            ``optuna_trials`` (0; tuning needs optuna installed, else it is skipped).
        seed: seeds LightGBM, the inner split and Optuna.
        out_dir: receives ``feature_importance.csv``, ``feature_importance.png``, each fold's
            booster (``booster_fold<f>.txt``) and their index ``boosters.json``.

    Returns:
        ``(oof, test)`` frames with columns ``image_id, p_finding``.

    Example:
        >>> features = pd.read_csv("stage1/fusion/features.csv", dtype={"image_id": str})  # doctest: +SKIP
        >>> folds = pd.read_csv("data/folds.csv", dtype={"image_id": str})  # doctest: +SKIP
        >>> oof, test = fuse(features, folds.set_index("image_id")["has_finding"], folds,
        ...                  cfg["fusion"]["params"], cfg["seed"], Path("stage1/fusion"))  # doctest: +SKIP
    """
    import lightgbm as lgb

    out_dir = Path(out_dir)
    cols = feature_columns(features)
    if not cols:
        raise ValueError("fuse: the features table has no feature columns")
    is_train = features["fold"].astype(int).to_numpy() >= 0
    train, test = (
        features[is_train].reset_index(drop=True),
        features[~is_train].reset_index(drop=True),
    )
    ids = train["image_id"].astype(str)
    label_of = labels.copy()
    label_of.index = label_of.index.astype(str)
    missing = pd.Index(ids).difference(label_of.index)
    if len(missing):
        raise ValueError(
            f"fuse: {len(missing)} training rows have no label (e.g. {list(missing[:3])})"
        )
    y = pd.to_numeric(label_of.loc[ids.to_numpy()], errors="coerce").to_numpy(np.float64)
    if np.isnan(y).any():
        raise ValueError(f"fuse: {int(np.isnan(y).sum())} training labels are empty")
    if len(np.unique(y)) < 2:
        raise ValueError("fuse: training labels hold a single class")
    patient_of = folds.set_index(folds["image_id"].astype(str))["patient_key"].astype(str)
    groups = patient_of.reindex(ids.to_numpy())
    if groups.isna().any():
        raise ValueError(
            f"fuse: {int(groups.isna().sum())} training rows are not in the training pool"
        )
    groups = groups.to_numpy()
    fold = train["fold"].astype(int).to_numpy()
    x_train = train[cols].to_numpy(np.float64)
    x_test = test[cols].to_numpy(np.float64)
    rounds = int(params.get("num_boost_round", 500))
    patience = int(params.get("early_stopping_rounds", 50))
    trials = int(params.get("optuna_trials", 0) or 0)
    fraction = float(params.get("inner_fraction", 0.2))
    oof = np.full(len(train), np.nan)
    test_pred = np.zeros(len(test))
    gains, splits = [], []
    unique_folds = np.unique(fold)
    if len(unique_folds) < 2:
        raise ValueError(f"fuse: need at least 2 folds, features have {unique_folds.tolist()}")
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for f in unique_folds:
        outer = np.flatnonzero(fold != f)
        fit, stop = inner_split(groups[outer], y[outer], seed + int(f), fraction)
        fit, stop = outer[fit], outer[stop]
        fold_params = booster_params(params, seed, len(fit))
        if trials > 0:
            fold_params = _tune(
                lgb,
                fold_params,
                x_train[fit],
                y[fit],
                x_train[stop],
                y[stop],
                rounds,
                patience,
                trials,
                seed + int(f),
            )
        booster = train_booster(
            lgb, fold_params, x_train[fit], y[fit], x_train[stop], y[stop], rounds, patience
        )
        best = booster.best_iteration or rounds
        _save_booster(booster, best, int(f), out_dir)
        saved.append(
            {
                "fold": int(f),
                "file": booster_file(out_dir, int(f)).name,
                "best_iteration": int(best),
            }
        )
        valid = fold == f
        oof[valid] = booster.predict(x_train[valid], num_iteration=best)
        if len(test):
            test_pred += booster.predict(x_test, num_iteration=best) / len(unique_folds)
        gains.append(booster.feature_importance("gain", iteration=best))
        splits.append(booster.feature_importance("split", iteration=best))
        auc = roc_auc_score(y[valid], oof[valid]) if len(np.unique(y[valid])) == 2 else float("nan")
        log.info(
            "fuse: fold %d: %d fit / %d early-stop rows, best iteration %d, OOF AUC %.4f",
            f,
            len(fit),
            len(stop),
            best,
            auc,
        )
    log.info("fuse: OOF AUC %.4f over %d images", roc_auc_score(y, oof), len(y))
    importance = pd.DataFrame(
        {
            "feature": cols,
            "gain_mean": np.mean(gains, axis=0),
            "gain_std": np.std(gains, axis=0),
            "split_mean": np.mean(splits, axis=0),
        }
    ).sort_values("gain_mean", ascending=False, kind="stable")
    _write_importance(importance.reset_index(drop=True), out_dir)
    write_boosters_index(
        fusion_files(out_dir)["boosters"],
        {"features": cols, "n_folds": len(unique_folds), "folds": saved},
    )
    return (
        pd.DataFrame({"image_id": ids.to_numpy(), "p_finding": oof}),
        pd.DataFrame({"image_id": test["image_id"].astype(str).to_numpy(), "p_finding": test_pred}),
    )
