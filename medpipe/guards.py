"""Guards that fail a run whose cross-validation would lie, and keep secrets out of outputs.

A CV score is only worth something when no model has seen the images it is scored on. These
checks run inside the rules that train, fuse and choose thresholds, and raise
:class:`LeakageError` naming the image, patient or file, so a leak stops the DAG instead of
inflating ``cv.json``:

- :func:`check_patient_folds`: no patient has images in two folds (``fold = -1``, "always
  training" in stage 2, counts as a fold: its images train every fold's model).
- :func:`check_training_pool`: every training or threshold image is labelled and is not an image
  of the split the stage predicts (the test set in stage 1).
- :func:`check_oof_folds`: each fold's OOF file holds only that fold's validation images, so the
  OOF used for fusion and thresholds comes from models that never trained on those images.
- :func:`check_pseudo_labels`: a pseudo-labelled variant's fold trains only on labels made by
  that same fold's models (which never trained on its validation images), and only on images
  outside the training pool.

:func:`redact_config` removes the pseudonymisation salt before a config is written anywhere.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medpipe.config import pseudo_round, pseudo_variant
from medpipe.layout import FoldDir, data_files, read_folds, read_meta, read_prediction_ids

log = logging.getLogger(__name__)

__all__ = [
    "LeakageError",
    "REDACTED",
    "check_patient_folds",
    "check_training_pool",
    "check_oof_folds",
    "check_training_data",
    "check_pseudo_labels",
    "redact_config",
]

REDACTED = "<redacted>"


class LeakageError(ValueError):
    """Validation or test information would reach a model or a decision trained without it."""


def check_patient_folds(folds: pd.DataFrame, where: str = "the training pool") -> None:
    """Raise if a patient key has images in more than one fold (including ``-1``).

    Example:
        >>> check_patient_folds(pd.DataFrame({"patient_key": ["a", "a"], "fold": [0, 1]}))
        Traceback (most recent call last):
        ...
        medpipe.guards.LeakageError: the training pool: patient_key 'a' is in folds [0, 1] (1 patients span several folds)
    """
    keyed = folds.dropna(subset=["patient_key"])
    spread = keyed.groupby("patient_key")["fold"].nunique()
    leaking = spread[spread > 1]
    if len(leaking):
        key = leaking.index[0]
        in_folds = sorted(int(f) for f in keyed.loc[keyed["patient_key"] == key, "fold"].unique())
        raise LeakageError(
            f"{where}: patient_key {key!r} is in folds {in_folds} "
            f"({len(leaking)} patients span several folds)"
        )


def predicted_split(meta: pd.DataFrame) -> str:
    """The split a stage's submission is for: ``stage2_test`` once ingested, else ``test``."""
    return "stage2_test" if (meta["split"] == "stage2_test").any() else "test"


# The column that says an image is labelled: SIIM's meta.csv; the multi-label meta has n_labels.
LABEL_COLUMN = "has_finding"


def check_training_pool(
    folds: pd.DataFrame, meta: pd.DataFrame, where: str = "the training pool"
) -> None:
    """Raise if an image that trains models or tunes thresholds is unlabelled or a test image.

    ``folds`` lists the training pool (every row trains some fold's model, and rows with
    ``fold >= 0`` are the OOF set that fusion and thresholds are fitted on). In stage 1 no image
    of the ``test`` split may be there; in stage 2 the labelled stage-1 test set may, the
    ``stage2_test`` split may not. An image unknown to ``meta.csv`` is refused too.
    """
    rows = meta.drop_duplicates("image_id").set_index("image_id")
    split = rows["split"].astype(str)
    # a label: SIIM's has_finding, a multi-label image's label count (0 allowed where labels may be empty)
    labelled = rows[LABEL_COLUMN if LABEL_COLUMN in rows else "n_labels"].notna()
    ids = folds["image_id"].astype(str)
    unknown = ids[~ids.isin(split.index)]
    if len(unknown):
        raise LeakageError(f"{where}: image {unknown.iloc[0]!r} has no row in the image metadata")
    held_out = predicted_split(meta)
    test = ids[split.reindex(ids).to_numpy() == held_out]
    if len(test):
        raise LeakageError(
            f"{where}: {held_out} image {test.iloc[0]!r} is in a training or threshold input "
            f"({len(test)} such images); the set a stage predicts is never trained or tuned on"
        )
    unlabelled = ids[~labelled.reindex(ids).to_numpy(dtype=bool)]
    if len(unlabelled):
        raise LeakageError(
            f"{where}: image {unlabelled.iloc[0]!r} (split {split[unlabelled.iloc[0]]}) has no "
            f"label but is in the training pool ({len(unlabelled)} such images)"
        )


def check_training_data(data_dir: str | Path, *oof_dirs: Mapping[str, Iterable[FoldDir]]) -> None:
    """The guards on a data directory's ``folds.csv`` and ``meta.csv``, and on OOF files.

    Args:
        data_dir: holds ``folds.csv`` and ``meta.csv``.
        oof_dirs: for rules that read OOF (fusion, thresholds), mappings model -> fold dirs.
    """
    files = data_files(data_dir)
    folds, meta = read_folds(files["folds"]), read_meta(files["meta"])
    where = str(files["folds"])
    check_patient_folds(folds, where)
    check_training_pool(folds, meta, where)
    for dirs in oof_dirs:
        check_oof_folds(dirs, folds)


def own_fold_rows(ids: np.ndarray, fold: int, fold_of: pd.Series | None, path: Path) -> np.ndarray:
    """Boolean: the rows of a fold's OOF file whose image is in that fold's validation set.

    The one "this fold's own OOF rows" rule: readers drop other rows with a warning (say, an OOF
    file written before ``train_folds`` changed), while :func:`check_oof_folds`, which every step
    that reads OOF runs first, refuses a file whose rows the fold's model trained on.
    """
    if fold_of is None:
        return np.ones(len(ids), dtype=bool)
    mine = fold_of.reindex(ids).to_numpy() == fold
    if not mine.all():
        log.warning(
            "%s: %d of %d rows are not fold %d validation images; ignored (the model trained on them)",
            path,
            (~mine).sum(),
            len(ids),
            fold,
        )
    return mine


def check_oof_folds(fold_dirs: Mapping[str, Iterable[FoldDir]], folds: pd.DataFrame) -> None:
    """Raise if a fold's OOF file holds an image that fold's model trained on.

    The one check of "this fold's own OOF rows" that raises: the loaders
    (:mod:`medpipe.predictions.stored`) only drop such rows, after this guard has passed.

    Args:
        fold_dirs: model name -> its folds (:class:`medpipe.layout.FoldDir`).
        folds: the training pool; an OOF image of fold ``i`` must have ``fold == i`` there.
    """
    fold_of = folds.drop_duplicates("image_id").set_index(folds["image_id"].astype(str))["fold"]
    for model, dirs in fold_dirs.items():
        for d in dirs:
            path = d.oof
            if not path.is_file():
                continue  # a missing file is the loader's error to report
            ids = read_prediction_ids(path)
            held_out = fold_of.reindex(ids).to_numpy()
            wrong = [str(i) for i in ids[held_out != d.fold]]
            if wrong:
                seen = fold_of.get(wrong[0])
                trained = "not in the training pool" if seen is None else f"in fold {int(seen)}"
                raise LeakageError(
                    f"{path}: model {model} fold {d.fold} scored image {wrong[0]!r}, which is "
                    f"{trained}: that model trained on it ({len(wrong)} such rows)"
                )


def check_pseudo_labels(
    fold_dir: FoldDir, provenance: Mapping[str, Any], pseudo_ids: Iterable[str], folds: pd.DataFrame
) -> None:
    """Raise unless ``fold_dir``'s (``<model>@pl<k>`` fold ``f``) pseudo-labels are honest.

    Honest means: made for this variant and fold, by round ``k - 1`` of the same model and the
    gate *of the same fold ``f``* (a fold-``g`` model trained on fold ``f``'s validation labels,
    and its pseudo-labels would carry them into the model that scores fold ``f``), and of images
    that are not in the training pool (``folds``): no validation image gets a second, made-up label.

    Example:
        >>> check_pseudo_labels(FoldDir("segment", "u@pl1", 0, Path(".")),
        ...     {"model": "u@pl1", "fold": 0, "made_by": {"segment": {"model": "u", "fold": 1}}},
        ...     [], pd.DataFrame({"image_id": [], "fold": []}))
        Traceback (most recent call last):
        ...
        medpipe.guards.LeakageError: pseudo/provenance.json: fold 0 of u@pl1 would train on pseudo-labels made by u fold 1, which trained on fold 0's validation images; only fold 0's own models may label for it
    """

    where = fold_dir.pseudo_provenance
    if (
        provenance.get("model") != fold_dir.model
        or int(provenance.get("fold", -1)) != fold_dir.fold
    ):
        raise LeakageError(
            f"{where}: made for {provenance.get('model')} fold {provenance.get('fold')}, "
            f"not {fold_dir.model} fold {fold_dir.fold}: rerun its pseudo_label rule"
        )
    previous = pseudo_variant(fold_dir.model, pseudo_round(fold_dir.model) - 1)
    for family, source in (provenance.get("made_by") or {}).items():
        if int(source.get("fold", -1)) != fold_dir.fold:
            raise LeakageError(
                f"{where}: fold {fold_dir.fold} of {fold_dir.model} would train on pseudo-labels "
                f"made by {source.get('model')} fold {source.get('fold')}, which trained on fold "
                f"{fold_dir.fold}'s validation images; only fold {fold_dir.fold}'s own models may "
                "label for it"
            )
        if family in ("segment", "classify") and source.get("model") != previous:
            raise LeakageError(
                f"{where}: {fold_dir.model} is labelled by {previous}, not {source.get('model')}"
            )
    labeller = "classify" if fold_dir.family == "classify" else "segment"
    if labeller not in (provenance.get("made_by") or {}):
        what = "classifier" if labeller == "classify" else "segmentation model"
        raise LeakageError(f"{where}: no {what} is named as the labeller")
    pool = set(folds["image_id"].astype(str))
    seen = [i for i in map(str, pseudo_ids) if i in pool]
    if seen:
        raise LeakageError(
            f"{where}: image {seen[0]!r} is pseudo-labelled but is in the training pool "
            f"({len(seen)} such images): it has a real label, and may be a validation image"
        )


def redact_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` without the pseudonymisation salt (``data.salt``).

    The salt is what keeps patient keys from being reversed by hashing a list of known IDs, so it
    stays in the project's config and never reaches run_dir, logs or REPRODUCE.md.
    """
    clean = copy.deepcopy(dict(config))
    data = clean.get("data")
    if isinstance(data, dict) and data.get("salt") is not None:
        data["salt"] = REDACTED
    return clean
