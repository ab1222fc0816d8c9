"""Fixtures of the bundle tests: one export of the shared tiny run (tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def run_workdir(request) -> Path:
    """The shared tiny run's working folder (``MEDPIPE_BUNDLE_TEST_RUN`` may name a finished one,
    to iterate on these tests without running the pipeline)."""
    finished = os.environ.get("MEDPIPE_BUNDLE_TEST_RUN")
    if finished:
        return Path(finished)
    return request.getfixturevalue("tiny_run")


@pytest.fixture(scope="session")
def run_dir(run_workdir) -> Path:
    return run_workdir / "runs" / "tiny"  # tiny_run stays at stage 1 (stage2_run is a copy)


@pytest.fixture(scope="session")
def test_dicoms(run_workdir) -> Path:
    return run_workdir / "data" / "tiny" / "dicom-images-test"


@pytest.fixture(scope="session")
def bundle(run_dir, tmp_path_factory) -> Path:
    """The tiny run exported with its gates and LightGBM (its own rule may not need them)."""
    from medpipe.bundle.export import export_bundle

    return export_bundle(run_dir, tmp_path_factory.mktemp("bundle") / "tiny", with_fusion=True)
