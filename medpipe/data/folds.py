"""Patient-grouped, finding-stratified cross-validation folds.

Films of one patient look alike, so a patient split across folds leaks: every image of a
patient goes to one fold, and each fold keeps roughly the overall rate of images with a finding.
``folds.csv`` written from :func:`by_patient` is the one source of truth for splits.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from medpipe.guards import check_patient_folds

__all__ = ["by_patient", "check_no_patient_overlap"]

log = logging.getLogger(__name__)

_COLUMNS = ["image_id", "patient_key", "has_finding"]


def _finding(meta: pd.DataFrame) -> np.ndarray:
    values = pd.to_numeric(meta["has_finding"], errors="coerce")
    bad = values.isna() | ~values.isin([0, 1])
    if bad.any():
        row = meta.loc[bad].iloc[0]
        raise ValueError(
            f"folds: {int(bad.sum())} images have has_finding outside {{0, 1}} "
            f"(first: image {row['image_id']!r}, value {row['has_finding']!r}); "
            "folds need a labelled split"
        )
    return values.to_numpy(dtype=np.int64)


def by_patient(meta: pd.DataFrame, n_folds: int, seed: int) -> pd.DataFrame:
    """Assign every image a fold so that no patient spans two folds.

    Uses scikit-learn's ``StratifiedGroupKFold`` (shuffled with ``seed``) on ``has_finding``
    grouped by ``patient_key``. An image without a patient key is its own group.

    Args:
        meta: rows of one split, with columns ``image_id``, ``patient_key``, ``has_finding``.
        n_folds: number of folds, at least 2 and at most the number of patients.
        seed: shuffling seed; the same inputs and seed give the same folds.

    Returns:
        ``image_id, patient_key, has_finding, fold`` in the row order of ``meta``.

    Example:
        >>> meta = pd.DataFrame({"image_id": list("abcdef"), "patient_key": list("ppqrst"),
        ...                      "has_finding": [1, 1, 0, 1, 0, 0]})
        >>> folds = by_patient(meta, n_folds=2, seed=0)
        >>> int(folds.groupby("patient_key")["fold"].nunique().max())
        1
    """
    missing = [c for c in _COLUMNS if c not in meta.columns]
    if missing:
        raise ValueError(f"folds: meta lacks columns {missing}; expected {_COLUMNS}")
    if n_folds < 2:
        raise ValueError(f"folds: n_folds must be at least 2, got {n_folds}")
    frame = meta[_COLUMNS].reset_index(drop=True).copy()
    frame["image_id"] = frame["image_id"].astype(str)
    duplicated = frame["image_id"].duplicated()
    if duplicated.any():
        raise ValueError(
            f"folds: image {frame.loc[duplicated, 'image_id'].iloc[0]!r} appears more than once in meta"
        )
    y = _finding(frame)
    frame["has_finding"] = y
    no_key = frame["patient_key"].isna() | (frame["patient_key"].astype(str).str.strip() == "")
    if no_key.any():
        log.warning(
            "folds: %d images have no patient key; each is its own group", int(no_key.sum())
        )
    # The prefix keeps image-level groups from colliding with a real key.
    groups = np.where(no_key, "image:" + frame["image_id"], frame["patient_key"].astype(str))
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise ValueError(
            f"folds: {n_groups} patients cannot fill {n_folds} folds; lower `folds` in the config"
        )
    strata = y
    if np.bincount(y, minlength=2).max() < n_folds:
        # sklearn refuses when every class is smaller than n_folds; one stratum still gives
        # shuffled, size-balanced patient groups
        log.warning("folds: too few images per class to stratify %d folds; grouping only", n_folds)
        strata = np.zeros_like(y)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.full(len(frame), -1, dtype=np.int64)
    with warnings.catch_warnings():
        # Tiny datasets with few positives trigger sklearn's "least populated class" warning;
        # folds are still patient-disjoint, so say it once in the log instead.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for k, (_, test) in enumerate(splitter.split(np.zeros(len(frame)), strata, groups)):
            fold[test] = k
    if y.sum() < n_folds:
        log.warning("folds: only %d positive images for %d folds", int(y.sum()), n_folds)
    frame["fold"] = fold
    return frame


def check_no_patient_overlap(folds: pd.DataFrame) -> None:
    """Raise if any patient has images in more than one fold (a leak that inflates CV).

    Only the pseudonymous ``patient_key`` is named in the error, never a raw PatientID. The
    check itself is :func:`medpipe.guards.check_patient_folds`, which training reruns.

    Example:
        >>> check_no_patient_overlap(pd.DataFrame({"patient_key": ["p", "p"], "fold": [0, 1]}))
        Traceback (most recent call last):
        ...
        medpipe.guards.LeakageError: folds: patient_key 'p' is in folds [0, 1] (1 patients span several folds)
    """
    for column in ("patient_key", "fold"):
        if column not in folds.columns:
            raise ValueError(f"folds: no {column!r} column; expected image_id, patient_key, fold")
    check_patient_folds(folds, "folds")
