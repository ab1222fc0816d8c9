"""What a finished run tells the user on its last lines: where the submission and the report
are, and how far the submission is above the task's trivial baseline (out of fold, nested; and
on the test labels when someone holds them).

The workflow prints these lines when Snakemake finishes (``onsuccess`` in stages/common.smk),
so nobody has to know the run tree to find the result.
"""

from __future__ import annotations

import json
from pathlib import Path

from medpipe.config import RunConfig
from medpipe.tasks import get_task

__all__ = ["finished_run_lines", "test_labels_of"]


def _margin(score: float, name: str, base: float) -> str:
    return f"{score:.4f} ({score - base:+.4f} over {name} {base:.4f})"


def test_labels_of(cfg: RunConfig, stage: int) -> Path | None:
    """A stage's test labels, when someone holds them: ``report.test_labels``, else the demo
    data's hidden answers. Only reports read them; no training or decision rule does."""
    given = cfg.section("report").get("test_labels")
    if given:
        return Path(given)
    data = cfg.section("data")
    if data.get("synthetic") and data.get("root"):
        return get_task(cfg.task_name).demo_labels(data["root"], stage)
    return None


def finished_run_lines(cfg: RunConfig) -> list[str]:
    """The run's result in a few lines; only what exists is named.

    Example:
        >>> finished_run_lines(RunConfig({"run_dir": "/nonexistent", "stage": 1}))
        []
    """
    layout, stage, task = cfg.layout, cfg.stage, get_task(cfg.task_name)
    lines: list[str] = []
    if layout.submission.is_file():
        lines.append(f"submission: {layout.submission}")
    if layout.report_html.is_file():
        lines.append(f"report: {layout.report_html}")
    cv_path = layout.cv(stage)
    if cv_path.is_file():
        cv = json.loads(cv_path.read_text())
        nested = (cv.get("nested") or {}).get("ensemble")
        baselines = cv.get("baselines") or (
            {"all-empty": cv["all_empty"]} if "all_empty" in cv else {}
        )
        if isinstance(nested, (int, float)) and baselines:
            name = max(baselines, key=baselines.get)
            rule = cv.get("ensemble_rule", "the submission's rule")
            lines.append(
                f"out-of-fold score, nested ({rule}): {_margin(nested, name, baselines[name])}"
            )
    labels = test_labels_of(cfg, stage)
    submission = layout.stage_submission(stage)
    if labels is not None and labels.is_file() and submission.is_file():
        root = cfg.section("data").get("root")
        reference = task.test_reference(root, stage) if root else None
        result = task.score(
            submission, labels, reference if reference and reference.exists() else None
        )
        name, base = result.best_baseline
        lines.append(f"test score ({labels}): {_margin(result.score, name, base)}")
    return lines
