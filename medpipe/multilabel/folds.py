"""Multi-label stratified, group-aware cross-validation folds.

Each fold should hold every class at about its overall rate, rare ones included, or a fold
without a rare class leaves its threshold and its F1 to chance. Plain stratification cannot
stratify K labels at once; iterative stratification (Sechidis et al., 2011) can, and the
``iterative-stratification`` package's ``MultilabelStratifiedKFold`` implements it.

Images of one group (``patient_key``: one patient, one specimen) look alike, so a group split
across folds leaks. The library stratifies rows, not groups, so each group becomes one row
whose columns count its positive images per class (see :func:`stratified_folds`), and every
image takes its group's fold; with one image per group this is plain iterative stratification
of the images. ``folds.csv`` written from
:func:`by_label_set` is the one source of truth for splits, as for SIIM.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from medpipe.guards import check_patient_folds

__all__ = ["stratified_folds", "by_label_set"]

log = logging.getLogger(__name__)


def _levels(top: int, start: int = 1) -> list[int]:
    """Count levels ``start..4``, then steps of about 1.5x up to ``top`` (a group of 100 images
    adds a dozen columns, not a hundred)."""
    levels, value = [], 1
    while value <= top:
        if value >= start:
            levels.append(value)
        value = value + 1 if value < 4 else int(np.ceil(value * 1.5))
    return levels


def _at_least(counts: np.ndarray, start: int = 1) -> np.ndarray:
    """``(G, C * L)`` bool: for every column and level ``l``, whether the count is ``>= l``."""
    top = int(counts.max(initial=0))
    columns = [counts >= level for level in _levels(top, start)]
    return np.hstack(columns) if columns else np.zeros((len(counts), 0), dtype=bool)


def stratified_folds(
    khot: np.ndarray, n_folds: int, seed: int, groups: np.ndarray | None = None
) -> np.ndarray:
    """``(N,)`` fold of each image, by iterative stratification, a group's images in one fold.

    The library stratifies rows, so each group is one row, described by columns it can
    balance: for every class (and for "no label at all") whether the group has at least 1, 2,
    3, ... such images, and whether it has at least 2, 3, ... images. A group's positives are
    the sum of its "at least l" columns, so balancing each column keeps large positive groups
    apart and the positive images near their share: on 600 images in groups of 1 to 4 (the
    tests' draws), the worst class-and-fold gap is 1.8-4.4 positives, against 5.0-7.2 with the
    label union alone and 7-10 at random. With one image per group the columns are the
    image's labels and "no label" (which also lets one class, ``K = 1``, through: the library
    wants two columns).

    Args:
        khot: ``(N, K)`` labels in {0, 1}.
        n_folds: at least 2 and at most the number of groups.
        seed: the library's shuffling and tie-breaking seed; the same inputs and seed give the
            same folds.
        groups: ``(N,)`` group of each image (``None``: every image is its own).

    Example:
        >>> stratified_folds(np.array([[1, 0], [1, 0], [0, 1], [0, 1]]), 2, seed=0).tolist()
        [0, 1, 1, 0]
    """
    labels = np.asarray(khot).astype(bool)
    if labels.ndim != 2:
        raise ValueError(f"folds: labels must be (images, classes), got {labels.shape}")
    if n_folds < 2:
        raise ValueError(f"folds: n_folds must be at least 2, got {n_folds}")
    if groups is None:
        codes, n_groups = np.arange(len(labels)), len(labels)
    else:
        codes, uniques = pd.factorize(np.asarray(groups))  # in order of first appearance
        if (codes < 0).any():
            raise ValueError("folds: groups hold missing values; give each such image its own")
        n_groups = len(uniques)
    if n_groups < n_folds:
        raise ValueError(
            f"folds: {n_groups} groups cannot fill {n_folds} folds; lower `folds` in the config"
        )
    per_image = np.column_stack([labels, ~labels.any(axis=1)]).astype(np.int64)
    counts = np.zeros((n_groups, per_image.shape[1]), dtype=np.int64)
    np.add.at(counts, codes, per_image)
    size = np.bincount(codes, minlength=n_groups)[:, None]
    strata = np.hstack([counts >= 1, _at_least(counts, start=2), _at_least(size, start=2)])
    splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.full(n_groups, -1, dtype=np.int64)
    for k, (_, held) in enumerate(splitter.split(np.zeros(n_groups), strata)):
        fold[held] = k
    return fold[codes]


def _khot(meta: pd.DataFrame, label_columns: list[str]) -> np.ndarray:
    values = meta[label_columns].apply(pd.to_numeric, errors="coerce")
    bad = values.isna() | ~values.isin([0, 1])
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise ValueError(
            f"folds: {int(bad.to_numpy().any(axis=1).sum())} images have labels outside {{0, 1}} "
            f"(first: image {meta['image_id'].iloc[row]!r}, column {label_columns[col]!r}, value "
            f"{meta[label_columns[col]].iloc[row]!r}); folds need a labelled split"
        )
    return values.to_numpy(dtype=np.int64).astype(bool)


def by_label_set(
    meta: pd.DataFrame, n_folds: int, seed: int, label_columns: Sequence[str]
) -> pd.DataFrame:
    """Assign every image a fold, stratified on its label set, so that no group spans two folds.

    Args:
        meta: rows of one split, with ``image_id``, the K-hot ``label_columns`` and, when the
            data has groups, ``patient_key`` (an image without one is its own group).
        n_folds: number of folds, at least 2 and at most the number of groups.
        seed: the same inputs and seed give the same folds.
        label_columns: the columns holding each class's 0/1 label, in class order.

    Returns:
        ``image_id, patient_key, <label_columns>, fold`` in the row order of ``meta``
        (``patient_key`` empty when ``meta`` has none), checked by
        :func:`medpipe.guards.check_patient_folds`.

    Example:
        >>> meta = pd.DataFrame({"image_id": list("abcdef"), "patient_key": list("ppqrst"),
        ...                      "c0": [1, 1, 0, 1, 0, 0], "c1": [0, 1, 1, 0, 1, 0]})
        >>> folds = by_label_set(meta, n_folds=2, seed=0, label_columns=["c0", "c1"])
        >>> int(folds.groupby("patient_key")["fold"].nunique().max())
        1
    """
    label_columns = list(label_columns)
    if not label_columns:
        raise ValueError("folds: no label columns given")
    missing = [c for c in ["image_id", *label_columns] if c not in meta.columns]
    if missing:
        raise ValueError(f"folds: meta lacks columns {missing}")
    frame = meta.reset_index(drop=True)
    if "patient_key" not in frame.columns:
        frame = frame.assign(patient_key=None)
    frame = frame[["image_id", "patient_key", *label_columns]].copy()
    frame["image_id"] = frame["image_id"].astype(str)
    duplicated = frame["image_id"].duplicated()
    if duplicated.any():
        raise ValueError(
            f"folds: image {frame.loc[duplicated, 'image_id'].iloc[0]!r} appears more than once in meta"
        )
    labels = _khot(frame, label_columns)
    frame[label_columns] = labels.astype(np.int64)
    no_key = frame["patient_key"].isna() | (frame["patient_key"].astype(str).str.strip() == "")
    # The prefix keeps image-level groups from colliding with a real key.
    groups = np.where(no_key, "image:" + frame["image_id"], frame["patient_key"].astype(str))
    n_positive = pd.DataFrame(labels).groupby(groups, sort=False).any().sum(axis=0).to_numpy()
    scarce = [c for c, n in zip(label_columns, n_positive, strict=True) if n < n_folds]
    if scarce:
        log.warning(
            "folds: %d classes have fewer positive groups than %d folds (%s); some folds lack them",
            len(scarce),
            n_folds,
            ", ".join(scarce[:5]) + (", ..." if len(scarce) > 5 else ""),
        )
    frame["fold"] = stratified_folds(labels, n_folds, seed, groups)
    check_patient_folds(frame, "folds")
    return frame
