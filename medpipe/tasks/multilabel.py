"""The multi-label task (the Human Protein Atlas system): C-channel images, K classes, one or
more per image.

Labels are ``Id,Target`` (space-separated class indices) encoded as K-hot targets at ingest;
folds are stratified on the label set by iterative stratification; a timm classifier with
``in_chans`` = C learns them (family ``classify``); the metric is macro F1 over the classes,
against "every class for every image" and "the most frequent class only"; the decision is a
global, per-class or shrunk threshold rule (with "at least one label" and a cap as options),
chosen by nested CV on OOF; the submission is ``Id,Predicted`` in the sample submission's order.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from medpipe.io.hpa import read_sample_submission
from medpipe.layout import CLASSIFY, HpaInputLayout
from medpipe.tasks.base import NotForThisTask, Score, Task

if TYPE_CHECKING:  # the view the methods take; importing it here would be circular
    from medpipe.config import RunConfig

__all__ = ["MultilabelTask"]


class MultilabelTask(Task):
    name = "multilabel"
    families = (CLASSIFY,)
    metric = "macro F1 over the classes"
    modules = {
        "folds": "medpipe.multilabel.folds",
        "decide": "medpipe.multilabel.decide",
        "submit": "medpipe.multilabel.write",
        "fuse": "medpipe.multilabel.fusion",
        "format": "medpipe.multilabel.submission",
        "bundle_export": "medpipe.bundle.multilabel_export",
        "bundle_infer": "medpipe.bundle.multilabel",
        "report": "medpipe.report.multilabel",
    }
    submission_header = ("Id", "Predicted")
    rule_files = (
        "multilabel_data.smk",
        "multilabel_stage2.smk",
        "classify.smk",
        "external.smk",
        "submit.smk",
        "stage2.smk",
        "multilabel_report.smk",
    )
    _LATER = "not built for the multi-label task yet (docs/multilabel.md, What is not there yet)"
    missing = {
        "masks": "a multi-label classifier predicts labels, not masks",
    }

    def check_config(self, cfg: RunConfig) -> None:
        """Also refuse stage 2 without a stage-2 test set (demo data drawn without one, or a
        data root without the released stage-2 files)."""
        super().check_config(cfg)
        if cfg.stage != 2:
            return
        synthetic = cfg.section("data").get("synthetic")
        inputs = HpaInputLayout(cfg.inputs.root)
        if synthetic and not synthetic.get("n_stage2_test"):
            raise NotForThisTask(
                "stage: 2 needs a stage-2 test set: data.synthetic.n_stage2_test is 0 (set it "
                "> 0, or point data.root at released stage-2 data with data.synthetic: null)"
            )
        if not synthetic and not inputs.stage2_labels.exists():
            raise NotForThisTask(
                f"stage: 2 needs {inputs.stage2_labels}, {inputs.stage2_sample_submission} and "
                f"{inputs.image_dir('stage2_test')}/ (the released stage-2 data, docs/multilabel.md)"
            )

    def test_reference(self, root: str | Path, stage: int) -> Path:
        layout = HpaInputLayout(root)
        return layout.sample_submission if int(stage) == 1 else layout.stage2_sample_submission

    def demo_labels(self, root: str | Path, stage: int) -> Path:
        return HpaInputLayout(root).hidden_labels(stage)

    def describe(self, submission: pd.DataFrame) -> str:
        labels = submission["Predicted"].fillna("").astype(str).str.split().str.len()
        return f"{len(submission)} images, {labels.mean():.2f} labels per image"

    def assign_folds(self, meta: pd.DataFrame, n_folds: int, seed: int) -> pd.DataFrame:
        folds_module = self.implementation("folds")
        k = 1 + max((int(i) for t in meta["target"].fillna("") for i in str(t).split()), default=0)
        columns = [f"class_{c}" for c in range(k)]
        labelled = meta.copy()
        for c, column in enumerate(columns):
            labelled[column] = [int(str(c) in str(t).split()) for t in meta["target"].fillna("")]
        folds = folds_module.by_label_set(labelled, n_folds, seed, columns)
        folds["target"] = meta["target"].fillna("").astype(str).to_numpy()
        return folds[["image_id", "patient_key", "target", "fold"]]

    def validate_submission(
        self, path: str | Path, input_dir: str | Path | None = None
    ) -> pd.DataFrame:
        """``input_dir``: the sample submission (its Ids and their order), when given."""
        fmt = self.implementation("format")
        expected = None
        if input_dir is not None:
            expected = list(self._sample(input_dir))
        return fmt.validate_submission(path, expected_ids=expected)

    def score(
        self, submission: str | Path, labels: str | Path, input_dir: str | Path | None = None
    ) -> Score:
        fmt = self.implementation("format")
        k = self._n_classes(submission, labels)
        parts = fmt.score_breakdown(submission, labels, k)
        lines = tuple(f"{name}: {value:.4f}" for name, value in parts["baselines"].items())
        lines += tuple(
            f"class {c}: F1 {f1:.4f} ({parts['n_true'][c]} true, {parts['n_predicted'][c]} predicted)"
            for c, f1 in enumerate(parts["per_class_f1"])
        )
        return Score(parts["score"], dict(parts["baselines"]), parts, lines)

    @staticmethod
    def _sample(path: str | Path):
        return read_sample_submission(path).ids

    @staticmethod
    def _n_classes(submission: str | Path, labels: str | Path) -> int:
        """K: one more than the largest class index in the labels or the submission."""
        top = 0
        for path, column in ((labels, "Target"), (submission, "Predicted")):
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            if column in frame:
                top = max([top, *(int(i) for t in frame[column] for i in t.split())])
        return top + 1
