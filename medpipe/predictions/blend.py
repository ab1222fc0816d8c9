"""The ensemble's blend: the models' probabilities weighted, the weights chosen on OOF.

Weights are searched on OOF for the competition metric and fall back to equal weights unless
the search beats them by a margin, so noise in a small OOF set cannot pick a lopsided blend.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from medpipe.predictions.stored import image_chunks

__all__ = ["blend", "optimise_weights", "optimise_weights_of"]

log = logging.getLogger(__name__)


def _normalised(weights: Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    total = float(sum(weights.get(n, 0.0) for n in names))
    if total <= 0:
        raise ValueError(f"blend: weights {dict(weights)} sum to {total}, need > 0")
    return {n: float(weights.get(n, 0.0)) / total for n in names}


def blend(probs: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Weighted mean of the models' probabilities (float32); weights are normalised.

    Example:
        >>> blend({"a": np.ones((1, 2, 2)), "b": np.zeros((1, 2, 2))}, {"a": 3, "b": 1})[0, 0, 0]
        np.float32(0.75)
    """
    unknown = set(weights) - set(probs)
    if unknown:
        raise ValueError(
            f"blend: weights for unknown models {sorted(unknown)} (models: {sorted(probs)})"
        )
    names = list(probs)
    w = _normalised(weights, names)
    shapes = {probs[n].shape for n in names}
    if len(shapes) != 1:
        raise ValueError(f"blend: models have different shapes {shapes}")
    shape = shapes.pop()
    out = np.zeros(shape, np.float32)
    for sl in image_chunks(shape[0], int(np.prod(shape[1:]))):
        for n in names:
            if w[n] > 0:
                out[sl] += np.float32(w[n]) * np.asarray(probs[n][sl], dtype=np.float32)
    return out


Chunks = Callable[[], Iterable[tuple[np.ndarray, Mapping[str, np.ndarray], np.ndarray]]]


def _array_chunks(probs: Mapping[str, np.ndarray], truths: np.ndarray) -> Chunks:
    """In-memory maps as the chunks :class:`OofMaps` streams: ``(rows, {model: maps}, truth)``."""
    n = len(truths)

    def chunks():
        for sl in image_chunks(n, truths[0].size):
            yield np.arange(sl.start, sl.stop), {k: v[sl] for k, v in probs.items()}, truths[sl]

    return chunks


def _blend_dice(
    chunks: Chunks,
    n: int,
    weights: Mapping[str, float],
    keep_image: np.ndarray | None,
    pixel_grid: Sequence[float],
) -> np.ndarray:
    """Per-image Dice of the blend at each pixel threshold ``(n, len(pixel_grid))`` (no
    min-area filtering; images below the gate empty): one pass over the chunks."""
    dice = np.zeros((n, len(pixel_grid)))
    empty = np.zeros(n, dtype=bool)
    for rows, probs, truth in chunks():
        b = blend(probs, weights)
        g = np.asarray(truth).astype(bool).reshape(len(b), -1)
        b = b.reshape(len(b), -1)
        truth_area = g.sum(axis=1)
        empty[rows] = truth_area == 0
        for k, t in enumerate(pixel_grid):
            pred = b > np.float32(t)
            total = pred.sum(axis=1) + truth_area
            inter = (pred & g).sum(axis=1)
            dice[rows, k] = np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))
    if keep_image is not None:
        dice[~keep_image] = empty[~keep_image, None]
    return dice


def optimise_weights(
    probs: Mapping[str, np.ndarray], truths: np.ndarray, **search: Any
) -> dict[str, float]:
    """Model weights that maximise the OOF competition metric, from maps held in memory.

    The search itself (coordinate search over ``weight_grid``, blends scored at their best
    ``pixel_threshold``, images below ``cls_threshold`` of ``p_finding`` empty, equal weights
    unless beaten by ``margin``) is :func:`optimise_weights_of`, which takes the same keywords.

    Returns:
        model name -> weight, summing to 1.

    Example:
        >>> w = optimise_weights({"unet_regnetx": p1, "unet_r34": p2}, masks, p_finding=p_oof)  # doctest: +SKIP
        >>> prob = blend(test_probs, w)  # doctest: +SKIP
    """
    names = list(probs)
    if not names:
        raise ValueError("optimise_weights: no models")
    if any(probs[n].shape != truths.shape for n in names):
        raise ValueError(
            f"optimise_weights: prob shapes {[probs[n].shape for n in names]} differ from truths {truths.shape}"
        )
    return optimise_weights_of(_array_chunks(probs, truths), names, len(truths), **search)


def optimise_weights_of(
    chunks: Chunks,
    names: Sequence[str],
    n_images: int,
    *,
    p_finding: np.ndarray | None = None,
    cls_threshold: float = 0.5,
    pixel_grid: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7),
    weight_grid: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    rounds: int = 2,
    margin: float = 0.002,
    select: np.ndarray | None = None,
    cache: dict | None = None,
) -> dict[str, float]:
    """Model weights that maximise the OOF competition metric, by coordinate search, over
    streamed chunks (``OofMaps.chunks``): each blend scored is one pass over the OOF files, so
    memory stays one chunk whatever the number of images.

    Each round tries every ``weight_grid`` value for one model at a time (others fixed) and keeps
    the best; a blend is scored at its best ``pixel_threshold`` and, with ``p_finding``, with
    images below ``cls_threshold`` predicted empty. Equal weights are returned unless the search
    beats them by ``margin``. ``select`` (a boolean per image) scores only those images: the
    nested CV chooses each outer fold's weights on the other folds. Searches that pass the same
    ``cache`` (and the same chunks, ``p_finding`` and grids) share the blends' per-image Dice, so
    the searches of every fold cost about the passes of one.
    """
    names = list(names)
    equal = {n: 1.0 / len(names) for n in names}
    if len(names) == 1:
        return equal
    keep = None if p_finding is None else np.asarray(p_finding, dtype=np.float64) >= cls_threshold
    cache = {} if cache is None else cache
    chosen_rows = np.ones(n_images, bool) if select is None else np.asarray(select, bool)
    if len(chosen_rows) != n_images or not chosen_rows.any():
        raise ValueError(f"optimise_weights: select must mark some of the {n_images} images")
    scored: set[tuple[float, ...]] = set()

    def score(weights: Mapping[str, float]) -> float:
        w = _normalised(weights, names)
        key = tuple(round(w[n], 9) for n in names)
        if key not in cache:
            cache[key] = _blend_dice(chunks, n_images, w, keep, pixel_grid)
        scored.add(key)
        return float(cache[key][chosen_rows].mean(axis=0).max())

    base = score(equal)
    current = {n: max(weight_grid) for n in names}
    best = score(current)
    for _ in range(rounds):
        improved = False
        for n, g in itertools.product(names, weight_grid):
            trial = {**current, n: float(g)}
            if sum(trial.values()) <= 0:
                continue
            s = score(trial)
            if s > best + 1e-12:
                best, current, improved = s, trial, True
        if not improved:
            break
    chosen = _normalised(current, names)
    log.info(
        "optimise_weights: equal %.4f, best %.4f with %s (%d blends scored, %d images)",
        base,
        best,
        chosen,
        len(scored),
        int(chosen_rows.sum()),
    )
    if best < base + margin:
        return equal
    return chosen
