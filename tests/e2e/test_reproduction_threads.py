"""Reproduction does not depend on the machine's core count: each fold's predictions record the
torch threads they were made with, and verify-reproduction, run as REPRODUCE.md writes it,
predicts with those (the tiny DAG ran two one-thread model jobs side by side on 2 cores; verify
alone would take every core)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest

from tests.e2e.conftest import REPO

pytestmark = pytest.mark.slow


def test_every_prediction_records_its_torch_threads(stage2_run):
    records = sorted((stage2_run / "runs/tiny").glob("stage*/*/*/fold*/predict.json"))
    assert records, "no predict.json beside the fold predictions"
    for path in records:
        record = json.loads(path.read_text())
        # --cores 2, performance.parallel_jobs 2: each model job had one thread
        assert record["torch_threads"] == 1, (path, record)
        assert record["device"] == "cpu" and "precision" in record


def test_verify_as_reproduce_md_writes_it_uses_the_recorded_threads(stage2_run):
    doc = (stage2_run / "runs/tiny/stage2/REPRODUCE.md").read_text()
    assert "What must match for byte-identical output" in doc
    assert "torch threads" in doc
    line = next(x for x in doc.splitlines() if "medpipe verify-reproduction" in x)
    words = shlex.split(re.search(r"`(medpipe verify-reproduction[^`]*)`", line).group(1))
    # config files are written as typed from the repository root; the run from its own folder
    words = [str(REPO / w) if w.endswith((".yaml", ".yml")) else w for w in words[1:]]
    proc = subprocess.run(
        [sys.executable, "-m", "medpipe.cli", *words],
        cwd=stage2_run,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout
    said = re.findall(r"predicting with (\d+) torch thread\(s\) as recorded", proc.stderr)
    assert said and set(said) == {"1"}, proc.stderr[-3000:]
