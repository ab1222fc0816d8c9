"""A stage-2 run's bundle reproduces the stage-2 submission: the weights are those its submit
read (stage 1's for a kept model, the ``retrain: auto`` choice for the others).

This file sorts last in tests/bundle on purpose: the stage-2 run moves the shared tiny run on to
stage 2, after the stage-1 tests have read it.
"""

from __future__ import annotations

import pytest

from medpipe.bundle.export import export_bundle
from medpipe.bundle.infer import run_infer
from medpipe.layout import RunLayout

pytestmark = pytest.mark.slow


def test_stage2_bundle_reproduces_the_stage2_submission(stage2_run, tmp_path):
    run_dir = stage2_run / "runs" / "tiny"
    bundle = export_bundle(run_dir, tmp_path / "stage2", selftest=False)
    dicoms = stage2_run / "data" / "tiny" / "stage_2_images"
    # one thread, as the tiny run's predict jobs (2 cores, performance.parallel_jobs 2)
    result = run_infer(bundle, dicoms, tmp_path / "submission.csv", threads=1, progress=False)
    assert result.submission.read_bytes() == RunLayout(run_dir).submission.read_bytes()
