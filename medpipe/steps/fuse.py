"""Step ``fuse``: LightGBM on the features, on the same patient-grouped folds."""

from __future__ import annotations

from pathlib import Path

from medpipe.config import RunConfig
from medpipe.fusion.lgbm import fuse
from medpipe.io.atomic import atomic_write_csv
from medpipe.layout import fusion_files, read_features
from medpipe.predictions.sources import oof_pool

__all__ = ["run_fuse"]


def run_fuse(
    cfg: RunConfig, features_csv: str | Path, data_dir: str | Path, out_dir: str | Path
) -> None:
    """LightGBM on the features, fold by fold (the stage's OOF pool): OOF and test p(finding)."""
    out = fusion_files(out_dir)
    features = read_features(features_csv)
    folds = oof_pool(cfg, data_dir)
    params = {
        **(cfg.fusion.get("params") or {}),
        "optuna_trials": int(cfg.fusion.get("optuna_trials", 0)),
    }
    oof, test = fuse(
        features, folds.set_index("image_id")["has_finding"], folds, params, cfg.seed, Path(out_dir)
    )
    atomic_write_csv(oof, out["oof"])
    atomic_write_csv(test, out["test"])
