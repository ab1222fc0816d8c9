"""A stage of a run without training: tiny data, one medpipe segmentation model's fold files
(fabricated), and a teammate's sources beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medpipe.config import RunConfig
from medpipe.fusion.statistics import seg_statistics
from medpipe.layout import SEGMENT, StageLayout, write_seg_predictions
from tests.training import tiny_data

OWN = "unet"  # medpipe's own (fabricated) segmentation model


def _own_maps(masks: np.ndarray) -> np.ndarray:
    """A plausible but worse model than the teammate's: the finding, shifted by 5 pixels."""
    return np.roll(masks.astype(np.float16) * np.float16(0.8), 5, axis=2) + np.float16(0.05)


def write_own_model(data_dir: Path, stage_dir: Path, folds: list[int]) -> None:
    meta = pd.read_csv(data_dir / "meta.csv", dtype={"image_id": str})
    pool = pd.read_csv(data_dir / "folds.csv", dtype={"image_id": str})
    masks = np.load(data_dir / f"train_masks_{tiny_data.SIZE}.npy")
    at = meta.set_index("image_id")["cache_index"]
    test = meta[meta["split"] == "test"]
    test_maps = np.full((len(test), tiny_data.SIZE, tiny_data.SIZE), 0.05, np.float16)
    for d in StageLayout(stage_dir).folds_of(SEGMENT, OWN, folds):
        d.path.mkdir(parents=True, exist_ok=True)
        ids = pool.loc[pool["fold"] == d.fold, "image_id"].to_numpy(str)
        maps = _own_maps(masks[at.loc[ids].to_numpy()])
        write_seg_predictions(d.oof, ids, maps, np.full(len(ids), np.nan), seg_statistics(maps))
        write_seg_predictions(
            d.test,
            test["image_id"],
            test_maps,
            np.full(len(test), np.nan),
            seg_statistics(test_maps),
        )


@pytest.fixture
def stage(tmp_path) -> dict:
    """``data_dir``, ``stage_dir``, ``config`` (sources added by the test), ``root``."""
    data_dir = tiny_data.write_data_dir(tmp_path / "run" / "data", n_train=36, n_test=6, folds=3)
    meta = pd.read_csv(data_dir / "meta.csv")
    meta = meta.assign(orig_height=256, orig_width=256, age=50.0, sex="M", view="PA")
    meta.to_csv(data_dir / "meta.csv", index=False)
    config = {
        "run_dir": str(tmp_path / "run"),
        "folds": 3,
        "image_size": tiny_data.SIZE,
        "seed": 0,
        "segmentation": {"models": {OWN: {}}},
        "gate": {"models": {}},
        "fusion": {"enabled": False},
        "postprocess": {
            "optimise_weights": True,
            "cls_grid": [0.3, 0.5, 0.7],
            "pixel_grid": [0.3, 0.5, 0.7],
            "area_grid": [0, 80],
        },
        "ensemble": {"external": {}},
    }
    stage_dir = RunConfig(config).layout.stage_dir(1)
    return {"data_dir": data_dir, "stage_dir": stage_dir, "config": config, "root": tmp_path}


def add_source(stage: dict, name: str, kind: str, path: Path) -> None:
    stage["config"]["ensemble"]["external"][name] = {"path": str(path), "kind": kind}
