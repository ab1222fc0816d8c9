"""A teammate's predictions (``ensemble.external.<name>``, docs/ensemble.md): where a source's
files are. Rule import_external checks and imports them (:mod:`medpipe.steps.external`); the
Snakefile and REPRODUCE.md name them from here.

A multi-label run takes ``kind: classes`` sources (K class probabilities per image): imported as
classifier folds, but not blended into the run's CNN: the thresholds decision compares each as a
further probability source (:func:`class_sources`, :mod:`medpipe.multilabel.decide`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medpipe.layout import CLASSIFY, GATE, SEGMENT, FoldDir, StageLayout

__all__ = ["KIND_TASK", "source_task", "source_dir", "source_files", "class_sources"]

# A source's kind -> the model family whose fold files it becomes.
KIND_TASK = {"maps": SEGMENT, "p_finding": GATE, "classes": CLASSIFY}


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


def class_sources(cfg: Any, stage: StageLayout) -> dict[str, list[FoldDir]]:
    """``{name: [FoldDir]}``: the imported folds of the ``kind: classes`` sources (a multi-label
    run's teammates), in config order. They are not among the classifier's
    :func:`~medpipe.predictions.sources.stage_sources`: the decision weighs each as a source of
    its own, so neither the CNN blend nor the fusion mixes them in unasked."""
    return {
        name: stage.external_folds(name, CLASSIFY, cfg.folds)
        for name, block in cfg.external().items()
        if block["kind"] == "classes"
    }
