"""Assemble ``reports/report.html``: a run summary, then data, training, decisions, cases, stage 2.

Each section reads only files the pipeline already wrote; a block whose inputs are absent says
so on the page. The PNGs embedded in the page are also written to ``plots_dir`` so Snakemake's
own report can show them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from medpipe.config import RunConfig
from medpipe.report.cases import add_cases_section
from medpipe.report.data_look import add_data_section
from medpipe.report.decisions import add_decisions_section
from medpipe.report.html import Page, Section
from medpipe.report.run import FinishedRun, guarded
from medpipe.report.stage2 import add_stage2_section
from medpipe.report.training import add_training_section
from medpipe.submission import original_sizes, score_breakdown

__all__ = ["build_report"]

log = logging.getLogger(__name__)


def _score(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"


def _overview(run: FinishedRun, section: Section) -> None:
    cfg = run.config
    cv_path = run.layout.cv(run.stage)
    cv = run.read_json(cv_path, "CV summary") if cv_path.is_file() else {}
    rows = [
        ["stage", run.stage],
        ["image size (cache)", run.size],
        ["folds", cfg.get("folds")],
        ["trained folds", ", ".join(map(str, cfg.get("train_folds") or [])) or "all"],
        ["segmentation models", ", ".join(run.models("segment")) or "none"],
        ["gate models", ", ".join(run.models("gate")) or "none"],
        ["external sources", _external(run)],
        ["LightGBM fusion", "on" if run.fusion_enabled else "off"],
        ["OOF images", cv.get("n_images", "n/a")],
        ["OOF score, submission rule", _score(cv.get("ensemble"))],
        ["OOF score, all-empty baseline", _score(cv.get("all_empty"))],
    ]
    rows += _margins(cv)
    submission = run.layout.stage_submission(run.stage)
    if submission.is_file():
        sub = pd.read_csv(submission, dtype=str, keep_default_na=False)
        positive = int((sub["EncodedPixels"].str.strip() != "-1").sum())
        rows.append(["submission", f"{len(sub)} test images, {positive} with a finding"])
        rows += _test_rows(run, submission)
    section.table(pd.DataFrame(rows, columns=["", "value"]).astype({"value": str}))
    section.text(
        "Images are named by their DICOM SOP instance UID only; no patient name, patient ID or "
        "patient key appears in this report."
    )


def _external(run: FinishedRun) -> str:
    """``ensemble.external``'s sources: a teammate's predictions, imported (docs/ensemble.md)."""
    sources = [
        f"{n} ({b['kind']})" for t in ("segment", "gate") for n, b in run.external(t).items()
    ]
    return ", ".join(sources) or "none"


def _margin(score: Any, base: Any) -> str:
    if not isinstance(score, (int, float)) or not isinstance(base, (int, float)):
        return "n/a"
    return f"{score:.4f} ({score - base:+.4f} vs all-empty)"


def _margins(cv: Mapping[str, Any]) -> list[list[Any]]:
    """How far the submission's rule is above all-empty out of fold, and its Dice on positives."""
    rule = cv.get("ensemble_rule")
    nested = (cv.get("nested") or {}).get("ensemble")
    dice_pos = (cv.get("dice_pos_nested") or cv.get("dice_pos") or {}).get(rule)
    return [
        ["OOF nested score, submission rule", _margin(nested, cv.get("all_empty"))],
        ["OOF Dice on positive images, submission rule (nested)", _score(dice_pos)],
    ]


def _test_rows(run: FinishedRun, submission: Path) -> list[list[Any]]:
    """The submission scored on the test labels, where they exist (the synthetic set's hidden
    answers, or ``report.test_labels``)."""

    labels = run.test_labels()
    if labels is None:
        return [["test score", "no test labels (report.test_labels)"]]
    if not labels.is_file():
        return [["test score", f"{labels}: not found"]]
    meta = run.read_table(run.layout.meta(run.stage), "image metadata (rule ingest)")
    parts = score_breakdown(submission, labels, sizes=original_sizes(meta))
    return [
        ["test score (labels: " + labels.name + ")", _margin(parts["score"], parts["all_empty"])],
        [
            "test Dice on positive images",
            f"{parts['dice_pos']:.4f} ({parts['n_positive']} of {parts['n_images']} images)",
        ],
        ["test empty images kept empty", _score(parts["empty_kept"])],
    ]


def build_report(
    cfg: RunConfig,
    run_dir: str | Path,
    out: str | Path,
    *,
    stage: int | None = None,
    plots_dir: str | Path | None = None,
    n_cases: int | None = None,
    n_images: int | None = None,
    progress: bool = True,
) -> Path:
    """Write the report of one stage of a run and return its path.

    Args:
        cfg: the typed view of the resolved config (``run_dir/config.resolved.yaml``).
        run_dir: the run's output folder.
        out: the HTML file to write (atomically).
        stage: 1 or 2; default the config's stage.
        plots_dir: also write every plot there as ``<name>.png``.
        n_cases: images per case gallery; default ``config["report"]["n_cases"]`` or 6.
        n_images: images in the data contact sheet; default ``report.n_images`` or 18.

    Example:
        >>> build_report(RunConfig(load_config(["runs/default/config.resolved.yaml"])), "runs/default",
        ...              "runs/default/reports/report.html")  # doctest: +SKIP
    """
    from tqdm import tqdm

    options = cfg.section("report")
    run = FinishedRun(
        cfg,
        Path(run_dir),
        int(stage if stage is not None else cfg.stage),
        Path(plots_dir) if plots_dir is not None else None,
    )
    n_cases = int(n_cases if n_cases is not None else options.get("n_cases", 6))
    n_images = int(n_images if n_images is not None else options.get("n_images", 18))
    page = Page(
        f"medpipe report: {run.run_dir.name}, stage {run.stage}",
        f"Built {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} from {run.run_dir}. "
        "Every score is out of fold: each image is scored by models that never trained on it.",
    )
    steps = [
        ("Overview", _overview, ()),
        ("Data", add_data_section, (n_images,)),
        ("Training", add_training_section, ()),
        ("Decisions", add_decisions_section, ()),
        ("Cases", add_cases_section, (n_cases,)),
        ("Stage 2", add_stage2_section, ()),
    ]
    bar = tqdm(steps, desc="report", unit="section", disable=not progress)
    for title, add, args in bar:
        bar.set_postfix_str(title)
        log.info("report: %s", title)
        section = page.section(title)
        guarded(section, add, run, section, *args)
    path = page.write(out)
    log.info("report: %s (%d plots in %s)", path, len(run.plots), plots_dir or "the page only")
    return path
