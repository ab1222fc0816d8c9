"""Pseudo-labels (``pseudo_label``, variants ``<model>@pl<k>``): each fold is labelled by its own
models only, confident images only, and the variant trains on its folds plus those images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medpipe.config import ConfigError, PseudoSettings, RunConfig, pseudo_round, pseudo_variant
from medpipe.data.dataset import PositiveFractionSampler, PseudoLabelSampler
from medpipe.guards import LeakageError
from medpipe.layout import (
    GATE,
    SEGMENT,
    ProbRows,
    StageLayout,
    write_gate_predictions,
    write_seg_predictions,
)
from medpipe.predictions.sources import pseudo_label_sources, stage_sources
from medpipe.steps.pseudo import confident_images, label_fold
from medpipe.training import train_fold
from tests.sources import as_stage, as_view
from tests.training.tiny_data import SIZE, run_config, small_seg_config, write_data_dir

FOLDS = 3


def _config(run: Path, **pseudo) -> dict:
    return {
        **run_config(),
        "run_dir": str(run),
        "stage": 1,
        "folds": FOLDS,
        "segmentation": {"models": {"m": small_seg_config(epochs=1)}},
        "gate": {"models": {"g": {"encoder": "resnet18"}}},
        "pseudo_label": {"models": ["m"], "finding": "g", "min_area": 0, **pseudo},
    }


@pytest.fixture()
def labelled_run(tmp_path: Path) -> tuple[dict, Path, Path, dict]:
    """A data folder and stage folder whose fold models predicted the test set.

    Test image ``i`` gets p(finding) ``P[i]`` from the gate of every fold; its maps are the
    bright disc of the image at 0.9 (fold 0) or at 0.4 (other folds: below pixel_threshold, so
    a label made by another fold would differ).
    """
    data = write_data_dir(tmp_path / "data", n_train=24, n_test=8, folds=FOLDS)
    meta = pd.read_csv(data / "meta.csv")
    meta["orig_height"], meta["orig_width"] = SIZE, SIZE
    meta.to_csv(data / "meta.csv", index=False)
    test = meta[meta["split"] == "test"]
    images = np.load(data / f"test_images_{SIZE}.npy")
    discs = images == 220
    p = np.array([0.95, 0.05, 0.5, 0.9, 0.02, 0.5, 0.5, 0.5])  # discs on images 0 and 4
    config = _config(tmp_path / "run")
    stage = StageLayout(tmp_path / "run" / "stage1")
    for f in range(FOLDS):
        level = 0.9 if f == 0 else 0.4
        maps = np.where(discs, level, 0.05).astype(np.float32)
        seg = stage.fold(SEGMENT, "m", f)
        seg.path.mkdir(parents=True)
        write_seg_predictions(seg.test, test["image_id"], maps, np.full(len(test), np.nan))
        gate = stage.fold(GATE, "g", f)
        gate.path.mkdir(parents=True)
        write_gate_predictions(gate.test, test["image_id"], p, np.zeros((len(test), 2)))
    return (
        config,
        data,
        stage.dir,
        {"p": p, "discs": discs, "images": images, "ids": test["image_id"]},
    )


def test_a_fold_is_labelled_by_its_own_models_with_only_the_confident_images(labelled_run):
    config, data, stage_dir, truth = labelled_run
    made = label_fold(as_view(config), as_stage(config, stage_dir), data, "m@pl1", 0)
    assert made["made_by"]["segment"]["model"] == "m" and made["made_by"]["segment"]["fold"] == 0
    assert made["made_by"]["gate"] == {**made["made_by"]["gate"], "model": "g", "fold": 0}

    out = StageLayout(stage_dir).fold(SEGMENT, "m@pl1", 0)
    rows = pd.read_csv(out.pseudo_rows, dtype={"image_id": str})
    ids = truth["ids"].to_numpy()
    # 0.95 with a disc: a finding; 0.05 and 0.02: empty; 0.5 undecided; 0.9 without a mask: out
    assert dict(zip(rows["image_id"], rows["has_finding"], strict=True)) == {
        ids[0]: 1.0,
        ids[1]: 0.0,
        ids[4]: 0.0,
    }
    images = np.load(out.pseudo_cache("images", SIZE))
    masks = np.load(out.pseudo_cache("masks", SIZE))
    np.testing.assert_array_equal(images, truth["images"][[0, 1, 4]])
    np.testing.assert_array_equal(masks[0], truth["discs"][0])  # fold 0's own 0.9 maps
    assert not masks[1].any() and not masks[2].any()  # empty labels, whatever the maps say
    assert made["n_finding"] == 1 and made["n_empty"] == 2 and made["n_images"] == 8

    # fold 1's maps are 0.4 < pixel_threshold: its labels are its own, not fold 0's
    assert (
        label_fold(as_view(config), as_stage(config, stage_dir), data, "m@pl1", 1)["n_finding"] == 0
    )


def test_the_variant_trains_on_its_folds_plus_its_pseudo_labels(labelled_run):
    config, data, stage_dir, _ = labelled_run
    label_fold(as_view(config), as_stage(config, stage_dir), data, "m@pl1", 0)
    out = StageLayout(stage_dir).fold(SEGMENT, "m@pl1", 0)
    metrics = train_fold("segment", "m@pl1", small_seg_config(epochs=1), config, data, 0, out.path)
    n_labelled = 16  # 24 training images, fold 0 holds 8
    assert metrics["n_pseudo"] == 3 and metrics["n_pseudo_finding"] == 1
    assert metrics["n_train"] == n_labelled + 3
    assert metrics["pseudo_per_epoch"] == round(0.5 * 3)
    assert out.checkpoint.is_file()


def test_labels_made_by_another_fold_or_of_training_images_are_refused(labelled_run):
    config, data, stage_dir, _ = labelled_run
    label_fold(as_view(config), as_stage(config, stage_dir), data, "m@pl1", 0)
    out = StageLayout(stage_dir).fold(SEGMENT, "m@pl1", 0)
    honest = out.pseudo_provenance.read_text()

    made = json.loads(honest)
    made["made_by"]["gate"]["fold"] = 2  # fold 2's gate trained on fold 0's validation images
    out.pseudo_provenance.write_text(json.dumps(made))
    with pytest.raises(LeakageError, match="made by g fold 2, which trained on fold 0"):
        train_fold("segment", "m@pl1", small_seg_config(epochs=1), config, data, 0, out.path)

    out.pseudo_provenance.write_text(honest)
    rows = pd.read_csv(out.pseudo_rows, dtype={"image_id": str})
    rows.loc[0, "image_id"] = "train.000"  # a labelled image of the training pool
    rows.to_csv(out.pseudo_rows, index=False)
    with pytest.raises(
        LeakageError, match="'train.000' is pseudo-labelled but is in the training pool"
    ):
        train_fold("segment", "m@pl1", small_seg_config(epochs=1), config, data, 0, out.path)
    assert not out.checkpoint.exists()  # refused before any training


def test_round_k_is_labelled_by_round_k_minus_1_of_the_same_fold(tmp_path):
    config = _config(tmp_path / "run", rounds=2)
    stage = tmp_path / "run" / "stage1"
    sources = pseudo_label_sources(as_view(config), as_stage(config, stage), "m@pl2", 1)
    assert (sources[SEGMENT].model, sources[SEGMENT].fold) == ("m@pl1", 1)
    assert (sources[GATE].model, sources[GATE].fold) == ("g", 1)
    assert pseudo_variant("m@pl1", 2) == "m@pl2" and pseudo_round("m@kept") == 0
    # the variants sit beside the model in every step's list, in round order
    assert RunConfig(config).trained_models(SEGMENT) == ["m", "m@pl1", "m@pl2"]
    assert RunConfig(config).trained_models(GATE) == ["g"]
    listed = stage_sources(as_view(config), as_stage(config, stage), SEGMENT)
    assert listed["m@pl2"][0].path == stage / "segment" / "m@pl2" / "fold0"
    # a pseudo variant predicts with its own weights in stage 1, whatever stage2.retrain says
    assert RunConfig(config).trained_fold(1, SEGMENT, "m@pl1", 0).path == listed["m@pl1"][0].path
    with pytest.raises(ConfigError, match="rounds is 2"):
        pseudo_label_sources(as_view(config), as_stage(config, stage), "m@pl3", 0)


@pytest.mark.parametrize(
    "pseudo, message",
    [
        ({"models": ["g"]}, "not segmentation models"),
        ({"finding": "nope"}, "'nope' is not a gate model"),
        ({"negative_below": 0.9, "positive_above": 0.8}, "must be below"),
    ],
)
def test_bad_pseudo_label_settings_are_named(tmp_path, pseudo, message):
    config = _config(tmp_path / "run", **pseudo)
    with pytest.raises(ConfigError, match=message):
        pseudo_label_sources(
            as_view(config), as_stage(config, tmp_path / "run" / "stage1"), "m@pl1", 0
        )


def test_without_a_gate_the_top_pixel_probability_decides(tmp_path):
    path = tmp_path / "test.npz"
    maps = np.zeros((3, 8, 8), np.float32)
    maps[0, 2:5, 2:5] = 0.95  # a confident finding
    maps[1, 0, 0] = 0.6  # neither: top 0.6
    write_seg_predictions(path, ["a", "b", "c"], maps, np.full(3, np.nan))
    table = confident_images(ProbRows(path), None, PseudoSettings(min_area=0), 4.0)
    assert table["label"].tolist() == [1, -1, 0]
    assert table["mask_area"].tolist() == [9, 1, 0]
    # a mask below the area floor is not a confident finding
    assert confident_images(ProbRows(path), None, PseudoSettings(), 10.0)["label"].tolist() == [
        -1,
        -1,
        0,
    ]


def test_the_pseudo_draw_keeps_the_labelled_draw_and_adds_a_share_of_pseudo_rows():
    labels = np.array([1, 0, 0, 1, 0, 0, 0, 0], np.float32)
    pseudo = np.arange(8, 18)
    plain = PositiveFractionSampler(labels, pos_frac=(0.5, 0.25), epochs=3, seed=4)
    mixed = PseudoLabelSampler(labels, pseudo, weight=0.3, pos_frac=(0.5, 0.25), epochs=3, seed=4)
    drawn = set()
    for epoch in range(3):
        plain.set_epoch(epoch)
        mixed.set_epoch(epoch)
        a, b = list(plain), list(mixed)
        labelled = [item for item in b if item[0] < 8]
        assert labelled == a  # the same rows, seeds and order as without pseudo-labels
        extra = [r for r, _ in b if r >= 8]
        assert len(extra) == 3 == len(set(extra)) and len(mixed) == len(b) == 11
        drawn.update(extra)
    assert len(drawn) > 3  # another share each epoch


def test_reproduce_doc_says_a_variant_is_retrained_with_its_auto_model(tmp_path):
    """retrain: auto chooses between a model and its @kept variant; its @pl<k> variant has
    none of its own and is retrained with it (REPRODUCE.md's decision column)."""
    from medpipe.reproducibility import _decision_text

    config = {**_config(tmp_path / "run"), "stage": 2, "stage2": {"retrain": {"m": "auto"}}}
    view = RunConfig(config)
    assert _decision_text(view, "m@pl1", {}) == (
        "retrained with m (pseudo-labelled variant, docs/stage2.md)"
    )
    assert _decision_text(view, "m", {}) == "auto: not chosen yet"
    assert view.retrained("m@pl1") and view.auto_models(SEGMENT) == ["m"]
