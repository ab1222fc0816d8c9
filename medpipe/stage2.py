"""Stage 2 of a two-stage competition: which checkpoints predict, and the stage-2 folds.

Choice (documented in docs/stage2.md): the stage-1 test images, now labelled, are added to the
training side of every fold (``fold = -1``), as the SIIM winner did, and are never validation
images. The training images keep their stage-1 folds. So stage-2 OOF predictions cover exactly the
same images as stage 1, kept and retrained models are compared on the same validation images, and
the kept models' stage-1 OOF stays valid for fusion and thresholds. One exception keeps the CV
honest: a stage-1 test image whose patient also has training images joins that patient's fold, so
no patient is ever on both sides of a fold.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["ALWAYS_TRAIN", "retrained", "checkpoint_for", "stage2_folds"]

ALWAYS_TRAIN = -1


def retrained(config: Mapping[str, Any], model: str) -> bool:
    return bool(((config.get("stage2") or {}).get("retrain") or {}).get(model, False))


def checkpoint_for(
    config: Mapping[str, Any], run_dir: str | Path, stage: int, task: str, model: str, fold: int
) -> Path:
    """The checkpoint a stage predicts with: stage 2 reuses stage 1's unless the model is retrained."""
    own = int(stage) == 1 or retrained(config, model)
    return (
        Path(run_dir) / f"stage{stage if own else 1}" / task / model / f"fold{fold}" / "model.ckpt"
    )


def stage2_folds(
    stage1_folds: pd.DataFrame, meta: pd.DataFrame, labelled_split: str = "test"
) -> pd.DataFrame:
    """Stage-1 folds plus the newly labelled images: in their patient's fold, else always in training."""
    new = meta[(meta["split"] == labelled_split) & meta["has_finding"].notna()]
    new = new[~new["image_id"].isin(stage1_folds["image_id"])]
    fold_of_patient = stage1_folds.drop_duplicates("patient_key").set_index("patient_key")["fold"]
    added = pd.DataFrame(
        {
            "image_id": new["image_id"].to_numpy(),
            "patient_key": new["patient_key"].to_numpy(),
            "has_finding": new["has_finding"].astype(int).to_numpy(),
            "fold": new["patient_key"]
            .map(fold_of_patient)
            .fillna(ALWAYS_TRAIN)
            .astype(int)
            .to_numpy(),
        }
    )
    return pd.concat([stage1_folds[added.columns], added], ignore_index=True)
