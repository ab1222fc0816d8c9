"""The "data" section: what the training images look like, how labels and metadata are spread,
and which files ingest refused. Read from the run's tensor cache and meta.csv only."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medpipe.data.cache import open_images, open_masks
from medpipe.report.figures import new_figure, tile_grid
from medpipe.report.html import Section, figure_png
from medpipe.report.run import FinishedRun, Unavailable, guarded

__all__ = ["training_pool", "pick_contact_sheet", "finding_areas", "add_data_section"]

_CHUNK_ROWS = 256


def training_pool(run: FinishedRun) -> pd.DataFrame:
    """The labelled training rows (folds.csv) with their metadata; no patient key in the result."""
    from medpipe.data.dataset import training_rows

    run.need(run.layout.folds(run.stage), "the training pool (rule make_folds)")
    rows = training_rows(run.data_dir)
    meta = run.read_table(run.layout.meta(run.stage), "image metadata (rule ingest)")
    keep = [c for c in ("image_id", "age", "sex", "view", "n_regions") if c in meta.columns]
    meta = meta[keep].drop_duplicates("image_id")
    pool = rows.merge(meta, on="image_id", how="left")
    return pool.drop(columns=["patient_key"], errors="ignore")


def pick_contact_sheet(pool: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` random rows, half with a finding where there are enough, so both kinds show."""
    rng = np.random.default_rng(seed)
    pos = pool[pool["has_finding"] > 0]
    neg = pool[pool["has_finding"] <= 0]
    n_pos = min(len(pos), n // 2)
    n_neg = min(len(neg), n - n_pos)
    n_pos = min(len(pos), n - n_neg)
    chosen = pd.concat(
        [
            pos.iloc[rng.choice(len(pos), n_pos, replace=False)] if n_pos else pos.iloc[:0],
            neg.iloc[rng.choice(len(neg), n_neg, replace=False)] if n_neg else neg.iloc[:0],
        ]
    )
    return chosen.iloc[rng.permutation(len(chosen))]


def _load_rows(run: FinishedRun, rows: pd.DataFrame, kind: str) -> list[np.ndarray]:

    opener = open_images if kind == "images" else open_masks
    out = []
    for split, index in zip(rows["split"], rows["cache_index"], strict=True):
        out.append(np.asarray(opener(run.data_dir, split, run.size)[int(index)]))
    return out


def finding_areas(run: FinishedRun, pool: pd.DataFrame) -> np.ndarray:
    """Percent of the image covered by the finding, per positive training image (streamed)."""

    areas = []
    positives = pool[pool["has_finding"] > 0]
    for split, group in positives.groupby("split"):
        masks = open_masks(run.data_dir, split, run.size)
        index = np.sort(group["cache_index"].to_numpy())
        for start in range(0, len(index), _CHUNK_ROWS):
            chunk = masks[index[start : start + _CHUNK_ROWS]]
            areas.append(chunk.reshape(len(chunk), -1).sum(axis=1) * 100.0 / (run.size**2))
    return np.concatenate(areas) if areas else np.zeros(0)


def _contact_sheet(run: FinishedRun, section: Section, pool: pd.DataFrame, n: int) -> None:
    rows = pick_contact_sheet(pool, n, run.seed)
    images = _load_rows(run, rows, "images")
    masks = _load_rows(run, rows, "masks")
    titles = [
        f"fold {f} · {'finding' if p > 0 else 'no finding'}"
        for f, p in zip(rows["fold"], rows["has_finding"], strict=True)
    ]
    fig = tile_grid(images, truths=masks, titles=titles, cols=6)
    section.image(
        run.save_png(figure_png(fig), "data_contact_sheet"),
        f"{len(rows)} random training images at the cache size ({run.size} px), the ground truth "
        "outlined in green.",
    )


def _label_stats(run: FinishedRun, section: Section, pool: pd.DataFrame) -> None:
    n = len(pool)
    positive = pool["has_finding"] > 0
    regions = pd.to_numeric(pool.get("n_regions"), errors="coerce")
    areas = finding_areas(run, pool)
    summary = pd.DataFrame(
        [
            ["training images", n],
            ["with a finding", int(positive.sum())],
            ["positive rate", f"{positive.mean():.1%}" if n else "n/a"],
            [
                "all-empty baseline (competition metric)",
                f"{1 - positive.mean():.4f}" if n else "n/a",
            ],
            [
                "regions per positive image (mean)",
                f"{regions[positive].mean():.2f}" if positive.any() else "n/a",
            ],
            ["finding area, median % of image", f"{np.median(areas):.2f}" if len(areas) else "n/a"],
        ],
        columns=["", "value"],
    )
    section.table(summary)
    fig, axes = new_figure(10, 3, 1, 2)
    if len(areas):
        axes[0].hist(areas, bins=min(30, max(5, len(areas) // 3)), color="#4477aa")
    axes[0].set(title="finding area (positive images)", xlabel="% of image", ylabel="images")
    counts = regions.fillna(0).astype(int).value_counts().sort_index()
    axes[1].bar(counts.index.to_numpy(), counts.to_numpy(), color="#4477aa")
    axes[1].set_xticks(counts.index.to_numpy())
    axes[1].set(title="regions per image", xlabel="regions", ylabel="images")
    fig.tight_layout()
    section.image(
        run.save_png(figure_png(fig), "data_labels"), "Label statistics of the training pool."
    )


def _metadata(run: FinishedRun, section: Section, pool: pd.DataFrame) -> None:
    label = np.where(pool["has_finding"] > 0, "finding", "no finding")
    fig, axes = new_figure(13, 3, 1, 3)
    age = pd.to_numeric(pool.get("age"), errors="coerce")
    bins = np.arange(0, 101, 5)
    for name, colour in (("no finding", "#4477aa"), ("finding", "#cc3311")):
        values = age[(label == name) & age.notna()]
        axes[0].hist(values, bins=bins, alpha=0.6, color=colour, label=f"{name} ({len(values)})")
    axes[0].set(title="age (missing or > 100 left out)", xlabel="years", ylabel="images")
    axes[0].legend(fontsize=8)
    for ax, column in zip(axes[1:], ("sex", "view"), strict=True):
        values = pool.get(column, pd.Series("", index=pool.index)).fillna("").replace("", "unknown")
        table = pd.crosstab(values, label)
        x = np.arange(len(table))
        for k, (name, colour) in enumerate((("no finding", "#4477aa"), ("finding", "#cc3311"))):
            if name in table.columns:
                ax.bar(x + (k - 0.5) * 0.4, table[name], 0.4, color=colour, label=name)
        ax.set_xticks(x, table.index.astype(str))
        ax.set(title=f"{column} by label", ylabel="images")
        ax.legend(fontsize=8)
    fig.tight_layout()
    section.image(
        run.save_png(figure_png(fig), "data_metadata"),
        "DICOM metadata of the training pool split by label (fusion uses these as features).",
    )
    rates = []
    for column in ("sex", "view"):
        values = pool.get(column, pd.Series("", index=pool.index)).fillna("").replace("", "unknown")
        for value, group in pool.groupby(values):
            rates.append([column, value, len(group), float((group["has_finding"] > 0).mean())])
    section.table(pd.DataFrame(rates, columns=["field", "value", "images", "positive rate"]))


def _quarantine(run: FinishedRun, section: Section) -> None:
    frame = run.read_table(run.layout.quarantine(run.stage), "the quarantine list (rule ingest)")
    if frame.empty:
        section.text("No file was quarantined: every DICOM was a readable single image.")
        return
    section.text(
        f"{len(frame)} files were not readable single images and were left out "
        "(submit writes an empty row for a quarantined test image)."
    )
    reasons = frame.groupby("reason").size().rename("files").reset_index()
    section.table(reasons.sort_values("files", ascending=False))
    section.table(frame[[c for c in ("source", "split", "reason") if c in frame.columns]])


def add_data_section(run: FinishedRun, section: Section, n_images: int = 18) -> None:
    """Contact sheet, label statistics, metadata by label and the quarantine table."""
    try:
        pool = training_pool(run)
    except (Unavailable, FileNotFoundError) as err:
        section.note(f"Training data not available: {err}")
        pool = None
    if pool is not None and len(pool):
        section.heading("Training images with the ground truth")
        guarded(section, _contact_sheet, run, section, pool, n_images)
        section.heading("Labels")
        guarded(section, _label_stats, run, section, pool)
        section.heading("Metadata by label")
        guarded(section, _metadata, run, section, pool)
    section.heading("Quarantine")
    guarded(section, _quarantine, run, section)
