"""The heat map of the OOF metric over the search grid (``thresholds.png``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medpipe.io.atomic import atomic_path

__all__ = ["plot_heatmap"]


def plot_heatmap(result: Mapping[str, Any], out_png: str | Path) -> None:
    """Metric over (cls or top-score threshold × pixel threshold) at the chosen min area(s).

    Args:
        result: a setting with its ``grid``, as :func:`medpipe.decision.policy.ablation`
            returns it under ``decision``.
        out_png: where the PNG goes (written atomically).

    Example:
        >>> plot_heatmap(ablation(...)["decision"], Path("stage1/thresholds.png"))  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = result["grid"]
    cube = np.asarray(grid["scores"], dtype=np.float64)
    a = grid["min_area"].index(result["min_area"])
    if result["mode"] == "fusion":
        source = result.get("p_finding_source")
        ylabel = f"cls_threshold on the {source} p(finding)" if source else "cls_threshold"
        plane, yvals = cube[:, :, a], grid["cls_threshold"]
    elif result["mode"] == "area":
        ca = grid["min_confident_area"].index(result["min_confident_area"])
        plane, ylabel, yvals = (
            cube[:, ca, :, a],
            f"top_score_threshold (min_confident_area {result['min_confident_area']:g})",
            grid["top_score_threshold"],
        )
    else:
        plane, ylabel, yvals = cube[None, :, a], "", [0.0]
    xvals = grid["pixel_threshold"]
    # at least 7x4.5 inches, so that the title and the axis labels fit on the smallest grids
    fig, ax = plt.subplots(
        figsize=(max(7.0, 2.0 + 0.8 * len(xvals)), max(4.5, 1.8 + 0.55 * len(yvals)))
    )
    image = ax.imshow(plane, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(xvals)), [f"{v:g}" for v in xvals])
    ax.set_yticks(range(len(yvals)), [f"{v:g}" for v in yvals])
    ax.set_xlabel("pixel_threshold")
    ax.set_ylabel(ylabel)
    if plane.size <= 400:
        lo, hi = float(np.nanmin(plane)), float(np.nanmax(plane))
        for (i, j), v in np.ndenumerate(plane):
            light = hi > lo and (v - lo) / (hi - lo) > 0.6  # viridis is light at the top
            ax.text(
                j, i, f"{v:.3f}", ha="center", va="center", fontsize=8, color="k" if light else "w"
            )
    best_y = yvals.index(
        result["cls_threshold"]
        if result["mode"] == "fusion"
        else result.get("top_score_threshold", 0.0)
    )
    ax.add_patch(
        plt.Rectangle(
            (xvals.index(result["pixel_threshold"]) - 0.5, best_y - 0.5),
            1,
            1,
            fill=False,
            ec="red",
            lw=2,
        )
    )
    ax.set_title(
        f"OOF competition dice at min_area {result['min_area']:g}\n"
        f"best {result['score']:.4f} (red box), "
        + (f"rule {result['rule']}" if result.get("rule") else f"{result['mode']} mode"),
        fontsize=9,
    )
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
