"""Hand-made statistics of each image, read from the uint8 channel cache in chunks.

Per channel: mean, standard deviation, the 10th/50th/90th/99th percentiles (nearest rank, from
one histogram per image and channel), the share of bright pixels (above the channel's own mean
plus two standard deviations: spots, not overall brightness), and two texture measures (the
mean gradient magnitude and the mean absolute Laplacian). Between every pair of channels: the
Pearson correlation of their pixels (co-localisation; a flat channel correlates 0). Generic in
C: columns are named after ``data.channels`` (or ``c0``, ``c1``, ...), nothing else is assumed.

The cache is memory-mapped and read ``chunk`` images at a time, so memory stays flat in N.
These are the statistics the HPA teams found to beat a plain CNN on some draws (the fusion,
:mod:`medpipe.multilabel.fusion`, lets nested CV decide).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "PERCENTILES",
    "CHANNEL_STATISTICS",
    "statistic_names",
    "image_statistics",
    "cache_statistics",
]

PERCENTILES = (10, 50, 90, 99)
CHANNEL_STATISTICS = (
    "mean",
    "std",
    *(f"p{q}" for q in PERCENTILES),
    "bright_share",
    "gradient",
    "laplacian",
)
#: a pixel is bright when above its channel's mean plus this many standard deviations
BRIGHT_SIGMAS = 2.0
DEFAULT_CHUNK = 64


def _channel_names(n_channels: int, names: Sequence[str] | None) -> list[str]:
    if names is not None and len(names) == n_channels:
        return [str(n) for n in names]
    return [f"c{c}" for c in range(n_channels)]


def statistic_names(n_channels: int, names: Sequence[str] | None = None) -> list[str]:
    """The columns of :func:`image_statistics`, in order: every channel's statistics, then one
    correlation per channel pair.

    Example:
        >>> statistic_names(2, ["red", "green"])[-1]
        'corr_red_green'
    """
    chans = _channel_names(n_channels, names)
    per_channel = [f"{c}_{s}" for c in chans for s in CHANNEL_STATISTICS]
    pairs = [f"corr_{a}_{b}" for i, a in enumerate(chans) for b in chans[i + 1 :]]
    return per_channel + pairs


def _percentiles(images: np.ndarray) -> np.ndarray:
    """``(n, C, len(PERCENTILES))`` nearest-rank percentiles of uint8 images, from one
    histogram per image and channel (a bincount: no sort)."""
    n, c = images.shape[:2]
    pixels = images.reshape(n * c, -1)
    offsets = (np.arange(n * c, dtype=np.int64) * 256)[:, None]
    hist = np.bincount((pixels + offsets).ravel(), minlength=n * c * 256).reshape(n * c, 256)
    cdf = np.cumsum(hist, axis=1)
    # nearest rank: the smallest value v with at least ceil(q/100 * P) pixels <= v
    ranks = np.ceil(np.asarray(PERCENTILES, np.float64) / 100.0 * pixels.shape[1])
    ranks = np.maximum(ranks, 1)
    out = np.stack([np.argmax(cdf >= r, axis=1) for r in ranks], axis=1)
    return out.reshape(n, c, len(PERCENTILES)).astype(np.float32)


def image_statistics(images: np.ndarray, names: Sequence[str] | None = None) -> pd.DataFrame:
    """The statistics of a chunk of images, one row per image.

    Args:
        images: uint8 ``(n, C, H, W)``.
        names: the channel names (``data.channels``); default ``c0``, ``c1``, ...

    Example:
        >>> image_statistics(np.zeros((1, 1, 4, 4), np.uint8))["c0_mean"].tolist()
        [0.0]
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(
            f"statistics: images must be uint8 (n, C, H, W), got {images.dtype} {images.shape}"
        )
    n, c, h, w = images.shape
    x = images.astype(np.float32)
    flat = x.reshape(n, c, h * w)
    mean = flat.mean(axis=2)
    std = flat.std(axis=2)
    bright = (flat > (mean + BRIGHT_SIGMAS * std)[:, :, None]).mean(axis=2)
    gx = np.diff(x, axis=3)[:, :, :-1, :]
    gy = np.diff(x, axis=2)[:, :, :, :-1]
    gradient = np.sqrt(gx * gx + gy * gy).mean(axis=(2, 3)) if h > 1 and w > 1 else np.zeros((n, c))
    if h > 2 and w > 2:
        core = x[:, :, 1:-1, 1:-1]
        lap = (
            x[:, :, :-2, 1:-1]
            + x[:, :, 2:, 1:-1]
            + x[:, :, 1:-1, :-2]
            + x[:, :, 1:-1, 2:]
            - 4 * core
        )
        laplacian = np.abs(lap).mean(axis=(2, 3))
    else:
        laplacian = np.zeros((n, c), np.float32)
    per_channel = np.concatenate(
        [
            mean[:, :, None],
            std[:, :, None],
            _percentiles(images),
            bright[:, :, None],
            gradient[:, :, None],
            laplacian[:, :, None],
        ],
        axis=2,
    ).reshape(n, -1)
    columns = [per_channel]
    if c > 1:
        centred = flat - mean[:, :, None]
        cov = np.einsum("ncp,ndp->ncd", centred, centred) / (h * w)
        scale = np.sqrt(np.einsum("ncc->nc", cov))
        denom = scale[:, :, None] * scale[:, None, :]
        corr = np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 0)
        upper = np.triu_indices(c, k=1)
        columns.append(corr[:, upper[0], upper[1]])
    values = np.concatenate(columns, axis=1).astype(np.float64)
    return pd.DataFrame(values, columns=statistic_names(c, names))


def cache_statistics(
    cache: np.ndarray,
    rows: Sequence[int] | np.ndarray,
    names: Sequence[str] | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> pd.DataFrame:
    """:func:`image_statistics` of ``cache[rows]`` (a memory-mapped ``(N, C, S, S)`` cache), in
    ``rows``' order, read ``chunk`` images at a time in ascending cache order.

    Example:
        >>> cache_statistics(np.zeros((3, 2, 4, 4), np.uint8), [2, 0]).shape
        (2, 19)
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(cache)):
        raise ValueError(f"statistics: cache rows out of range 0..{len(cache) - 1}")
    order = np.argsort(rows, kind="stable")
    parts = []
    for start in range(0, len(rows), max(1, int(chunk))):
        picked = rows[order[start : start + chunk]]
        parts.append(image_statistics(np.asarray(cache[picked]), names))
    if not parts:
        return pd.DataFrame(columns=statistic_names(cache.shape[1], names), dtype=np.float64)
    table = pd.concat(parts, ignore_index=True)
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return table.iloc[back].reset_index(drop=True)
