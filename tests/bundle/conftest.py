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
    import yaml

    run_dir = run_workdir / "runs" / "tiny"
    config = yaml.safe_load((run_dir / "config.resolved.yaml").read_text())
    if int(config.get("stage", 1)) != 1:
        pytest.skip("the shared tiny run has moved on to stage 2; these tests compare stage 1")
    return run_dir


@pytest.fixture(scope="session")
def test_dicoms(run_workdir) -> Path:
    return run_workdir / "data" / "tiny" / "dicom-images-test"


@pytest.fixture(scope="session")
def bundle(run_dir, tmp_path_factory) -> Path:
    """The tiny run exported with its gates and LightGBM (its own rule may not need them)."""
    from medpipe.bundle.export import export_bundle

    return export_bundle(run_dir, tmp_path_factory.mktemp("bundle") / "tiny", with_fusion=True)


def pytest_collection_modifyitems(session, config, items) -> None:
    """The stage-2 bundle test moves the shared tiny run on to stage 2 (stage2_run): run it after
    every other test of the session, so none of them sees stage 2 before it expects it."""
    here = Path(__file__).resolve().parent / "test_stage2.py"
    late = [item for item in items if Path(str(item.fspath)).resolve() == here]
    if late:
        items[:] = [item for item in items if item not in late] + late
