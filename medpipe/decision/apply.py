"""The decided rule applied: probabilities to submission masks.

:func:`apply_triplet` turns blended probabilities and the setting of ``thresholds.json`` into
masks at cache size, with the component code the search scored
(:func:`~medpipe.decision.morphology.remove_small_components`), so the masks written for the
test set are the ones the search scored; :func:`resize_mask` brings them back to DICOM size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from medpipe.decision.morphology import remove_small_components
from medpipe.predictions.stored import image_chunks

__all__ = ["apply_triplet", "check_p_finding", "resize_mask"]


def check_p_finding(p_finding: np.ndarray | None, n: int, name: str) -> np.ndarray:
    """``p_finding`` as ``(n,)`` float64, or ``ValueError`` naming ``name`` if it has the wrong
    length or a NaN/inf.

    Example:
        >>> check_p_finding([0.2, 0.9], 2, "p_gate").tolist()
        [0.2, 0.9]
    """
    p = np.asarray(p_finding, dtype=np.float64).ravel()
    if len(p) != n:
        raise ValueError(f"thresholds: {name} has {len(p)} values for {n} images")
    if not np.isfinite(p).all():
        raise ValueError(f"thresholds: {name} has {int((~np.isfinite(p)).sum())} NaN/inf values")
    return p


def apply_triplet(
    prob: np.ndarray, p_finding: np.ndarray | None, thresholds: Mapping[str, Any]
) -> np.ndarray:
    """Boolean masks ``(N, S, S)`` from probabilities and a decided setting (``thresholds.json``).

    Args:
        prob: ``(N, S, S)`` probabilities.
        p_finding: ``(N,)`` probability of a finding; needed in mode ``fusion`` only.
        thresholds: ``mode`` (``seg_only``, ``area`` or ``fusion``), ``pixel_threshold``, ``min_area``,
            and ``cls_threshold`` (fusion) or ``top_score_threshold`` and ``min_confident_area``
            (area).

    Example:
        >>> masks = apply_triplet(test_prob, p_test, read_decision(path).thresholds())  # doctest: +SKIP
    """
    prob = np.asarray(prob)
    if prob.ndim != 3:
        raise ValueError(f"apply_triplet: expected (N, S, S) probabilities, got shape {prob.shape}")
    mode = thresholds.get("mode")  # decoded once, for old files too: layout.Decision.thresholds()
    if mode is None:
        raise ValueError(
            "apply_triplet: thresholds lack 'mode' (read the decision with layout.read_decision)"
        )
    try:
        pixel = np.float32(thresholds["pixel_threshold"])
        min_area = float(thresholds.get("min_area", 0) or 0)
        if mode == "fusion":
            if p_finding is None:
                raise ValueError(
                    "apply_triplet: the thresholds were searched with p_finding (mode fusion) but none was given"
                )
            keep_image = check_p_finding(p_finding, len(prob), "p_finding") >= float(
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
    for sl in image_chunks(len(prob), prob[0].size if len(prob) else 1):
        p = np.asarray(prob[sl], dtype=np.float32)
        m = remove_small_components(p > pixel, min_area)
        if mode == "fusion":
            m[~keep_image[sl]] = False
        elif mode == "area":
            m[(p > top).reshape(len(p), -1).sum(axis=1) < min_confident] = False
        masks[sl] = m
    return masks


def _nearest_index(n_out: int, n_in: int) -> np.ndarray:
    # Source of output pixel i is the one under its centre: floor((i + 0.5) * n_in / n_out),
    # in integers so it is exact; for an integer factor each source pixel becomes a full block.
    return (2 * np.arange(n_out, dtype=np.int64) + 1) * n_in // (2 * n_out)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of ``(H, W)`` (or ``(N, H, W)``) to ``(height, width)``.

    Nearest keeps the values (bool, labels) as they are; RLE is written at the DICOM size, so
    masks predicted at cache size come back through here.

    Example:
        >>> m = np.array([[1, 0], [0, 2]], np.uint8)
        >>> resize_mask(m, 4, 4).tolist()[1]
        [1, 1, 0, 0]
    """
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise ValueError(f"resize_mask: expected (H, W) or (N, H, W), got shape {mask.shape}")
    if height <= 0 or width <= 0:
        raise ValueError(f"resize_mask: target size must be positive, got {height}x{width}")
    h_in, w_in = mask.shape[-2:]
    if (h_in, w_in) == (height, width):
        return mask.copy()
    rows = _nearest_index(height, h_in)
    cols = _nearest_index(width, w_in)
    # Two 1-D takes are ~8x faster than one 2-D fancy index at 1024^2.
    return mask.take(rows, axis=-2).take(cols, axis=-1)
