"""The multi-label report's pictures: channel composites, per-class precision-recall curves and
label co-occurrence. Bare ``Figure`` objects (:mod:`medpipe.report.figures`), no pyplot state.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from medpipe.report.figures import new_figure

__all__ = ["CHANNEL_COLOURS", "channel_composite", "pr_curves_figure", "cooccurrence_figure"]

#: RGB weight of each stain in a composite. Yellow (HPA's endoplasmic reticulum) shows as red +
#: green at half strength, so it does not hide the red and green stains it overlaps.
CHANNEL_COLOURS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (0.5, 0.5, 0.0),
}


def channel_composite(image: np.ndarray, channels: Sequence[str]) -> np.ndarray:
    """One ``(C, S, S)`` uint8 cached image as an ``(S, S, 3)`` uint8 RGB picture.

    Channels named after a colour (:data:`CHANNEL_COLOURS`) take that colour; others share
    white (one channel, such as a DICOM film's ``gray``: the grey image itself).

    Example:
        >>> channel_composite(np.full((2, 1, 1), 200, np.uint8), ["red", "blue"])[0, 0].tolist()
        [200, 0, 200]
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[0] != len(channels):
        raise ValueError(
            f"channel_composite: image {image.shape} does not match channels {list(channels)}"
        )
    others = [c for c in channels if c not in CHANNEL_COLOURS]
    white = 1.0 / len(others) if others else 0.0
    weights = np.array([CHANNEL_COLOURS.get(c, (white, white, white)) for c in channels])
    rgb = np.tensordot(image, weights, axes=([0], [0]))  # (S, S, 3)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def pr_curves_figure(
    truth: np.ndarray,
    probs: np.ndarray,
    pred: np.ndarray,
    names: Sequence[str],
    cols: int = 6,
) -> Figure:
    """One small precision-recall panel per class (OOF), its average precision in the title and
    the submission rule's operating point (its predictions ``pred``) as a dot."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    k = truth.shape[1]
    cols = max(1, min(cols, k))
    rows = -(-k // cols)
    fig, axes = new_figure(2.1 * cols, 2.0 * rows + 0.3, rows, cols)
    for c, ax in enumerate(axes):
        if c >= k:
            ax.axis("off")
            continue
        y, p, hit = truth[:, c].astype(bool), probs[:, c], pred[:, c].astype(bool)
        if y.any():
            precision, recall, _ = precision_recall_curve(y, p)
            ax.plot(recall, precision, color="C0", lw=1.2)
            ax.axhline(y.mean(), color="k", ls=":", lw=0.8)  # a random ranking's precision
            title = f"{names[c]}: AP {average_precision_score(y, p):.2f}"
            tp = int((y & hit).sum())
            ax.plot(tp / y.sum(), tp / hit.sum() if hit.any() else 1.0, "o", color="C3", ms=4)
        else:
            ax.text(0.5, 0.5, "no true label\nout of fold", ha="center", va="center", fontsize=7)
            title = str(names[c])
        ax.set_title(title, fontsize=7)
        ax.set(xlim=(0, 1.02), ylim=(0, 1.05))
        ax.tick_params(labelsize=6)
        if c % cols == 0:
            ax.set_ylabel("precision", fontsize=7)
        if c >= k - cols:
            ax.set_xlabel("recall", fontsize=7)
    fig.tight_layout()
    return fig


def _heatmap(fig: Figure, ax, counts: np.ndarray, names: Sequence[str], title: str) -> None:
    k = len(names)
    shown = ax.imshow(np.log1p(counts), cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(k), names, rotation=90, fontsize=6)
    ax.set_yticks(range(k), names, fontsize=6)
    ax.set_title(title, fontsize=8)
    if k <= 15:  # numbers stay legible up to about 15 classes
        top = counts.max() if counts.size else 0
        for i in range(k):
            for j in range(k):
                colour = "k" if np.log1p(counts[i, j]) > 0.6 * np.log1p(top) else "w"
                ax.text(
                    j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=6, color=colour
                )
    bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("log(1 + images)", fontsize=7)
    bar.ax.tick_params(labelsize=6)


def cooccurrence_figure(truth: np.ndarray, pred: np.ndarray, names: Sequence[str]) -> Figure:
    """How often two classes label the same image: the true labels of the OOF pool beside the
    submission rule's OOF predictions (diagonal: images with the class)."""
    fig, axes = new_figure(11, 5.2, 1, 2)
    for ax, khot, what in (
        (axes[0], truth, "true labels"),
        (axes[1], pred, "predicted out of fold"),
    ):
        khot = np.asarray(khot, dtype=np.int64)
        _heatmap(fig, ax, khot.T @ khot, names, f"images per class pair: {what}")
    fig.tight_layout()
    return fig
