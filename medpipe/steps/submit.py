"""Step ``submit``: the stage's submission from its test predictions and decision."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medpipe.config import RunConfig
from medpipe.layout import StageLayout
from medpipe.tasks import get_task

__all__ = ["run_submit"]


def run_submit(
    cfg: RunConfig,
    stage: StageLayout,
    data_dir: str | Path,
    dicom_dir: str | Path | None,
    out: str | Path,
) -> pd.DataFrame:
    """Write and validate ``out`` in the task's format (SIIM:
    :func:`medpipe.decision.submission.write_stage_submission`)."""
    return get_task(cfg.task_name).write_submission(cfg, stage, data_dir, dicom_dir, out)
