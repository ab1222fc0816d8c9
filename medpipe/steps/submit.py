"""Step ``submit``: blend the test predictions, apply the OOF-chosen rule, encode, validate."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medpipe.decision.apply import apply_triplet, resize_mask
from medpipe.inference.ensemble import TestMaps, blend, values_for
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
    # The test maps stream chunk by chunk (fold means, blend, rule, resize, RLE): memory does not
    # grow with the number of test images.
    test = TestMaps(fold_dirs(config, stage_dir, SEGMENT))
    ids = test.ids
    found = finding_probabilities(config, stage_dir, decision, "test")
    p = None if found is None else values_for(ids, found, "p_finding")
    sizes = expected_test_images(data_dir, ids)
    if dicom_dir:
        on_disk = expected_ids_from_dicom_dir(dicom_dir)
        if set(on_disk) != set(sizes):
            changed = sorted(set(on_disk) ^ set(sizes))
            raise ValueError(
                f"{dicom_dir}: holds other images than ingest saw ({len(changed)} differ, e.g. "
                f"{changed[:3]}): rerun ingest"
            )
    # Images ingest quarantined still need a row: predict them empty, and say so.
    predicted = set(ids)
    missing = [i for i in sizes if i not in predicted]
    if missing:
        log.warning(
            "submit: %d test images had no prediction (quarantined at ingest): written empty",
            len(missing),
        )
    with_finding = 0

    def masks():
        nonlocal with_finding
        for sl, probs in test.chunks():
            chunk = apply_triplet(
                blend(probs, decision.weights),
                None if p is None else p[sl],
                decision.thresholds(),
            )
            for image_id, mask in zip(ids[sl], chunk, strict=True):
                full = resize_mask(mask, *sizes[image_id])
                with_finding += bool(full.any())
                yield full
        for image_id in missing:
            yield np.zeros(sizes[image_id], dtype=bool)

    write_submission(out, list(ids) + missing, masks())
    frame = validate_submission(out, expected_ids=sizes.keys(), sizes=sizes)
    log.info(
        "submit: %d images, %d with a finding -> %s",
        len(frame),
        with_finding,
        out,
    )
    return frame
