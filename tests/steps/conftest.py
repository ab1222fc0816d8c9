"""A fabricated stage for the step tests: tests/training/tiny_data's images (a bright disc is a
finding), one segmentation model and one gate whose fold files say what the images show, so
every step's answer is known without training anything.

Each step runs as a rule runs it, through its ``medpipe`` command (:func:`step`): the command
names are the stable interface (DESIGN.md §3), wherever the code behind them lives.
"""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medpipe.cli import main
from medpipe.config import RunConfig
from medpipe.fusion.statistics import seg_statistics
from medpipe.layout import GATE, SEGMENT, StageLayout, write_gate_predictions, write_seg_predictions
from tests.training import tiny_data

REPO = Path(__file__).resolve().parents[2]
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


def stage_config(run_dir: Path) -> dict:
    """The default config (schema-valid) sized to the fabricated stage."""
    config = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    seg_block = next(iter(config["segmentation"]["models"].values()))
    gate_block = next(iter(config["gate"]["models"].values()))
    config.update(run_dir=str(run_dir), stage=1, seed=0, folds=FOLDS, image_size=tiny_data.SIZE)
    config["segmentation"]["models"] = {SEG: seg_block}
    config["gate"]["models"] = {GATE_MODEL: gate_block}
    config["fusion"].update(
        n_components=2, params={"num_boost_round": 20, "min_data_in_leaf": 2, "num_threads": 1}
    )
    config["postprocess"].update(
        cls_grid=[0.3, 0.5, 0.7], pixel_grid=[0.3, 0.5, 0.7], area_grid=[0, 160]
    )
    config["pseudo_label"] = {"models": []}
    config["stage2"] = {"retrain": {SEG: True, GATE_MODEL: False}}
    # never the repository's own data folder
    config["data"] = {**config["data"], "root": str(run_dir.parent / "no-data"), "synthetic": None}
    return config


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
    config = stage_config(root / "run")
    stage_dir = RunConfig(config).layout.stage_dir(1)
    write_stage(data_dir, stage_dir)
    return {"data_dir": data_dir, "stage_dir": stage_dir, "config": config, "root": root}


def _run(stage: dict, command: str, args: list, config: dict | None) -> tuple[int, str]:
    path = stage["root"] / "config.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(config or stage["config"])))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main([command, "--config", str(path), *map(str, args)])
    return rc, err.getvalue()


def step(stage: dict, command: str, *args, config: dict | None = None) -> None:
    """Run ``medpipe <command> --config <the stage's config> <args>``; it must succeed."""
    rc, err = _run(stage, command, list(args), config)
    assert rc == 0, err


def refused(stage: dict, command: str, *args, config: dict | None = None) -> str:
    """Run a command that must refuse: exit 2 and one line, which this returns."""
    rc, err = _run(stage, command, list(args), config)
    lines = [line for line in err.splitlines() if line.startswith(f"medpipe {command}: error:")]
    assert rc == 2 and len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def stage(tmp_path) -> dict:
    return make_stage(tmp_path)
