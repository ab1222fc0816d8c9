"""The "stage 2" section: which models were retrained on the released labels, which kept their
stage-1 checkpoints, and what that did to the cross-validated scores (docs/stage2.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medpipe.layout import CLASSIFY
from medpipe.report.figures import new_figure
from medpipe.report.html import Section, figure_png
from medpipe.report.run import FinishedRun, Unavailable, guarded
from medpipe.report.training import VARIANTS, gate_auc

__all__ = ["retrain_table", "add_stage2_section"]


def retrain_table(run: FinishedRun, cv1: dict, cv2: dict) -> pd.DataFrame:
    """One row per model: retrained or kept, with its OOF score in stage 1 and stage 2."""

    rows = []
    for model in run.models("segment"):
        before = (cv1.get("models") or {}).get(model, {}).get("seg_only")
        after = (cv2.get("models") or {}).get(model, {}).get("seg_only")
        rows.append(
            ["segmentation", model, run.view.retrained(model), "competition dice", before, after]
        )
    for model in run.models("gate"):
        before, after = gate_auc(run, model, stage=1), gate_auc(run, model, stage=2)
        rows.append(["gate", model, run.view.retrained(model), "ROC AUC", before, after])
    for model in run.models(CLASSIFY):  # the multi-label task's cv.json: macro F1 at 0.5
        before = (cv1.get("models") or {}).get(model, {}).get("oof_f1_at_0.5")
        after = (cv2.get("models") or {}).get(model, {}).get("oof_f1_at_0.5")
        rows.append(
            ["classifier", model, run.view.retrained(model), "macro F1 at 0.5", before, after]
        )
    frame = pd.DataFrame(
        rows, columns=["task", "model", "retrained", "metric", "CV stage 1", "CV stage 2"]
    )
    frame["stage 2"] = np.where(frame.pop("retrained"), "retrained", "kept (stage-1 checkpoints)")
    for column in ("CV stage 1", "CV stage 2"):  # a model new in stage 2 has no stage-1 score
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["change"] = frame["CV stage 2"] - frame["CV stage 1"]
    return frame[["task", "model", "stage 2", "metric", "CV stage 1", "CV stage 2", "change"]]


def _retrain(run: FinishedRun, section: Section) -> None:
    cv1 = run.read_json(run.layout.cv(1), "stage-1 CV (rule thresholds, stage 1)")
    cv2 = run.read_json(run.layout.cv(2), "stage-2 CV (rule thresholds, stage 2)")
    section.text(
        "Stage 2 validates on the same out-of-fold images as stage 1 (the stage-1 test images "
        "only join the training side), so the two columns compare like with like."
    )
    section.table(retrain_table(run, cv1, cv2))
    rows = [[k, cv1.get(k), cv2.get(k)] for k in VARIANTS if k in cv1 or k in cv2]
    rows.append(["ensemble (submission rule)", cv1.get("ensemble"), cv2.get("ensemble")])
    frame = pd.DataFrame(rows, columns=["variant", "stage 1", "stage 2"])
    section.text("The ablation before and after:")
    section.table(frame)
    fig, axes = new_figure(7, 0.6 + 0.45 * len(frame))
    ax = axes[0]
    y = np.arange(len(frame))[::-1]
    ax.barh(y + 0.18, frame["stage 1"].astype(float), 0.36, color="#bbbbbb", label="stage 1")
    ax.barh(y - 0.18, frame["stage 2"].astype(float), 0.36, color="#4477aa", label="stage 2")
    ax.set_yticks(y, frame["variant"])
    metric = "macro F1" if run.models(CLASSIFY) else "competition dice"
    ax.set(xlabel=f"OOF {metric}", title="stage 1 against stage 2")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    section.image(run.save_png(figure_png(fig), "stage2_cv"), "OOF scores of stage 1 and stage 2.")
    doc = run.layout.reproduce("doc")
    if doc.is_file():
        section.text(
            f"Hashes, versions and the commands that rebuild it: {doc.relative_to(run.run_dir)}."
        )


def add_stage2_section(run: FinishedRun, section: Section) -> None:
    if run.stage != 2:
        section.note(
            "This is a stage-1 run (config stage: 1); stage 2 is described in docs/stage2.md."
        )
        return
    if not run.stage_dir(1).is_dir():
        raise Unavailable(f"{run.stage_dir(1)} not found: stage 2 compares against stage 1")
    guarded(section, _retrain, run, section)
