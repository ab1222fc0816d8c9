"""Fixtures for the training tests: a fabricated data directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.tiny_data import write_data_dir


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    return write_data_dir(tmp_path / "data")
