"""The whole DAG on tiny synthetic data: submission validity, CV summary, rerun behaviour."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from medpipe.io import rle
from tests.e2e.conftest import snakemake

pytestmark = pytest.mark.slow


def test_submission_is_valid_and_covers_every_test_image(tiny_run):
    sub = pd.read_csv(tiny_run / "runs/tiny/submission.csv", dtype=str, keep_default_na=False)
    assert list(sub.columns) == ["ImageId", "EncodedPixels"]
    hidden = pd.read_csv(
        tiny_run / "data/tiny/hidden/test-rle.csv", dtype=str, skipinitialspace=True
    )
    assert set(sub["ImageId"]) == set(hidden["ImageId"])
    assert sub["ImageId"].is_unique
    for encoded in sub["EncodedPixels"]:
        rle.decode(encoded, 256, 256)  # raises on a malformed or out-of-image run


def test_cv_summary_has_the_ablation(tiny_run):
    cv = json.loads((tiny_run / "runs/tiny/stage1/cv.json").read_text())
    for key in ("all_empty", "seg_only", "seg_gate", "seg_gate_lgbm"):
        assert key in cv, key


def test_second_run_has_nothing_to_do(tiny_run):
    proc = snakemake(tiny_run, "submission", "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
