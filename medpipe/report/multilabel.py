"""The multi-label task's run report (``reports/report.html``, docs/multilabel.md, "The report").

Built on the SIIM report's scaffolding (:mod:`medpipe.report.html`, :mod:`~medpipe.report.run`,
:mod:`~medpipe.report.training`): a run summary, the per-class F1 table (out of fold, and on
the test labels where someone holds them), per-class precision-recall curves, label
co-occurrence, the decision's thresholds plot, learning curves per fold, and the best and worst
out-of-fold images as channel composites. Every number is recomputed from the run's files: the
OOF probabilities the decision thresholded (``thresholds.json``'s weights and source), and its
predictions on them.

Images are named by their Id; no patient key or group appears in the page.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medpipe.config import RunConfig
from medpipe.layout import CLASSIFY, cache_file, open_channel_cache, read_meta
from medpipe.multilabel.decision import apply_decision
from medpipe.multilabel.metric import f1_per_class
from medpipe.multilabel.submission import score_breakdown
from medpipe.multilabel.tables import (
    blend_mean,
    fused_probabilities,
    khot_of,
    n_classes,
    oof_probabilities,
    source_probabilities,
)
from medpipe.predictions.sources import oof_pool
from medpipe.report.figures import tile_grid
from medpipe.report.html import Page, Section, figure_png
from medpipe.report.multilabel_figures import (
    channel_composite,
    cooccurrence_figure,
    pr_curves_figure,
)
from medpipe.report.run import FinishedRun, Unavailable, guarded
from medpipe.report.stage2 import add_stage2_section
from medpipe.report.training import _learning_curves, fold_table
from medpipe.run_summary import test_labels_of
from medpipe.tasks import get_task

__all__ = ["OutOfFold", "out_of_fold", "per_class_table", "image_scores", "build_report"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutOfFold:
    """The OOF pool as the submission's decision saw it: ``probs`` (N, K) are the probabilities
    it thresholded, ``pred`` (N, K) its K-hot predictions, ``truth`` (N, K) the labels."""

    ids: list[str]
    folds: np.ndarray
    truth: np.ndarray
    probs: np.ndarray
    pred: np.ndarray
    decision: dict[str, Any]
    names: list[str]


def out_of_fold(run: FinishedRun) -> OutOfFold:
    """Blend the classifiers' OOF probabilities with the decision's weights, take its source
    (the CNN blend, the fusion, or their mean) and apply its rule, as the thresholds step did."""
    decision = run.read_json(run.layout.thresholds(run.stage), "the decision (rule thresholds)")
    pool = oof_pool(run.view, run.data_dir)
    k = n_classes(run.data_dir)
    ids = pool["image_id"].astype(str).tolist()
    probs = oof_probabilities(run.sources(CLASSIFY), pool)
    if not probs:
        raise Unavailable("no classifier models in the config (classifier.models)")
    blended = blend_mean(probs, decision.get("weights"))
    source = decision.get("source", "cnn")
    fused = None
    if source != "cnn":
        path = run.need(run.layout.fused(run.stage, "oof"), "the fused OOF (rule fuse_cls)")
        fused = fused_probabilities(path, ids)
    chosen = source_probabilities(source, blended, fused)
    classes = decision.get("classes") or run.config.get("data", {}).get("classes")
    names = [str(classes[c]) if classes else str(c) for c in range(k)]
    return OutOfFold(
        ids=ids,
        folds=pool["fold"].astype(int).to_numpy(),
        truth=khot_of(pool["target"].tolist(), k),
        probs=chosen,
        pred=apply_decision(decision, chosen).astype(np.uint8),
        decision=decision,
        names=names,
    )


def per_class_table(oof: OutOfFold, test: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per class: its threshold, OOF counts and F1 (and AP), and with ``test`` (a
    :meth:`Task.score` breakdown) its test counts and F1."""
    from sklearn.metrics import average_precision_score

    f1 = f1_per_class(oof.truth, oof.pred)
    table = pd.DataFrame(
        {
            "class": range(len(oof.names)),
            "name": oof.names,
            "threshold": np.asarray(oof.decision["thresholds"], dtype=float),
            "OOF true": oof.truth.sum(axis=0).astype(int),
            "OOF predicted": oof.pred.sum(axis=0).astype(int),
            "OOF F1": f1,
            "OOF AP": [
                average_precision_score(oof.truth[:, c], oof.probs[:, c])
                if oof.truth[:, c].any()
                else np.nan
                for c in range(len(oof.names))
            ],
        }
    )
    if test is not None:
        table["test true"] = np.asarray(test["n_true"], dtype=int)
        table["test predicted"] = np.asarray(test["n_predicted"], dtype=int)
        table["test F1"] = np.asarray(test["per_class_f1"], dtype=float)
    return table


def image_scores(truth: np.ndarray, pred: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """Each image's F1 of its predicted label set (both empty: 1) and its probabilities' mean
    absolute error, which ranks images of equal F1."""
    tp = (truth.astype(bool) & pred.astype(bool)).sum(axis=1)
    both = truth.sum(axis=1) + pred.sum(axis=1)
    f1 = np.where(both > 0, 2 * tp / np.maximum(both, 1), 1.0)
    error = np.abs(probs - truth).mean(axis=1)
    return pd.DataFrame({"f1": f1, "error": error})


def _score(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"


def _test_score(run: FinishedRun) -> tuple[dict[str, Any] | None, str]:
    """The submission scored on the test labels (the demo's hidden answers or
    ``report.test_labels``), only when they exist: ``(breakdown, what)``."""
    labels = test_labels_of(run.view, run.stage)
    submission = run.layout.stage_submission(run.stage)
    if labels is None:
        return None, "no test labels (report.test_labels)"
    if not labels.is_file():
        return None, f"{labels}: not found"
    if not submission.is_file():
        return None, f"{submission}: not found (rule submit)"
    # every class of the run, also one absent from both files (the task's `score` counts K
    # from the files), so the test columns line up with the OOF ones
    parts = score_breakdown(submission, labels, n_classes(run.data_dir))
    name = max(parts["baselines"], key=parts["baselines"].get)
    score, base = parts["score"], parts["baselines"][name]
    return parts, f"{score:.4f} ({score - base:+.4f} over {name} {base:.4f}; labels: {labels.name})"


def _overview(run: FinishedRun, section: Section, test_line: str) -> None:
    cv = run.read_json(run.layout.cv(run.stage), "the CV summary (rule thresholds)")
    data = run.config.get("data", {})
    baselines = cv.get("baselines") or {}
    nested = (cv.get("nested") or {}).get("ensemble")
    best = max(baselines, key=baselines.get) if baselines else None
    rows = [
        ["task", "multilabel (macro F1 over the classes)"],
        ["stage", run.stage],
        ["image size (cache)", run.size],
        ["channels", ", ".join(map(str, data.get("channels") or []))],
        ["folds", run.config.get("folds")],
        ["classifier models", ", ".join(run.models(CLASSIFY)) or "none"],
        ["LightGBM fusion", "on" if run.fusion_enabled else "off"],
        ["probability source", cv.get("source", "cnn")],
        ["OOF images", cv.get("n_images", "n/a")],
        ["decision rule", cv.get("ensemble_rule", "n/a")],
        ["OOF macro F1, submission rule", _score(cv.get("ensemble"))],
    ]
    if isinstance(nested, (int, float)) and best is not None:
        rows.append(
            [
                "OOF macro F1, nested",
                f"{nested:.4f} ({nested - baselines[best]:+.4f} over {best})",
            ]
        )
    rows += [[f"OOF baseline: {name}", _score(value)] for name, value in baselines.items()]
    submission = run.layout.stage_submission(run.stage)
    if submission.is_file():
        sub = pd.read_csv(submission, dtype=str, keep_default_na=False)
        rows.append(["submission", get_task(run.view.task_name).describe(sub)])
    rows.append(["test macro F1", test_line])
    section.table(pd.DataFrame(rows, columns=["", "value"]).astype({"value": str}))
    section.text(
        "Images are named by their Id only; no patient key or group appears in this report."
    )


def _per_class(
    run: FinishedRun, section: Section, oof: OutOfFold, test: dict[str, Any] | None
) -> None:
    table = per_class_table(oof, test)
    section.text(
        "Per class: the submission rule's threshold, its out-of-fold predictions against the "
        "labels (F1 from TP, FP and FN over all images; a class with no true and no predicted "
        "label scores 1), the average precision of the probabilities"
        + (", and the submission on the test labels." if test is not None else ".")
    )
    section.table(table)
    recorded = oof.decision.get("oof_score")
    section.text(
        f"Macro F1 of this table out of fold: {table['OOF F1'].mean():.4f} (the recorded decision: "
        f"{_score(recorded)}; the nested estimate is in the overview)."
        + (f" On the test labels: {table['test F1'].mean():.4f}." if test is not None else "")
    )


def _pr_curves(run: FinishedRun, section: Section, oof: OutOfFold) -> None:
    fig = pr_curves_figure(oof.truth, oof.probs, oof.pred, oof.names)
    section.image(
        run.save_png(figure_png(fig), "pr_curves"),
        "Precision-recall curve of each class out of fold; dot: the submission rule's "
        "operating point; dotted: the class's frequency (a random ranking).",
    )


def _cooccurrence(run: FinishedRun, section: Section, oof: OutOfFold) -> None:
    fig = cooccurrence_figure(oof.truth, oof.pred, oof.names)
    section.image(
        run.save_png(figure_png(fig), "label_cooccurrence"),
        "Label co-occurrence on the out-of-fold pool: images per pair of classes (diagonal: "
        "images with the class), true and predicted.",
    )


def _thresholds(run: FinishedRun, section: Section, oof: OutOfFold) -> None:
    png = run.need(run.layout.heatmap(run.stage), "the thresholds plot (rule thresholds)")
    candidates = oof.decision.get("candidates") or {}
    section.table(
        pd.DataFrame(
            [
                [
                    name,
                    c.get("nested_score"),
                    c.get("oof_score"),
                    "yes" if name == oof.decision.get("rule") else "",
                ]
                for name, c in candidates.items()
            ],
            columns=["candidate rule", "nested macro F1", "OOF macro F1", "chosen"],
        )
    )
    section.image(
        run.save_png(png.read_bytes(), "thresholds"),
        "The chosen rule's threshold per class (dotted: the global threshold) and each "
        "candidate's nested macro F1 (the thresholds step's own plot).",
    )


def _training(run: FinishedRun, section: Section) -> None:
    table = fold_table(run, CLASSIFY)
    if table.empty:
        raise Unavailable("no classifier models in the config (classifier.models)")
    section.text("Each classifier fold: the epoch kept by the validation metric.")
    section.table(table)
    for model, dirs in run.training_dirs(CLASSIFY).items():
        guarded(section, _learning_curves, run, section, CLASSIFY, model, dirs)


def _cases(run: FinishedRun, section: Section, oof: OutOfFold, n_cases: int) -> None:
    meta = read_meta(
        run.need(run.layout.meta(run.stage), "image metadata (rule ingest)"),
        ["image_id", "split", "cache_index"],
    ).set_index("image_id")
    channels = [str(c) for c in run.config.get("data", {}).get("channels") or []]
    scores = image_scores(oof.truth, oof.pred, oof.probs)
    caches: dict[str, np.ndarray] = {}

    def composite(row: int) -> np.ndarray:
        split = str(meta.at[oof.ids[row], "split"])
        if split not in caches:
            path = cache_file(run.data_dir, split, "images", run.size)
            caches[split] = open_channel_cache(path, run.size, len(channels) or None)
        image = caches[split][int(meta.at[oof.ids[row], "cache_index"])]
        return channel_composite(image, channels or ["gray"] * image.shape[0])

    def labels(khot: np.ndarray) -> str:
        return " ".join(oof.names[c] for c in np.flatnonzero(khot)) or "-"

    order = np.lexsort((scores["error"].to_numpy(), -scores["f1"].to_numpy()))
    n = min(n_cases, len(order))
    colours = ", ".join(f"{c}" for c in channels)
    for what, rows in (("Best", order[:n]), ("Worst", order[::-1][:n])):
        fig = tile_grid(
            [composite(r) for r in rows],
            titles=[
                f"{oof.ids[r][:13]} (fold {oof.folds[r]})\ntrue: {labels(oof.truth[r])}\n"
                f"pred: {labels(oof.pred[r])}  F1 {scores['f1'][r]:.2f}"
                for r in rows
            ],
            cols=6,
            tile_inches=2.2,
        )
        section.image(
            run.save_png(figure_png(fig), f"cases_{what.lower()}"),
            f"{what} {n} out-of-fold images by the F1 of their predicted label set (ties: by the "
            f"probabilities' mean error), as channel composites ({colours}; yellow shows as "
            "red + green).",
        )


def build_report(
    cfg: RunConfig,
    run_dir: str | Path,
    out: str | Path,
    *,
    stage: int | None = None,
    plots_dir: str | Path | None = None,
    n_cases: int | None = None,
    progress: bool = True,
) -> Path:
    """Write the multi-label report of one stage of a run and return its path (the arguments
    of :func:`medpipe.report.build_report`, which is the SIIM task's).

    Example:
        >>> build_report(cfg, "runs/multilabel", "runs/multilabel/reports/report.html")  # doctest: +SKIP
    """
    from tqdm import tqdm

    run = FinishedRun(
        cfg,
        Path(run_dir),
        int(stage if stage is not None else cfg.stage),
        Path(plots_dir) if plots_dir is not None else None,
    )
    n_cases = int(n_cases if n_cases is not None else cfg.section("report").get("n_cases", 6))
    page = Page(
        f"medpipe report: {run.run_dir.name}, stage {run.stage} (multi-label)",
        f"Built {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} from {run.run_dir}. "
        "Every OOF score is out of fold: each image is scored by models that never trained on it.",
    )
    test, test_line = _test_score(run)
    oof: OutOfFold | None = None
    try:
        oof = out_of_fold(run)
    except (Unavailable, FileNotFoundError) as err:  # each section that needs it says so
        missing = err
    # (title, block, its arguments after run and section, whether it needs the OOF pool)
    steps: list[tuple[str, Any, tuple, bool]] = [
        ("Overview", _overview, (test_line,), False),
        ("Per-class F1", _per_class, (oof, test), True),
        ("Precision-recall curves", _pr_curves, (oof,), True),
        ("Label co-occurrence", _cooccurrence, (oof,), True),
        ("Thresholds", _thresholds, (oof,), True),
        ("Training", _training, (), False),
        ("Cases", _cases, (oof, n_cases), True),
    ]
    if run.stage == 2:  # stage 1 and 2 side by side
        steps.append(("Stage 2", add_stage2_section, (), False))
    bar = tqdm(steps, desc="report", unit="section", disable=not progress)
    for title, add, args, needs_oof in bar:
        bar.set_postfix_str(title)
        log.info("report: %s", title)
        section = page.section(title)
        if needs_oof and oof is None:
            section.note(f"Not available: {missing}")
            continue
        guarded(section, add, run, section, *args)
    path = page.write(out)
    log.info("report: %s (%d plots in %s)", path, len(run.plots), plots_dir or "the page only")
    return path
