"""What the decision steps share: a stage's fold folders, the out-of-fold pool, p(finding)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from medpipe.config import KEPT, RunConfig
from medpipe.layout import (
    GATE,
    Decision,
    FoldDir,
    StageLayout,
    data_files,
    read_folds,
    read_fused,
    read_retrain_choice,
)

__all__ = ["fold_dirs", "oof_pool", "gate_mean", "finding_probabilities"]


def fold_dirs(
    config: Mapping[str, Any], stage_dir: str | Path, task: str
) -> dict[str, list[FoldDir]]:
    """``{model: [FoldDir]}`` of one task's trained folds in the stage folder ``stage_dir``.

    A ``retrain: auto`` model whose ``@kept`` variant predicted in this stage folder is read
    from the variant ``retrain_choice.json`` kept (rule choose_variants), under its own name.
    The task's ``ensemble.external`` sources follow the trained models: their imported folds
    (rule import_external) read like a trained model's (docs/ensemble.md).
    """
    cfg = RunConfig(config)
    stage = StageLayout(stage_dir)
    dirs = {m: stage.folds_of(task, m, cfg.folds) for m in cfg.trained_models(task)}
    auto = [m for m in cfg.auto_models(task) if stage.model_dir(task, m + KEPT).is_dir()]
    if auto:
        choice = read_retrain_choice(stage.retrain_choice)
        for m in auto:
            if m not in choice:
                raise ValueError(
                    f"{stage.retrain_choice}: no choice for {m}: rerun choose_variants"
                )
            if choice[m]["choice"] == "kept":
                dirs[m] = stage.folds_of(task, m + KEPT, cfg.folds)
    for name in cfg.external(task):
        dirs[name] = stage.external_folds(name, task, cfg.folds)
    return dirs


def oof_pool(data_dir: str | Path, config: Mapping[str, Any]) -> pd.DataFrame:
    """The out-of-fold pool: rows of a trained validation fold (stage 2 adds always-in-training
    rows, fold -1; ``train_folds`` leaves the other folds without OOF predictions)."""
    folds = read_folds(data_files(data_dir)["folds"])
    return folds[folds["fold"].isin(RunConfig(config).folds)].reset_index(drop=True)


def gate_mean(
    gate: Mapping[str, list[FoldDir]], which: str, folds: pd.DataFrame | None
) -> pd.DataFrame:
    """``image_id, p_finding``: the gate models' mean probability (test: of each model's fold
    mean, as the fusion features take it)."""
    from medpipe.inference.ensemble import load_gate_probs

    frame = load_gate_probs(gate, which, folds=folds)
    return pd.DataFrame(
        {"image_id": frame["image_id"], "p_finding": frame.drop(columns="image_id").mean(axis=1)}
    )


def finding_probabilities(
    config: Mapping[str, Any],
    stage_dir: str | Path,
    decision: Decision,
    which: str,
    *,
    folds: pd.DataFrame | None = None,
) -> pd.DataFrame | None:
    """``image_id, p_finding`` that the decision's rule thresholds, or None.

    ``seg_gate`` thresholds the mean gate probability, ``seg_gate_lgbm`` LightGBM's.

    Example:
        >>> p = finding_probabilities(config, "runs/default/stage1", decision, "test")  # doctest: +SKIP
    """
    stage = StageLayout(stage_dir)
    if decision.rule == "seg_gate":
        gate = fold_dirs(config, stage_dir, GATE)
        if not gate:
            raise ValueError(
                f"{stage.thresholds}: rule seg_gate thresholds the gate probability, "
                "but gate.models is empty: rerun the thresholds rule"
            )
        return gate_mean(gate, which, folds)
    if decision.rule == "seg_gate_lgbm":
        return read_fused(stage.fused(which))
    return None
