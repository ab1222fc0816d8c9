"""Step ``import_external``: a teammate's predictions, checked, written as fold folders of a
model: each fold its own validation images, every fold the test set. (tests/ensemble checks every
refusal and follows the sources through the decisions.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medpipe.layout import GATE, SEGMENT, StageLayout, read_gate_predictions, read_seg_predictions
from medpipe.predictions.external import source_dir, source_files
from medpipe.steps.external import ExternalSourceError, import_external
from tests.ensemble import teammate
from tests.steps.conftest import FOLDS


def _add(stage, name: str, kind: str, path: Path) -> dict:
    config = {
        **stage["config"],
        "ensemble": {"external": {name: {"path": str(path), "kind": kind}}},
    }
    import_external(config, name, stage["data_dir"], stage["stage_dir"], "test")
    return config


def test_a_stage_placeholder_picks_each_stages_folder():
    block = {"path": "team/stage{stage}", "kind": "maps"}
    assert source_dir(block, 2) == Path("team/stage2")
    files = source_files(block, 1)
    assert set(files) == {"oof", "test"}
    assert all(p.parent == Path("team/stage1") for p in files.values())


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
    with pytest.raises(
        ExternalSourceError,
        match=r"team/oof.npz: image .* is in fold 1 here but in fold 0 in folds.csv",
    ):
        _add(stage, "team", "maps", stage["root"] / "team")
    assert not StageLayout(stage["stage_dir"]).external_dir("team").exists()
    teammate.write_maps(stage["root"] / "team", stage["data_dir"], side=96)
    (stage["root"] / "team" / "test.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"team/test.npz: source 'team' has no test maps"):
        _add(stage, "team", "maps", stage["root"] / "team")
    assert not StageLayout(stage["stage_dir"]).external_dir("team").exists()
