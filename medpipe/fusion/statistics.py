"""Per-image summaries of a segmentation model's probability maps: the fusion features it gives.

Computed where the maps are still at full precision: ``predict`` stores them with each fold's
predictions (the maps themselves are stored quantised), and fusion falls back to computing them
from the stored maps for files without them. Its own module so that predict depends on this,
not on the whole fusion step.
"""

from __future__ import annotations

import numpy as np

from medpipe.decision.morphology import label_images

__all__ = ["AREA_LEVELS", "STATISTICS", "seg_statistics"]

AREA_LEVELS = (0.3, 0.5, 0.7, 0.9)
_CHUNK_PIXELS = 1 << 24

# the names seg_statistics gives, in its order
STATISTICS = ["max", "ncomp", *(f"area_p{round(level * 100)}" for level in AREA_LEVELS)]


def seg_statistics(prob: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image summaries of probability maps ``(N, S, S)``: max, pixels above each level in
    :data:`AREA_LEVELS`, and 8-connected components at 0.5.

    Example:
        >>> seg_statistics(np.full((1, 2, 2), 0.6, np.float16))["area_p50"].tolist()
        [4.0]
    """
    n = len(prob)
    out = {"max": np.zeros(n), "ncomp": np.zeros(n)}
    out.update({f"area_p{round(level * 100)}": np.zeros(n) for level in AREA_LEVELS})
    step = max(1, _CHUNK_PIXELS // max(1, prob[0].size if n else 1))
    for start in range(0, n, step):
        sl = slice(start, min(start + step, n))
        p = np.asarray(prob[sl], dtype=np.float32)
        flat = p.reshape(len(p), -1)
        out["max"][sl] = flat.max(axis=1)
        for level in AREA_LEVELS:
            out[f"area_p{round(level * 100)}"][sl] = (flat > np.float32(level)).sum(axis=1)
        _, _, image = label_images(p > np.float32(0.5))
        out["ncomp"][sl] = np.bincount(image, minlength=len(p))
    return out
