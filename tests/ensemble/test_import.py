"""A teammate's predictions, imported, read back through the steps' own readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medpipe.fusion.features import build_features
from medpipe.fusion.statistics import seg_statistics
from medpipe.layout import GATE, SEGMENT, FoldDir, StageLayout, read_folds, read_seg_statistics
from medpipe.predictions.sources import gate_mean, stage_sources
from medpipe.predictions.stored import OofMaps
from medpipe.predictions.stored import TestMaps as StreamedTestMaps
from medpipe.steps.external import import_external
from tests.ensemble import teammate
from tests.ensemble.conftest import OWN, add_source, write_own_model
from tests.sources import as_stage, as_view


def _import(stage, name):
    return import_external(
        as_view(stage["config"]),
        as_stage(stage["config"], stage["stage_dir"]),
        stage["data_dir"],
        name,
    )


def _resized(maps: np.ndarray, size: int) -> np.ndarray:
    return np.stack(
        [
            np.asarray(Image.fromarray(m).resize((size, size), Image.Resampling.BILINEAR))
            for m in maps
        ]
    )


@pytest.fixture
def imported_maps(stage):
    """A 96² threshold segmenter imported into the 64² cache beside medpipe's own model."""
    write_own_model(stage["data_dir"], stage["stage_dir"], [0, 1, 2])
    written = teammate.write_maps(stage["root"] / "team", stage["data_dir"], side=96)
    add_source(stage, "team", "maps", stage["root"] / "team")
    _import(stage, "team")
    return stage, written


def test_maps_at_another_size_read_back_like_a_segmentation_model(imported_maps):
    stage, written = imported_maps
    seg = stage_sources(
        as_view(stage["config"]), as_stage(stage["config"], stage["stage_dir"]), SEGMENT
    )
    assert list(seg) == [OWN, "team"]  # after the trained models
    external = StageLayout(stage["stage_dir"]).external_dir("team")
    assert [d.path.parent for d in seg["team"]] == [external] * 3
    assert [d.fold for d in seg["team"]] == [0, 1, 2]

    folds = read_folds(stage["data_dir"] / "folds.csv")
    oof = OofMaps(seg, folds, stage["data_dir"], 64)
    expected = dict(
        zip(written["oof"]["image_id"], _resized(written["oof"]["prob"], 64), strict=True)
    )
    seen = 0
    for rows, probs, _truth in oof.chunks():
        assert probs["team"].shape[1:] == (64, 64)
        for row, image in zip(rows, probs["team"], strict=True):
            # stored as uint8 levels: within half a level of the resized map
            np.testing.assert_allclose(image, expected[oof.ids[row]], atol=0.5 / 255 + 1e-3)
            seen += 1
    assert seen == 36

    test = StreamedTestMaps(seg)
    want = dict(
        zip(written["test"]["image_id"], _resized(written["test"]["prob"], 64), strict=True)
    )
    for sl, probs in test.chunks():
        for image_id, image in zip(test.ids[sl], probs["team"], strict=True):
            np.testing.assert_allclose(image, want[image_id], atol=0.5 / 255 + 1e-3)


def test_each_fold_holds_its_own_validation_images_and_the_fusion_statistics(imported_maps):
    stage, _ = imported_maps
    folds = read_folds(stage["data_dir"] / "folds.csv").set_index("image_id")["fold"]
    for d in stage_sources(
        as_view(stage["config"]), as_stage(stage["config"], stage["stage_dir"]), SEGMENT
    )["team"]:
        with np.load(d.oof) as data:
            ids = data["image_id"]
            assert np.isnan(data["cls_prob"]).all()  # no aux head
        assert set(folds.loc[ids]) == {d.fold}
        stats = read_seg_statistics(d.oof, np.arange(len(ids)))
        assert list(stats) == list(seg_statistics(np.zeros((1, 2, 2), np.float16)))


def test_uint8_levels_give_the_same_maps(stage):
    for name, levels in (("floats", False), ("levels", True)):
        teammate.write_maps(stage["root"] / name, stage["data_dir"], side=96, levels=levels)
        add_source(stage, name, "maps", stage["root"] / name)
        _import(stage, name)
    seg = stage_sources(
        as_view(stage["config"]), as_stage(stage["config"], stage["stage_dir"]), SEGMENT
    )
    test = StreamedTestMaps({k: seg[k] for k in ("floats", "levels")})
    for _, probs in test.chunks():
        np.testing.assert_allclose(probs["floats"], probs["levels"], atol=1.5 / 255)


def test_p_finding_reads_back_like_a_gate_and_enters_the_features(imported_maps):
    stage, _ = imported_maps
    frames = teammate.write_p_finding(stage["root"] / "team_p", stage["data_dir"])
    add_source(stage, "team_p", "p_finding", stage["root"] / "team_p")
    _import(stage, "team_p")
    gate = stage_sources(
        as_view(stage["config"]), as_stage(stage["config"], stage["stage_dir"]), GATE
    )
    assert list(gate) == ["team_p"] and gate["team_p"][0].oof.suffix == ".csv"

    folds = read_folds(stage["data_dir"] / "folds.csv")
    oof = gate_mean(gate, "oof", folds).set_index("image_id")["p_finding"]
    want = frames["oof"].set_index("image_id")["p_finding"]
    np.testing.assert_allclose(oof.loc[want.index], want, rtol=1e-12)
    test = gate_mean(gate, "test", None).set_index("image_id")["p_finding"]
    mean = frames["test"].groupby("image_id")["p_finding"].mean()  # the teammate's fold mean
    np.testing.assert_allclose(test.loc[mean.index], mean, rtol=1e-12)

    seg = stage_sources(
        as_view(stage["config"]), as_stage(stage["config"], stage["stage_dir"]), SEGMENT
    )
    features = build_features(stage["data_dir"] / "meta.csv", folds, seg, gate, n_components=2)
    assert {"gate_team_p_prob", "seg_team_max", f"seg_{OWN}_max"} <= set(features.columns)
    assert not [c for c in features.columns if c.startswith("gate_team_p_pc")]  # no embeddings
    train = features[features["fold"] >= 0].set_index("image_id")
    np.testing.assert_allclose(train.loc[want.index, "gate_team_p_prob"], want, rtol=1e-12)
    assert features["seg_team_max"].notna().all()


def test_the_rule_pattern_names_the_files_the_steps_read(stage):
    """external_pattern's {ext} is the extension FoldDir.predictions gives each task."""
    layout = StageLayout(stage["stage_dir"])
    for family, ext in ((SEGMENT, "npz"), (GATE, "csv")):
        (d,) = layout.external_folds("x", family, [2])
        for which in ("oof", "test"):
            pattern = str(layout.external_pattern("x", 2, which))
            assert pattern.format(ext=ext) == str(d.predictions(which))
        source = layout.external_source(family, stage["root"] / "team")
        assert isinstance(source, FoldDir) and source.oof == stage["root"] / "team" / f"oof.{ext}"


def test_a_stage_placeholder_in_the_path_picks_the_stage_folder(stage):
    from medpipe.predictions.external import source_files

    files = source_files({"path": "team/stage{stage}", "kind": "p_finding"}, 2)
    assert files["oof"].as_posix() == "team/stage2/oof.csv"
    assert pd.Series([str(p) for p in files.values()]).str.endswith(".csv").all()


def test_the_reproduction_manifest_hashes_the_source_files(stage):
    from medpipe.reproducibility import external_sources, sha256_file

    source = stage["root"] / "team_p"
    teammate.write_p_finding(source / "stage1", stage["data_dir"])
    add_source(stage, "team_p", "p_finding", source / "stage{stage}")
    rows = external_sources(as_view(stage["config"]), stage["config"]["run_dir"])
    assert [(r["stage"], Path(r["path"]).name) for r in rows] == [
        (1, "oof.csv"),
        (1, "test.csv"),
        (2, "oof.csv"),
        (2, "test.csv"),
    ]
    assert rows[0]["sha256"] == sha256_file(source / "stage1" / "oof.csv")
    assert rows[2]["sha256"] == "MISSING"  # no stage-2 predictions handed over yet
