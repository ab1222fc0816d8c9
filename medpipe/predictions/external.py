"""A teammate's predictions (``ensemble.external.<name>``, docs/ensemble.md): where a source's
files are. Rule import_external checks and imports them (:mod:`medpipe.steps.external`); the
Snakefile and REPRODUCE.md name them from here."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medpipe.layout import GATE, SEGMENT, StageLayout

__all__ = ["KIND_TASK", "source_task", "source_dir", "source_files"]

# A source's kind -> the model family whose fold files it becomes.
KIND_TASK = {"maps": SEGMENT, "p_finding": GATE}


def source_task(block: Mapping[str, Any]) -> str:
    return KIND_TASK[block["kind"]]


def source_dir(block: Mapping[str, Any], stage: int | str) -> Path:
    """The source's folder for a stage: ``path``, with ``{stage}`` replaced by the stage number
    (a stage-2 run imports stage 1 too, and each stage's folds differ)."""
    return Path(str(block["path"]).replace("{stage}", str(stage)))


def source_files(block: Mapping[str, Any], stage: int | str) -> dict[str, Path]:
    """``{"oof": ..., "test": ...}``: the files a source folder holds for its kind."""
    folder = StageLayout.external_source(source_task(block), source_dir(block, stage))
    return {which: folder.predictions(which) for which in ("oof", "test")}
