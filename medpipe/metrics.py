"""The competition metric: mean per-image Dice, where empty-vs-empty scores 1."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["dice_per_image", "competition_dice"]


def dice_per_image(preds: np.ndarray | Sequence[np.ndarray], truths: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Dice of each image pair; 1 when both masks are empty, 0 when exactly one is.

    Args:
        preds: boolean masks, an ``(N, H, W)`` array or a sequence of ``(H, W)`` arrays.
        truths: boolean masks of the same shapes.
    """
    if len(preds) != len(truths):
        raise ValueError(f"competition_dice: {len(preds)} predictions but {len(truths)} truths")
    if isinstance(preds, np.ndarray) and isinstance(truths, np.ndarray) and preds.ndim == 3:
        p = preds.reshape(len(preds), -1).astype(bool)
        t = truths.reshape(len(truths), -1).astype(bool)
        inter = np.count_nonzero(p & t, axis=1)
        total = np.count_nonzero(p, axis=1) + np.count_nonzero(t, axis=1)
    else:
        inter = np.array([np.count_nonzero(np.logical_and(a, b)) for a, b in zip(preds, truths)])
        total = np.array([np.count_nonzero(a) + np.count_nonzero(b) for a, b in zip(preds, truths)])
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))
    return scores.astype(np.float64)


def competition_dice(preds: np.ndarray | Sequence[np.ndarray], truths: np.ndarray | Sequence[np.ndarray]) -> float:
    """Mean over images of Dice (SIIM-ACR scoring).

    Example:
        >>> import numpy as np
        >>> competition_dice(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 4), bool))
        1.0
    """
    if len(preds) == 0:
        raise ValueError("competition_dice: no images")
    return float(dice_per_image(preds, truths).mean())
