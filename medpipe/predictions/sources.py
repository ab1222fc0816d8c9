"""Which fold folders a stage reads, its out-of-fold pool, and the p(finding) a rule thresholds.

Torch-free: the steps, the report, the bundle and the Snakefile ask the same functions."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from medpipe.config import KEPT, ConfigError, RunConfig, base_model, pseudo_round, pseudo_variant
from medpipe.layout import (
    CLASSIFY,
    GATE,
    SEGMENT,
    Decision,
    FoldDir,
    StageLayout,
    data_files,
    read_folds,
    read_fused,
    read_retrain_choice,
)
from medpipe.predictions.stored import load_gate_probs

__all__ = [
    "stage_sources",
    "pseudo_label_sources",
    "oof_pool",
    "gate_mean",
    "finding_probabilities",
]


def stage_sources(
    cfg: RunConfig, stage: StageLayout, family: str, *, every_variant: bool = False
) -> dict[str, list[FoldDir]]:
    """``{model: [FoldDir]}``: the fold folders a stage reads for one model family. The one
    answer to "which folders does stage k read", for the Snakefile, the steps, the report and
    the bundle.

    The family's models in config order, each followed by its pseudo-labelled variants
    ``@pl<k>``, then its ``ensemble.external`` sources (their imported folds, rule
    import_external). In stage 2 a ``retrain: auto`` model is read from the variant
    ``retrain_choice.json`` kept (rule choose_variants), under its own name; with
    ``every_variant`` both variants are listed instead (``<model>`` and ``<model>@kept``): every
    prediction the stage makes, which the DAG needs before the choice exists.

    Example:
        >>> cfg = RunConfig({"run_dir": "runs/x", "folds": 2, "segmentation": {"models": {"u": {}}}})
        >>> [d.path.as_posix() for d in stage_sources(cfg, cfg.layout.stage(1), "segment")["u"]]
        ['runs/x/stage1/segment/u/fold0', 'runs/x/stage1/segment/u/fold1']
    """
    dirs = {m: stage.folds_of(family, m, cfg.folds) for m in cfg.trained_models(family)}
    auto = cfg.auto_models(family) if stage.is_second else []
    if every_variant:
        for m in auto:
            dirs[m + KEPT] = stage.folds_of(family, m + KEPT, cfg.folds)
    elif auto:
        choice = read_retrain_choice(stage.retrain_choice)
        for m in auto:
            if m not in choice:
                raise ValueError(
                    f"{stage.retrain_choice}: no choice for {m}: rerun choose_variants"
                )
            if choice[m]["choice"] == "kept":
                dirs[m] = stage.folds_of(family, m + KEPT, cfg.folds)
    for name in cfg.external(family):
        dirs[name] = stage.external_folds(name, family, cfg.folds)
    return dirs


def pseudo_label_sources(
    cfg: RunConfig, stage: StageLayout, model: str, fold: int
) -> dict[str, FoldDir]:
    """The fold folders whose test predictions label ``model`` (``<name>@pl<k>``) fold ``fold``:
    ``segment`` (round k-1 of the same fold) and, with ``finding`` set, ``gate`` (same fold);
    a multi-label classifier's: ``classify`` (round k-1 of the same fold)."""
    k = pseudo_round(model)
    if k < 1:
        raise ValueError(f"{model}: not a pseudo-labelled variant (<model>@pl<k>)")
    if base_model(model) not in cfg.pseudo_models():
        raise ConfigError(f"pseudo_label.models: {base_model(model)} is not listed")
    if k > cfg.pseudo_rounds():
        raise ConfigError(f"{model}: pseudo_label.rounds is {cfg.pseudo_rounds()}")
    if base_model(model) in cfg.models(CLASSIFY):
        return {CLASSIFY: stage.fold(CLASSIFY, pseudo_variant(model, k - 1), fold)}
    sources = {SEGMENT: stage.fold(SEGMENT, pseudo_variant(model, k - 1), fold)}
    finding = cfg.pseudo_settings().finding
    if finding is not None:
        sources[GATE] = stage.fold(GATE, finding, fold)
    return sources


def oof_pool(cfg: RunConfig, data_dir: str | Path) -> pd.DataFrame:
    """The out-of-fold pool of a stage's data folder: rows of a trained validation fold (stage 2
    adds always-in-training rows, fold -1; ``train_folds`` leaves the other folds without OOF
    predictions)."""
    folds = read_folds(data_files(data_dir)["folds"])
    return folds[folds["fold"].isin(cfg.folds)].reset_index(drop=True)


def gate_mean(
    gate: Mapping[str, list[FoldDir]], which: str, folds: pd.DataFrame | None
) -> pd.DataFrame:
    """``image_id, p_finding``: the gate models' mean probability (test: of each model's fold
    mean, as the fusion features take it)."""
    frame = load_gate_probs(gate, which, folds=folds)
    return pd.DataFrame(
        {"image_id": frame["image_id"], "p_finding": frame.drop(columns="image_id").mean(axis=1)}
    )


def finding_probabilities(
    cfg: RunConfig,
    stage: StageLayout,
    decision: Decision,
    which: str,
    *,
    folds: pd.DataFrame | None = None,
) -> pd.DataFrame | None:
    """``image_id, p_finding`` that the decision's rule thresholds, or None.

    ``seg_gate`` thresholds the mean gate probability, ``seg_gate_lgbm`` LightGBM's.

    Example:
        >>> p = finding_probabilities(cfg, cfg.layout.stage(1), decision, "test")  # doctest: +SKIP
    """
    if decision.rule == "seg_gate":
        gate = stage_sources(cfg, stage, GATE)
        if not gate:
            raise ValueError(
                f"{stage.thresholds}: rule seg_gate thresholds the gate probability, "
                "but gate.models is empty: rerun the thresholds rule"
            )
        return gate_mean(gate, which, folds)
    if decision.rule == "seg_gate_lgbm":
        return read_fused(stage.fused(which))
    return None
