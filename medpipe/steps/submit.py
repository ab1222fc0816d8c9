"""Step ``submit``: blend the test predictions, apply the OOF-chosen rule, encode, validate."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medpipe.decision.apply import apply_triplet, resize_mask
from medpipe.inference.ensemble import blend, load_seg_probs, values_for
from medpipe.layout import (
    SEGMENT,
    StageLayout,
    data_files,
    identify_test_set,
    read_decision,
    read_meta,
    read_quarantine,
)
from medpipe.steps.pool import finding_probabilities, fold_dirs
from medpipe.submission import expected_ids_from_dicom_dir, validate_submission, write_submission

__all__ = ["run_submit", "expected_test_images"]

log = logging.getLogger(__name__)


def expected_test_images(data_dir: str | Path, ids: list[str]) -> dict[str, tuple[int, int]]:
    """``image_id -> (rows, cols)`` of the test set the predictions ``ids`` belong to: that split
    of meta.csv, plus its quarantined files that named an image (they still need a row)."""
    files = data_files(data_dir)
    meta = read_meta(files["meta"], ["image_id", "split", "orig_height", "orig_width"])
    split_of = meta.drop_duplicates("image_id").set_index("image_id")["split"]
    splits = sorted(set(split_of.reindex(ids).dropna()))
    if len(splits) != 1 or split_of.reindex(ids).isna().any():
        raise ValueError(
            f"{files['meta']}: the test predictions are not the images of one split "
            f"(splits {splits}, {int(split_of.reindex(ids).isna().sum())} ids unknown)"
        )
    quarantine = read_quarantine(files["quarantine"]) if files["quarantine"].is_file() else None
    return identify_test_set(meta, quarantine, splits[0])


def run_submit(
    config: Mapping[str, Any],
    data_dir: str | Path,
    stage_dir: str | Path,
    dicom_dir: str | Path | None,
    out: str | Path,
) -> pd.DataFrame:
    """Blend the test predictions, apply the OOF-chosen rule, encode at DICOM size, validate.

    The test set is what ingest saw (meta.csv and quarantine.csv); ``dicom_dir``, when given,
    must still hold exactly those images, so a folder changed since ingest is an error.
    """
    stage = StageLayout(stage_dir)
    decision = read_decision(stage.thresholds)
    ids, probs, _ = load_seg_probs(fold_dirs(config, stage_dir, SEGMENT), "test")
    prob = blend(probs, decision.weights)
    p = finding_probabilities(config, stage_dir, decision, "test")
    masks = apply_triplet(
        prob, None if p is None else values_for(ids, p, "p_finding"), decision.thresholds()
    )
    sizes = expected_test_images(data_dir, ids)
    if dicom_dir:
        on_disk = expected_ids_from_dicom_dir(dicom_dir)
        if set(on_disk) != set(sizes):
            changed = sorted(set(on_disk) ^ set(sizes))
            raise ValueError(
                f"{dicom_dir}: holds other images than ingest saw ({len(changed)} differ, e.g. "
                f"{changed[:3]}): rerun ingest"
            )
    full = [resize_mask(m, *sizes[i]) for i, m in zip(ids, masks, strict=True)]
    ids_out, masks_out = list(ids), full
    # Images ingest quarantined still need a row: predict them empty, and say so.
    predicted = set(ids)
    missing = [i for i in sizes if i not in predicted]
    if missing:
        log.warning(
            "submit: %d test images had no prediction (quarantined at ingest): written empty",
            len(missing),
        )
        ids_out += missing
        masks_out += [np.zeros(sizes[i], dtype=bool) for i in missing]
    write_submission(out, ids_out, masks_out)
    frame = validate_submission(out, expected_ids=sizes.keys(), sizes=sizes)
    log.info(
        "submit: %d images, %d with a finding -> %s",
        len(frame),
        int(sum(m.any() for m in masks_out)),
        out,
    )
    return frame
