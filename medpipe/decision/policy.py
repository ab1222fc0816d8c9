"""The submission's rule: which post-processing variant the pipeline applies.

:func:`ablation` scores four rules (:data:`RULES`) on OOF and picks the submission's: the best
nested-CV score, since each rule's own OOF best is optimistic by how much its grid can overfit;
ties go to the simpler rule. ``postprocess.rule`` can force one (:func:`check_rule`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medpipe.decision.apply import check_p_finding
from medpipe.decision.search import (
    DiceTables,
    dice_tables,
    grid_values,
    public_setting,
    search_rule,
)

__all__ = ["RULES", "check_rule", "ablation", "ablation_of_tables"]

# Simplest first: a tie goes to the earlier rule.
RULES = ("seg_only", "seg_area", "seg_gate", "seg_gate_lgbm")
_RULE_MODE = {
    "seg_only": "seg_only",
    "seg_area": "area",
    "seg_gate": "fusion",
    "seg_gate_lgbm": "fusion",
}
_P_FINDING_SOURCE = {"seg_gate": "gate", "seg_gate_lgbm": "fusion"}
_RULE_NEEDS = {
    "seg_gate": "a gate model's probability (gate.models is empty)",
    "seg_gate_lgbm": "LightGBM's p(finding) (fusion.enabled is false)",
}


def check_rule(rule: str, *, gate: bool, fused: bool) -> None:
    """Raise ``ValueError`` unless ``postprocess.rule`` is ``auto`` or a rule this run can score.

    Args:
        rule: ``auto`` or one of :data:`RULES`.
        gate: whether there is a gate probability (``seg_gate``).
        fused: whether there is LightGBM's p(finding) (``seg_gate_lgbm``).

    Example:
        >>> check_rule("seg_gate_lgbm", gate=True, fused=False)
        Traceback (most recent call last):
        ...
        ValueError: postprocess.rule: seg_gate_lgbm needs LightGBM's p(finding) (fusion.enabled is false); use auto or one of seg_only, seg_area, seg_gate
    """
    if rule == "auto":
        return
    if rule not in RULES:
        raise ValueError(
            f"postprocess.rule: {rule!r} is not a rule; expected auto or one of {', '.join(RULES)}"
        )
    lacking = {"seg_gate": not gate, "seg_gate_lgbm": not fused}
    available = [r for r in RULES if not lacking.get(r, False)]
    if rule not in available:
        raise ValueError(
            f"postprocess.rule: {rule} needs {_RULE_NEEDS[rule]}; use auto or one of "
            f"{', '.join(available)}"
        )


def _choose_rule(
    names: list[str], oof: Mapping[str, float], nested: Mapping[str, float], rule: str
) -> tuple[str, str]:
    """``(rule, how)``: the forced rule, else the best nested score (the best OOF without folds)."""
    if rule != "auto":
        return rule, "config"
    scores, how = (nested, "nested") if nested else (oof, "oof")
    best = max(scores[n] for n in names)
    # equal per-image scores summed in another order may differ in the last bits
    return next(n for n in names if scores[n] >= best - 1e-12), how


def ablation(
    prob: np.ndarray,
    truth: np.ndarray,
    *,
    cls_grid: Sequence[float],
    pixel_grid: Sequence[float],
    area_grid: Sequence[float],
    p_gate: np.ndarray | None = None,
    p_fused: np.ndarray | None = None,
    model_probs: Mapping[str, np.ndarray] | None = None,
    folds: np.ndarray | None = None,
    top_grid: Sequence[float] | None = None,
    confident_area_grid: Sequence[float] | None = None,
    rule: str = "auto",
) -> dict[str, Any]:
    """OOF competition metric of each step of the pipeline, and the submission's rule.

    Every variant gets its own best setting on the grids (scores are therefore optimistic);
    with ``folds`` each also gets a nested-CV score, the setting chosen on the other folds and
    scored on the held-out one, which is the honest estimate. The submission's rule is the
    variant with the best nested score (best OOF score without ``folds``), ties going to the
    simpler one (the order of :data:`RULES`), unless ``rule`` forces one. ``top_grid`` and
    ``confident_area_grid`` (the ``seg_area`` rule's) default to ``cls_grid`` and ``area_grid``.

    Args:
        prob: ``(N, S, S)`` blended OOF probabilities (the ensemble).
        truth: ``(N, S, S)`` masks.
        p_gate: ``(N,)`` mean OOF gate probability (the ``seg_gate`` variant).
        p_fused: ``(N,)`` LightGBM OOF ``p_finding`` (the ``seg_gate_lgbm`` variant).
        model_probs: each segmentation model's own OOF probabilities (scored alone).
        folds: ``(N,)`` fold of each image, for the nested scores.
        rule: ``postprocess.rule``: ``auto`` or one of :data:`RULES` (see :func:`check_rule`).

    Returns:
        ``{"n_images", "n_positive", "all_empty", "seg_only", "seg_area", ["seg_gate"],
        ["seg_gate_lgbm"], "ensemble", "ensemble_rule", "rule_choice", "models": {name:
        {"seg_only", "seg_area"}}, "nested": {...same keys...}, "triplets": {variant: setting},
        "decision"}``: ``ensemble`` is the OOF score of the submission's rule ``ensemble_rule``,
        ``rule_choice`` says how it was chosen (``nested``, ``oof`` or ``config``), and
        ``decision`` is its setting as :func:`~medpipe.decision.search.public_setting` writes
        it (``mode``, ``pixel_threshold``, ``min_area``, ``score``, ``cls_threshold``: None
        outside mode fusion, ``top_score_threshold`` and ``min_confident_area`` in mode area,
        and ``grid`` for :func:`~medpipe.decision.plots.plot_heatmap`), plus ``rule``,
        ``p_finding_source`` and ``nested_score``. JSON-serialisable.

    Example:
        >>> cv = ablation(prob, masks, cls_grid=[0.5], pixel_grid=[0.5], area_grid=[0],
        ...               p_fused=p_oof, folds=fold_of_image)  # doctest: +SKIP
    """
    truth = np.asarray(truth)
    cls = grid_values(cls_grid, "cls_grid")
    top = grid_values(top_grid if top_grid is not None else cls, "top_grid")
    if folds is not None and len(folds) != len(prob):
        raise ValueError(f"ablation: folds has {len(folds)} values for {len(prob)} images")
    check_rule(rule, gate=p_gate is not None, fused=p_fused is not None)
    tables = dice_tables(prob, truth, pixel_grid, area_grid, top)
    model_tables = {
        name: dice_tables(model_prob, truth, pixel_grid, area_grid, top)
        for name, model_prob in (model_probs or {}).items()
    }
    return ablation_of_tables(
        tables,
        model_tables,
        cls_grid=cls,
        area_grid=area_grid,
        p_gate=p_gate,
        p_fused=p_fused,
        folds=folds,
        top_grid=top,
        confident_area_grid=confident_area_grid,
        rule=rule,
    )


def _nest_weights(
    result: dict[str, Any],
    fold_tables: Mapping[int, DiceTables],
    folds: np.ndarray,
    name: str,
    p: np.ndarray | None,
    cls: Sequence[float],
    conf: Sequence[float],
) -> dict[str, Any]:
    """``result`` with its nested score re-made from each outer fold's own blend."""
    folds = np.asarray(folds)
    missing = sorted(set(np.unique(folds).tolist()) - set(fold_tables))
    if missing:
        raise ValueError(f"ablation: fold_tables lacks the tables of folds {missing}")
    per_image = np.zeros(len(folds))
    for k, tables_k in fold_tables.items():
        mine = folds == k
        nested_k = search_rule(tables_k, _RULE_MODE[name], p, cls, conf, folds)
        per_image[mine] = nested_k["_nested_per_image"][mine]
    return {**result, "nested_score": float(per_image.mean()), "_nested_per_image": per_image}


def ablation_of_tables(
    tables: DiceTables,
    model_tables: Mapping[str, DiceTables],
    *,
    cls_grid: Sequence[float],
    area_grid: Sequence[float],
    p_gate: np.ndarray | None = None,
    p_fused: np.ndarray | None = None,
    folds: np.ndarray | None = None,
    top_grid: Sequence[float] | None = None,
    confident_area_grid: Sequence[float] | None = None,
    rule: str = "auto",
    fold_tables: Mapping[int, DiceTables] | None = None,
) -> dict[str, Any]:
    """:func:`ablation` from per-image tables (:func:`~medpipe.decision.search.dice_tables` of
    the blend, and of each model): what the thresholds step computes by streaming the OOF maps
    fold by fold, so its memory does not grow with them. ``top_grid`` must be the grid the
    tables' confident-pixel counts were taken at.

    ``fold_tables`` (outer fold -> tables of the blend whose weights were chosen without that
    fold) nests the ensemble weights too: fold ``k``'s images are scored with its own blend and
    the setting chosen on the other folds of that blend, so neither the weights nor the
    thresholds that score an image have seen it."""
    cls = grid_values(cls_grid, "cls_grid")
    top = grid_values(top_grid if top_grid is not None else cls, "top_grid")
    conf = grid_values(
        confident_area_grid if confident_area_grid is not None else area_grid, "confident_area_grid"
    )
    n = len(tables.dice)
    empty = tables.empty_score.astype(bool)
    out: dict[str, Any] = {
        "n_images": n,
        "n_positive": int((~empty).sum()),
        "all_empty": float(empty.mean()),
    }
    nested: dict[str, Any] = {}
    triplets: dict[str, Any] = {}
    if folds is not None and len(folds) != n:
        raise ValueError(f"ablation: folds has {len(folds)} values for {n} images")
    check_rule(rule, gate=p_gate is not None, fused=p_fused is not None)

    def record(
        name: str, result: dict[str, Any], store: dict[str, Any], nested_store: dict[str, Any]
    ) -> None:
        store[name] = result["score"]
        if "nested_score" in result:
            nested_store[name] = result["nested_score"]

    p_of = {"seg_only": None, "seg_area": None}
    if p_gate is not None:
        p_of["seg_gate"] = check_p_finding(p_gate, n, "p_gate")
    if p_fused is not None:
        p_of["seg_gate_lgbm"] = check_p_finding(p_fused, n, "p_fused")
    results = {}
    for name, p in p_of.items():
        results[name] = search_rule(tables, _RULE_MODE[name], p, cls, conf, folds)
        if fold_tables and folds is not None:
            results[name] = _nest_weights(results[name], fold_tables, folds, name, p, cls, conf)
        record(name, results[name], out, nested)
        triplets[name] = {
            k: v for k, v in results[name].items() if not k.startswith("_") and k != "nested_score"
        }
    # Dice on the images with a finding: what the score's margin over all-empty is made of.
    if (~empty).any():
        out["dice_pos"] = {k: float(r["_per_image"][~empty].mean()) for k, r in results.items()}
        if folds is not None:
            out["dice_pos_nested"] = {
                k: float(r["_nested_per_image"][~empty].mean()) for k, r in results.items()
            }
    rule, out["rule_choice"] = _choose_rule(list(p_of), out, nested, rule)
    out["ensemble"], out["ensemble_rule"] = out[rule], rule
    if rule in nested:
        nested["ensemble"] = nested[rule]
    grids = {
        "cls_threshold": cls,
        "top_score_threshold": top,
        "min_confident_area": conf,
        "pixel_threshold": tables.pixel_grid,
        "min_area": tables.area_grid,
    }
    decision = {"rule": rule, **public_setting(results[rule], grids)}
    decision["p_finding_source"] = _P_FINDING_SOURCE.get(rule)
    out["models"], nested["models"] = {}, {}
    for name, model_table in model_tables.items():
        out["models"][name], nested["models"][name] = {}, {}
        for variant, mode in (("seg_only", "seg_only"), ("seg_area", "area")):
            record(
                variant,
                search_rule(model_table, mode, None, cls, conf, folds),
                out["models"][name],
                nested["models"][name],
            )
    if folds is not None:
        out["nested"] = nested
    out["triplets"] = triplets
    out["decision"] = decision
    return out
