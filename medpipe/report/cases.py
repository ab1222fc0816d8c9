"""The "cases" section: where the final rule is right and wrong, image by image, out of fold.

The rule is the submission's own (ensemble weights and thresholds from ``thresholds.json``),
applied to the OOF probabilities one chunk at a time, so memory stays at one chunk's worth even
on the full SIIM set. Only the few images each gallery shows are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medpipe.data.cache import open_images
from medpipe.decision.apply import apply_triplet
from medpipe.metrics import dice_per_image
from medpipe.predictions.blend import blend
from medpipe.predictions.sources import finding_probabilities
from medpipe.predictions.stored import OofMaps, values_for
from medpipe.report.figures import new_figure, tile_grid
from medpipe.report.html import Section, figure_png
from medpipe.report.run import FinishedRun, Unavailable, guarded

__all__ = [
    "classify",
    "FoldPrediction",
    "fold_predictions",
    "pick_cases",
    "hold_picks",
    "add_cases_section",
]

KINDS = {
    "best_tp": "true positives, best dice",
    "worst_tp": "true positives, worst dice",
    "fp": "false positives, largest predicted area",
    "fn": "false negatives, largest missed finding",
}


def classify(pred_area: np.ndarray, truth_area: np.ndarray) -> np.ndarray:
    """``TP``/``FP``/``FN``/``TN`` per image, from the predicted and true finding areas."""
    pred, truth = np.asarray(pred_area) > 0, np.asarray(truth_area) > 0
    return np.select([pred & truth, pred & ~truth, ~pred & truth], ["TP", "FP", "FN"], "TN")


@dataclass
class FoldPrediction:
    """A chunk of one fold's OOF images under the final rule."""

    ids: list[str]
    prob: np.ndarray
    pred: np.ndarray
    truth: np.ndarray
    scores: pd.DataFrame = field(default_factory=pd.DataFrame)


def fold_predictions(run: FinishedRun):
    """Yield a :class:`FoldPrediction` per chunk of OOF images, fold by fold: blended OOF
    probability, final mask, truth, dice. The maps stream through :class:`OofMaps`, so memory
    is one chunk's worth, whatever the number of images."""

    decision = run.decision()
    folds = run.read_table(run.layout.folds(run.stage), "the training pool (rule make_folds)")
    found = finding_probabilities(
        run.view, run.layout.stage(run.stage), decision, "oof", folds=folds
    )
    seg = run.sources("segment")
    if not seg:
        raise Unavailable("no segmentation model in the config")
    # Only the trained folds have OOF predictions (train_folds may pick a subset).
    for dirs in seg.values():
        for d in dirs:
            run.need(d.oof, "OOF probabilities (rule predict_seg)")
    oof = OofMaps(seg, folds, run.data_dir, run.size)
    fold_of = folds.drop_duplicates("image_id").set_index("image_id")["fold"]
    weights = decision.weights or dict.fromkeys(oof.models, 1.0)
    for rows, probs, truth in oof.chunks():
        ids = [oof.ids[r] for r in rows]
        prob = blend(probs, {m: w for m, w in weights.items() if m in probs})
        p = values_for(ids, found, "p_finding") if found is not None else None
        pred = apply_triplet(prob, p, decision.thresholds())
        truth = truth.astype(bool)
        pred_area = pred.reshape(len(ids), -1).sum(axis=1)
        truth_area = truth.reshape(len(ids), -1).sum(axis=1)
        scores = pd.DataFrame(
            {
                "image_id": ids,
                "fold": fold_of.loc[ids].to_numpy(),
                "kind": classify(pred_area, truth_area),
                "dice": dice_per_image(pred, truth),
                "pred_area": pred_area,
                "truth_area": truth_area,
                "max_prob": prob.reshape(len(ids), -1).max(axis=1),
            }
        )
        yield FoldPrediction(ids, prob, pred, truth, scores)


def pick_cases(scores: pd.DataFrame, n: int) -> dict[str, pd.DataFrame]:
    """The rows each gallery shows, ranked (ties broken by image id, so the pick is stable)."""
    s = scores.sort_values("image_id", kind="stable")
    tp, fp, fn = s[s["kind"] == "TP"], s[s["kind"] == "FP"], s[s["kind"] == "FN"]
    best = tp.sort_values("dice", ascending=False, kind="stable").head(n)
    worst = tp[~tp["image_id"].isin(best["image_id"])].sort_values("dice", kind="stable").head(n)
    return {
        "best_tp": best,
        "worst_tp": worst,
        "fp": fp.sort_values(["pred_area", "max_prob"], ascending=False, kind="stable").head(n),
        "fn": fn.sort_values("truth_area", ascending=False, kind="stable").head(n),
    }


def hold_picks(held: pd.DataFrame, scores: pd.DataFrame, n: int) -> pd.DataFrame:
    """The rows of ``held`` and ``scores`` that some gallery of :func:`pick_cases` picks.

    Folded over chunks of scores it ends with rows whose picks are those of all the scores.
    """
    pool = pd.concat([held, scores], ignore_index=True)
    wanted = {i for rows in pick_cases(pool, n).values() for i in rows["image_id"]}
    return pool[pool["image_id"].isin(wanted)].reset_index(drop=True)


def _images(run: FinishedRun, ids: list[str]) -> dict[str, np.ndarray]:
    from medpipe.data.dataset import training_rows

    rows = training_rows(run.data_dir).set_index("image_id").loc[ids]
    return {
        i: np.asarray(open_images(run.data_dir, split, run.size)[int(index)])
        for i, split, index in zip(ids, rows["split"], rows["cache_index"], strict=True)
    }


def _scatter(run: FinishedRun, section: Section, scores: pd.DataFrame) -> None:
    fig, axes = new_figure(11, 4, 1, 2)
    colours = {"TP": "#228833", "FP": "#cc3311", "FN": "#ee7733", "TN": "#bbbbbb"}
    pixels = run.size**2
    for kind, group in scores.groupby("kind"):
        axes[0].scatter(
            group["truth_area"] * 100 / pixels,
            group["pred_area"] * 100 / pixels,
            s=10,
            alpha=0.6,
            color=colours.get(kind, "k"),
            label=f"{kind} ({len(group)})",
        )
    top = max(1e-3, float(scores[["truth_area", "pred_area"]].max().max()) * 100 / pixels)
    axes[0].plot([0, top], [0, top], "k:", lw=1)
    axes[0].set(
        title="predicted against true finding area",
        xlabel="true area, % of image",
        ylabel="predicted area, % of image",
    )
    axes[0].legend(fontsize=7)
    positives = scores[scores["truth_area"] > 0]["dice"]
    axes[1].hist(positives, bins=np.linspace(0, 1, 21), color="#4477aa")
    axes[1].set(title="dice of images with a finding", xlabel="dice", ylabel="images")
    fig.tight_layout()
    section.image(
        run.save_png(figure_png(fig), "cases_area_scatter"),
        "Every OOF image under the submission's rule: true negatives sit at the origin.",
    )


def _cases(run: FinishedRun, section: Section, n: int) -> None:
    # The galleries' picks, kept as a running selection: after each chunk only the images that
    # the picks of (held so far + this chunk) name stay held, so memory is a few dozen maps
    # whatever the number of chunks. An image dropped once can never be picked later: each
    # gallery ranks by one score, and n held images already outrank it.
    kept: dict[str, dict] = {}
    held = pd.DataFrame()
    all_scores = []
    for fp in fold_predictions(run):
        all_scores.append(fp.scores)
        held = hold_picks(held, fp.scores, n)
        wanted = set(held["image_id"])
        index = {i: k for k, i in enumerate(fp.ids)}
        for image_id in wanted - set(kept):
            k = index[image_id]
            kept[image_id] = {
                "prob": fp.prob[k].copy(),
                "pred": fp.pred[k].copy(),
                "truth": fp.truth[k].copy(),
            }
        kept = {i: v for i, v in kept.items() if i in wanted}
    if not all_scores:
        raise Unavailable("no OOF images")
    scores = pd.concat(all_scores, ignore_index=True)
    summary = (
        scores.groupby("kind")
        .agg(images=("dice", "size"), mean_dice=("dice", "mean"))
        .reset_index()
    )
    section.text(
        f"{len(scores)} OOF images; competition metric under the submission's rule "
        f"{scores['dice'].mean():.4f}."
    )
    section.table(summary.rename(columns={"mean_dice": "mean dice"}))
    _scatter(run, section, scores)
    picks = pick_cases(held, n)  # the same rows as pick_cases(scores, n), from what is held
    images = _images(run, [i for rows in picks.values() for i in rows["image_id"]])
    for kind, rows in picks.items():
        section.heading(KINDS[kind])
        if rows.empty:
            section.text("None among the OOF images of this run.")
            continue
        ids = list(rows["image_id"])
        fig = tile_grid(
            [images[i] for i in ids],
            truths=[kept[i]["truth"] for i in ids],
            preds=[kept[i]["pred"] for i in ids],
            probs=[kept[i]["prob"] for i in ids],
            titles=[f"…{i[-8:]} · dice {d:.2f}" for i, d in zip(ids, rows["dice"], strict=True)],
            cols=min(6, len(ids)),
            tile_inches=2.2,
        )
        section.image(
            run.save_png(figure_png(fig), f"cases_{kind}"),
            f"{KINDS[kind]} (image id suffix, dice).",
        )
        table = rows[["image_id", "fold", "dice", "truth_area", "pred_area", "max_prob"]].copy()
        section.table(
            table.rename(
                columns={"truth_area": "true px", "pred_area": "predicted px", "max_prob": "max p"}
            )
        )


def add_cases_section(run: FinishedRun, section: Section, n: int = 6) -> None:
    section.text(
        f"Out-of-fold images at the cache size ({run.size} px) under the submission's rule: "
        "green outline ground truth, red outline prediction, heat the blended probability."
    )
    guarded(section, _cases, run, section, n)
