"""The "training" section: learning curves of every model and fold, the CV table, the ablation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from medpipe.guards import own_fold_rows
from medpipe.layout import (
    TRAIN_RULE,
    FoldDir,
    config_section,
    data_files,
    read_gate_predictions,
    read_learning_curve,
    read_metrics,
)
from medpipe.report.figures import new_figure
from medpipe.report.html import Section, figure_png
from medpipe.report.run import FinishedRun, Unavailable, guarded

__all__ = ["fold_table", "ablation_table", "gate_auc", "add_training_section", "VARIANTS"]

# The ablation's variants in pipeline order, with what each adds.
VARIANTS = {
    "all_empty": "baseline: every image predicted empty",
    "seg_only": "segmentation, pixel threshold + min area",
    "seg_area": "segmentation, empty unless enough confident pixels",
    "seg_gate": "+ classifier gate",
    "seg_gate_lgbm": "+ LightGBM fusion (gate + segmentation + metadata)",
}


def _task_label(family: str) -> str:
    return config_section(family)


def fold_table(run: FinishedRun, family: str, stage: int | None = None) -> pd.DataFrame:
    """One row per model and fold from ``metrics.json``: the selected epoch and its scores."""
    rows = []
    for model, dirs in run.training_dirs(family, stage).items():
        for d in dirs:
            path = d.metrics
            if not path.is_file():
                rows.append({"model": model, "fold": d.fold, "note": f"missing {path.name}"})
                continue
            m = json.loads(path.read_text())
            monitor = m.get("monitor", "")
            rows.append(
                {
                    "model": model,
                    "fold": int(m.get("fold", d.fold)),
                    "monitor": monitor,
                    "best": m.get(monitor),
                    "best epoch": m.get("best_epoch"),
                    "epochs": m.get("epochs"),
                    "val loss": m.get("val_loss"),
                    "train / val images": f"{m.get('n_train', '?')} / {m.get('n_val', '?')}",
                    "seconds": m.get("seconds"),
                }
            )
    return pd.DataFrame(rows)


def gate_auc(run: FinishedRun, model: str, stage: int | None = None) -> float | None:
    """OOF ROC AUC of one gate model over all folds (None when it cannot be computed)."""
    from sklearn.metrics import roc_auc_score

    data_dir = run.data_dir_of(run.stage if stage is None else stage)
    labels = run.read_table(data_files(data_dir)["folds"], "the training pool").set_index(
        "image_id"
    )
    parts = []
    for d in run.sources("gate", stage).get(model, []):
        if not d.oof.is_file():
            return None
        frame = read_gate_predictions(d.oof)
        parts.append(
            frame[own_fold_rows(frame["image_id"].to_numpy(), d.fold, labels["fold"], d.oof)]
        )
    if not parts:
        return None
    frame = pd.concat(parts)
    y = labels["has_finding"].reindex(frame["image_id"]).to_numpy()
    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, frame["prob"].to_numpy()))


def _learning_curves(
    run: FinishedRun, section: Section, family: str, model: str, dirs: list[FoldDir]
) -> None:
    logs = {d.path.name: d.log_csv for d in dirs if d.log_csv.is_file()}
    if not logs:
        raise Unavailable(
            f"{model}: no learning curve in its fold folders (rule {TRAIN_RULE[family]})"
        )
    monitor = None
    for d in dirs:
        if d.metrics.is_file():
            monitor = read_metrics(d.metrics).get("monitor")
            break
    fig, axes = new_figure(12, 3.2, 1, 3)
    colours = [f"C{i}" for i in range(10)]
    for k, (fold, path) in enumerate(sorted(logs.items())):
        frame = read_learning_curve(path)
        colour = colours[k % len(colours)]
        if "train_loss" in frame:
            axes[0].plot(frame["epoch"], frame["train_loss"], "--", color=colour, alpha=0.7)
        if "val_loss" in frame:
            axes[0].plot(frame["epoch"], frame["val_loss"], "o-", color=colour, label=fold, ms=3)
        metric = (
            monitor
            if monitor in frame
            else next((c for c in frame.columns if c.startswith("val_") and c != "val_loss"), None)
        )
        if metric:
            axes[1].plot(frame["epoch"], frame[metric], "o-", color=colour, label=fold, ms=3)
            axes[1].set_ylabel(metric)
        if "lr" in frame:
            axes[2].plot(frame["epoch"], frame["lr"], "o-", color=colour, ms=3)
    axes[0].set(title="loss (dashed: train, solid: validation)", xlabel="epoch")
    axes[0].legend(fontsize=7)
    axes[1].set(title=f"validation {monitor or 'metric'} (selects the checkpoint)", xlabel="epoch")
    axes[1].legend(fontsize=7)
    axes[2].set(title="learning rate", xlabel="epoch")
    if any(line.get_ydata().min() > 0 for line in axes[2].get_lines() if len(line.get_ydata())):
        axes[2].set_yscale("log")
    fig.suptitle(f"{_task_label(family)} model {model}", fontsize=10)
    fig.tight_layout()
    section.image(
        run.save_png(figure_png(fig), f"curves_{family}_{model}"),
        f"Learning curves of {_task_label(family)} model {model}, one colour per fold.",
    )


def _cv_table(run: FinishedRun, section: Section) -> None:
    cv = run.read_json(run.layout.cv(run.stage), "the CV summary (rule thresholds)")
    for family in ("segment", "gate"):
        table = fold_table(run, family)
        if table.empty:
            section.note(f"No {_task_label(family)} models in the config.")
            continue
        section.text(
            f"{_task_label(family).capitalize()} models, per fold (the epoch kept by the validation metric):"
        )
        section.table(table)
    rows = []
    for model in run.models("segment"):
        own = (cv.get("models") or {}).get(model, {})
        nested = ((cv.get("nested") or {}).get("models") or {}).get(model, {})
        rows.append(
            ["segmentation", model, "competition dice", own.get("seg_only"), nested.get("seg_only")]
        )
    for model in run.models("gate"):
        rows.append(["gate", model, "ROC AUC", gate_auc(run, model), None])
    for model in run.external("segment"):  # a teammate's maps, in the blend like ours
        own = (cv.get("models") or {}).get(model, {})
        nested = ((cv.get("nested") or {}).get("models") or {}).get(model, {})
        row = [own.get("seg_only"), nested.get("seg_only")]
        rows.append(["segmentation (external)", model, "competition dice", *row])
    for model in run.external("gate"):
        rows.append(["gate (external)", model, "ROC AUC", gate_auc(run, model), None])
    rows.append(
        [
            "ensemble",
            cv.get("ensemble_rule", ""),
            "competition dice",
            cv.get("ensemble"),
            (cv.get("nested") or {}).get("ensemble"),
        ]
    )
    section.text(
        "Out-of-fold scores over all folds (best setting on the grid; nested: chosen on the other folds):"
    )
    section.table(pd.DataFrame(rows, columns=["task", "model", "metric", "OOF", "OOF nested"]))


def ablation_table(cv: dict) -> pd.DataFrame:
    """What each step adds over the all-empty baseline, from ``cv.json``."""
    nested = cv.get("nested") or {}
    base = cv.get("all_empty")
    dice_pos = cv.get("dice_pos_nested") or {}
    rows = []
    for key, what in VARIANTS.items():
        if key not in cv:
            continue
        score = cv[key]
        rows.append(
            {
                "variant": key,
                "what": what,
                "OOF": score,
                "OOF nested": nested.get(key, np.nan) if key != "all_empty" else score,
                "vs all-empty": score - base if base is not None else np.nan,
                "Dice on positives (nested)": dice_pos.get(key, np.nan),
                "submission rule": "yes" if key == cv.get("ensemble_rule") else "",
            }
        )
    return pd.DataFrame(rows)


def _ablation(run: FinishedRun, section: Section) -> None:
    cv = run.read_json(run.layout.cv(run.stage), "the CV summary (rule thresholds)")
    table = ablation_table(cv)
    if table.empty:
        raise Unavailable(f"{run.layout.cv(run.stage)} has no ablation entries")
    section.table(table)
    missing = [k for k in ("seg_gate", "seg_gate_lgbm") if k not in cv]
    if missing:
        section.note(
            f"Not in this run: {', '.join(missing)} (no gate model or fusion disabled in the config)."
        )
    fig, axes = new_figure(7, 0.5 + 0.45 * len(table))
    ax = axes[0]
    y = np.arange(len(table))[::-1]
    ax.barh(y, table["OOF"], color="#bbbbbb", label="best setting on OOF")
    ax.barh(y, table["OOF nested"], height=0.35, color="#4477aa", label="nested CV")
    ax.set_yticks(y, table["variant"])
    low = float(np.nanmin(table[["OOF", "OOF nested"]].to_numpy()))
    ax.set_xlim(max(0.0, low - 0.05), 1.0)
    ax.axvline(cv.get("all_empty", 0), color="k", ls=":", lw=1)
    ax.set(xlabel="OOF competition dice", title="ablation (dotted: all-empty baseline)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    section.image(
        run.save_png(figure_png(fig), "ablation"), "The ablation on out-of-fold predictions."
    )


def add_training_section(run: FinishedRun, section: Section) -> None:
    """Learning curves per model (folds overlaid), the CV table and the ablation."""
    section.heading("Learning curves")
    for family in ("segment", "gate"):
        for model, dirs in run.training_dirs(family).items():
            guarded(section, _learning_curves, run, section, family, model, dirs)
        for model, block in run.external(family).items():
            section.note(
                f"{_task_label(family).capitalize()} source {model} is external ({block['kind']} "
                f"from {block['path']}, ensemble.external): its predictions were imported, "
                "so it has no learning curves; it is in the CV table, the weights and the ablation."
            )
    section.heading("Cross-validation")
    guarded(section, _cv_table, run, section)
    section.heading("Ablation against the all-empty baseline")
    guarded(section, _ablation, run, section)
