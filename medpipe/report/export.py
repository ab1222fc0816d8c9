"""Predicted masks and probability maps as NIfTI files a radiologist opens in 3D Slicer or ITK-SNAP.

Per image: ``<id>_prob.nii.gz`` (float32 blended probability), ``<id>_mask.nii.gz`` (uint8, the
submission's rule: ensemble weights and thresholds from ``thresholds.json``), the cache image
``<id>_image.nii.gz`` to overlay them on, and for OOF the ground truth ``<id>_truth.nii.gz``.
All share one affine with the DICOM's pixel spacing rescaled to the cache size, plus an
``index.csv``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from medpipe.config import RunConfig
from medpipe.data.cache import open_images
from medpipe.decision.apply import apply_triplet
from medpipe.io.atomic import atomic_write_csv
from medpipe.io.nifti import cache_spacing, write_nifti
from medpipe.predictions.blend import blend
from medpipe.predictions.sources import finding_probabilities
from medpipe.predictions.stored import TestMaps, values_for
from medpipe.report.cases import fold_predictions
from medpipe.report.run import FinishedRun

__all__ = ["export_masks"]

log = logging.getLogger(__name__)


def _test_predictions(run: FinishedRun) -> Iterator[tuple[list[str], np.ndarray, np.ndarray, None]]:
    """The test maps chunk by chunk (:class:`TestMaps`, the fold means submit blends)."""

    decision = run.decision()
    test = TestMaps(run.sources("segment"))
    weights = decision.weights or dict.fromkeys(test.models, 1.0)
    found = finding_probabilities(run.view, run.layout.stage(run.stage), decision, "test")
    for sl, probs in test.chunks():
        ids = test.ids[sl]
        prob = blend(probs, {m: w for m, w in weights.items() if m in probs})
        p = None if found is None else values_for(ids, found, "p_finding")
        yield ids, prob, apply_triplet(prob, p, decision.thresholds()), None


def _oof_predictions(
    run: FinishedRun,
) -> Iterator[tuple[list[str], np.ndarray, np.ndarray, np.ndarray]]:

    for fold in fold_predictions(run):
        yield fold.ids, fold.prob, fold.pred, fold.truth


def export_masks(
    cfg: RunConfig,
    run_dir: str | Path,
    which: str,
    out_dir: str | Path,
    *,
    stage: int | None = None,
    image_ids: Iterable[str] | None = None,
    limit: int | None = None,
    with_image: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """Write the NIfTI files of the ``which`` (``oof`` or ``test``) predictions; return the index.

    Example:
        >>> export_masks(cfg, "runs/default", "oof", "runs/default/reports/nifti", limit=5)  # doctest: +SKIP
    """
    from tqdm import tqdm

    if which not in ("oof", "test"):
        raise ValueError(f"export-masks: --which must be oof or test, not {which!r}")
    run = FinishedRun(cfg, Path(run_dir), int(stage if stage is not None else cfg.stage))
    out_dir = Path(out_dir)
    meta = run.read_table(run.layout.meta(run.stage), "image metadata (rule ingest)")
    meta = meta.drop_duplicates("image_id").set_index("image_id")
    wanted = set(image_ids) if image_ids else None
    if wanted:
        unknown = sorted(wanted - set(meta.index))
        if unknown:
            raise ValueError(
                f"export-masks: {len(unknown)} image ids are not in {run.layout.meta(run.stage)} "
                f"(e.g. {unknown[0]}); pass ids from its image_id column"
            )
    batches = _oof_predictions(run) if which == "oof" else _test_predictions(run)
    rows = []
    bar = tqdm(desc=f"export-masks {which}", unit="image", disable=not progress)
    for ids, prob, pred, truth in batches:
        for k, image_id in enumerate(ids):
            if (wanted is not None and image_id not in wanted) or (
                limit is not None and len(rows) >= limit
            ):
                continue
            m = meta.loc[image_id]
            spacing = cache_spacing(
                m["spacing"], int(m["orig_height"]), int(m["orig_width"]), run.size
            )
            own = cache_spacing(m["spacing"], run.size, run.size, run.size)
            known = bool(np.isfinite(pd.to_numeric(m["spacing"], errors="coerce")))
            note = "" if known else " (no PixelSpacing: 1 mm assumed)"
            files = {
                "prob": write_nifti(
                    out_dir / f"{image_id}_prob.nii.gz",
                    prob[k].astype(np.float32),
                    spacing,
                    orig_spacing=own,
                    description=f"medpipe p(finding) {which}{note}",
                ),
                "mask": write_nifti(
                    out_dir / f"{image_id}_mask.nii.gz",
                    pred[k],
                    spacing,
                    orig_spacing=own,
                    description=f"medpipe mask {which}{note}",
                ),
            }
            if truth is not None:
                files["truth"] = write_nifti(
                    out_dir / f"{image_id}_truth.nii.gz",
                    truth[k],
                    spacing,
                    orig_spacing=own,
                    description=f"ground truth{note}",
                )
            if with_image:
                image = open_images(run.data_dir, m["split"], run.size)[int(m["cache_index"])]
                files["image"] = write_nifti(
                    out_dir / f"{image_id}_image.nii.gz",
                    np.asarray(image),
                    spacing,
                    orig_spacing=own,
                    description=f"medpipe cache image{note}",
                )
            rows.append(
                {
                    "image_id": image_id,
                    "which": which,
                    "row_spacing_mm": spacing[0],
                    "col_spacing_mm": spacing[1],
                    "spacing_known": known,
                    "predicted_pixels": int(np.count_nonzero(pred[k])),
                    **{f"{kind}_file": p.name for kind, p in files.items()},
                }
            )
            bar.update()
    bar.close()
    if not rows:
        raise ValueError(f"export-masks: no {which} image matched; nothing written to {out_dir}")
    index = pd.DataFrame(rows)
    atomic_write_csv(index, out_dir / "index.csv")
    log.info("export-masks: %d images -> %s", len(index), out_dir)
    return index
