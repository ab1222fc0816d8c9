"""Step ``features``: one row per image of CNN outputs and DICOM metadata, for LightGBM.

Beside the table it saves the fitted embedding PCA (``embedding_pca.npz`` in the fusion
folder), so the bundle projects new images' embeddings as the test rows were projected."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from medpipe.config import RunConfig
from medpipe.fusion.features import build_features, save_transforms
from medpipe.guards import check_training_data
from medpipe.io.atomic import atomic_write_csv
from medpipe.layout import GATE, SEGMENT, StageLayout, data_files, fusion_files
from medpipe.predictions.sources import oof_pool, stage_sources

__all__ = ["run_features"]

log = logging.getLogger(__name__)


def run_features(
    cfg: RunConfig, stage: StageLayout, data_dir: str | Path, out: str | Path
) -> pd.DataFrame:
    """One row per image of the stage's OOF pool and test split: the features LightGBM fuses."""
    seg, gate = stage_sources(cfg, stage, SEGMENT), stage_sources(cfg, stage, GATE)
    check_training_data(data_dir, seg, gate)
    n_components = int(cfg.fusion.get("n_components", 8))
    transforms: dict = {}
    features = build_features(
        data_files(data_dir)["meta"],
        oof_pool(cfg, data_dir),
        seg,
        gate,
        n_components=n_components,
        seed=cfg.seed,
        transforms=transforms,
    )
    save_transforms(fusion_files(Path(out).parent)["pca"], transforms, n_components)
    atomic_write_csv(features, out)
    log.info("features: %d rows x %d columns -> %s", len(features), features.shape[1], out)
    return features
