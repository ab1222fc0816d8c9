"""Fabricated out-of-fold probabilities whose best post-processing settings are known."""

from __future__ import annotations

import numpy as np

S = 24

GRIDS = dict(
    cls_grid=[0.3, 0.4, 0.5, 0.6, 0.7], pixel_grid=[0.3, 0.5, 0.7], area_grid=[0, 3, 5, 10]
)


def constructed(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Data whose only perfect setting is cls 0.5, pixel 0.5, min_area 5.

    Positives: a 3x3 truth blob (centre 0.8, edge 0.65: pixel 0.7 loses the edge) in a ring
    of 0.45 (pixel 0.3 adds the ring). Every image: a 2x2 spurious square at 0.9 (min_area 3
    keeps it, 10 also removes the 9-pixel blob). Half the negatives have a blob at 0.8 that
    only the classifier can remove: p_finding 0.55..0.95 for positives, up to 0.45 for negatives.
    """
    rng = np.random.default_rng(seed)
    prob = np.full((n, S, S), 0.05, np.float32)
    truth = np.zeros((n, S, S), np.uint8)
    positive = np.arange(n) % 2 == 0
    p = np.where(positive, rng.uniform(0.55, 0.95, n), rng.uniform(0.0, 0.45, n))
    p[np.flatnonzero(positive)[0]] = 0.55
    p[np.flatnonzero(~positive)[0]] = 0.45
    for i in range(n):
        prob[i, 18:20, 18:20] = 0.9
        if positive[i] or i % 4 == 1:
            prob[i, 4:9, 4:9] = 0.45
            prob[i, 5:8, 5:8] = 0.65
            prob[i, 6, 6] = 0.8
        if positive[i]:
            truth[i, 5:8, 5:8] = 1
    return prob.astype(np.float16), truth, p


def fold_shifted() -> dict:
    """A LightGBM p that overfits the grid and a gate that does not, with two folds.

    The fused p separates fold 0 at cls 0.5 and fold 1 only at 0.7, so its OOF best (0.5 for
    all) beats the gate's, while a setting chosen on one fold fails the other. The gate lets 6
    of the 10 negatives with a blob through, the same way in both folds.
    """
    prob, truth, p = constructed()
    n = len(p)
    positive = np.arange(n) % 2 == 0
    folds = (np.arange(n) // 4) % 2
    fused = np.where(folds == 0, np.where(positive, 0.6, 0.4), np.where(positive, 0.8, 0.65))
    gate = p.copy()
    gate[np.flatnonzero(np.arange(n) % 4 == 1)[:6]] = 0.9
    return dict(prob=prob, truth=truth, p_gate=gate, p_fused=fused, folds=folds)
