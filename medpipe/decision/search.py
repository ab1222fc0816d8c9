"""The grid search over post-processing settings, scored on out-of-fold predictions.

An image is predicted empty when the classifier says so (``p_finding < cls_threshold``, the
"fusion" mode) or, without a classifier, when fewer than ``min_confident_area`` pixels exceed
``top_score_threshold`` (the "area" mode); "seg_only" never empties an image. Otherwise its
mask is ``prob > pixel_threshold`` with connected components smaller than ``min_area``
removed: the SIIM winners' triplet. The search is vectorised: per pixel threshold the
components of every image are labelled once (:func:`~medpipe.decision.morphology.label_images`),
per-image intersection and area follow for every ``min_area`` from per-component counts, and
the classification rule is a matrix product over the resulting per-image Dice table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medpipe.decision.morphology import label_images
from medpipe.predictions.stored import image_chunks

__all__ = [
    "DiceTables",
    "grid_values",
    "dice_tables",
    "dice_tables_streamed",
    "search_rule",
    "public_setting",
]

_AXES = {
    "fusion": ["cls_threshold", "pixel_threshold", "min_area"],
    "area": ["top_score_threshold", "min_confident_area", "pixel_threshold", "min_area"],
}


def _dice(inter: np.ndarray, pred_area: np.ndarray, truth_area: np.ndarray) -> np.ndarray:
    total = pred_area + truth_area
    return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))


@dataclass
class DiceTables:
    """Per-image Dice of the segmentation rule for every (pixel threshold, min area), and the
    per-image counts the classification rules need."""

    dice: np.ndarray  # (N, T, A)
    empty_score: np.ndarray  # (N,) score of predicting empty: 1 where the truth is empty
    confident: np.ndarray  # (N, Ct) pixels above each top-score threshold
    pixel_grid: list[float]
    area_grid: list[float]
    top_grid: list[float]


def grid_values(values: Sequence[float] | np.ndarray, name: str) -> list[float]:
    """``values`` as a non-empty list of floats; ``name`` is the grid's, for the error.

    Example:
        >>> grid_values(0.5, "cls_grid")
        [0.5]
    """
    values = [float(v) for v in np.atleast_1d(np.asarray(values, dtype=np.float64))]
    if not values:
        raise ValueError(f"thresholds: {name} is empty")
    return values


def dice_tables(
    prob: np.ndarray,
    truth: np.ndarray,
    pixel_grid: Sequence[float],
    area_grid: Sequence[float],
    top_grid: Sequence[float] = (),
) -> DiceTables:
    """Score every (pixel threshold, min area) on every image, once for all the rules.

    Args:
        prob: ``(N, S, S)`` out-of-fold probabilities (float16/32).
        truth: ``(N, S, S)`` masks in {0, 1}.
        top_grid: top-score thresholds whose confident-pixel counts the area mode needs.

    Example:
        >>> tables = dice_tables(oof_prob, masks, [0.4, 0.5], [0, 10], [0.7])  # doctest: +SKIP
    """
    if prob.ndim != 3 or prob.shape != truth.shape:
        raise ValueError(
            f"thresholds: prob {prob.shape} and truth {truth.shape} must be equal (N, H, W)"
        )
    if len(prob) == 0:
        raise ValueError("thresholds: no images")
    chunks = (
        (np.arange(sl.start, sl.stop), prob[sl], truth[sl])
        for sl in image_chunks(len(prob), prob[0].size)
    )
    return dice_tables_streamed(chunks, len(prob), pixel_grid, area_grid, top_grid)


def dice_tables_streamed(
    chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    n: int,
    pixel_grid: Sequence[float],
    area_grid: Sequence[float],
    top_grid: Sequence[float] = (),
) -> DiceTables:
    """:func:`dice_tables` from chunks of images, so the maps never need to be in memory at once.

    Args:
        chunks: ``(rows, prob, truth)``: the table rows (image positions) of a chunk, its
            ``(m, S, S)`` probabilities and masks. Every row ``0..n-1`` must come exactly once.
            Each image's values depend on that image alone, so any chunking gives the same tables.
    """
    pixel_grid, area_grid = (
        grid_values(pixel_grid, "pixel_grid"),
        grid_values(area_grid, "area_grid"),
    )
    top_grid = [float(v) for v in top_grid]
    dice = np.empty((n, len(pixel_grid), len(area_grid)))
    confident = np.zeros((n, len(top_grid)), dtype=np.int64)
    empty_score = np.empty(n)
    filled = np.zeros(n, dtype=np.int64)
    areas = np.asarray(area_grid)
    for sl, prob, truth in chunks:
        p = np.asarray(prob, dtype=np.float32)
        g = np.asarray(truth).astype(bool)
        m = len(p)
        np.add.at(filled, sl, 1)
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
    if (filled != 1).any():
        raise ValueError(
            f"thresholds: {int((filled == 0).sum())} images had no chunk, "
            f"{int((filled > 1).sum())} more than one"
        )
    return DiceTables(dice, empty_score, confident, pixel_grid, area_grid, top_grid)


def _keep_matrix(
    tables: DiceTables,
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


def _cube(tables: DiceTables, keep: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Mean score over images for every (classification setting, pixel threshold, min area)."""
    dice = tables.dice.reshape(len(tables.dice), -1)
    empty = tables.empty_score
    if rows is not None:
        dice, empty, keep = dice[rows], empty[rows], keep[rows]
    k = keep.astype(np.float64)
    total = k.T @ dice + ((1.0 - k).T @ empty)[:, None]
    return total / max(len(dice), 1)


def _per_image(tables: DiceTables, keep: np.ndarray, flat_index: int) -> np.ndarray:
    c, ta = np.unravel_index(
        flat_index, (keep.shape[1], tables.dice.shape[1] * tables.dice.shape[2])
    )
    dice = tables.dice.reshape(len(tables.dice), -1)[:, ta]
    return np.where(keep[:, c], dice, tables.empty_score)


def search_rule(
    tables: DiceTables,
    mode: str,
    p_finding: np.ndarray | None,
    cls_grid: list[float],
    conf_grid: list[float],
    folds: np.ndarray | None = None,
) -> dict[str, Any]:
    """Best setting of one mode, its score cube and, with ``folds``, a nested-CV score.

    Ties go to the first setting, i.e. the lowest thresholds. Keys starting with ``_`` hold
    arrays (``_cube``, ``_per_image``, ``_nested_per_image``); :func:`public_setting` drops them.

    Args:
        tables: from :func:`dice_tables`.
        mode: ``seg_only``, ``area`` or ``fusion``.
        p_finding: ``(N,)`` probability that the image has a finding (``fusion`` only).
        cls_grid: ``cls_threshold`` values (``fusion``).
        conf_grid: ``min_confident_area`` values (``area``).
        folds: ``(N,)`` fold of each image: the setting chosen on the other folds is scored on
            each held-out one.

    Example:
        >>> best = search_rule(tables, "fusion", p_oof, [0.3, 0.5], [0])  # doctest: +SKIP
        >>> best["cls_threshold"], best["pixel_threshold"], best["min_area"]  # doctest: +SKIP
        (0.5, 0.4, 10.0)
    """
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


def public_setting(result: dict[str, Any], grids: dict[str, list[float]]) -> dict[str, Any]:
    """A :func:`search_rule` result as JSON: its setting and score, and ``grid``: the axes of
    its mode, each axis's values from ``grids`` and the score cube (for the heat map).

    Example:
        >>> public_setting(search_rule(tables, "seg_only", None, [0.5], [0]), grids)["grid"]["axes"]  # doctest: +SKIP
        ['pixel_threshold', 'min_area']
    """
    out = {k: v for k, v in result.items() if not k.startswith("_")}
    axes = _AXES.get(result["mode"], ["pixel_threshold", "min_area"])
    out["grid"] = {
        "axes": axes,
        **{axis: grids[axis] for axis in axes},
        "scores": result["_cube"].round(6).tolist(),
    }
    return out
