"""Export's proof that a bundle is the run: its outputs on some of the run's own test images
equal what the run stored for them.

``medpipe infer`` runs on the first test images of the run's ``meta.csv`` (copied from the run's
test DICOM folder into a temporary one; no image enters the bundle), and each image's blended
maximum probability and p(finding) are compared with the run's stored predictions (the fold
``test`` files, read back as ``submit`` read them), and its submission row with the run's
``submission.csv``. A bundle that preprocesses at another size, carries other weights, or
applies another decision fails, and the export with it.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medpipe.config import RunConfig
from medpipe.layout import GATE, SEGMENT, ProbRows, RunLayout, read_meta, test_split
from medpipe.predictions.blend import blend
from medpipe.predictions.sources import finding_probabilities, stage_sources
from medpipe.predictions.stored import TestMaps

__all__ = ["RunMismatch", "RunCheck", "check_against_run", "MAX_PROB_TOLERANCE"]

log = logging.getLogger("medpipe.export")

# One stored level of a fold map (the files keep uint8 levels): what a last-bit difference of
# another CPU or thread count can move the blended maximum by, at most.
MAX_PROB_TOLERANCE = 1 / 255 + 1e-6
P_FINDING_TOLERANCE = 1e-3
# Enough images for the check, and a multiple of each model's batch size (the run predicted in
# those batches; the same batches give the same bytes).
_MIN_IMAGES = 8


class RunMismatch(ValueError):
    """The bundle does not give the run's stored outputs; the message says where and how much."""


@dataclass
class RunCheck:
    """What the export compared: on how many of the run's test images, and the largest
    differences (0 when the bundle gave the run's bytes)."""

    images: int
    threads: int
    max_prob_difference: float
    p_finding_difference: float | None
    rows_identical: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _n_images(batch_sizes: list[int], available: int) -> int:
    step = math.lcm(*batch_sizes) if batch_sizes else 1
    want = step * max(1, math.ceil(_MIN_IMAGES / step))
    return min(available, want)


def _copy_sources(sources: pd.Series, dicom_dir: Path, dest: Path) -> None:
    for source in sources:
        src = dicom_dir / str(source)
        if not src.is_file():
            raise RunMismatch(
                f"{src}: a test image of the run is not there; export checks the bundle against "
                "the run's stored predictions on its own test images: give --dicom-dir the "
                "folder the run ingested its test set from"
            )
        target = dest / str(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)


def _stored_max_prob(seg_dirs, decision, ids: set[str]) -> pd.Series:
    """Each image's blended maximum from the run's stored fold maps, as ``submit`` blends them."""

    test = TestMaps(seg_dirs)
    found = {}
    for sl, probs in test.chunks():
        chunk_ids = test.ids[sl]
        if not ids.intersection(chunk_ids):
            continue
        top = blend(probs, decision.weights).reshape(len(chunk_ids), -1).max(axis=1)
        found.update({i: float(v) for i, v in zip(chunk_ids, top, strict=True) if i in ids})
    return pd.Series(found, dtype=float)


def _stored_shape(seg_dirs) -> tuple[int, ...]:
    for dirs in seg_dirs.values():
        for d in dirs:
            if not d.test.is_file():
                raise RunMismatch(
                    f"{d.test}: the run's stored test predictions are missing; export checks the "
                    "bundle against them: rerun the run's predict rules (snakemake --cores 8 "
                    "submission), then export again"
                )
    first = next(iter(seg_dirs.values()))[0]
    return tuple(ProbRows(first.test).shape[1:])


def check_against_run(
    bundle,
    run: RunLayout,
    config: dict[str, Any],
    stage: int,
    dicom_dir: Path,
    *,
    threads: int = 1,
) -> RunCheck:
    """Run ``bundle`` (an unverified :class:`~medpipe.bundle.infer.Bundle` being built) on the
    first test images of the run and compare with the run's stored outputs.

    Raises:
        RunMismatch: the bundle's probabilities, p(finding) or submission rows are not the run's.
    """
    from medpipe.bundle.infer import run_infer

    cfg, stage_layout = RunConfig(config), run.stage(stage)
    seg_dirs = stage_sources(cfg, stage_layout, SEGMENT)
    shape = _stored_shape(seg_dirs)
    if shape != (bundle.image_size, bundle.image_size):
        raise RunMismatch(
            f"{bundle.layout.inference}: the bundle predicts at {bundle.image_size}x"
            f"{bundle.image_size}, the run's stored test maps are {'x'.join(map(str, shape))}: "
            "the bundle is not the run's (report this as a bug)"
        )
    meta = read_meta(run.meta(stage), ["image_id", "split", "source"])
    rows = meta[meta["split"] == test_split(stage)]
    specs = bundle.models(SEGMENT) + (bundle.models(GATE) if bundle.needs_gate else [])
    chosen = rows.iloc[: _n_images([s.batch_size for s in specs], len(rows))]
    ids = set(chosen["image_id"].astype(str))
    with tempfile.TemporaryDirectory(prefix="medpipe-export-check-") as tmp:
        folder = Path(tmp) / "dicom"
        _copy_sources(chosen["source"], Path(dicom_dir), folder)
        result = run_infer(
            bundle,
            folder,
            Path(tmp) / "out" / "check.csv",
            device="cpu",
            workers=1,
            threads=threads,
            progress=False,
        )
        got = pd.read_csv(result.probabilities, dtype={"image_id": str}).set_index("image_id")
        got_rows = pd.read_csv(result.submission, dtype=str, keep_default_na=False)
    got = got[got["quarantined"] == 0].reindex(sorted(ids))
    want = _stored_max_prob(seg_dirs, bundle.decision, ids).reindex(got.index)
    if want.isna().any() or got["max_prob"].isna().any():
        raise RunMismatch(
            f"{run.meta(stage)}: the bundle and the run's stored test predictions cover other "
            "images: export the run again after rerunning its predict rules"
        )
    diff = float(np.abs(got["max_prob"].to_numpy() - want.to_numpy()).max(initial=0.0))
    if diff > MAX_PROB_TOLERANCE:
        raise RunMismatch(
            f"{bundle.layout.inference}: on {len(ids)} of the run's test images the bundle's "
            f"maximum probability differs from the run's stored maps by up to {diff:.3g} "
            f"(tolerance {MAX_PROB_TOLERANCE:.3g}): the bundle is not the run's; nothing was "
            "exported"
        )
    p_diff = None
    stored_p = finding_probabilities(cfg, stage_layout, bundle.decision, "test")
    if stored_p is not None:
        stored = stored_p.assign(image_id=stored_p["image_id"].astype(str)).set_index("image_id")
        a = stored["p_finding"].reindex(got.index).to_numpy(float)
        p_diff = float(np.abs(a - got["p_finding"].to_numpy(float)).max(initial=0.0))
        if not p_diff <= P_FINDING_TOLERANCE:
            raise RunMismatch(
                f"{bundle.layout.inference}: on {len(ids)} of the run's test images the bundle's "
                f"p(finding) differs from the run's by up to {p_diff:.3g} (tolerance "
                f"{P_FINDING_TOLERANCE}): the bundle is not the run's; nothing was exported"
            )
    submission = run.stage(stage).submission
    theirs = pd.read_csv(submission, dtype=str, keep_default_na=False).set_index("ImageId")
    mine = got_rows.set_index("ImageId")
    differ = [i for i in sorted(ids) if theirs["EncodedPixels"].get(i) != mine["EncodedPixels"][i]]
    exact = diff == 0.0 and not p_diff
    if differ and exact:
        raise RunMismatch(
            f"{submission}: with the run's own probabilities the bundle writes other masks for "
            f"{len(differ)} of {len(ids)} test images: its decision is not the run's; nothing "
            "was exported"
        )
    if differ:
        log.warning(
            "export: %d of %d checked test images get another mask than in %s, from "
            "probabilities within the tolerance (another CPU or thread count than the run's)",
            len(differ),
            len(ids),
            submission,
        )
    return RunCheck(
        images=len(ids),
        threads=int(threads),
        max_prob_difference=diff,
        p_finding_difference=p_diff,
        rows_identical=not differ,
    )
