"""The stage's decision, chosen on out-of-fold predictions: the ensemble weights and the
submission's rule with its setting, by nested CV; written as thresholds.json, cv.json and the
heat map."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from medpipe.config import RunConfig
from medpipe.data.cache import cache_area_scale
from medpipe.decision.plots import plot_heatmap
from medpipe.decision.policy import ablation_of_tables, check_rule
from medpipe.decision.search import dice_tables_streamed
from medpipe.guards import check_training_data
from medpipe.io.atomic import atomic_write_text
from medpipe.layout import (
    GATE,
    SEGMENT,
    StageLayout,
    dumps,
    read_fused,
    write_decision,
)
from medpipe.predictions.blend import blend, optimise_weights_of
from medpipe.predictions.sources import gate_mean, oof_pool, stage_sources
from medpipe.predictions.stored import OofMaps, values_for

__all__ = ["choose_stage_decision", "gate_aucs"]

log = logging.getLogger(__name__)


def gate_aucs(gate: Mapping[str, list], folds: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """Each gate model's OOF ROC AUC over the pool (None with a single class): cv.json ``gates``,
    which REPRODUCE.md quotes before and after stage 2."""
    from sklearn.metrics import roc_auc_score

    from medpipe.predictions.stored import load_gate_probs

    frame = load_gate_probs(gate, "oof", folds=folds)
    y = values_for(frame["image_id"].tolist(), folds, "has_finding").astype(int)
    out = {}
    for model in gate:
        auc = float(roc_auc_score(y, frame[model].to_numpy())) if len(set(y)) == 2 else None
        out[model] = {"auc": auc}
    return out


def choose_stage_decision(
    cfg: RunConfig, stage: StageLayout, data_dir: str | Path
) -> dict[str, Any]:
    """Ensemble weights and the submission's rule on OOF; writes thresholds.json, thresholds.png, cv.json."""
    post = cfg.postprocess
    area_scale = cache_area_scale(data_dir, cfg.image_size)
    grids = {
        "cls_grid": post["cls_grid"],
        "pixel_grid": post["pixel_grid"],
        # searched and applied in cache pixels; thresholds.json also keeps the config's unit
        "area_grid": [float(a) * area_scale for a in post["area_grid"]],
    }
    rule = post.get("rule") or "auto"
    gate = stage_sources(cfg, stage, GATE)
    check_rule(
        rule, gate=bool(gate), fused=cfg.fusion_enabled
    )  # before any loading: a config error
    folds = oof_pool(cfg, data_dir)
    seg = stage_sources(cfg, stage, SEGMENT)
    check_training_data(data_dir, seg, gate)
    # The OOF maps are streamed fold by fold and chunk by chunk: the search keeps per-image
    # statistics (Dice for every pixel threshold x min area, confident-pixel counts), so memory
    # does not grow with the number of images (bench/scale.py).
    oof = OofMaps(seg, folds, data_dir, cfg.image_size)
    ids, models = oof.ids, oof.models
    p_fused = (
        values_for(ids, read_fused(stage.fused("oof")), "p_finding") if cfg.fusion_enabled else None
    )
    p_gate = values_for(ids, gate_mean(gate, "oof", folds), "p_finding") if gate else None
    fold_of = values_for(ids, folds, "fold").astype(int)
    # The rule is chosen on the blend, so the weights come first (gated by LightGBM, if any).
    # The nested CV chooses them again for each outer fold on the other folds only; the
    # searches share their blends' per-image Dice (one pass per blend, whatever the folds).
    fold_weights: dict[int, dict[str, float]] = {}
    if post.get("optimise_weights", True) and len(models) > 1:
        shared: dict = {}
        weights = optimise_weights_of(oof.chunks, models, len(oof), p_finding=p_fused, cache=shared)
        for k in sorted(set(fold_of.tolist())):
            fold_weights[k] = optimise_weights_of(
                oof.chunks, models, len(oof), p_finding=p_fused, select=fold_of != k, cache=shared
            )
    else:
        weights = {m: 1.0 / len(models) for m in models}
    top = grids["cls_grid"]  # the area rule's top-score grid (ablation's default)

    def tables_of(maps):
        chunks = ((rows, maps(probs), truth) for rows, probs, truth in oof.chunks())
        return dice_tables_streamed(chunks, len(oof), grids["pixel_grid"], grids["area_grid"], top)

    tables = tables_of(lambda probs: blend(probs, weights))
    # each outer fold's blend: one more pass per distinct set of weights
    by_weights = {tuple(sorted(weights.items())): tables}
    fold_tables = {}
    for k, w in fold_weights.items():
        key = tuple(sorted(w.items()))
        if key not in by_weights:
            by_weights[key] = tables_of(lambda probs, w=w: blend(probs, w))
        fold_tables[k] = by_weights[key]
    # one model: its own tables are the blend's (weight 1: the same float32 values)
    model_tables = (
        {models[0]: tables}
        if len(models) == 1
        else {m: tables_of(lambda probs, m=m: probs[m]) for m in models}
    )
    cv = ablation_of_tables(
        tables,
        model_tables,
        cls_grid=grids["cls_grid"],
        area_grid=grids["area_grid"],
        p_gate=p_gate,
        p_fused=p_fused,
        folds=fold_of,
        rule=rule,
        fold_tables=fold_tables or None,
    )
    best = cv.pop("decision")
    plot_heatmap(best, stage.heatmap)
    cv["n_images"] = len(ids)
    cv["weights"] = weights
    if fold_weights:  # the nested scores' weights, each chosen without its outer fold
        cv["weights_by_fold"] = {str(k): w for k, w in fold_weights.items()}
    if gate:
        cv["gates"] = gate_aucs(gate, folds)
    decision = {k: v for k, v in best.items() if k != "grid"}
    decision["weights"] = weights
    # min_area / min_confident_area are cache pixels (what submit applies); these say what they
    # are in the original image, the unit of the config's area_grid.
    decision["area_scale"] = area_scale
    for key in ("min_area", "min_confident_area"):
        if decision.get(key) is not None:
            decision[f"{key}_original_px"] = round(float(decision[key]) / area_scale, 3)
    write_decision(stage.thresholds, decision)
    atomic_write_text(dumps(cv), stage.cv)
    log.info(
        "thresholds: rule %s (chosen by %s) %s",
        decision["rule"],
        cv["rule_choice"],
        {k: decision[k] for k in decision if k not in ("weights", "rule")},
    )
    return decision
