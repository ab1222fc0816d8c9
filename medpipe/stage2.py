"""Stage 2 of a two-stage competition: the stage-2 folds (which checkpoints predict is the
layout's :meth:`medpipe.config.RunConfig.trained_fold`).

Choice (documented in docs/stage2.md): the stage-1 test images, now labelled, are added to the
training side of every fold (``fold = -1``), as the SIIM winner did, and are never validation
images. The training images keep their stage-1 folds. So stage-2 OOF predictions cover exactly the
same images as stage 1, kept and retrained models are compared on the same validation images, and
the kept models' stage-1 OOF stays valid for fusion and thresholds. One exception keeps the CV
honest: a stage-1 test image whose patient also has training images joins that patient's fold, so
no patient is ever on both sides of a fold.
"""

from __future__ import annotations

import pandas as pd

from medpipe.guards import LABEL_COLUMN

__all__ = ["ALWAYS_TRAIN", "stage2_folds"]

ALWAYS_TRAIN = -1


def stage2_folds(
    stage1_folds: pd.DataFrame, meta: pd.DataFrame, labelled_split: str = "test"
) -> pd.DataFrame:
    """Stage-1 folds plus the newly labelled images: in their patient's fold, else always in training.

    The label columns are stage 1's (``folds.csv`` between ``patient_key`` and ``fold``: SIIM's
    ``has_finding``, the multi-label task's ``target``), read from the stage-2 ``meta.csv``.
    """
    labels = [c for c in stage1_folds.columns if c not in _KEYS]
    new = meta[(meta["split"] == labelled_split) & _labelled(meta)]
    new = new[~new["image_id"].isin(stage1_folds["image_id"])]
    fold_of_patient = stage1_folds.drop_duplicates("patient_key").set_index("patient_key")["fold"]
    added = pd.DataFrame(
        {
            "image_id": new["image_id"].to_numpy(),
            "patient_key": new["patient_key"].to_numpy(),
            **{column: _label_values(new, column) for column in labels},
            "fold": new["patient_key"]
            .map(fold_of_patient)
            .fillna(ALWAYS_TRAIN)
            .astype(int)
            .to_numpy(),
        }
    )
    return pd.concat([stage1_folds[added.columns], added], ignore_index=True)


_KEYS = ("image_id", "patient_key", "fold")


def _labelled(meta: pd.DataFrame) -> pd.Series:
    """Rows with a label, as the training-pool guard reads them: SIIM's ``has_finding``, a
    multi-label image's ``n_labels`` (its ``target`` is empty when it has no class)."""
    return meta[LABEL_COLUMN if LABEL_COLUMN in meta.columns else "n_labels"].notna()


def _label_values(rows: pd.DataFrame, column: str):
    if column == LABEL_COLUMN:
        return rows[column].astype(int).to_numpy()
    return rows[column].fillna("").astype(str).to_numpy()
