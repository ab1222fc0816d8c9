"""The multi-label stage's submission: the classifiers' test probabilities blended with the
decision's weights (or the source the decision chose: the LightGBM fusion, or its mean with the
blend, a teammate's probabilities or their mean with the blend), its thresholds rule applied, written as ``Id,Predicted`` in the sample
submission's order (an Id ingest could not read gets an empty row) and validated."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from medpipe.config import RunConfig
from medpipe.io.hpa import read_sample_submission
from medpipe.layout import CLASSIFY, HpaInputLayout, StageLayout, read_decision_fields
from medpipe.multilabel.decision import apply_decision
from medpipe.multilabel.submission import validate_submission, write_submission
from medpipe.multilabel.tables import (
    blend_mean,
    fused_probabilities,
    n_classes,
    source_probabilities,
    test_probabilities,
)
from medpipe.predictions.external import class_sources
from medpipe.predictions.sources import stage_sources

__all__ = ["write_stage_submission", "sample_ids"]

log = logging.getLogger(__name__)


def sample_ids(cfg: RunConfig, stage: StageLayout) -> list[str]:
    """The stage's test Ids in the order its submission keeps (``sample_submission.csv``)."""
    layout = HpaInputLayout(cfg.section("data")["root"])
    path = layout.sample_submission if stage.number == 1 else layout.stage2_sample_submission
    return list(read_sample_submission(path).ids)


def write_stage_submission(
    cfg: RunConfig,
    stage: StageLayout,
    data_dir: str | Path,
    input_dir: str | Path | None,
    out: str | Path,
) -> pd.DataFrame:
    decision = read_decision_fields(stage.thresholds)
    ids, probs = test_probabilities(stage_sources(cfg, stage, CLASSIFY))
    cnn = blend_mean(probs, decision.get("weights"))
    source = decision.get("source", "cnn")  # absent: fusion off and no teammates, the CNN blend
    fused = fused_probabilities(stage.fused("test"), ids) if source in ("fused", "mean") else None
    teammates = {}
    for name, dirs in class_sources(cfg, stage).items():
        if source in (name, f"cnn+{name}"):  # the teammate's fold mean, in this split's order
            theirs_ids, theirs = test_probabilities({name: dirs})
            teammates[name] = pd.DataFrame(theirs[name], index=theirs_ids).loc[ids].to_numpy()
    khot = apply_decision(decision, source_probabilities(source, cnn, fused, teammates))
    k = n_classes(data_dir)
    order = sample_ids(cfg, stage)
    row_of = {image_id: i for i, image_id in enumerate(ids)}
    missing = [i for i in order if i not in row_of]
    if missing:
        log.warning(
            "submit: %d test images had no prediction (quarantined at ingest): written empty",
            len(missing),
        )
    rows = np.zeros((len(order), k), dtype=np.uint8)
    for r, image_id in enumerate(order):
        if image_id in row_of:
            rows[r] = khot[row_of[image_id]]
    write_submission(out, order, rows)
    frame = validate_submission(out, expected_ids=order, n_classes=k)
    log.info("submit: %d images, %.2f labels per image -> %s", len(order), rows.sum(1).mean(), out)
    return frame
