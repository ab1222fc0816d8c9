"""Plot primitives shared by the report's sections: image tiles with outlines, grids of tiles.

Figures are bare ``matplotlib.figure.Figure`` objects (the Agg canvas), never pyplot, so building
a report leaves the process's global plotting state alone and needs no display.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

__all__ = ["new_figure", "draw_tile", "tile_grid", "TRUTH_COLOUR", "PRED_COLOUR"]

TRUTH_COLOUR = "#00d060"
PRED_COLOUR = "#ff3030"


def new_figure(width: float, height: float, rows: int = 1, cols: int = 1):
    """A figure and a flat array of its axes."""
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes.ravel()


def _outline(ax, mask: np.ndarray, colour: str, width: float) -> None:
    mask = np.asarray(mask) > 0
    if mask.any() and not mask.all():
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=width)


def draw_tile(
    ax,
    image: np.ndarray,
    truth: np.ndarray | None = None,
    pred: np.ndarray | None = None,
    prob: np.ndarray | None = None,
    title: str = "",
) -> None:
    """A grey film with the truth outlined in green, the prediction in red, the probability as heat.

    The truth is also tinted, so a finding too small to outline still shows.
    """
    ax.imshow(np.asarray(image), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    if prob is not None:
        heat = np.ma.masked_less(np.asarray(prob, dtype=np.float32), 0.05)
        ax.imshow(heat, cmap="inferno", vmin=0, vmax=1, alpha=0.45, interpolation="nearest")
    if truth is not None and np.asarray(truth).any():
        tint = np.ma.masked_equal(np.asarray(truth, dtype=np.float32), 0)
        ax.imshow(tint, cmap="summer", vmin=0, vmax=1, alpha=0.25, interpolation="nearest")
        _outline(ax, truth, TRUTH_COLOUR, 1.2)
    if pred is not None:
        _outline(ax, pred, PRED_COLOUR, 1.2)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def tile_grid(
    images: Sequence[np.ndarray],
    *,
    truths: Sequence[np.ndarray | None] | None = None,
    preds: Sequence[np.ndarray | None] | None = None,
    probs: Sequence[np.ndarray | None] | None = None,
    titles: Sequence[str] | None = None,
    cols: int = 6,
    tile_inches: float = 1.9,
    suptitle: str = "",
) -> Figure:
    """A contact sheet: one :func:`draw_tile` per image, ``cols`` to a row."""
    n = len(images)
    if n == 0:
        raise ValueError("tile_grid: no images to draw")
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    fig, axes = new_figure(
        cols * tile_inches, rows * tile_inches + (0.4 if suptitle else 0.1), rows, cols
    )
    for i, ax in enumerate(axes):
        if i >= n:
            ax.axis("off")
            continue
        draw_tile(
            ax,
            images[i],
            truth=truths[i] if truths is not None else None,
            pred=preds[i] if preds is not None else None,
            prob=probs[i] if probs is not None else None,
            title=titles[i] if titles is not None else "",
        )
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig
