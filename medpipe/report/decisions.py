"""The "decisions" section: what was chosen on out-of-fold predictions and how trustworthy the
probabilities behind it are (threshold heat map, ensemble weights, fusion features, gate ROC and
calibration)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medpipe.guards import own_fold_rows
from medpipe.layout import read_fused, read_gate_predictions
from medpipe.report.figures import new_figure
from medpipe.report.html import Section, figure_png
from medpipe.report.run import FinishedRun, Unavailable, guarded

__all__ = ["oof_classifiers", "calibration_bins", "add_decisions_section"]

_DECISION_KEYS = (
    "rule",
    "mode",
    "p_finding_source",
    "cls_threshold",
    "top_score_threshold",
    "min_confident_area",
    "min_confident_area_original_px",
    "pixel_threshold",
    "min_area",
    "min_area_original_px",
    "score",
    "nested_score",
)


def _thresholds(run: FinishedRun, section: Section) -> None:
    decision = run.decision().fields
    rows = [[k, decision[k]] for k in _DECISION_KEYS if decision.get(k) is not None]
    section.table(pd.DataFrame(rows, columns=["setting", "value"]).astype({"value": str}))
    png = run.need(run.layout.heatmap(run.stage), "the heat map (rule thresholds)").read_bytes()
    section.image(
        png,
        "OOF competition metric over the threshold grid; the red square is the setting the "
        "submission uses.",
    )
    weights = decision.get("weights") or {}
    if weights:
        section.text(
            "Ensemble weights of the segmentation models (searched on OOF; equal unless the search wins clearly):"
        )
        section.table(pd.DataFrame(list(weights.items()), columns=["model", "weight"]))


def _importance(run: FinishedRun, section: Section) -> None:
    if not run.fusion_enabled:
        raise Unavailable(
            "fusion is disabled in the config (fusion.enabled: false), so there is no LightGBM model"
        )
    frame = run.read_table(
        run.layout.feature_importance(run.stage),
        "LightGBM feature importance (rule fuse)",
    )
    top = frame.sort_values("gain_mean", ascending=False).head(20).iloc[::-1]
    fig, axes = new_figure(7, 0.8 + 0.28 * len(top))
    ax = axes[0]
    ax.barh(top["feature"], top["gain_mean"], xerr=top.get("gain_std"), color="#4477aa")
    ax.set(xlabel="gain, mean over folds", title="LightGBM fusion: top features")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    section.image(
        run.save_png(figure_png(fig), "fusion_importance"),
        "Which features the fusion model used most (error bars: spread over folds).",
    )


def oof_classifiers(run: FinishedRun) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(labels, {name: p})`` over the OOF images: each gate model and, if fused, LightGBM."""
    folds = run.read_table(run.layout.folds(run.stage), "the training pool (rule make_folds)")
    folds = folds[folds["fold"] >= 0].set_index("image_id")
    ids = folds.index
    scores: dict[str, np.ndarray] = {}
    for model, dirs in run.sources("gate").items():
        parts = []
        for d in dirs:
            frame = read_gate_predictions(run.need(d.oof, f"gate {model} OOF (rule predict_gate)"))
            parts.append(
                frame[own_fold_rows(frame["image_id"].to_numpy(), d.fold, folds["fold"], d.oof)]
            )
        series = pd.concat(parts).drop_duplicates("image_id").set_index("image_id")["prob"]
        scores[f"gate {model}"] = series.reindex(ids).to_numpy(dtype=np.float64)
    fused = run.layout.fused(run.stage, "oof")
    if run.fusion_enabled and fused.is_file():
        frame = read_fused(fused).set_index("image_id")
        scores["LightGBM fusion"] = frame["p_finding"].reindex(ids).to_numpy(dtype=np.float64)
    return folds["has_finding"].to_numpy(dtype=int), scores


def calibration_bins(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Mean predicted probability against the observed positive rate, in equal-width bins.

    Not ``sklearn.calibration.calibration_curve``: the plot also needs each bin's image count
    (to size the markers and to show how little a sparse bin says), which it does not return.
    """
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    rows = [
        (float(p[which == b].mean()), float(y[which == b].mean()), int((which == b).sum()))
        for b in range(n_bins)
        if (which == b).any()
    ]
    return pd.DataFrame(rows, columns=["predicted", "observed", "images"])


def _gate_curves(run: FinishedRun, section: Section) -> None:
    from sklearn.metrics import roc_auc_score, roc_curve

    y, scores = oof_classifiers(run)
    if not scores:
        raise Unavailable(
            "no gate model in the config and fusion disabled: no image-level classifier"
        )
    if len(np.unique(y)) < 2:
        raise Unavailable(
            "the OOF images are all of one class, so ROC and calibration are undefined"
        )
    fig, axes = new_figure(10, 4, 1, 2)
    rows = []
    for k, (name, p) in enumerate(scores.items()):
        ok = np.isfinite(p)
        fpr, tpr, _ = roc_curve(y[ok], p[ok])
        auc = roc_auc_score(y[ok], p[ok])
        axes[0].plot(fpr, tpr, color=f"C{k}", label=f"{name} (AUC {auc:.3f})")
        bins = calibration_bins(y[ok], p[ok])
        axes[1].plot(bins["predicted"], bins["observed"], "o-", color=f"C{k}", label=name, ms=4)
        brier = float(np.mean((p[ok] - y[ok]) ** 2))
        rows.append([name, int(ok.sum()), auc, brier])
    axes[0].plot([0, 1], [0, 1], "k:", lw=1)
    axes[0].set(title="ROC, out of fold", xlabel="false positive rate", ylabel="true positive rate")
    axes[0].legend(fontsize=7, loc="lower right")
    axes[1].plot([0, 1], [0, 1], "k:", lw=1)
    axes[1].set(
        title="calibration (10 bins)", xlabel="mean predicted p(finding)", ylabel="observed rate"
    )
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    section.image(
        run.save_png(figure_png(fig), "gate_roc_calibration"),
        "Image-level p(finding) out of fold: separation (ROC) and honesty (calibration).",
    )
    section.table(pd.DataFrame(rows, columns=["classifier", "images", "ROC AUC", "Brier score"]))


def add_decisions_section(run: FinishedRun, section: Section) -> None:
    section.heading("Thresholds and ensemble weights")
    guarded(section, _thresholds, run, section)
    section.heading("LightGBM feature importance")
    guarded(section, _importance, run, section)
    section.heading("Gate ROC and calibration")
    guarded(section, _gate_curves, run, section)
