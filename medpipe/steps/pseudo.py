"""Step ``pseudo_label``: one fold's confident test images, labelled by that fold's own models.

Winning SIIM teams labelled the test images with a trained model, kept the confident ones and
trained again. Round ``k`` of a segmentation model trains the variant ``<model>@pl<k>``; for
its fold ``f`` this step labels the stage's test split with round ``k - 1``'s fold-``f`` model
(``<model>`` itself for round 1) and, when ``pseudo_label.finding`` names a gate, that gate's
fold-``f`` p(finding). Only fold ``f``'s own models label for fold ``f``: they trained on the
same training folds as the new model and never on fold ``f``'s validation images, so no label
of a validation image reaches the model that scores it (a fold-``g`` model trained on fold
``f``'s labels, and its pseudo-labels would carry them). ``provenance.json`` records who made
the labels; :func:`medpipe.guards.check_pseudo_labels` refuses to train on any other.

Confidence, per image:

- p(finding) at most ``negative_below``: a pseudo-negative (an empty mask);
- p(finding) at least ``positive_above``, with a mask (pixels at least ``pixel_threshold``) of
  at least ``min_area`` original-image pixels and a mean probability inside it of at least
  ``min_pixel_confidence``: a pseudo-finding, with that mask;
- anything else is left out.

The selected images and masks are written as a small uint8 cache of their own (the
``pseudo`` split, :attr:`~medpipe.layout.FoldDir.pseudo_dir`), so training reads them like any
split, and nothing grows with the test set but that cache: the maps are read in chunks.

A multi-label classifier's variant (``classifier.models.<name>`` listed in
``pseudo_label.models``) is labelled by round ``k - 1``'s same fold from its test class
probabilities (:func:`confident_classes`): an image is kept when every class is confidently
present (at least ``positive_above``) or absent (at most ``negative_below``) and at least one is
present; its label set is the present classes. Its cache holds the C-channel images and their
K-hot targets (``pseudo_targets.npy``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medpipe.config import PseudoSettings, RunConfig, pseudo_round
from medpipe.data.cache import cache_area_scale
from medpipe.data.dataset import split_rows
from medpipe.io.atomic import atomic_path, atomic_write_csv, atomic_write_text
from medpipe.io.hashing import sha256_file
from medpipe.layout import (
    CLASSIFY,
    GATE,
    PSEUDO_SPLIT,
    SEGMENT,
    FoldDir,
    ProbRows,
    StageLayout,
    cache_file,
    data_files,
    open_channel_cache,
    read_class_predictions,
    read_gate_predictions,
    read_prediction_ids,
    target_file,
    test_split,
    write_target_matrix,
)
from medpipe.predictions.sources import pseudo_label_sources

__all__ = ["confident_images", "confident_classes", "label_fold"]

log = logging.getLogger(__name__)

CHUNK_IMAGES = 64  # maps read at once: 64 x 512² float16 = 32 MB


def confident_images(
    maps: ProbRows,
    p_finding: np.ndarray | None,
    settings: PseudoSettings,
    min_area_px: float,
) -> pd.DataFrame:
    """One row per image of ``maps``: ``row, p_finding, mask_area, mask_confidence, label``
    (``label``: 1 a pseudo-finding, 0 a pseudo-negative, -1 left out).

    Without ``p_finding`` the map's top pixel probability stands for it.

    Example:
        >>> table = confident_images(ProbRows("test.npz"), None, PseudoSettings(), 18.75)  # doctest: +SKIP
        >>> int((table["label"] >= 0).sum())  # doctest: +SKIP
    """
    n = len(maps)
    top, area, confidence = (np.zeros(n, np.float64) for _ in range(3))
    for start in range(0, n, CHUNK_IMAGES):
        rows = np.arange(start, min(start + CHUNK_IMAGES, n))
        prob = maps.rows(rows).astype(np.float32)
        mask = prob >= settings.pixel_threshold
        top[rows] = prob.reshape(len(rows), -1).max(axis=1)
        area[rows] = mask.reshape(len(rows), -1).sum(axis=1)
        inside = (prob * mask).reshape(len(rows), -1).sum(axis=1)
        confidence[rows] = np.divide(
            inside, area[rows], out=np.zeros(len(rows)), where=area[rows] > 0
        )
    p = top if p_finding is None else np.asarray(p_finding, np.float64)
    if len(p) != n:
        raise ValueError(f"p(finding) has {len(p)} values for {n} maps")
    positive = (
        (p >= settings.positive_above)
        & (area >= max(min_area_px, 1.0))
        & (confidence >= settings.min_pixel_confidence)
    )
    negative = p <= settings.negative_below
    label = np.where(positive, 1, np.where(negative, 0, -1))
    return pd.DataFrame(
        {
            "row": np.arange(n),
            "p_finding": p,
            "mask_area": area,
            "mask_confidence": confidence,
            "label": label,
        }
    )


def _finding_probabilities(gate: FoldDir | None, image_ids: np.ndarray) -> np.ndarray | None:
    if gate is None:
        return None
    frame = read_gate_predictions(gate.test).set_index("image_id")
    missing = [i for i in image_ids if i not in frame.index]
    if missing:
        raise ValueError(
            f"{gate.test}: no p(finding) for test image {missing[0]!r} "
            f"({len(missing)} missing): rerun its predict rule"
        )
    return frame.loc[list(image_ids), "prob"].to_numpy(np.float64)


def label_fold(
    cfg: RunConfig, stage: StageLayout, data_dir: str | Path, model: str, fold: int
) -> dict[str, Any]:
    """Write ``model``'s (``<name>@pl<k>``) fold-``fold`` pseudo-labels: the ``pseudo`` cache
    (images + masks), ``rows.csv`` and ``provenance.json``; returns the provenance.

    Example:
        >>> label_fold(cfg, cfg.layout.stage(1), "runs/default/data", "unet_regnetx@pl1", 0)  # doctest: +SKIP
    """

    settings = cfg.pseudo_settings()
    sources = pseudo_label_sources(cfg, stage, model, fold)
    if CLASSIFY in sources:
        return _label_classifier_fold(cfg, stage, data_dir, model, fold, sources)
    seg, gate = sources[SEGMENT], sources.get(GATE)
    ids = read_prediction_ids(seg.test)
    maps = ProbRows(seg.test)
    size = cfg.image_size
    if maps.shape[1:] != (size, size):
        raise ValueError(f"{seg.test}: maps are {maps.shape[1:]}, the cache is {size}²")
    split = test_split(stage.number)  # the job's stage: a stage-2 run reruns stage 1 too

    test_rows = split_rows(data_dir, split).set_index("image_id")
    unknown = [i for i in ids if i not in test_rows.index]
    if unknown:
        meta = data_files(data_dir)["meta"]
        raise ValueError(f"{seg.test}: image {unknown[0]!r} is not in split {split!r} of {meta}")
    min_area_px = settings.min_area * cache_area_scale(data_dir, size)
    table = confident_images(maps, _finding_probabilities(gate, ids), settings, min_area_px)
    table.insert(0, "image_id", ids)
    chosen = table[table["label"] >= 0].reset_index(drop=True)

    out = stage.fold(SEGMENT, model, fold)
    out.pseudo_dir.mkdir(parents=True, exist_ok=True)
    source_images = np.load(cache_file(data_dir, split, "images", size), mmap_mode="r")
    if len(chosen):
        index = test_rows.loc[chosen["image_id"], "cache_index"].to_numpy(np.int64)
        _write_cache(out, source_images, index, maps, chosen, settings.pixel_threshold)
    else:  # nothing confident: an empty cache (a memory map cannot be empty)
        for kind in ("images", "masks"):
            with atomic_path(out.pseudo_cache(kind, size)) as tmp:
                np.save(tmp, np.zeros((0, size, size), np.uint8))
    rows = pd.DataFrame(
        {
            "image_id": chosen["image_id"],
            "split": PSEUDO_SPLIT,
            "cache_index": np.arange(len(chosen)),
            "has_finding": chosen["label"].astype(float),
            "p_finding": chosen["p_finding"].round(6),
            "mask_confidence": chosen["mask_confidence"].round(6),
        }
    )
    atomic_write_csv(rows, out.pseudo_rows)
    counts = {
        "n_images": int(len(table)),
        "n_finding": int((chosen["label"] == 1).sum()),
        "n_empty": int((chosen["label"] == 0).sum()),
    }
    provenance = _provenance(model, fold, stage, split, sources, settings, counts)
    _write_provenance(provenance, out)
    log.info(
        "%s fold %d: %d of %d test images pseudo-labelled (%d findings, %d empty)",
        model,
        fold,
        len(chosen),
        len(table),
        provenance["n_finding"],
        provenance["n_empty"],
    )
    return provenance


def _write_cache(
    out: FoldDir,
    source_images: np.ndarray,
    cache_index: np.ndarray,
    maps: ProbRows,
    chosen: pd.DataFrame,
    pixel_threshold: float,
) -> None:
    """The chosen images and their pseudo masks, chunk by chunk into memory-mapped files."""
    size = source_images.shape[1]
    shape = (len(chosen), size, size)
    map_rows, positive = chosen["row"].to_numpy(), chosen["label"].to_numpy() == 1
    with (
        atomic_path(out.pseudo_cache("images", size)) as tmp_images,
        atomic_path(out.pseudo_cache("masks", size)) as tmp_masks,
    ):
        images = np.lib.format.open_memmap(tmp_images, "w+", np.uint8, shape)
        masks = np.lib.format.open_memmap(tmp_masks, "w+", np.uint8, shape)
        for start in range(0, len(chosen), CHUNK_IMAGES):
            part = slice(start, start + CHUNK_IMAGES)
            images[part] = source_images[cache_index[part]]
            prob = maps.rows(map_rows[part]).astype(np.float32)
            masks[part] = (prob >= pixel_threshold) & positive[part, None, None]
        images.flush()
        masks.flush()
        del images, masks


def _provenance(
    model: str,
    fold: int,
    stage: StageLayout,
    split: str,
    sources: dict[str, FoldDir],
    settings: PseudoSettings,
    counts: dict[str, int],
) -> dict[str, Any]:
    """A variant fold's ``provenance.json``: who made its labels, from which files, and how
    many images it kept (``counts``)."""
    return {
        "model": model,
        "fold": int(fold),
        "round": pseudo_round(model),
        "stage": stage.number,
        "split": split,
        **counts,
        "made_by": {
            family: {
                "model": d.model,
                "fold": d.fold,
                "file": d.test.name,
                "sha256": sha256_file(d.test),
            }
            for family, d in sources.items()
        },
        "settings": asdict(settings),
    }


def _write_provenance(provenance: dict[str, Any], out: FoldDir) -> None:
    atomic_write_text(json.dumps(provenance, indent=2) + "\n", out.pseudo_provenance)


# ---------------------------------------------------------------- the multi-label classifier
def confident_classes(prob: np.ndarray, settings: PseudoSettings) -> np.ndarray:
    """Which images (rows of ``prob``, ``(N, K)`` class probabilities) are confident: every
    class at least ``positive_above`` or at most ``negative_below``, and one at least above.

    Example:
        >>> s = PseudoSettings(negative_below=0.1, positive_above=0.8)
        >>> confident_classes(np.array([[0.9, 0.05], [0.5, 0.05], [0.05, 0.02]]), s).tolist()
        [True, False, False]
    """
    prob = np.asarray(prob, np.float64)
    present = prob >= settings.positive_above
    decided = present | (prob <= settings.negative_below)
    return decided.all(axis=1) & present.any(axis=1)


def _label_classifier_fold(
    cfg: RunConfig,
    stage: StageLayout,
    data_dir: str | Path,
    model: str,
    fold: int,
    sources: dict[str, FoldDir],
) -> dict[str, Any]:
    """A classifier variant's fold: the confident test images' C-channel rows and K-hot
    targets (the present classes), ``rows.csv`` and ``provenance.json``."""
    settings = cfg.pseudo_settings()
    source = sources[CLASSIFY]
    table = read_class_predictions(source.test)
    prob = table.drop(columns="image_id").to_numpy(np.float64)
    split = test_split(stage.number)
    test_rows = split_rows(data_dir, split).set_index("image_id")
    ids = table["image_id"].astype(str).to_numpy()
    unknown = [i for i in ids if i not in test_rows.index]
    if unknown:
        meta = data_files(data_dir)["meta"]
        raise ValueError(f"{source.test}: image {unknown[0]!r} is not in split {split!r} of {meta}")
    keep = np.flatnonzero(confident_classes(prob, settings))
    khot = (prob[keep] >= settings.positive_above).astype(np.uint8)
    size = cfg.image_size
    out = stage.fold(CLASSIFY, model, fold)
    out.pseudo_dir.mkdir(parents=True, exist_ok=True)
    cache = open_channel_cache(cache_file(data_dir, split, "images", size), size)
    index = test_rows.loc[ids[keep], "cache_index"].to_numpy(np.int64)
    shape = (len(keep), *cache.shape[1:])
    with atomic_path(out.pseudo_cache("images", size)) as tmp:
        if not len(keep):  # nothing confident: an empty cache (a memory map cannot be empty)
            np.save(tmp, np.zeros(shape, np.uint8))
        else:
            images = np.lib.format.open_memmap(tmp, "w+", np.uint8, shape)
            order = np.argsort(index, kind="stable")  # ascending reads of the memory map
            for start in range(0, len(keep), CHUNK_IMAGES):
                part = order[start : start + CHUNK_IMAGES]
                images[part] = cache[index[part]]
            images.flush()
            del images
    write_target_matrix(target_file(out.pseudo_dir, PSEUDO_SPLIT), khot)
    rows = pd.DataFrame(
        {
            "image_id": ids[keep],
            "split": PSEUDO_SPLIT,
            "cache_index": np.arange(len(keep)),
            "target": [" ".join(str(c) for c in np.flatnonzero(r)) for r in khot],
            "p_min_margin": np.round(
                np.minimum(
                    np.abs(prob[keep] - settings.positive_above),
                    np.abs(prob[keep] - settings.negative_below),
                ).min(axis=1, initial=1.0),
                6,
            ),
        }
    )
    atomic_write_csv(rows, out.pseudo_rows)
    counts = {
        "n_images": int(len(ids)),
        "n_labelled": int(len(keep)),
        "n_labels": int(khot.sum()),
        # as a segmentation variant's record says them (medpipe pseudo-label prints these): every
        # kept image has a class, none is a confident empty one
        "n_finding": int(len(keep)),
        "n_empty": 0,
    }
    provenance = _provenance(model, fold, stage, split, sources, settings, counts)
    _write_provenance(provenance, out)
    log.info(
        "%s fold %d: %d of %d test images pseudo-labelled (%d labels)",
        model,
        fold,
        len(keep),
        len(ids),
        int(khot.sum()),
    )
    return provenance
