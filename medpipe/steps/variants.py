"""Step ``choose_variants`` (stage 2, ``retrain: auto``): per model, keep the retrained or the
stage-1 weights, whichever scores better on the same stage-2 validation images.

Winning teams mixed retrained and kept models in their stage-2 submissions, because some
models' CV dropped after retraining. Both variants are scored on the same OOF images: the
retrained ``<model>`` (trained on the stage-2 folds) and ``<model>@kept`` (the stage-1 weights
predicting the same folds; neither has seen a fold's validation images). Segmentation models
compare the nested competition metric of their own ``seg_only`` rule (the setting chosen on
the other folds), gates their OOF ROC AUC, multi-label classifiers their OOF macro ROC AUC (over
the classes with positives and negatives in the pool: threshold-free, as the gate's). Ties keep
the retrained variant (more data).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medpipe.config import KEPT, RunConfig
from medpipe.data.cache import cache_area_scale
from medpipe.decision.search import dice_tables_streamed, search_rule
from medpipe.layout import CLASSIFY, FAMILIES, GATE, FoldDir, StageLayout, write_retrain_choice
from medpipe.multilabel.tables import khot_of, n_classes, oof_probabilities
from medpipe.predictions.sources import oof_pool
from medpipe.predictions.stored import OofMaps, load_gate_probs, values_for

__all__ = ["choose_variants", "variant_cv"]

log = logging.getLogger(__name__)


def variant_cv(
    cfg: RunConfig, data_dir: str | Path, family: str, dirs: list[FoldDir]
) -> dict[str, Any]:
    """One variant's CV on the stage's OOF pool: ``{"cv", "measure"}`` (+ ``"oof"`` for a
    segmentation model: its OOF score at the setting chosen on all folds)."""

    folds = oof_pool(cfg, data_dir)
    if family == GATE:
        from sklearn.metrics import roc_auc_score

        frame = load_gate_probs({"v": dirs}, "oof", folds=folds)
        y = values_for(frame["image_id"].tolist(), folds, "has_finding").astype(int)
        auc = float(roc_auc_score(y, frame["v"])) if len(set(y)) == 2 else float("nan")
        return {"cv": auc, "measure": "OOF ROC AUC"}
    if family == CLASSIFY:
        return _classifier_cv(folds, data_dir, dirs)

    post = cfg.postprocess
    scale = cache_area_scale(data_dir, cfg.image_size)
    areas = [float(a) * scale for a in post["area_grid"]]
    oof = OofMaps({"v": dirs}, folds, data_dir, cfg.image_size)
    chunks = ((rows, probs["v"], truth) for rows, probs, truth in oof.chunks())
    tables = dice_tables_streamed(chunks, len(oof), post["pixel_grid"], areas)
    fold_of = values_for(oof.ids, folds, "fold").astype(int)
    result = search_rule(tables, "seg_only", None, post["cls_grid"], areas, fold_of)
    return {
        "cv": float(result["nested_score"]),
        "oof": float(result["score"]),
        "measure": "nested competition metric, seg_only rule",
    }


def _classifier_cv(folds, data_dir: str | Path, dirs: list[FoldDir]) -> dict[str, Any]:
    """A multi-label classifier's OOF macro ROC AUC on the pool (``folds`` has ``target``)."""
    from sklearn.metrics import roc_auc_score

    probs = oof_probabilities({"v": dirs}, folds)["v"]
    truth = khot_of(folds["target"].fillna("").astype(str).tolist(), n_classes(data_dir))
    both = [c for c in range(truth.shape[1]) if 0 < truth[:, c].sum() < len(truth)]
    auc = (
        float(roc_auc_score(truth[:, both], probs[:, both], average="macro"))
        if both
        else float("nan")
    )
    return {"cv": auc, "measure": "OOF macro ROC AUC"}


def choose_variants(
    cfg: RunConfig, stage: StageLayout, data_dir: str | Path
) -> dict[str, dict[str, Any]]:
    """Score both variants of every ``retrain: auto`` model, write ``retrain_choice.json``."""
    choice: dict[str, dict[str, Any]] = {}
    for family in FAMILIES:
        for model in cfg.auto_models(family):
            scores = {
                variant: variant_cv(cfg, data_dir, family, stage.folds_of(family, name, cfg.folds))
                for variant, name in (("retrained", model), ("kept", model + KEPT))
            }
            kept_better = scores["kept"]["cv"] > scores["retrained"]["cv"]
            choice[model] = {
                "task": family,
                **scores,
                "choice": "kept" if kept_better else "retrained",
            }
            log.info(
                "choose_variants: %s %s: retrained %.4f, kept %.4f (%s) -> %s",
                family,
                model,
                scores["retrained"]["cv"],
                scores["kept"]["cv"],
                scores["kept"]["measure"],
                choice[model]["choice"],
            )
    if not choice:
        raise ValueError("choose_variants: no model has stage2.retrain: auto (or stage is not 2)")
    write_retrain_choice(stage.retrain_choice, choice)
    return choice
