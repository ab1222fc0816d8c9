"""The decision applied to the test predictions and written as the submission: blend, rule,
resize to DICOM size, RLE, validate. ``submit`` and the bundle's ``medpipe infer`` both write
through here, so the same probabilities give the same bytes."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from medpipe.config import RunConfig
from medpipe.decision.apply import apply_triplet, resize_mask
from medpipe.layout import (
    SEGMENT,
    Decision,
    StageLayout,
    data_files,
    identify_test_set,
    read_decision,
    read_meta,
    read_quarantine,
)
from medpipe.predictions.blend import blend
from medpipe.predictions.sources import finding_probabilities, stage_sources
from medpipe.predictions.stored import TestMaps, values_for
from medpipe.submission import expected_ids_from_dicom_dir, validate_submission, write_submission

__all__ = [
    "write_stage_submission",
    "expected_test_images",
    "decided_masks",
    "write_decided_submission",
]

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


def write_stage_submission(
    cfg: RunConfig,
    stage: StageLayout,
    data_dir: str | Path,
    dicom_dir: str | Path | None,
    out: str | Path,
) -> pd.DataFrame:
    """Blend the test predictions, apply the OOF-chosen rule, encode at DICOM size, validate.

    The test set is what ingest saw (meta.csv and quarantine.csv); ``dicom_dir``, when given,
    must still hold exactly those images, so a folder changed since ingest is an error.
    """
    decision = read_decision(stage.thresholds)
    # The test maps stream chunk by chunk (fold means, blend, rule, resize, RLE): memory does not
    # grow with the number of test images.
    test = TestMaps(stage_sources(cfg, stage, SEGMENT))
    ids = list(test.ids)
    found = finding_probabilities(cfg, stage, decision, "test")
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
    frame, _ = write_decided_submission(out, ids, test.chunks(), p, decision, sizes)
    return frame


def decided_masks(
    probs: Mapping[str, np.ndarray],
    p_finding: np.ndarray | None,
    decision: Decision,
    ids: Iterable[str],
    sizes: Mapping[str, tuple[int, int]],
) -> Iterator[np.ndarray]:
    """One chunk's submission masks at DICOM size, one at a time: the models' fold-mean maps
    blended with the decision's weights, the rule applied at cache size, each mask resized to
    its image (lazily, so a chunk never holds its full-size masks)."""
    chunk = apply_triplet(blend(probs, decision.weights), p_finding, decision.thresholds())
    for image_id, mask in zip(ids, chunk, strict=True):
        yield resize_mask(mask, *sizes[image_id])


def write_decided_submission(
    out: str | Path,
    ids: list[str],
    chunks: Iterable[tuple[slice, Mapping[str, np.ndarray]]],
    p_finding: np.ndarray | None,
    decision: Decision,
    sizes: Mapping[str, tuple[int, int]],
) -> tuple[pd.DataFrame, dict[str, bool]]:
    """Apply ``decision`` chunk by chunk (``(rows of ids, {model: fold-mean maps})``), write the
    submission (rows in ``ids`` order, then the test images without a prediction, empty) and
    validate it. Returns the validated frame and, per image, whether its mask has a finding.

    ``submit`` and the bundle's ``medpipe infer`` both write through here, so the same
    probabilities give the same bytes.
    """
    # Images ingest quarantined still need a row: predict them empty, and say so.
    predicted = set(ids)
    missing = [i for i in sizes if i not in predicted]
    if missing:
        log.warning(
            "submit: %d test images had no prediction (quarantined at ingest): written empty",
            len(missing),
        )
    found: dict[str, bool] = {}

    def masks():
        for sl, probs in chunks:
            chunk_ids = ids[sl]
            p = None if p_finding is None else p_finding[sl]
            for image_id, full in zip(
                chunk_ids, decided_masks(probs, p, decision, chunk_ids, sizes), strict=True
            ):
                found[image_id] = bool(full.any())
                yield full
        for image_id in missing:
            found[image_id] = False
            yield np.zeros(sizes[image_id], dtype=bool)

    write_submission(out, list(ids) + missing, masks())
    frame = validate_submission(out, expected_ids=sizes.keys(), sizes=sizes)
    log.info(
        "submit: %d images, %d with a finding -> %s",
        len(frame),
        sum(found.values()),
        out,
    )
    return frame, found
