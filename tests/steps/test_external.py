"""Step ``import_external`` (``medpipe import-external``): a teammate's predictions, checked,
written as fold folders of a model: each fold its own validation images, every fold the test set.
(tests/ensemble checks every refusal and follows the sources through the decisions.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medpipe.layout import GATE, SEGMENT, StageLayout, read_gate_predictions, read_seg_predictions
from tests.ensemble import teammate
from tests.steps.conftest import FOLDS, refused, step


def _source(stage, name: str, kind: str, path: Path) -> tuple[dict, tuple]:
    config = {
        **stage["config"],
        "ensemble": {"external": {name: {"path": str(path), "kind": kind}}},
    }
    args = ("--name", name, "--data-dir", stage["data_dir"], "--stage-dir", stage["stage_dir"],
            "--stage", 1, "--test-split", "test")  # fmt: skip
    return config, args


def _add(stage, name: str, kind: str, path: Path) -> None:
    config, args = _source(stage, name, kind, path)
    step(stage, "import-external", *args, config=config)


def _refused(stage, name: str, kind: str, path: Path) -> str:
    config, args = _source(stage, name, kind, path)
    return refused(stage, "import-external", *args, config=config)


def test_maps_become_segmentation_folds_of_each_folds_own_images(stage):
    written = teammate.write_maps(stage["root"] / "team", stage["data_dir"], side=96)
    _add(stage, "team", "maps", stage["root"] / "team")
    dirs = StageLayout(stage["stage_dir"]).external_folds("team", SEGMENT, range(FOLDS))
    pool = pd.read_csv(stage["data_dir"] / "folds.csv", dtype={"image_id": str})
    test_ids = set(written["test"]["image_id"])
    for d in dirs:
        oof = read_seg_predictions(d.oof)
        own = set(pool.loc[pool["fold"] == d.fold, "image_id"])
        assert set(oof["image_id"]) == own
        assert oof["prob"].shape[1:] == (stage["config"]["image_size"],) * 2  # resized to the cache
        assert set(read_seg_predictions(d.test)["image_id"]) == test_ids


def test_p_finding_becomes_gate_folds(stage):
    written = teammate.write_p_finding(stage["root"] / "team_p", stage["data_dir"])
    _add(stage, "team_p", "p_finding", stage["root"] / "team_p")
    pool = pd.read_csv(stage["data_dir"] / "folds.csv", dtype={"image_id": str})
    expected = written["oof"].set_index("image_id")["p_finding"]
    for d in StageLayout(stage["stage_dir"]).external_folds("team_p", GATE, range(FOLDS)):
        oof = read_gate_predictions(d.oof).set_index("image_id")["prob"]
        assert set(oof.index) == set(pool.loc[pool["fold"] == d.fold, "image_id"])
        assert np.allclose(oof, expected.loc[oof.index])


def test_a_refused_source_writes_nothing(stage):
    teammate.write_maps(stage["root"] / "team", stage["data_dir"], side=96)
    with np.load(stage["root"] / "team" / "oof.npz") as saved:
        arrays = dict(saved)
    arrays["fold"] = (arrays["fold"] + 1) % FOLDS  # every image in another fold than folds.csv's
    np.savez(stage["root"] / "team" / "oof.npz", **arrays)
    line = _refused(stage, "team", "maps", stage["root"] / "team")
    assert "team/oof.npz: image" in line and "is in fold 1 here but in fold 0 in folds.csv" in line
    assert not StageLayout(stage["stage_dir"]).external_dir("team").exists()
    teammate.write_maps(stage["root"] / "team", stage["data_dir"], side=96)
    (stage["root"] / "team" / "test.npz").unlink()
    line = _refused(stage, "team", "maps", stage["root"] / "team")
    assert "team/test.npz: source 'team' has no test maps" in line
    assert not StageLayout(stage["stage_dir"]).external_dir("team").exists()
