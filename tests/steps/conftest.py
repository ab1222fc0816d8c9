"""A fabricated stage for the step tests: tests/training/tiny_data's images (a bright disc is a
finding), one segmentation model and one gate whose fold files say what the images show, so
every step's answer is known without training anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medpipe.config import RunConfig
from medpipe.fusion.statistics import seg_statistics
from medpipe.layout import GATE, SEGMENT, StageLayout, write_gate_predictions, write_seg_predictions
from tests.training import tiny_data

SEG, GATE_MODEL = "unet", "cls"
FOLDS = 3
ORIGINAL = 256  # every film's DICOM side: area_grid's pixels are 16x a 64² cache pixel


def maps_of(images: np.ndarray) -> np.ndarray:
    """A good segmentation model: 0.9 on the disc (the only pixels at 220), 0.05 elsewhere."""
    return np.where(images == 220, 0.9, 0.05).astype(np.float32)


def write_stage(data_dir: Path, stage_dir: Path, seed: int = 0) -> None:
    """Each fold's OOF (its own validation images) and test files of both models."""
    rng = np.random.default_rng(seed)
    meta = pd.read_csv(data_dir / "meta.csv", dtype={"image_id": str})
    pool = pd.read_csv(data_dir / "folds.csv", dtype={"image_id": str})
    size = tiny_data.SIZE
    train = np.load(data_dir / f"train_images_{size}.npy")
    test_images = np.load(data_dir / f"test_images_{size}.npy")
    at = meta[meta["split"] == "train"].set_index("image_id")["cache_index"]
    test = meta[meta["split"] == "test"]
    test_maps = maps_of(test_images[test["cache_index"].to_numpy()])
    test_has = test_maps.max(axis=(1, 2)) > 0.5
    stage = StageLayout(stage_dir)
    for k in range(FOLDS):
        ids = pool.loc[pool["fold"] == k, "image_id"].to_numpy(str)
        has = pool.loc[pool["fold"] == k, "has_finding"].to_numpy()
        seg, gate = stage.fold(SEGMENT, SEG, k), stage.fold(GATE, GATE_MODEL, k)
        for d in (seg, gate):
            d.path.mkdir(parents=True, exist_ok=True)
        maps = maps_of(train[at.loc[ids].to_numpy()])
        nan = np.full(len(ids), np.nan)
        write_seg_predictions(seg.oof, ids, maps, nan, seg_statistics(maps))
        write_seg_predictions(
            seg.test,
            test["image_id"],
            test_maps,
            np.full(len(test), np.nan),
            seg_statistics(test_maps),
        )
        # the gate ranks findings first, with some noise: AUC 1, probabilities not 0 or 1
        p = np.clip(0.25 + 0.5 * has + rng.uniform(-0.2, 0.2, len(ids)), 0, 1)
        write_gate_predictions(gate.oof, ids, p, rng.normal(size=(len(ids), 4)))
        p_test = np.clip(0.25 + 0.5 * test_has + rng.uniform(-0.2, 0.2, len(test)), 0, 1)
        write_gate_predictions(gate.test, test["image_id"], p_test, rng.normal(size=(len(test), 4)))


def make_stage(root: Path) -> dict:
    """``data_dir``, ``stage_dir``, ``config`` of a stage-1 run below ``root``."""
    data_dir = tiny_data.write_data_dir(root / "run" / "data", n_train=36, n_test=8, folds=FOLDS)
    meta = pd.read_csv(data_dir / "meta.csv")
    n = len(meta)
    meta = meta.assign(
        orig_height=ORIGINAL,
        orig_width=ORIGINAL,
        age=np.linspace(20, 80, n),
        sex=np.where(np.arange(n) % 2, "M", "F"),
        view=np.where(np.arange(n) % 3, "PA", "AP"),
    )
    meta.to_csv(data_dir / "meta.csv", index=False)
    config = {
        "run_dir": str(root / "run"),
        "stage": 1,
        "folds": FOLDS,
        "image_size": tiny_data.SIZE,
        "seed": 0,
        "segmentation": {"models": {SEG: {}}},
        "gate": {"models": {GATE_MODEL: {}}},
        "fusion": {
            "enabled": True,
            "n_components": 2,
            "params": {"num_boost_round": 20, "min_data_in_leaf": 2, "num_threads": 1},
        },
        "postprocess": {
            "optimise_weights": True,
            "cls_grid": [0.3, 0.5, 0.7],
            "pixel_grid": [0.3, 0.5, 0.7],
            "area_grid": [0, 160],
        },
        "ensemble": {"external": {}},
        "pseudo_label": {"models": []},
    }
    stage_dir = RunConfig(config).layout.stage_dir(1)
    write_stage(data_dir, stage_dir)
    return {"data_dir": data_dir, "stage_dir": stage_dir, "config": config, "root": root}


@pytest.fixture
def stage(tmp_path) -> dict:
    return make_stage(tmp_path)
