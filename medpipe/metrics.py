"""The competition metric: mean per-image Dice, where empty-vs-empty scores 1."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["dice_per_image", "competition_dice"]


def dice_per_image(
    preds: np.ndarray | Sequence[np.ndarray], truths: np.ndarray | Sequence[np.ndarray]
) -> np.ndarray:
    """Dice of each image pair; 1 when both masks are empty, 0 when exactly one is.

    Args:
        preds: boolean masks, an ``(N, H, W)`` array or a sequence of ``(H, W)`` arrays.
        truths: boolean masks of the same shapes.
    """
    if len(preds) != len(truths):
        raise ValueError(f"competition_dice: {len(preds)} predictions but {len(truths)} truths")
    for name, value in (("predictions", preds), ("truths", truths)):
        # a single (H, W) array would otherwise be scored row by row
        if isinstance(value, np.ndarray) and value.dtype != object and value.ndim != 3:
            raise ValueError(
                f"competition_dice: {name} must be (N, H, W) or a list of (H, W), got shape {value.shape}"
            )
    if (
        isinstance(preds, np.ndarray)
        and isinstance(truths, np.ndarray)
        and preds.ndim == truths.ndim == 3
    ):
        if preds.shape != truths.shape:
            raise ValueError(
                f"competition_dice: prediction shape {preds.shape} != truth shape {truths.shape}"
            )
        p = preds.reshape(len(preds), -1).astype(bool)
        t = truths.reshape(len(truths), -1).astype(bool)
        inter = np.count_nonzero(p & t, axis=1)
        total = np.count_nonzero(p, axis=1) + np.count_nonzero(t, axis=1)
    else:
        pairs = [(np.asarray(a), np.asarray(b)) for a, b in zip(preds, truths, strict=True)]
        for i, (a, b) in enumerate(pairs):
            # logical_and would broadcast (1, W) against (H, W) and score the wrong pixels
            if a.shape != b.shape:
                raise ValueError(
                    f"competition_dice: image {i}: prediction shape {a.shape} != truth shape {b.shape}"
                )
        inter = np.array([np.count_nonzero(np.logical_and(a, b)) for a, b in pairs], dtype=np.int64)
        total = np.array(
            [np.count_nonzero(a) + np.count_nonzero(b) for a, b in pairs], dtype=np.int64
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))
    return scores.astype(np.float64)


def competition_dice(
    preds: np.ndarray | Sequence[np.ndarray], truths: np.ndarray | Sequence[np.ndarray]
) -> float:
    """Mean over images of Dice (SIIM-ACR scoring).

    Example:
        >>> import numpy as np
        >>> competition_dice(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 4), bool))
        1.0
    """
    if len(preds) == 0:
        raise ValueError("competition_dice: no images")
    return float(dice_per_image(preds, truths).mean())
