"""Per-class LightGBM fusion of the CNN's probabilities with hand-made image statistics.

Features of an image: the blended CNN probabilities of all K classes (out-of-fold for the
training pool, the fold mean for test, as :mod:`medpipe.multilabel.write` takes them), the
per-channel intensity and texture statistics and channel-pair correlations
(:mod:`medpipe.multilabel.image_features`), and the numeric per-image metadata ingest recorded
(``orig_height``, ``orig_width``).

For each class and each outer fold a binary booster trains on the other folds' rows, split
again by group (``patient_key``) into a fitting part and an early-stopping part
(:func:`medpipe.fusion.lgbm.inner_split`, as the SIIM fusion does), and predicts the held-out
fold: the fused OOF. Test: the mean over the class's fold boosters. A class with fewer than
:data:`MIN_POSITIVES` positives (or negatives) in a fold's training rows keeps the CNN
probability in that fold (and its share of the test mean), and says so in the log.

Embeddings are not used: each outer fold's OOF embeddings come from a different fold model, whose
feature spaces are not aligned, so a projection fitted across them mixes unrelated axes.

Whether the fused probabilities replace the CNN's is not decided here: the thresholds step
(:func:`medpipe.multilabel.decide.choose_stage_decision`) compares both by nested CV.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medpipe.config import RunConfig
from medpipe.fusion.lgbm import booster_params, inner_split, train_booster
from medpipe.io.atomic import atomic_path, atomic_write_csv
from medpipe.layout import (
    CLASSIFY,
    StageLayout,
    cache_file,
    class_booster_file,
    data_files,
    fusion_files,
    open_channel_cache,
    read_meta,
    test_split,
    write_boosters_index,
    write_fused_classes,
)
from medpipe.multilabel.image_features import cache_statistics
from medpipe.multilabel.tables import (
    blend_mean,
    khot_of,
    n_classes,
    oof_probabilities,
    test_probabilities,
)
from medpipe.predictions.sources import oof_pool, stage_sources

__all__ = [
    "MIN_POSITIVES",
    "META_COLUMNS",
    "fuse_classes",
    "image_features",
    "statistics_of",
    "predict_saved",
    "run_class_fusion",
]

log = logging.getLogger(__name__)

#: a class needs this many positives and negatives in a fold's training rows to get a booster
MIN_POSITIVES = 10
#: meta.csv's numeric per-image metadata used as features (when present)
META_COLUMNS = ("orig_height", "orig_width")
_OWN_KEYS = ("num_boost_round", "early_stopping_rounds", "inner_fraction", "min_positives")
_DEFAULTS = {
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 10,
    "feature_fraction": 0.8,
    "lambda_l2": 1.0,
}


def fuse_classes(
    cnn_oof: np.ndarray,
    truth: np.ndarray,
    folds: np.ndarray,
    groups: np.ndarray,
    x_train: np.ndarray,
    cnn_test: np.ndarray,
    x_test: np.ndarray,
    *,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    threads: int = 1,
    out_dir: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Fused out-of-fold and test probabilities, one booster per class and outer fold.

    Args:
        cnn_oof: ``(N, K)`` the CNN's OOF probabilities (features, and the fallback).
        truth: ``(N, K)`` K-hot labels.
        folds: ``(N,)`` outer fold of each training image.
        groups: ``(N,)`` the group (patient) of each image: the inner split keeps one together.
        x_train: ``(N, F)`` the other features of the training images.
        cnn_test: ``(M, K)``, ``x_test``: ``(M, F)``: the same for the test images.
        params: LightGBM parameters plus ``num_boost_round`` (400), ``early_stopping_rounds``
            (40), ``inner_fraction`` (0.2), ``min_positives`` (:data:`MIN_POSITIVES`).
        seed: LightGBM's seed and the inner splits' (``seed + fold``).
        threads: LightGBM's ``num_threads`` at most (one per 10,000 training rows).
        out_dir: when given, each booster is saved there (:func:`class_booster_file`).

    Returns:
        ``(oof (N, K), test (M, K), record)``; ``record`` lists per class and fold the booster
        file and best iteration, or ``"fallback": "cnn"`` with the reason.

    Example:
        >>> oof, test, record = fuse_classes(p, y, folds, ids, stats, p_test, stats_test)  # doctest: +SKIP
    """
    import lightgbm as lgb  # heavy: only the fusion step loads it

    params = dict(params or {})
    cnn_oof = np.asarray(cnn_oof, np.float64)
    cnn_test = np.asarray(cnn_test, np.float64)
    truth = np.asarray(truth).astype(np.float64)
    folds = np.asarray(folds).astype(int)
    groups = np.asarray(groups).astype(str)
    xtr = np.column_stack([cnn_oof, np.asarray(x_train, np.float64)])
    xte = np.column_stack([cnn_test, np.asarray(x_test, np.float64)]).reshape(len(cnn_test), -1)
    rounds = int(params.get("num_boost_round", 400))
    patience = int(params.get("early_stopping_rounds", 40))
    fraction = float(params.get("inner_fraction", 0.2))
    min_pos = int(params.get("min_positives", MIN_POSITIVES))
    n, k = cnn_oof.shape
    # one thread per 10k rows: on the demo's 400 images two threads took 38 s against one
    # thread's 6 s on a loaded 2-core machine (thread start-up per tree); results are the same
    threads = max(1, min(int(threads), n // 10_000))
    outer = np.unique(folds)
    if len(outer) < 2:
        raise ValueError(f"fuse-cls: need at least 2 folds, got {outer.tolist()}")
    oof = np.full((n, k), np.nan)
    test = np.zeros((len(xte), k))
    record: dict[str, Any] = {"classes": []}
    for c in range(k):
        entries = []
        for f in outer:
            held = folds == f
            rows = np.flatnonzero(~held)
            y = truth[rows, c]
            n_pos = int(y.sum())
            if min(n_pos, len(y) - n_pos) < min_pos:
                log.info(
                    "fuse-cls: class %d, fold %d: %d positives / %d negatives in the training "
                    "rows (< %d): keeps the CNN probability",
                    c,
                    f,
                    n_pos,
                    len(y) - n_pos,
                    min_pos,
                )
                oof[held, c] = cnn_oof[held, c]
                test[:, c] += cnn_test[:, c] / len(outer)
                entries.append({"fold": int(f), "fallback": "cnn", "positives": n_pos})
                continue
            fit, stop = inner_split(groups[rows], y, seed + int(f), fraction)
            fit, stop = rows[fit], rows[stop]
            booster = train_booster(
                lgb,
                booster_params(
                    params, seed, len(fit), threads=threads, defaults=_DEFAULTS, own_keys=_OWN_KEYS
                ),
                xtr[fit],
                truth[fit, c],
                xtr[stop],
                truth[stop, c],
                rounds,
                patience,
            )
            best = int(booster.best_iteration or rounds)
            oof[held, c] = booster.predict(xtr[held], num_iteration=best)
            if len(xte):
                test[:, c] += booster.predict(xte, num_iteration=best) / len(outer)
            entry = {"fold": int(f), "best_iteration": best, "positives": n_pos}
            if out_dir is not None:
                path = class_booster_file(out_dir, c, int(f))
                with atomic_path(path) as tmp:
                    booster.save_model(str(tmp), num_iteration=best)
                entry["file"] = path.name
            entries.append(entry)
        record["classes"].append({"class": c, "folds": entries})
    return oof, test, record


def _statistics(
    data_dir: Path, meta: pd.DataFrame, ids: Sequence[str], size: int, names: Sequence[str] | None
) -> pd.DataFrame:
    """Statistics and metadata of ``ids``, in their order, each read from its split's cache."""
    rows = meta.drop_duplicates("image_id").set_index("image_id").loc[list(ids)]
    parts = []
    for split, part in rows.groupby("split", sort=True):
        cache = open_channel_cache(cache_file(data_dir, split, "images", size), size)
        stats = cache_statistics(cache, part["cache_index"].astype(np.int64).to_numpy(), names)
        stats.index = part.index
        parts.append(stats)
    table = pd.concat(parts).loc[list(ids)]
    for column in META_COLUMNS:
        if column in rows:
            table[column] = pd.to_numeric(rows[column], errors="coerce").to_numpy(np.float64)
    return table.reset_index(drop=True)


def statistics_of(
    data_dir: str | Path, ids: Sequence[str], size: int, names: Sequence[str] | None
) -> pd.DataFrame:
    """The non-CNN features of ``ids`` (statistics and metadata), in their order, from the
    data folder's cache of side ``size`` (``names``: ``data.channels``). The bundle's infer
    computes the test rows with this too."""
    data_dir = Path(data_dir)
    meta = read_meta(data_files(data_dir)["meta"], ["image_id", "split", "cache_index"])
    return _statistics(data_dir, meta, ids, int(size), names)


def image_features(cfg: RunConfig, data_dir: str | Path, ids: Sequence[str]) -> pd.DataFrame:
    """The non-CNN features of ``ids`` (statistics and metadata), in their order."""
    return statistics_of(data_dir, ids, int(cfg.image_size), cfg.section("data").get("channels"))


def predict_saved(
    fusion_dir: str | Path,
    record: Mapping[str, Any],
    cnn_test: np.ndarray,
    x_test: np.ndarray,
) -> np.ndarray:
    """The fused test probabilities ``(M, K)`` from the boosters :func:`fuse_classes` saved in
    ``fusion_dir`` (its ``record``, ``boosters.json``): the same fold mean, in the same order,
    with the CNN probability where a class kept it. A missing booster file is an error naming it.

    Example:
        >>> test = predict_saved("runs/x/stage1/fusion", index, cnn_test, stats)  # doctest: +SKIP
    """
    import lightgbm as lgb  # heavy: only when the decision kept the fused source

    fusion_dir = Path(fusion_dir)
    cnn_test = np.asarray(cnn_test, np.float64)
    xte = np.column_stack([cnn_test, np.asarray(x_test, np.float64)]).reshape(len(cnn_test), -1)
    test = np.zeros((len(xte), len(record["classes"])))
    for entry in record["classes"]:
        c, folds = int(entry["class"]), entry["folds"]
        for fold in folds:
            if fold.get("fallback") == "cnn":
                test[:, c] += cnn_test[:, c] / len(folds)
                continue
            path = fusion_dir / str(fold["file"])
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path}: booster of class {c}, fold {fold['fold']} missing"
                )
            if len(xte):
                booster = lgb.Booster(model_file=str(path))
                test[:, c] += booster.predict(xte) / len(folds)
    return test


def run_class_fusion(
    cfg: RunConfig,
    stage: StageLayout,
    data_dir: str | Path,
    out_dir: str | Path,
    threads: int = 1,
) -> dict[str, Any]:
    """The fusion step: features of the training pool and the test split, the per-class
    boosters, and the fused ``oof.csv`` / ``test.csv`` (``image_id, p_0 … p_{K-1}``),
    ``features.csv`` and ``boosters.json`` in ``out_dir`` (the stage's fusion folder); returns
    what ``boosters.json`` records, plus the step's timings (``seconds``, ``seconds_statistics``)."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = fusion_files(out_dir)
    pool = oof_pool(cfg, data_dir)
    k = n_classes(data_dir)
    truth = khot_of(pool["target"].tolist(), k)
    sources = stage_sources(cfg, stage, CLASSIFY)
    if not sources:
        raise ValueError(
            "fuse-cls: the config names no classifier models (classifier.models): nothing to fuse"
        )
    cnn_oof = blend_mean(oof_probabilities(sources, pool))
    test_ids, test_probs = test_probabilities(sources)
    cnn_test = blend_mean(test_probs) if test_ids else np.zeros((0, k))
    train_ids = pool["image_id"].astype(str).tolist()
    stats_train = image_features(cfg, data_dir, train_ids)
    stats_test = image_features(cfg, data_dir, test_ids) if test_ids else stats_train.iloc[:0]
    read_at = time.perf_counter()
    fusion = cfg.fusion
    params = dict(fusion.get("params") or {})
    oof, test, record = fuse_classes(
        cnn_oof,
        truth,
        pool["fold"].astype(int).to_numpy(),
        pool["patient_key"].astype(str).to_numpy(),
        stats_train.to_numpy(np.float64),
        cnn_test,
        stats_test.to_numpy(np.float64),
        params=params,
        seed=int(cfg.seed),
        threads=threads,
        out_dir=out_dir,
    )
    cnn_columns = [f"cnn_p_{c}" for c in range(k)]
    features = pd.concat(
        [
            pd.DataFrame(
                {
                    "image_id": train_ids + list(test_ids),
                    "split": ["train"] * len(train_ids)
                    + [test_split(stage.number)] * len(test_ids),
                    "fold": list(pool["fold"].astype(int)) + [-1] * len(test_ids),
                }
            ),
            pd.DataFrame(np.vstack([cnn_oof, cnn_test]), columns=cnn_columns),
            pd.concat([stats_train, stats_test], ignore_index=True),
        ],
        axis=1,
    )
    atomic_write_csv(features, files["features"])
    record.update(
        features=cnn_columns + list(stats_train.columns),
        n_images=len(train_ids),
        n_test=len(test_ids),
    )
    write_boosters_index(files["boosters"], record)  # no timings: a rerun writes the same bytes
    record.update(
        seconds_statistics=round(read_at - started, 3),
        seconds=round(time.perf_counter() - started, 3),
    )
    write_fused_classes(files["oof"], train_ids, oof)
    write_fused_classes(files["test"], test_ids, test)
    n_fallback = sum(1 for c in record["classes"] for e in c["folds"] if e.get("fallback") == "cnn")
    log.info(
        "fuse-cls: %d classes x %d folds (%d kept the CNN probability), %d training and %d test "
        "images, %d features; statistics %.2f s, total %.2f s",
        k,
        len(np.unique(pool["fold"])),
        n_fallback,
        len(train_ids),
        len(test_ids),
        len(record["features"]),
        record["seconds_statistics"],
        record["seconds"],
    )
    return record
