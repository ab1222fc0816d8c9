"""The SIIM-ACR pneumothorax task: one binary mask per chest film, with a "finding" gate.

Labels are SIIM RLE (``train-rle.csv``; several rows of an image OR-merged) decoded into the
mask cache at ingest; folds are stratified on "has a finding"; a U-Net segments (family
``segment``) and a classifier gate says whether a film has a finding (``gate``); the metric is
the mean Dice with an empty-empty image scoring 1, against the all-empty baseline; the decision
is a (classification, pixel, minimum area) rule chosen by nested CV on OOF; the submission is
``ImageId,EncodedPixels`` in the competition's relative, column-major RLE.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medpipe.layout import GATE, SEGMENT, InputLayout
from medpipe.tasks.base import Score, Task

__all__ = ["SiimTask"]


class SiimTask(Task):
    name = "siim"
    families = (SEGMENT, GATE)
    metric = "mean Dice (an empty truth and an empty prediction score 1)"
    modules = {
        "folds": "medpipe.data.folds",
        "decide": "medpipe.decision.thresholds",
        "submit": "medpipe.decision.submission",
        "format": "medpipe.submission",
    }
    submission_header = ("ImageId", "EncodedPixels")
    rule_files = (
        "data.smk",
        "segment.smk",
        "gate.smk",
        "external.smk",
        "fuse.smk",
        "submit.smk",
        "stage2.smk",
        "report.smk",
    )

    def test_reference(self, root: str | Path, stage: int) -> Path:
        return InputLayout(root).test_dicom_dir(stage)

    def demo_labels(self, root: str | Path, stage: int) -> Path:
        return InputLayout(root).hidden_labels(stage)

    def describe(self, submission: pd.DataFrame) -> str:
        n_pos = int((submission["EncodedPixels"].astype(str).str.strip() != "-1").sum())
        return f"{len(submission)} images, {n_pos} with a finding"

    def assign_folds(self, meta: pd.DataFrame, n_folds: int, seed: int) -> pd.DataFrame:
        folds_module = self.implementation("folds")
        folds = folds_module.by_patient(meta, n_folds=n_folds, seed=seed)
        folds_module.check_no_patient_overlap(folds)
        return folds

    def validate_submission(
        self, path: str | Path, input_dir: str | Path | None = None
    ) -> pd.DataFrame:
        fmt = self.implementation("format")
        sizes = fmt.expected_ids_from_dicom_dir(input_dir) if input_dir else None
        return fmt.validate_submission(
            path, expected_ids=sizes.keys() if sizes else None, sizes=sizes
        )

    def score(
        self, submission: str | Path, labels: str | Path, input_dir: str | Path | None = None
    ) -> Score:
        fmt = self.implementation("format")
        sizes = fmt.expected_ids_from_dicom_dir(input_dir) if input_dir else None
        parts = fmt.score_breakdown(submission, labels, sizes=sizes)
        n_empty = parts["n_images"] - parts["n_positive"]
        lines = (
            f"all-empty: {parts['all_empty']:.4f}",
            f"above all-empty: {parts['score'] - parts['all_empty']:+.4f}",
            f"dice on positive images: {parts['dice_pos']:.4f} ({parts['n_positive']} images)",
            f"empty images kept empty: {parts['empty_kept']:.4f} ({n_empty} images)",
        )
        return Score(parts["score"], {"all-empty": parts["all_empty"]}, parts, lines)
