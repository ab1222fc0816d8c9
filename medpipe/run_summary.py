"""What a finished run tells the user on its last lines: where the submission and the report
are, and how far the submission's rule is above the trivial baseline (out of fold, nested; and
on the test labels when someone holds them).

The workflow prints these lines when Snakemake finishes (``onsuccess`` in stages/common.smk),
so nobody has to know the run tree to find the result.
"""

from __future__ import annotations

import json

from medpipe.config import RunConfig, test_labels
from medpipe.layout import read_meta
from medpipe.submission import original_sizes, score_breakdown

__all__ = ["finished_run_lines"]


def _margin(score: float, base: float) -> str:
    return f"{score:.4f} ({score - base:+.4f} over all-empty {base:.4f})"


def finished_run_lines(cfg: RunConfig) -> list[str]:
    """The run's result in a few lines; only what exists is named.

    Example:
        >>> finished_run_lines(RunConfig({"run_dir": "/nonexistent", "stage": 1}))
        []
    """
    layout, stage = cfg.layout, cfg.stage
    lines: list[str] = []
    if layout.submission.is_file():
        lines.append(f"submission: {layout.submission}")
    if layout.report_html.is_file():
        lines.append(f"report: {layout.report_html}")
    cv_path = layout.cv(stage)
    if cv_path.is_file():
        cv = json.loads(cv_path.read_text())
        nested = (cv.get("nested") or {}).get("ensemble")
        base = cv.get("all_empty")
        if isinstance(nested, (int, float)) and isinstance(base, (int, float)):
            rule = cv.get("ensemble_rule", "the submission's rule")
            lines.append(f"out-of-fold score, nested ({rule}): {_margin(nested, base)}")
    labels = test_labels(cfg.raw, stage)
    submission = layout.stage_submission(stage)
    if labels is not None and labels.is_file() and submission.is_file():
        meta = read_meta(layout.meta(stage))
        parts = score_breakdown(submission, labels, sizes=original_sizes(meta))
        lines.append(f"test score ({labels}): {_margin(parts['score'], parts['all_empty'])}")
    return lines
