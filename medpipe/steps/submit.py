"""Step ``submit``: the stage's submission from its test predictions and decision."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from medpipe.config import RunConfig
from medpipe.layout import StageLayout

__all__ = ["run_submit"]


def run_submit(
    config: Mapping[str, Any],
    data_dir: str | Path,
    stage_dir: str | Path,
    dicom_dir: str | Path | None,
    out: str | Path,
) -> pd.DataFrame:
    """Write and validate ``out`` in the task's format (SIIM:
    :func:`medpipe.decision.submission.write_stage_submission`)."""
    cfg = RunConfig(config)
    return cfg.task.write_submission(
        cfg, StageLayout(stage_dir, cfg.stage), data_dir, dicom_dir, out
    )
