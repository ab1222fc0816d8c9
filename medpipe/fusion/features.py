"""Fusion features: one row per image from the CNN fold outputs and the DICOM metadata.

Training rows take every model value from the fold where the image was validation
(out-of-fold), so LightGBM never sees a score from a model that trained on the image. Test
rows take the mean over the fold models of the same per-fold feature (not the feature of the
mean probability map), so a test feature has the distribution the booster saw in training.

Gate embeddings are reduced by PCA fitted inside each fold: the rows of fold ``f`` are projected
with a PCA fitted only on the rows of the other folds (the fold-``f`` model's training rows).
Each fold model embeds in its own space, so before pooling rows of different folds every fold
model's space is rotated onto fold 0's by orthogonal Procrustes on their embeddings of the
shared, unlabelled test images. Component signs follow a reference PCA of the test embeddings.
Test rows average their per-fold projections (fold model ``f``'s embedding through PCA ``f``).
Each fold's fitted map (Procrustes centre, rotation and scale; PCA mean and oriented
components) is returned on request (``transforms``), so new images can be projected the same way
(:func:`fold_mean_embedding_features`, the bundle's ``medpipe infer``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.linalg import orthogonal_procrustes
from sklearn.decomposition import PCA

from medpipe.fusion.statistics import AREA_LEVELS, STATISTICS, seg_statistics
from medpipe.guards import own_fold_rows
from medpipe.layout import (
    FoldDir,
    ProbRows,
    read_gate_predictions,
    read_prediction_ids,
    read_seg_statistics,
    seg_prediction_ids,
)
from medpipe.predictions.stored import image_chunks

__all__ = [
    "build_features",
    "seg_statistics",
    "AREA_LEVELS",
    "project_embeddings",
    "fold_mean_embedding_features",
    "metadata_features",
    "save_transforms",
    "load_transforms",
    "gate_test_features",
    "seg_test_features",
    "metadata_features_for",
]

log = logging.getLogger(__name__)


def _frame(value: pd.DataFrame | str | Path, name: str) -> pd.DataFrame:
    if isinstance(value, pd.DataFrame):
        return value
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {name} not found")
    return pd.read_csv(
        path,
        dtype={"image_id": str, "patient_key": str, "split": str, "sex": str, "view": str},
        keep_default_na=False,
        na_values=[""],
    )


def _fold_dirs(dirs: Sequence[FoldDir]) -> list[tuple[int, FoldDir]]:
    """(fold number, fold) pairs; a fold listed twice is an error."""
    pairs = [(d.fold, d) for d in dirs]
    if len({f for f, _ in pairs}) != len(pairs):
        raise ValueError(
            f"features: fold directories repeat a fold: {[str(d.path) for _, d in pairs]}"
        )
    return pairs


def _align_order(ids: np.ndarray, test_ids: pd.Index, path: Path) -> np.ndarray:
    pos = pd.Index(ids).get_indexer(test_ids)
    if (pos < 0).any() or len(ids) != len(test_ids):
        raise ValueError(f"{path}: test image ids differ from the other fold outputs")
    return pos


def _statistics_of(path: Path, rows: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`seg_statistics` of some rows of a fold's prediction file: those predict stored
    (computed on the maps before they were quantised), else computed from the stored maps a
    chunk at a time (each image's statistics are its own, so chunks give the same values)."""
    stored = read_seg_statistics(path, rows)
    if stored is not None and list(stored) == STATISTICS:
        return stored
    if stored is not None:
        log.warning(
            "%s: stored statistics %s are not today's; computed from the maps", path, list(stored)
        )
    reader = ProbRows(path)
    chunks = image_chunks(len(rows), reader.row_items) or [slice(0, 0)]
    parts = [seg_statistics(reader.rows(rows[sl])) for sl in chunks]
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def _seg_features(
    model: str, dirs, fold_of: pd.Series, train_ids: pd.Index, test_ids: pd.Index | None
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    train_parts, test_sum, n = [], None, 0
    for fold, d in _fold_dirs(dirs):
        path = d.oof
        if not path.is_file():
            raise FileNotFoundError(f"{path}: fold output not found")
        ids, cls_prob = seg_prediction_ids(path)
        mine = own_fold_rows(ids, fold, fold_of, path)
        stats = _statistics_of(path, np.flatnonzero(mine))
        cls = cls_prob[mine].astype(np.float64)
        train_parts.append(pd.DataFrame({**stats, "aux": cls}, index=ids[mine]))
        if test_ids is not None:
            path = d.test
            if not path.is_file():
                raise FileNotFoundError(f"{path}: fold output not found")
            part_ids, cls_prob = seg_prediction_ids(path)
            order = _align_order(part_ids, test_ids, path)
            stats = _statistics_of(path, order)
            cls = cls_prob[order].astype(np.float64)
            part = pd.DataFrame({**stats, "aux": cls}, index=test_ids)
            test_sum = part if test_sum is None else test_sum + part
            n += 1
    train = pd.concat(train_parts)
    _check_coverage(train, train_ids, f"segmentation model {model!r}")
    test = None if test_sum is None else test_sum / n
    if train["aux"].isna().all():
        train = train.drop(columns="aux")
        test = None if test is None else test.drop(columns="aux")
    rename = {c: f"seg_{model}_{c}" for c in train.columns}
    return train.rename(columns=rename), None if test is None else test.rename(columns=rename)


def _check_coverage(frame: pd.DataFrame, train_ids: pd.Index, what: str) -> None:
    if frame.index.duplicated().any():
        raise ValueError(
            f"features: {what}: image {frame.index[frame.index.duplicated()][0]!r} has OOF values from two folds"
        )
    missing = train_ids.difference(frame.index)
    if len(missing):
        raise ValueError(
            f"features: {what}: {len(missing)} training images have no OOF value (e.g. {list(missing[:3])})"
        )


def _read_gate(path: Path) -> pd.DataFrame:
    frame = read_gate_predictions(path, embeddings=True)
    if "prob" not in frame.columns or "image_id" not in frame.columns:
        raise ValueError(f"{path}: needs columns image_id, prob, emb_0 ...")
    return frame.set_index("image_id")


def _emb_columns(frame: pd.DataFrame) -> list[str]:
    return sorted((c for c in frame.columns if c.startswith("emb_")), key=lambda c: int(c[4:]))


def _orient(components: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """Fix the arbitrary sign of each principal axis so all folds agree."""
    if reference is not None:
        signs = np.sign(np.sum(components * reference[: len(components)], axis=1))
    else:
        signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


def project_embeddings(
    x: np.ndarray, transform: Mapping[str, np.ndarray], n_components: int
) -> np.ndarray:
    """One fold's PCA features ``(N, n_components)`` of embeddings ``x`` (NaN past ``k``): the
    Procrustes map onto fold 0's space (when ``aligned``), then the fold's PCA."""
    if bool(transform["aligned"]):
        x = (x - transform["mu"]) @ transform["rotation"] * float(transform["scale"])
    pcs = np.full((len(x), n_components), np.nan)
    k = int(transform["k"])
    if k >= 1:
        pcs[:, :k] = (x - transform["mean"]) @ transform["components"].T
    return pcs


def fold_mean_embedding_features(
    test: Mapping[int, np.ndarray],
    transforms: Mapping[int, Mapping[str, np.ndarray]],
    n_components: int,
) -> np.ndarray:
    """Test rows' PCA features: the mean over folds (in fold order) of each fold's projection."""
    total = None
    for f in sorted(test):
        pcs = project_embeddings(test[f], transforms[f], n_components)
        total = pcs if total is None else total + pcs
    return total / len(test)


def _embedding_pcs(
    oof: dict[int, tuple[np.ndarray, np.ndarray]],
    test: dict[int, np.ndarray],
    n_components: int,
    seed: int,
    transforms: dict[int, dict[str, np.ndarray]] | None = None,
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """PCA features of OOF rows (fitted without the row's fold) and of test rows (fold mean);
    each fold's fitted map goes into ``transforms`` when given."""
    folds = sorted(oof)
    # Rotate every fold model's space onto fold 0's using the shared test images (no labels).
    maps = {}
    ref_fold = folds[0]
    can_align = len(folds) > 1 and len(test) == len(folds) and len(test[ref_fold]) >= 2
    target = test[ref_fold] - test[ref_fold].mean(axis=0) if can_align else None
    fitted: dict[int, dict[str, np.ndarray]] = {}
    for f in folds:
        dim = oof[f][1].shape[1]
        if can_align:
            mu = test[f].mean(axis=0)
            centred = test[f] - mu
            rotation, scale = orthogonal_procrustes(centred, target)
            norm = float((centred**2).sum())
            s = scale / norm if norm > 0 else 1.0
            maps[f] = lambda x, mu=mu, r=rotation, s=s: (x - mu) @ r * s
            fitted[f] = {"aligned": np.array(True), "mu": mu, "rotation": rotation}
            fitted[f]["scale"] = np.array(s, dtype=np.float64)
        else:
            maps[f] = lambda x: x
            fitted[f] = {
                "aligned": np.array(False),
                "mu": np.zeros(dim),
                "rotation": np.eye(dim),
                "scale": np.array(1.0),
            }
    aligned_oof = {f: maps[f](oof[f][1]) for f in folds}
    aligned_test = {f: maps[f](test[f]) for f in test}
    reference = None
    if aligned_test:
        pooled = np.mean([aligned_test[f] for f in aligned_test], axis=0)
        k_ref = min(n_components, pooled.shape[0] - 1, pooled.shape[1])
        if k_ref >= 1:
            reference = (
                PCA(n_components=k_ref, svd_solver="full", random_state=seed)
                .fit(pooled)
                .components_
            )
    train_parts, test_sum, n_test = [], None, 0
    for f in folds:
        fit = (
            np.concatenate([aligned_oof[g] for g in folds if g != f])
            if len(folds) > 1
            else np.empty((0, aligned_oof[f].shape[1]))
        )
        k = min(n_components, fit.shape[0] - 1, fit.shape[1])
        pcs_oof = np.full((len(aligned_oof[f]), n_components), np.nan)
        pcs_test = None
        dim = aligned_oof[f].shape[1]
        fitted[f].update(
            {"k": np.array(max(k, 0)), "mean": np.zeros(dim), "components": np.zeros((0, dim))}
        )
        if k >= 1:
            pca = PCA(n_components=k, svd_solver="full", random_state=seed).fit(fit)
            ref = reference if reference is not None and len(reference) >= k else None
            comps = _orient(pca.components_, ref)
            fitted[f].update({"mean": pca.mean_, "components": comps})
            pcs_oof[:, :k] = (aligned_oof[f] - pca.mean_) @ comps.T
            if f in aligned_test:
                pcs_test = np.full((len(aligned_test[f]), n_components), np.nan)
                pcs_test[:, :k] = (aligned_test[f] - pca.mean_) @ comps.T
        train_parts.append(pd.DataFrame(pcs_oof, index=oof[f][0]))
        if f in aligned_test:
            if pcs_test is None:
                pcs_test = np.full((len(aligned_test[f]), n_components), np.nan)
            test_sum = pcs_test if test_sum is None else test_sum + pcs_test
            n_test += 1
    if transforms is not None:
        transforms.update(fitted)
    return pd.concat(train_parts), None if test_sum is None else test_sum / n_test


def save_transforms(
    path: str | Path,
    transforms: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]],
    n_components: int,
) -> None:
    """Write every gate model's per-fold embedding maps to one ``.npz`` (atomically)."""
    from medpipe.io.atomic import atomic_path

    arrays: dict[str, np.ndarray] = {"n_components": np.array(int(n_components))}
    for model, folds in transforms.items():
        for f, transform in folds.items():
            for key, value in transform.items():
                arrays[f"{model}::{int(f)}::{key}"] = np.asarray(value)
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def load_transforms(path: str | Path) -> tuple[dict[str, dict[int, dict[str, np.ndarray]]], int]:
    """``({model: {fold: transform}}, n_components)`` that :func:`save_transforms` wrote."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: embedding PCA not found (rule features)")
    out: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    with np.load(path, allow_pickle=False) as data:
        n_components = int(data["n_components"])
        for name in data.files:
            if name == "n_components":
                continue
            model, fold, key = name.split("::")
            out.setdefault(model, {}).setdefault(int(fold), {})[key] = data[name]
    return out, n_components


def _gate_features(
    model: str,
    dirs,
    fold_of: pd.Series,
    train_ids: pd.Index,
    test_ids: pd.Index | None,
    n_components: int,
    seed: int,
    transforms: dict[int, dict[str, np.ndarray]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    probs, test_probs, oof_emb, test_emb = [], [], {}, {}
    for fold, d in _fold_dirs(dirs):
        path = d.oof
        frame = _read_gate(path)
        frame = frame[own_fold_rows(frame.index.to_numpy(), fold, fold_of, path)]
        probs.append(frame["prob"])
        cols = _emb_columns(frame)
        if cols:
            oof_emb[fold] = (frame.index.to_numpy(), frame[cols].to_numpy(np.float64))
        if test_ids is not None:
            path = d.test
            test_frame = _read_gate(path)
            test_frame = test_frame.iloc[_align_order(test_frame.index.to_numpy(), test_ids, path)]
            test_probs.append(test_frame["prob"].to_numpy(np.float64))
            if cols:
                if _emb_columns(test_frame) != cols:
                    raise ValueError(f"{path}: embedding columns differ from {d.oof}")
                test_emb[fold] = test_frame[cols].to_numpy(np.float64)
    dims = {e.shape[1] for _, e in oof_emb.values()}
    if len(dims) > 1:
        raise ValueError(
            f"features: gate model {model!r}: folds have different embedding sizes {sorted(dims)}"
        )
    train = pd.DataFrame({"prob": pd.concat(probs)})
    _check_coverage(train, train_ids, f"gate model {model!r}")
    test = (
        None
        if test_ids is None
        else pd.DataFrame({"prob": np.mean(test_probs, axis=0)}, index=test_ids)
    )
    if oof_emb and n_components > 0:
        if len(oof_emb) != len(dirs):
            raise ValueError(
                f"features: gate model {model!r}: some folds have no embedding columns"
            )
        pcs, pcs_test = _embedding_pcs(oof_emb, test_emb, n_components, seed, transforms)
        names = [f"pc{k}" for k in range(n_components)]
        train = train.join(pcs.set_axis(names, axis=1))
        if test is not None:
            test = test.join(pd.DataFrame(pcs_test, index=test_ids, columns=names))
    rename = {c: f"gate_{model}_{c}" for c in train.columns}
    return train.rename(columns=rename), None if test is None else test.rename(columns=rename)


def gate_test_features(
    model: str,
    dirs: Sequence[FoldDir],
    test_ids: pd.Index,
    transforms: Mapping[int, Mapping[str, np.ndarray]] | None,
    n_components: int,
) -> pd.DataFrame:
    """A gate model's features of new test images from its folds' ``test`` tables, with the
    embedding maps the features step fitted: the test rows :func:`build_features` gives."""
    probs, emb = [], {}
    for fold, d in _fold_dirs(dirs):
        frame = _read_gate(d.test)
        frame = frame.iloc[_align_order(frame.index.to_numpy(), test_ids, d.test)]
        probs.append(frame["prob"].to_numpy(np.float64))
        cols = _emb_columns(frame)
        if cols and transforms:
            emb[fold] = frame[cols].to_numpy(np.float64)
    test = pd.DataFrame({"prob": np.mean(probs, axis=0)}, index=test_ids)
    if emb and n_components > 0:
        names = [f"pc{k}" for k in range(n_components)]
        pcs = fold_mean_embedding_features(emb, transforms, n_components)
        test = test.join(pd.DataFrame(pcs, index=test_ids, columns=names))
    return test.rename(columns={c: f"gate_{model}_{c}" for c in test.columns})


def seg_test_features(
    model: str, folds: Sequence[tuple[dict[str, np.ndarray], np.ndarray]], test_ids: pd.Index
) -> pd.DataFrame:
    """A segmentation model's test features from each fold's ``(seg_statistics, cls_prob)`` of
    the stored maps, summed in fold order and divided by the number of folds, as
    :func:`build_features` does."""
    total = None
    for stats, cls_prob in folds:
        part = pd.DataFrame({**stats, "aux": cls_prob.astype(np.float64)}, index=test_ids)
        total = part if total is None else total + part
    test = total / len(folds)
    return test.rename(columns={c: f"seg_{model}_{c}" for c in test.columns})


def metadata_features_for(meta: pd.DataFrame | str | Path, test_ids: pd.Index) -> pd.DataFrame:
    """``age, sex_male, view_ap`` of ``test_ids`` from a meta table, as :func:`build_features`
    reads it."""
    split = (
        _frame(meta, "image metadata")
        .pipe(lambda m: m.assign(image_id=m["image_id"].astype(str)))
        .drop_duplicates("image_id")
        .set_index("image_id")
        .reindex(test_ids)
    )
    return pd.DataFrame(metadata_features(split), index=test_ids)


def _test_ids(seg_dirs, gate_dirs) -> pd.Index | None:
    for dirs in (seg_dirs, gate_dirs):
        for model_dirs in dirs.values():
            for d in model_dirs:
                if d.test.is_file():
                    return pd.Index(np.sort(read_prediction_ids(d.test)))
    return None


def build_features(
    meta: pd.DataFrame | str | Path,
    folds: pd.DataFrame | str | Path,
    seg_dirs: Mapping[str, Sequence[FoldDir]],
    gate_dirs: Mapping[str, Sequence[FoldDir]],
    n_components: int = 8,
    seed: int = 0,
    transforms: dict[str, dict[int, dict[str, np.ndarray]]] | None = None,
) -> pd.DataFrame:
    """One row per image: model outputs (OOF for training rows, fold mean for test) + metadata.

    Columns: ``image_id, split, fold`` (-1 for test), then per gate model ``gate_<m>_prob`` and
    ``gate_<m>_pc0..`` (embedding PCA, see the module docstring), per segmentation model
    ``seg_<m>_max``, ``seg_<m>_area_p{30,50,70,90}`` (pixels above the level),
    ``seg_<m>_ncomp`` (components at 0.5) and ``seg_<m>_aux`` (aux-head probability, when the
    model has one), and ``age``, ``sex_male`` (M 1, F 0), ``view_ap`` (AP 1, PA 0), NaN unknown.
    Training rows are the rows of ``folds``; test rows are the images of the fold outputs'
    ``test`` files. Test labels are never read. ``transforms``, when given, receives per gate
    model each fold's fitted embedding map (:func:`save_transforms` writes it).

    Example:
        >>> run = RunLayout("runs/default")  # doctest: +SKIP
        >>> seg = {"unet_regnetx": run.folds_of(1, "segment", "unet_regnetx", range(5))}  # doctest: +SKIP
        >>> gate = {"gate_regnetx": run.folds_of(1, "gate", "gate_regnetx", range(5))}  # doctest: +SKIP
        >>> features = build_features("data/meta.csv", "data/folds.csv", seg, gate)  # doctest: +SKIP
    """
    meta = _frame(meta, "image metadata")
    folds = _frame(folds, "the training pool")
    for frame, name, cols in (
        (meta, "the image metadata", ["image_id", "split"]),
        (folds, "the training pool", ["image_id", "fold"]),
    ):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValueError(f"features: {name} lacks columns {missing}")
    if not seg_dirs and not gate_dirs:
        raise ValueError("features: no segmentation or gate model outputs given")
    folds = folds.assign(image_id=folds["image_id"].astype(str))
    fold_of = pd.Series(folds["fold"].astype(int).to_numpy(), index=folds["image_id"].to_numpy())
    train_ids = pd.Index(folds["image_id"])
    test_ids = _test_ids(seg_dirs, gate_dirs)
    if test_ids is not None and len(test_ids.intersection(train_ids)):
        raise ValueError(
            f"features: {len(test_ids.intersection(train_ids))} test images are also in the training pool"
        )
    index = train_ids.append(test_ids) if test_ids is not None else train_ids
    split = (
        meta.assign(image_id=meta["image_id"].astype(str))
        .drop_duplicates("image_id")
        .set_index("image_id")
    )
    missing = index.difference(split.index)
    if len(missing):
        raise ValueError(
            f"features: {len(missing)} images are not in the image metadata (e.g. {list(missing[:3])})"
        )
    split = split.reindex(index)
    out = pd.DataFrame(
        {
            "image_id": index,
            "split": split["split"].to_numpy(),
            "fold": np.concatenate(
                [fold_of.to_numpy(), np.full(len(index) - len(train_ids), -1)]
            ).astype(int),
        },
        index=index,
    )
    blocks = []
    for model, dirs in gate_dirs.items():
        fitted = {} if transforms is not None else None
        train, test = _gate_features(
            model, dirs, fold_of, train_ids, test_ids, n_components, seed, fitted
        )
        if transforms is not None and fitted:
            transforms[model] = fitted
        blocks.append(train if test is None else pd.concat([train, test]))
    for model, dirs in seg_dirs.items():
        train, test = _seg_features(model, dirs, fold_of, train_ids, test_ids)
        blocks.append(train if test is None else pd.concat([train, test]))
    for block in blocks:
        out = out.join(block.loc[block.index.intersection(index)])
    for column, values in metadata_features(split).items():
        out[column] = values
    return out.reset_index(drop=True)


def metadata_features(split: pd.DataFrame) -> dict[str, np.ndarray]:
    """``age``, ``sex_male`` (M 1, F 0) and ``view_ap`` (AP 1, PA 0), NaN unknown, of meta rows."""
    index = split.index
    age = pd.to_numeric(split["age"], errors="coerce").to_numpy() if "age" in split else np.nan
    sex = (
        split["sex"].astype(str).str.strip().str.upper()
        if "sex" in split
        else pd.Series("", index=index)
    )
    view = (
        split["view"].astype(str).str.strip().str.upper()
        if "view" in split
        else pd.Series("", index=index)
    )
    return {
        "age": age,
        "sex_male": sex.map({"M": 1.0, "F": 0.0}).to_numpy(dtype=np.float64),
        "view_ap": view.map({"AP": 1.0, "PA": 0.0}).to_numpy(dtype=np.float64),
    }
