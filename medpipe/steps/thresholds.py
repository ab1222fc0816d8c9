"""Step ``thresholds``: the stage's decision, chosen by its task on out-of-fold predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medpipe.config import RunConfig
from medpipe.layout import StageLayout
from medpipe.tasks import get_task

__all__ = ["run_thresholds"]


def run_thresholds(cfg: RunConfig, stage: StageLayout, data_dir: str | Path) -> dict[str, Any]:
    """Write the stage's decision, as the task chooses it on OOF (SIIM:
    :func:`medpipe.decision.thresholds.choose_stage_decision`)."""
    return get_task(cfg.task_name).choose_decision(cfg, stage, data_dir)
