"""The multi-label stage's decision on out-of-fold probabilities: the models blended, then the
thresholds rule chosen by nested CV (:func:`medpipe.multilabel.decision.choose_decision`);
written as the stage's ``thresholds.json`` and ``cv.json``.

With ``fusion.enabled`` the rule is chosen for each probability source
(:data:`medpipe.multilabel.tables.SOURCES`: the CNN blend, the per-class LightGBM fusion of
:mod:`medpipe.multilabel.fusion`, their mean) and the source with the best nested macro F1 is
kept; a tie (within :data:`SOURCE_TOLERANCE`) goes to the simpler source, so fusion is kept
only when it beats the CNN on images its fit never saw. A teammate's class probabilities
(``ensemble.external``, ``kind: classes``, rule import_external) are two further sources, the
teammate's alone and its mean with the CNN blend, chosen the same way (fusion on or off)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medpipe.config import RunConfig
from medpipe.io.atomic import atomic_path, atomic_write_text
from medpipe.layout import CLASSIFY, StageLayout, dumps
from medpipe.multilabel.decision import TIE_TOLERANCE, choose_decision
from medpipe.multilabel.metric import macro_f1
from medpipe.multilabel.tables import (
    blend_mean,
    fused_probabilities,
    khot_of,
    n_classes,
    oof_probabilities,
    source_names,
    source_probabilities,
)
from medpipe.predictions.external import class_sources
from medpipe.predictions.sources import oof_pool, stage_sources

__all__ = ["SOURCE_TOLERANCE", "choose_stage_decision", "choose_source", "plot_thresholds"]

log = logging.getLogger(__name__)

#: nested macro F1 a source must gain over a simpler one to replace it. Switching the source
#: is a bigger step than a threshold rule, and the nested score of one source against another
#: moves by a few thousandths on a few hundred images by chance alone (uninformative statistics
#: fused with a CNN of macro F1 0.86 beat it in 3 of 16 draws, by at most 0.0036)
SOURCE_TOLERANCE = 0.005


def choose_stage_decision(
    cfg: RunConfig, stage: StageLayout, data_dir: str | Path
) -> dict[str, Any]:
    """Blend the classifiers' OOF probabilities (equal weights), choose the rule by nested CV,
    write ``thresholds.json`` (the rule, every threshold, each candidate's nested score) and
    ``cv.json`` (each model's and the blend's scores, the trivial baselines)."""
    post = cfg.section("postprocess")
    pool = oof_pool(cfg, data_dir)
    k = n_classes(data_dir)
    truth = khot_of(pool["target"].tolist(), k)
    folds = pool["fold"].astype(int).to_numpy()
    probs = oof_probabilities(stage_sources(cfg, stage, CLASSIFY), pool)
    weights = {m: 1.0 / len(probs) for m in probs}
    blended = blend_mean(probs, weights)
    options: dict[str, Any] = {"classes": cfg.section("data").get("classes")}
    for key in ("grid", "at_least_one", "caps", "tolerance"):
        if post.get(key) is not None:
            options[key] = post[key]
    teammates = oof_probabilities(class_sources(cfg, stage), pool)
    fused = None
    if cfg.fusion_enabled:
        fused = fused_probabilities(stage.fused("oof"), pool["image_id"].astype(str).tolist())
    if fused is not None or teammates:
        decision = choose_source(blended, fused, truth, folds, teammates=teammates, **options)
    else:
        decision = choose_decision(blended, truth, folds, **options)
    decision["weights"] = weights
    per_model = {
        m: {"oof_f1_at_0.5": macro_f1(truth, (p >= 0.5).astype("uint8"))}
        for m, p in {**probs, **teammates}.items()
    }
    cv = {
        "metric": "macro F1",
        "n_images": int(len(pool)),
        "ensemble_rule": decision["rule"],
        "ensemble": decision["oof_score"],
        "nested": {"ensemble": decision["nested_score"]},
        "baselines": decision["baselines"],
        "candidates": {name: c["nested_score"] for name, c in decision["candidates"].items()},
        "models": per_model,
        "weights": weights,
    }
    if "source" in decision:
        cv["source"] = decision["source"]
        cv["sources"] = {n: r["nested_score"] for n, r in decision["sources"].items()}
    atomic_write_text(dumps(decision), stage.thresholds)
    atomic_write_text(dumps(cv), stage.cv)
    plot_thresholds(decision, stage.heatmap)
    log.info(
        "thresholds: rule %s, nested macro F1 %.4f (baselines %s)",
        decision["rule"],
        decision["nested_score"],
        {n: round(v, 4) for n, v in decision["baselines"].items()},
    )
    return decision


def choose_source(
    cnn: np.ndarray,
    fused: np.ndarray | None,
    truth: np.ndarray,
    folds: np.ndarray,
    teammates: Mapping[str, np.ndarray] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The decision of the best probability source: :func:`choose_decision` on each of
    :func:`source_names` (same folds, same candidates): the CNN blend, with ``fused`` the fusion
    and their mean, and per teammate's source (``teammates``: name -> OOF probabilities) its
    mean with the CNN blend and the source alone. The best nested macro F1 wins, and a simpler
    source within :data:`SOURCE_TOLERANCE` (or ``tolerance``, if larger) of it is preferred
    (in :func:`source_names`' order).

    Returns:
        The chosen source's decision, plus ``source`` (its name) and ``sources`` (each source's
        ``nested_score``, ``rule`` and ``oof_score``).

    Example:
        >>> choose_source(cnn_oof, fused_oof, truth, folds)["source"]  # doctest: +SKIP
        'cnn'
    """
    tolerance = max(float(options.get("tolerance", TIE_TOLERANCE)), SOURCE_TOLERANCE)
    teammates = dict(teammates or {})
    names = source_names(fused is not None, list(teammates))
    decisions = {
        name: choose_decision(
            source_probabilities(name, cnn, fused, teammates), truth, folds, **options
        )
        for name in names
    }
    best = max(d["nested_score"] for d in decisions.values())
    chosen = next(n for n in names if decisions[n]["nested_score"] >= best - tolerance)
    decision = dict(decisions[chosen])
    decision["source"] = chosen
    decision["source_tolerance"] = tolerance
    decision["sources"] = {
        n: {"nested_score": d["nested_score"], "rule": d["rule"], "oof_score": d["oof_score"]}
        for n, d in decisions.items()
    }
    log.info(
        "thresholds: source %s (nested macro F1 %s)",
        chosen,
        ", ".join(f"{n} {d['nested_score']:.4f}" for n, d in decisions.items()),
    )
    return decision


def plot_thresholds(decision: dict[str, Any], out_png: str | Path) -> None:
    """Each class's threshold as chosen (and the global one), beside each candidate's nested
    macro F1: the picture of the decision that a rare class's threshold is easiest to judge on."""
    from matplotlib.figure import Figure  # matplotlib: only the thresholds step draws

    thresholds = np.asarray(decision["thresholds"], dtype=float)
    names = decision.get("classes") or [str(k) for k in range(len(thresholds))]
    fig = Figure(figsize=(12, 3.8))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    left.bar(range(len(thresholds)), thresholds, color="C0")
    if decision.get("global_threshold") is not None:
        left.axhline(decision["global_threshold"], color="k", ls=":", label="global")
        left.legend(fontsize=8)
    left.set_xticks(range(len(thresholds)), names, rotation=45, ha="right", fontsize=7)
    left.set(title=f"thresholds of rule {decision['rule']}", ylim=(0, 1))
    scores = {k: v["nested_score"] for k, v in decision["candidates"].items()}
    right.barh(
        list(scores),
        list(scores.values()),
        color=["C1" if k == decision["rule"] else "C7" for k in scores],
    )
    right.set(title="nested macro F1 per candidate", xlim=(0, 1))
    right.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
