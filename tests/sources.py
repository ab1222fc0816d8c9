"""Tests that hold a raw config and a stage folder ask the typed views the steps are given."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medpipe.config import RunConfig
from medpipe.layout import StageLayout


def as_view(config: Mapping[str, Any] | RunConfig) -> RunConfig:
    return config if isinstance(config, RunConfig) else RunConfig(config)


def as_stage(config: Mapping[str, Any] | RunConfig, stage_dir: str | Path) -> StageLayout:
    """The stage folder with its number: the config's stage (as the run's commands get it)."""
    return StageLayout(stage_dir, as_view(config).stage)
