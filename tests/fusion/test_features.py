"""Fusion features: out-of-fold provenance, fold-internal PCA, metadata encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ortho_group

from medpipe.fusion.features import build_features, seg_statistics
from medpipe.layout import StageLayout, read_seg_predictions, write_seg_predictions

S = 12
K = 4


def _tables(n_train: int = 24, n_test: int = 6) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    train = [f"tr{i:03d}" for i in range(n_train)]
    test = [f"te{i:03d}" for i in range(n_test)]
    folds = pd.DataFrame(
        {
            "image_id": train,
            "patient_key": [f"p{i // 2}" for i in range(n_train)],
            "has_finding": [i % 2 for i in range(n_train)],
            "fold": [(i // 2) % K for i in range(n_train)],
        }
    )
    sexes, views = ["M", "F", ""], ["AP", "PA", ""]
    meta = pd.DataFrame(
        {
            "image_id": train + test,
            "split": ["train"] * n_train + ["test"] * n_test,
            "patient_key": [f"p{i // 2}" for i in range(n_train + n_test)],
            "age": [float(30 + i) for i in range(n_train + n_test)],
            "sex": [sexes[i % 3] for i in range(n_train + n_test)],
            "view": [views[i % 3] for i in range(n_train + n_test)],
            "has_finding": [i % 2 for i in range(n_train)] + [np.nan] * n_test,
            "cache_index": list(range(n_train)) + list(range(n_test)),
        }
    )
    return meta, folds, test


def _write_fold_outputs(root: Path, folds: pd.DataFrame, test: list[str]) -> tuple[dict, dict]:
    """Every fold writes OOF rows for *all* training images, valued by the fold number, so a
    feature reveals which fold's file it came from."""
    ids = folds["image_id"].to_numpy(str)
    seg, gate = [], []
    for f in range(K):
        d = StageLayout(root).fold("segment", "unet", f)
        d.path.mkdir(parents=True)
        for name, rows in (("oof", ids), ("test", np.array(test))):
            prob = np.zeros((len(rows), S, S), np.float16)
            prob[:, : f + 1, : f + 1] = 0.95  # area_p90 = (f + 1) ** 2, one component
            np.savez(
                d.predictions(name),
                image_id=rows,
                prob=prob,
                cls_prob=np.full(len(rows), f / 10, np.float32),
            )
        g = StageLayout(root).fold("gate", "cls", f)
        g.path.mkdir(parents=True)
        for name, rows in (("oof", ids), ("test", np.array(test))):
            emb = np.random.default_rng(f).standard_normal((len(rows), 5))
            frame = pd.DataFrame({"image_id": rows, "prob": f / 10})
            pd.concat(
                [frame, pd.DataFrame(emb, columns=[f"emb_{k}" for k in range(5)])], axis=1
            ).to_csv(g.predictions(name), index=False)
        seg.append(d)
        gate.append(g)
    return {"unet": seg}, {"cls": gate}


def test_one_row_per_image_with_values_from_the_validation_fold(tmp_path: Path) -> None:
    meta, folds, test = _tables()
    seg, gate = _write_fold_outputs(tmp_path, folds, test)
    features = build_features(meta, folds, seg, gate, n_components=3)
    assert features["image_id"].is_unique and len(features) == len(folds) + len(test)
    assert list(features.columns[:3]) == ["image_id", "split", "fold"]
    train = features[features["fold"] >= 0].set_index("image_id")
    fold = folds.set_index("image_id")["fold"]
    assert (train["fold"] == fold.loc[train.index]).all()
    assert np.allclose(train["seg_unet_area_p90"], (fold.loc[train.index] + 1) ** 2)
    assert np.allclose(train["gate_cls_prob"], fold.loc[train.index] / 10)
    assert np.allclose(train["seg_unet_aux"], fold.loc[train.index] / 10)
    assert (train["seg_unet_ncomp"] == 1).all() and np.allclose(
        train["seg_unet_max"], 0.95, atol=1e-3
    )
    tested = features[features["fold"] == -1]
    assert sorted(tested["image_id"]) == test and (tested["split"] == "test").all()
    assert np.allclose(tested["seg_unet_area_p90"], np.mean([(f + 1) ** 2 for f in range(K)]))
    assert np.allclose(tested["gate_cls_prob"], np.mean([f / 10 for f in range(K)]))
    assert {f"gate_cls_pc{k}" for k in range(3)} <= set(features.columns)
    assert not features.filter(like="gate_cls_pc").isna().any().any()


def test_a_training_image_without_oof_value_is_an_error(tmp_path: Path) -> None:
    meta, folds, test = _tables()
    seg, gate = _write_fold_outputs(tmp_path, folds, test)
    lost = folds["image_id"].iloc[0]
    path = seg["unet"][folds["fold"].iloc[0]].oof
    data = read_seg_predictions(path)
    keep = data["image_id"] != lost
    write_seg_predictions(path, data["image_id"][keep], data["prob"][keep], data["cls_prob"][keep])
    with pytest.raises(ValueError, match="no OOF value"):
        build_features(meta, folds, seg, gate)


def test_metadata_encoding(tmp_path: Path) -> None:
    meta, folds, test = _tables()
    seg, gate = _write_fold_outputs(tmp_path, folds, test)
    meta.to_csv(tmp_path / "meta.csv", index=False)
    folds.to_csv(tmp_path / "folds.csv", index=False)
    features = build_features(tmp_path / "meta.csv", tmp_path / "folds.csv", seg, gate).set_index(
        "image_id"
    )
    m = meta.set_index("image_id").loc[features.index]
    assert np.allclose(features["age"], m["age"])
    assert features.loc[m["sex"].eq("M").to_numpy(), "sex_male"].eq(1).all()
    assert features.loc[m["sex"].eq("F").to_numpy(), "sex_male"].eq(0).all()
    assert features.loc[m["sex"].fillna("").eq("").to_numpy(), "sex_male"].isna().all()
    assert features.loc[m["view"].eq("AP").to_numpy(), "view_ap"].eq(1).all()
    assert features.loc[m["view"].eq("PA").to_numpy(), "view_ap"].eq(0).all()
    assert features.loc[m["view"].fillna("").eq("").to_numpy(), "view_ap"].isna().all()


def _embedding_outputs(
    root: Path, folds: pd.DataFrame, test: list[str], latent: dict[str, np.ndarray], rotate: bool
) -> dict:
    """Realistic gate outputs: fold f's OOF holds only its validation rows; each fold model's
    embedding is the latent code in its own rotated space (``rotate``)."""
    dirs = []
    for f in range(K):
        d = StageLayout(root).fold("gate", "cls", f)
        d.path.mkdir(parents=True, exist_ok=True)
        q = ortho_group.rvs(6, random_state=f) if rotate else np.eye(6)
        for name, rows in (
            ("oof", folds.loc[folds["fold"] == f, "image_id"].tolist()),
            ("test", test),
        ):
            emb = np.stack([latent[i] for i in rows]) @ q
            frame = pd.DataFrame({"image_id": rows, "prob": 0.5})
            pd.concat(
                [frame, pd.DataFrame(emb, columns=[f"emb_{k}" for k in range(6)])], axis=1
            ).to_csv(d.predictions(name), index=False)
        dirs.append(d)
    return {"cls": dirs}


def _latent(ids: list[str], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    scales = np.array([5.0, 2.0, 1.0, 0.3, 0.2, 0.1])
    return {i: rng.standard_normal(6) * scales for i in ids}


def test_embedding_pca_is_fitted_without_the_rows_own_fold(tmp_path: Path) -> None:
    """Leakage probe: rewriting every *other* fold-0 row must not move a fold-0 row's PCs,
    while it does move rows of other folds (whose PCA was fitted on fold 0)."""
    meta, folds, test = _tables(n_train=48, n_test=12)
    latent = _latent(folds["image_id"].tolist() + test)
    before = build_features(
        meta,
        folds,
        {},
        _embedding_outputs(tmp_path / "a", folds, test, latent, True),
        n_components=3,
    ).set_index("image_id")
    fold0 = folds.loc[folds["fold"] == 0, "image_id"].tolist()
    probe, others = fold0[0], fold0[1:]
    changed = {**latent, **{i: latent[i] * 50 + 7 for i in others}}
    after = build_features(
        meta,
        folds,
        {},
        _embedding_outputs(tmp_path / "b", folds, test, changed, True),
        n_components=3,
    ).set_index("image_id")
    pcs = [f"gate_cls_pc{k}" for k in range(3)]
    assert np.allclose(
        before.loc[probe, pcs].to_numpy(float), after.loc[probe, pcs].to_numpy(float)
    )
    fold1 = folds.loc[folds["fold"] == 1, "image_id"]
    assert not np.allclose(
        before.loc[fold1, pcs].to_numpy(float), after.loc[fold1, pcs].to_numpy(float)
    )


def test_fold_models_are_aligned_before_pooling(tmp_path: Path) -> None:
    """Each fold model embeds in its own rotated space; after alignment the first component
    tracks the same latent direction in every fold (sign included)."""
    meta, folds, test = _tables(n_train=80, n_test=30)
    latent = _latent(folds["image_id"].tolist() + test, seed=1)
    features = build_features(
        meta, folds, {}, _embedding_outputs(tmp_path, folds, test, latent, True), n_components=2
    )
    train = features[features["fold"] >= 0]
    truth = np.array([latent[i][0] for i in train["image_id"]])
    assert abs(np.corrcoef(train["gate_cls_pc0"], truth)[0, 1]) > 0.95
    tested = features[features["fold"] == -1]
    truth_test = np.array([latent[i][0] for i in tested["image_id"]])
    assert (
        np.corrcoef(tested["gate_cls_pc0"], truth_test)[0, 1]
        * np.corrcoef(train["gate_cls_pc0"], truth)[0, 1]
        > 0.9
    )


def test_seg_statistics() -> None:
    prob = np.zeros((2, 6, 6), np.float16)
    prob[0, 0, 0] = prob[0, 5, 5] = 0.6
    prob[1, 1:3, 1:3] = 0.95
    stats = seg_statistics(prob)
    assert stats["ncomp"].tolist() == [2, 1]
    assert stats["area_p50"].tolist() == [2, 4] and stats["area_p70"].tolist() == [0, 4]
    assert np.allclose(stats["max"], [0.6, 0.95], atol=1e-3)
