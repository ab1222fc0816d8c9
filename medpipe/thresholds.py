"""The SIIM winners' post-processing triplet, searched on out-of-fold predictions.

An image is predicted empty when the classifier says so (``p_finding < cls_threshold``, the
"fusion" rule) or, without a classifier, when fewer than ``min_confident_area`` pixels exceed
``top_score_threshold`` (the "area" rule). Otherwise its mask is ``prob > pixel_threshold`` with
connected components smaller than ``min_area`` removed. The search is vectorised: per pixel
threshold the components of every image are labelled once, per-image intersection and area
follow for every ``min_area`` from per-component counts, and the classification rule is a
matrix product over the resulting per-image Dice table. Components are 8-connected within an
image (never across images); :func:`apply_triplet` uses the same code, so the masks written for
the test set are the ones the search scored.

:func:`ablation` scores four rules (:data:`RULES`) and picks the submission's: the best nested-CV
score, since each rule's own OOF best is optimistic by how much its grid can overfit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medpipe.io.atomic import atomic_path

__all__ = [
    "label_images",
    "remove_small_components",
    "search_triplet",
    "apply_triplet",
    "plot_heatmap",
    "RULES",
    "check_rule",
    "ablation",
]

log = logging.getLogger(__name__)

# 8-connected in-plane, nothing along the image axis: one label call for a whole stack.
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True
_CHUNK_PIXELS = 1 << 24  # images per chunk so that labels (int32) stay near 64 MB

_AXES = {
    "fusion": ["cls_threshold", "pixel_threshold", "min_area"],
    "area": ["top_score_threshold", "min_confident_area", "pixel_threshold", "min_area"],
}


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


def _chunks(n: int, image_pixels: int) -> list[slice]:
    step = max(1, _CHUNK_PIXELS // max(1, image_pixels))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def label_images(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label the 8-connected components of every image in one call.

    Args:
        masks: boolean ``(N, H, W)``.

    Returns:
        ``labels`` int32 ``(N, H, W)`` (0 background, ids unique over the stack), ``sizes`` of
        components ``1..n`` (index 0 is component 1), and ``image`` of each component.

    Example:
        >>> labels, sizes, image = label_images(np.ones((2, 3, 3), bool))
        >>> sizes.tolist(), image.tolist()
        ([9, 9], [0, 1])
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"label_images: expected (N, H, W) masks, got shape {masks.shape}")
    labels, n = ndimage.label(masks, structure=_STRUCTURE)
    fg = labels[masks]  # image-major (C order), foreground only: cheaper than the full stack
    sizes = np.bincount(fg, minlength=n + 1)[1:]
    per_image = np.count_nonzero(masks.reshape(len(masks), -1), axis=1)
    has = per_image > 0
    starts = (np.cumsum(per_image) - per_image)[has]
    image = np.zeros(n, dtype=np.int64)
    if n:
        low, high = np.minimum.reduceat(fg, starts), np.maximum.reduceat(fg, starts)
        if np.all(low[1:] > high[:-1]):
            # scipy numbers components in scan order: each image holds one contiguous id range
            image = np.flatnonzero(has)[np.searchsorted(high, np.arange(1, n + 1), side="left")]
        else:
            image[fg - 1] = np.repeat(np.arange(len(masks)), per_image)
    return labels, sizes, image


def remove_small_components(masks: np.ndarray, min_area: float) -> np.ndarray:
    """``masks`` without the connected components smaller than ``min_area`` pixels.

    Example:
        >>> m = np.zeros((1, 5, 5), bool); m[0, 0, 0] = True; m[0, 2:5, 2:5] = True
        >>> int(remove_small_components(m, 2).sum())
        9
    """
    masks = np.asarray(masks, dtype=bool)
    if min_area <= 1:
        return masks.copy()
    out = np.empty_like(masks)
    for sl in _chunks(len(masks), masks[0].size if len(masks) else 1):
        labels, sizes, _ = label_images(masks[sl])
        keep = np.concatenate([[False], sizes >= min_area])
        out[sl] = keep[labels]
    return out


def _dice(inter: np.ndarray, pred_area: np.ndarray, truth_area: np.ndarray) -> np.ndarray:
    total = pred_area + truth_area
    return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))


@dataclass
class _Tables:
    """Per-image Dice of the segmentation rule for every (pixel threshold, min area), and the
    per-image counts the classification rules need."""

    dice: np.ndarray  # (N, T, A)
    empty_score: np.ndarray  # (N,) score of predicting empty: 1 where the truth is empty
    confident: np.ndarray  # (N, Ct) pixels above each top-score threshold
    pixel_grid: list[float]
    area_grid: list[float]
    top_grid: list[float]


def _grid(values: Sequence[float] | np.ndarray, name: str) -> list[float]:
    values = [float(v) for v in np.atleast_1d(np.asarray(values, dtype=np.float64))]
    if not values:
        raise ValueError(f"thresholds: {name} is empty")
    return values


def _tables(
    prob: np.ndarray,
    truth: np.ndarray,
    pixel_grid: Sequence[float],
    area_grid: Sequence[float],
    top_grid: Sequence[float] = (),
) -> _Tables:
    if prob.ndim != 3 or prob.shape != truth.shape:
        raise ValueError(
            f"thresholds: prob {prob.shape} and truth {truth.shape} must be equal (N, H, W)"
        )
    if len(prob) == 0:
        raise ValueError("thresholds: no images")
    pixel_grid, area_grid = _grid(pixel_grid, "pixel_grid"), _grid(area_grid, "area_grid")
    top_grid = [float(v) for v in top_grid]
    n = len(prob)
    dice = np.empty((n, len(pixel_grid), len(area_grid)))
    confident = np.zeros((n, len(top_grid)), dtype=np.int64)
    empty_score = np.empty(n)
    areas = np.asarray(area_grid)
    for sl in _chunks(n, prob[0].size):
        p = np.asarray(prob[sl], dtype=np.float32)
        g = np.asarray(truth[sl]).astype(bool)
        m = len(p)
        truth_area = g.reshape(m, -1).sum(axis=1)
        empty_score[sl] = truth_area == 0
        for j, top in enumerate(top_grid):
            confident[sl, j] = (p > np.float32(top)).reshape(m, -1).sum(axis=1)
        for k, t in enumerate(pixel_grid):
            labels, sizes, image = label_images(p > np.float32(t))
            inter = np.bincount(labels[g], minlength=len(sizes) + 1)[1:]
            keep = sizes[:, None] >= areas[None, :]  # (components, A)
            for a in range(len(areas)):
                pred_area = np.bincount(image, weights=sizes * keep[:, a], minlength=m)
                pred_inter = np.bincount(image, weights=inter * keep[:, a], minlength=m)
                dice[sl, k, a] = _dice(pred_inter, pred_area, truth_area)
    return _Tables(dice, empty_score, confident, pixel_grid, area_grid, top_grid)


def _keep_matrix(
    tables: _Tables,
    mode: str,
    p_finding: np.ndarray | None,
    cls_grid: list[float],
    conf_grid: list[float],
) -> np.ndarray:
    """(N, K) bool: whether each image keeps its mask under each classification setting."""
    n = len(tables.dice)
    if mode == "seg_only":
        return np.ones((n, 1), dtype=bool)
    if mode == "fusion":
        return p_finding[:, None] >= np.asarray(cls_grid)[None, :]
    return (tables.confident[:, :, None] >= np.asarray(conf_grid)[None, None, :]).reshape(n, -1)


def _cube(tables: _Tables, keep: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Mean score over images for every (classification setting, pixel threshold, min area)."""
    dice = tables.dice.reshape(len(tables.dice), -1)
    empty = tables.empty_score
    if rows is not None:
        dice, empty, keep = dice[rows], empty[rows], keep[rows]
    k = keep.astype(np.float64)
    total = k.T @ dice + ((1.0 - k).T @ empty)[:, None]
    return total / max(len(dice), 1)


def _per_image(tables: _Tables, keep: np.ndarray, flat_index: int) -> np.ndarray:
    c, ta = np.unravel_index(
        flat_index, (keep.shape[1], tables.dice.shape[1] * tables.dice.shape[2])
    )
    dice = tables.dice.reshape(len(tables.dice), -1)[:, ta]
    return np.where(keep[:, c], dice, tables.empty_score)


def _check_p(p_finding: np.ndarray | None, n: int, name: str) -> np.ndarray:
    p = np.asarray(p_finding, dtype=np.float64).ravel()
    if len(p) != n:
        raise ValueError(f"thresholds: {name} has {len(p)} values for {n} images")
    if not np.isfinite(p).all():
        raise ValueError(f"thresholds: {name} has {int((~np.isfinite(p)).sum())} NaN/inf values")
    return p


def _evaluate(
    tables: _Tables,
    mode: str,
    p_finding: np.ndarray | None,
    cls_grid: list[float],
    conf_grid: list[float],
    folds: np.ndarray | None = None,
) -> dict[str, Any]:
    """Best setting of one rule, its score cube and, with ``folds``, a nested-CV score."""
    keep = _keep_matrix(tables, mode, p_finding, cls_grid, conf_grid)
    cube = _cube(tables, keep)
    best = int(np.argmax(cube))  # ties: the first, i.e. the lowest thresholds
    t_count, a_count = tables.dice.shape[1:]
    c, t, a = np.unravel_index(best, (keep.shape[1], t_count, a_count))
    result: dict[str, Any] = {
        "mode": mode,
        "pixel_threshold": tables.pixel_grid[t],
        "min_area": tables.area_grid[a],
        "score": float(cube.ravel()[best]),
    }
    if mode == "fusion":
        result["cls_threshold"] = cls_grid[c]
        shape = (len(cls_grid), t_count, a_count)
    elif mode == "area":
        ct, ca = np.unravel_index(c, (len(tables.top_grid), len(conf_grid)))
        result["cls_threshold"] = None
        result["top_score_threshold"] = tables.top_grid[ct]
        result["min_confident_area"] = conf_grid[ca]
        shape = (len(tables.top_grid), len(conf_grid), t_count, a_count)
    else:
        result["cls_threshold"] = None
        shape = (t_count, a_count)
    result["_cube"] = cube.reshape(shape)
    result["_per_image"] = _per_image(tables, keep, best)
    if folds is not None:
        folds = np.asarray(folds)
        scores = np.empty(len(folds))
        for f in np.unique(folds):
            inside = folds == f
            chosen = int(np.argmax(_cube(tables, keep, ~inside))) if (~inside).any() else best
            scores[inside] = _per_image(tables, keep, chosen)[inside]
        result["nested_score"] = float(scores.mean())
        result["_nested_per_image"] = scores
    return result


def _public(result: dict[str, Any], grids: dict[str, list[float]]) -> dict[str, Any]:
    out = {k: v for k, v in result.items() if not k.startswith("_")}
    axes = _AXES.get(result["mode"], ["pixel_threshold", "min_area"])
    out["grid"] = {
        "axes": axes,
        **{axis: grids[axis] for axis in axes},
        "scores": result["_cube"].round(6).tolist(),
    }
    return out


def search_triplet(
    prob: np.ndarray,
    truth: np.ndarray,
    p_finding: np.ndarray | None,
    cls_grid: Sequence[float],
    pixel_grid: Sequence[float],
    area_grid: Sequence[float],
    *,
    top_grid: Sequence[float] | None = None,
    confident_area_grid: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Grid-search the post-processing that maximises the OOF competition metric.

    With ``p_finding`` (the "fusion" mode) the image is empty when ``p_finding < cls_threshold``.
    Without it (the "area" mode) the image is empty when fewer than ``min_confident_area`` pixels
    exceed ``top_score_threshold``; those grids default to ``cls_grid`` and ``area_grid``. In
    both, the mask is ``prob > pixel_threshold`` minus components smaller than ``min_area``.
    Ties go to the lowest thresholds.

    Args:
        prob: ``(N, S, S)`` out-of-fold probabilities (float16/32).
        truth: ``(N, S, S)`` masks in {0, 1}.
        p_finding: ``(N,)`` out-of-fold probability that the image has a finding, or None.

    Returns:
        ``{"mode", "cls_threshold" (None in area mode), "pixel_threshold", "min_area", "score",
        "grid": {"axes", <one list per axis>, "scores": nested list}}``, plus
        ``top_score_threshold`` and ``min_confident_area`` in area mode. JSON-serialisable.

    Example:
        >>> best = search_triplet(oof_prob, masks, p_oof, [0.3, 0.5], [0.4, 0.5], [0, 10])  # doctest: +SKIP
        >>> best["cls_threshold"], best["pixel_threshold"], best["min_area"]  # doctest: +SKIP
        (0.5, 0.4, 10.0)
    """
    mode = "area" if p_finding is None else "fusion"
    cls_grid = _grid(cls_grid, "cls_grid")
    top = (
        _grid(top_grid if top_grid is not None else cls_grid, "top_grid") if mode == "area" else []
    )
    conf = _grid(
        confident_area_grid if confident_area_grid is not None else area_grid, "confident_area_grid"
    )
    tables = _tables(prob, np.asarray(truth), pixel_grid, area_grid, top)
    p = _check_p(p_finding, len(prob), "p_finding") if mode == "fusion" else None
    result = _evaluate(tables, mode, p, cls_grid, conf)
    grids = {
        "cls_threshold": cls_grid,
        "top_score_threshold": top,
        "min_confident_area": conf,
        "pixel_threshold": tables.pixel_grid,
        "min_area": tables.area_grid,
    }
    return _public(result, grids)


def apply_triplet(
    prob: np.ndarray, p_finding: np.ndarray | None, thresholds: Mapping[str, Any]
) -> np.ndarray:
    """Boolean masks ``(N, S, S)`` from probabilities and a :func:`search_triplet` result.

    Example:
        >>> masks = apply_triplet(test_prob, p_test, json.loads(Path("thresholds.json").read_text()))  # doctest: +SKIP
    """
    prob = np.asarray(prob)
    if prob.ndim != 3:
        raise ValueError(f"apply_triplet: expected (N, S, S) probabilities, got shape {prob.shape}")
    mode = thresholds.get("mode") or (
        "fusion" if thresholds.get("cls_threshold") is not None else "area"
    )
    try:
        pixel = np.float32(thresholds["pixel_threshold"])
        min_area = float(thresholds.get("min_area", 0) or 0)
        if mode == "fusion":
            if p_finding is None:
                raise ValueError(
                    "apply_triplet: the thresholds were searched with p_finding (mode fusion) but none was given"
                )
            keep_image = _check_p(p_finding, len(prob), "p_finding") >= float(
                thresholds["cls_threshold"]
            )
        elif mode == "area":
            top = np.float32(thresholds["top_score_threshold"])
            min_confident = float(thresholds["min_confident_area"])
        elif mode != "seg_only":
            raise ValueError(f"apply_triplet: unknown mode {mode!r}")
    except KeyError as err:
        raise ValueError(f"apply_triplet: thresholds lack {err.args[0]!r} (mode {mode})") from err
    masks = np.zeros(prob.shape, dtype=bool)
    for sl in _chunks(len(prob), prob[0].size if len(prob) else 1):
        p = np.asarray(prob[sl], dtype=np.float32)
        m = remove_small_components(p > pixel, min_area)
        if mode == "fusion":
            m[~keep_image[sl]] = False
        elif mode == "area":
            m[(p > top).reshape(len(p), -1).sum(axis=1) < min_confident] = False
        masks[sl] = m
    return masks


def plot_heatmap(result: Mapping[str, Any], out_png: str | Path) -> None:
    """Metric over (cls or top-score threshold × pixel threshold) at the chosen min area(s).

    Example:
        >>> plot_heatmap(search_triplet(...), Path("stage1/thresholds.png"))  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = result["grid"]
    cube = np.asarray(grid["scores"], dtype=np.float64)
    a = grid["min_area"].index(result["min_area"])
    if result["mode"] == "fusion":
        source = result.get("p_finding_source")
        ylabel = f"cls_threshold on the {source} p(finding)" if source else "cls_threshold"
        plane, yvals = cube[:, :, a], grid["cls_threshold"]
    elif result["mode"] == "area":
        ca = grid["min_confident_area"].index(result["min_confident_area"])
        plane, ylabel, yvals = (
            cube[:, ca, :, a],
            f"top_score_threshold (min_confident_area {result['min_confident_area']:g})",
            grid["top_score_threshold"],
        )
    else:
        plane, ylabel, yvals = cube[None, :, a], "", [0.0]
    xvals = grid["pixel_threshold"]
    # at least 7x4.5 inches, so that the title and the axis labels fit on the smallest grids
    fig, ax = plt.subplots(
        figsize=(max(7.0, 2.0 + 0.8 * len(xvals)), max(4.5, 1.8 + 0.55 * len(yvals)))
    )
    image = ax.imshow(plane, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(xvals)), [f"{v:g}" for v in xvals])
    ax.set_yticks(range(len(yvals)), [f"{v:g}" for v in yvals])
    ax.set_xlabel("pixel_threshold")
    ax.set_ylabel(ylabel)
    if plane.size <= 400:
        lo, hi = float(np.nanmin(plane)), float(np.nanmax(plane))
        for (i, j), v in np.ndenumerate(plane):
            light = hi > lo and (v - lo) / (hi - lo) > 0.6  # viridis is light at the top
            ax.text(
                j, i, f"{v:.3f}", ha="center", va="center", fontsize=8, color="k" if light else "w"
            )
    best_y = yvals.index(
        result["cls_threshold"]
        if result["mode"] == "fusion"
        else result.get("top_score_threshold", 0.0)
    )
    ax.add_patch(
        plt.Rectangle(
            (xvals.index(result["pixel_threshold"]) - 0.5, best_y - 0.5),
            1,
            1,
            fill=False,
            ec="red",
            lw=2,
        )
    )
    ax.set_title(
        f"OOF competition dice at min_area {result['min_area']:g}\n"
        f"best {result['score']:.4f} (red box), "
        + (f"rule {result['rule']}" if result.get("rule") else f"{result['mode']} mode"),
        fontsize=9,
    )
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


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
    """OOF competition metric of each stage of the pipeline, and the submission's rule.

    Every variant gets its own best setting on the grids (scores are therefore optimistic);
    with ``folds`` each also gets a nested-CV score, the setting chosen on the other folds and
    scored on the held-out one, which is the honest estimate. The submission's rule is the
    variant with the best nested score (best OOF score without ``folds``), ties going to the
    simpler one (the order of :data:`RULES`), unless ``rule`` forces one.

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
        ``decision`` is its setting as :func:`search_triplet` returns it (with ``grid``, for
        :func:`plot_heatmap`), plus ``rule``, ``p_finding_source`` and ``nested_score``.

    Example:
        >>> cv = ablation(prob, masks, cls_grid=[0.5], pixel_grid=[0.5], area_grid=[0],
        ...               p_fused=p_oof, folds=fold_of_image)  # doctest: +SKIP
    """
    truth = np.asarray(truth)
    cls = _grid(cls_grid, "cls_grid")
    top = _grid(top_grid if top_grid is not None else cls, "top_grid")
    conf = _grid(
        confident_area_grid if confident_area_grid is not None else area_grid, "confident_area_grid"
    )
    n = len(prob)
    empty = ~truth.reshape(n, -1).any(axis=1)
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

    tables = _tables(prob, truth, pixel_grid, area_grid, top)
    p_of = {"seg_only": None, "seg_area": None}
    if p_gate is not None:
        p_of["seg_gate"] = _check_p(p_gate, n, "p_gate")
    if p_fused is not None:
        p_of["seg_gate_lgbm"] = _check_p(p_fused, n, "p_fused")
    results = {}
    for name, p in p_of.items():
        results[name] = _evaluate(tables, _RULE_MODE[name], p, cls, conf, folds)
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
    decision = {"rule": rule, **_public(results[rule], grids)}
    decision["p_finding_source"] = _P_FINDING_SOURCE.get(rule)
    out["models"], nested["models"] = {}, {}
    for name, model_prob in (model_probs or {}).items():
        model_tables = _tables(model_prob, truth, pixel_grid, area_grid, top)
        out["models"][name], nested["models"][name] = {}, {}
        for variant, mode in (("seg_only", "seg_only"), ("seg_area", "area")):
            record(
                variant,
                _evaluate(model_tables, mode, None, cls, conf, folds),
                out["models"][name],
                nested["models"][name],
            )
    if folds is not None:
        out["nested"] = nested
    out["triplets"] = triplets
    out["decision"] = decision
    return out
