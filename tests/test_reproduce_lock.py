"""The stage-2 lock file never names this project (an unrelated package has its name on PyPI)."""

from __future__ import annotations

from importlib import metadata

from medpipe.reproducibility import PROJECT_DISTRIBUTION, package_lock


def test_the_lock_pins_the_environment_but_not_medpipe_itself():
    assert metadata.version(PROJECT_DISTRIBUTION)  # installed here (editable), so it could leak
    lines = package_lock().splitlines()
    assert any(line.startswith("numpy==") for line in lines)
    assert not [line for line in lines if line.lower().split("==")[0] == PROJECT_DISTRIBUTION]
