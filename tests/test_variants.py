"""Stage 2, ``retrain: auto``: both variants are scored on the same OOF images, the better one
is kept, and every step after reads the kept one (steps.variants, predictions.sources.stage_sources)."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest

from medpipe.config import RunConfig
from medpipe.layout import StageLayout, read_folds, read_seg_predictions, write_seg_predictions
from medpipe.predictions.sources import stage_sources
from medpipe.steps.thresholds import run_thresholds
from medpipe.steps.variants import choose_variants
from tests.report.fake_run import make_run
from tests.sources import as_stage, as_view


@pytest.fixture()
def auto_run(tmp_path):
    """fake_run's stage 2 with ``unet: auto`` and a ``unet@kept`` variant that is noise."""
    config, run = make_run(tmp_path, stage2=True)
    config = copy.deepcopy(config)
    config["stage2"]["retrain"]["unet"] = "auto"
    stage = run / "stage2"
    rng = np.random.default_rng(3)
    for f in (0, 1):
        src = stage / "segment" / "unet" / f"fold{f}"
        dst = stage / "segment" / "unet@kept" / f"fold{f}"
        dst.mkdir(parents=True)
        oof = read_seg_predictions(src / "oof.npz")
        noise = rng.random(oof["prob"].shape)
        write_seg_predictions(dst / "oof.npz", oof["image_id"], noise, oof["cls_prob"])
        shutil.copyfile(src / "test.npz", dst / "test.npz")
    return config, run


def test_the_better_variant_is_kept_and_the_steps_read_it(auto_run):
    config, run = auto_run
    stage = run / "stage2"
    data = run / "stage2" / "data"
    choice = choose_variants(as_view(config), as_stage(config, stage), data)
    row = choice["unet"]
    assert row["task"] == "segment" and row["choice"] == "retrained"
    assert row["retrained"]["cv"] > row["kept"]["cv"]  # the noise variant loses
    assert json.loads((stage / "retrain_choice.json").read_text()) == json.loads(json.dumps(choice))
    assert (
        stage_sources(as_view(config), as_stage(config, stage), "segment")["unet"][0].path
        == stage / "segment/unet/fold0"
    )

    # the other way round: the retrained variant becomes noise, the kept one the good maps
    for f in (0, 1):
        good, kept = stage / "segment/unet" / f"fold{f}", stage / "segment/unet@kept" / f"fold{f}"
        tmp = good.with_name("swap")
        good.rename(tmp)
        kept.rename(good)
        tmp.rename(kept)
    choice = choose_variants(as_view(config), as_stage(config, stage), data)
    assert choice["unet"]["choice"] == "kept"
    picked = stage_sources(as_view(config), as_stage(config, stage), "segment")["unet"]
    assert [d.path for d in picked] == [
        stage / "segment/unet@kept/fold0",
        stage / "segment/unet@kept/fold1",
    ]
    # thresholds scores the kept variant under the model's own name: the same OOF score
    run_thresholds(as_view(config), as_stage(config, stage), data)
    cv = json.loads((stage / "cv.json").read_text())
    assert cv["models"]["unet"]["seg_only"] == pytest.approx(choice["unet"]["kept"]["oof"])


def test_a_predicted_kept_variant_without_a_choice_is_an_error(auto_run):
    config, run = auto_run
    with pytest.raises(FileNotFoundError, match="retrain_choice.json"):
        stage_sources(as_view(config), as_stage(config, run / "stage2"), "segment")
    # stage 1 has no kept variant: its folders are the model's own
    assert (
        stage_sources(as_view(config), StageLayout(run / "stage1", 1), "segment")["unet"][0].path
        == run / "stage1/segment/unet/fold0"
    )


def test_auto_trains_the_model_and_its_kept_variant_predicts_with_stage_1_weights(auto_run):
    config, run = auto_run
    view = RunConfig({**config, "run_dir": str(run)})
    assert view.retrain_setting("unet") == "auto" and view.auto_models("segment") == ["unet"]
    assert view.retrained("unet") and not view.retrained("unet@kept")
    assert view.trained_fold(2, "segment", "unet", 0).path == run / "stage2/segment/unet/fold0"
    assert view.trained_fold(2, "segment", "unet@kept", 0).path == run / "stage1/segment/unet/fold0"
    every = {"every_variant": True}
    assert list(stage_sources(view, view.layout.stage(2), "segment", **every)) == [
        "unet",
        "unet@kept",
    ]
    assert list(stage_sources(view, view.layout.stage(1), "segment", **every)) == ["unet"]
    assert view.model("segment", "unet@kept") == view.model("segment", "unet")


def test_an_unknown_retrain_setting_is_refused():
    from medpipe.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="stage2.retrain.unet_regnetx"):
        load_config(["configs/default.yaml"], {"stage2": {"retrain": {"unet_regnetx": "maybe"}}})


def test_the_same_validation_images_score_both_variants(auto_run):
    config, run = auto_run
    folds = read_folds(run / "stage2" / "data" / "folds.csv")
    ids = {
        name: sorted(
            i
            for f in (0, 1)
            for i in read_seg_predictions(run / "stage2/segment" / name / f"fold{f}/oof.npz")[
                "image_id"
            ]
        )
        for name in ("unet", "unet@kept")
    }
    assert ids["unet"] == ids["unet@kept"] == sorted(folds.loc[folds["fold"] >= 0, "image_id"])
