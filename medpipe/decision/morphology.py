"""Connected components of image stacks: 8-connected in-plane, never across images.

The threshold search, the applied rule and the fusion features all label components here, so
the masks written for the test set follow the rule the search scored.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medpipe.predictions.stored import image_chunks

__all__ = ["label_images", "remove_small_components"]

# 8-connected in-plane, nothing along the image axis: one label call for a whole stack.
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True


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
    for sl in image_chunks(len(masks), masks[0].size if len(masks) else 1):
        labels, sizes, _ = label_images(masks[sl])
        keep = np.concatenate([[False], sizes >= min_area])
        out[sl] = keep[labels]
    return out
