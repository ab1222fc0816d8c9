"""Fixtures for the report tests: fabricated run folders (tests/report/fake_run.py)."""

from __future__ import annotations

import pytest

from tests.report.fake_run import make_run


@pytest.fixture()
def fake_run(tmp_path):
    """``(config, run_dir)`` of a stage-1 run with gate and fusion."""
    return make_run(tmp_path)
