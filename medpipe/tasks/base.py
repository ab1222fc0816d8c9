"""The task seam: what differs between competition task shapes, behind one small interface.

A *task* is a competition's shape: what an image's label is, which model families learn it,
the metric and its trivial baselines, the decision searched on out-of-fold predictions, and
the submission's format. Everything else (ingest, cache, folds' grouping, the training loop,
the prediction store, fusion, the report, stage 2, the bundle) is shared and asks the task.
A task is found by name in the registry (:mod:`medpipe.tasks`); nothing switches on its name.

Writing a new task: subclass :class:`Task`, implement its methods with the task's own library
code (a metric module, a decision search, a writer), register it, and give it a default config
(docs/architecture.md, "How a task plugs in").
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

if TYPE_CHECKING:  # the views the methods take; importing them here would be circular
    from medpipe.config import RunConfig
    from medpipe.layout import StageLayout

__all__ = ["Task", "Score", "NotForThisTask"]


class NotForThisTask(ValueError):
    """A command or setting the run's task does not have (yet): one line that says which and why."""


@dataclass(frozen=True)
class Score:
    """A submission scored against labels: the competition metric, the trivial baselines it
    must beat (name -> score), and the task's breakdown (per-class F1, Dice on positives, ...)."""

    score: float
    baselines: Mapping[str, float]
    details: Mapping[str, Any] = field(default_factory=dict)
    lines: tuple[str, ...] = ()  # what `medpipe score` prints above the score, in order

    @property
    def best_baseline(self) -> tuple[str, float]:
        """The strongest trivial baseline: the margin a model must clear is over this one."""
        name = max(self.baselines, key=lambda k: self.baselines[k])
        return name, float(self.baselines[name])

    @property
    def margin(self) -> float:
        return float(self.score) - self.best_baseline[1]


class Task(ABC):
    """One competition task shape. Subclasses are stateless; the registry makes one of each.

    A task names the module behind each of its steps (``modules``) and loads it only when the
    step runs. A rule's rerun triggers are the files its command imports
    (:mod:`medpipe.code_inputs`); the workflow adds the module of the rule's step
    (:meth:`module_of`), so editing the submission writer reruns ``submit`` and not training,
    as it would if this class imported every step's code.
    """

    name: ClassVar[str]
    #: the model families the task trains, in DAG order (config sections ``<family>.models``)
    families: ClassVar[tuple[str, ...]]
    #: the competition metric, in the field's words ("mean Dice", "macro F1")
    metric: ClassVar[str]
    #: step -> the module that implements it: ``folds``, ``decide``, ``submit``, ``format``
    modules: ClassVar[Mapping[str, str]]
    #: the submission's header, which also tells a submission's task (`medpipe score`)
    submission_header: ClassVar[tuple[str, ...]]
    #: the workflow's rule files (stages/*.smk) this task's DAG is made of, in order
    rule_files: ClassVar[tuple[str, ...]]
    #: what the task does not have, feature -> why (``report``, ``bundle``, ``stage2``,
    #: ``masks``, ``plan``, ``pseudo_labels``, ``external``): :meth:`require` refuses them
    missing: ClassVar[Mapping[str, str]] = {}

    def require(self, feature: str, what: str) -> None:
        """Refuse ``what`` (a command, a setting) in one line when the task lacks ``feature``."""
        if feature in self.missing:
            raise NotForThisTask(
                f"{what}: not available for task {self.name!r}: {self.missing[feature]}"
            )

    def check_config(self, cfg: RunConfig) -> None:
        """Refuse the settings of ``cfg`` that need what the task lacks (the workflow asks this
        before it plans any job): stage 2, pseudo-labels, teammates' predictions."""
        if cfg.stage == 2:
            self.require("stage2", "stage: 2")
        if cfg.pseudo_label.get("models"):
            self.require("pseudo_labels", "pseudo_label.models")
        if cfg.section("ensemble").get("external"):
            self.require("external", "ensemble.external")

    def module_of(self, step: str) -> str:
        """The module behind ``step``: a rule's code input (its rerun trigger)."""
        return self.modules[step]

    def implementation(self, step: str) -> Any:
        """The module behind ``step``, imported now (see the class docstring)."""
        return importlib.import_module(self.modules[step])

    @abstractmethod
    def test_reference(self, root: str | Path, stage: int) -> Path:
        """What a stage's submission must cover, below the data root: the test images (SIIM's
        DICOM folder) or their list (the multi-label sample submission)."""

    @abstractmethod
    def demo_labels(self, root: str | Path, stage: int) -> Path:
        """The demo data's hidden answers for a stage's test set (no rule reads them)."""

    @abstractmethod
    def describe(self, submission: pd.DataFrame) -> str:
        """A validated submission in a few words: ``90 images, 21 with a finding``."""

    # -- labels and folds
    @abstractmethod
    def assign_folds(self, meta: pd.DataFrame, n_folds: int, seed: int) -> pd.DataFrame:
        """``folds.csv`` of the training split: patient-grouped folds stratified on the task's
        key (SIIM: "has a finding"; multi-label: the label set)."""

    # -- the decision on out-of-fold predictions, and its application: each task's ``decide``
    # and ``submit`` modules have one entry point each, with these signatures
    def choose_decision(
        self, cfg: RunConfig, stage: StageLayout, data_dir: str | Path
    ) -> dict[str, Any]:
        """Search the decision on OOF (ensemble weights, rule, thresholds), choose by nested
        CV; write the stage's ``thresholds.json`` and ``cv.json``; return the decision
        (``choose_stage_decision`` of the task's ``decide`` module)."""
        return self.implementation("decide").choose_stage_decision(cfg, stage, data_dir)

    def write_submission(
        self,
        cfg: RunConfig,
        stage: StageLayout,
        data_dir: str | Path,
        input_dir: str | Path | None,
        out: str | Path,
    ) -> pd.DataFrame:
        """Apply the stage's decision to its test predictions and write the validated
        submission ``out`` (``input_dir``: the test images, checked against what ingest saw;
        ``write_stage_submission`` of the task's ``submit`` module)."""
        return self.implementation("submit").write_stage_submission(
            cfg, stage, data_dir, input_dir, out
        )

    # -- the submission's format and the metric
    @abstractmethod
    def validate_submission(
        self, path: str | Path, input_dir: str | Path | None = None
    ) -> pd.DataFrame:
        """Read and check a submission (with ``input_dir``, against its test images); raise
        :class:`medpipe.submission.SubmissionError` naming the first problem."""

    @abstractmethod
    def score(
        self, submission: str | Path, labels: str | Path, input_dir: str | Path | None = None
    ) -> Score:
        """The competition metric of a submission against a label file, with the baselines."""
