"""The decision rules end to end on a fabricated stage: thresholds.json's rule reaches the submission."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from medpipe.steps.submit import run_submit
from medpipe.steps.thresholds import run_thresholds
from tests.report.fake_run import make_run
from tests.sources import as_stage, as_view

TEST_IDS = [f"9.8.7.{i}" for i in range(6)]
# Gate test probabilities per model and fold. Image 1 is kept by cls alone (fold mean 0.5) but
# not by the model mean (0.4); LightGBM's test p_finding is 0.7 everywhere (fake_run).
GATE_TEST = {
    "cls": [[0.9, 0.9, 0.1, 0.8, 0.3, 0.6], [0.9, 0.1, 0.1, 0.8, 0.3, 0.6]],
    "cls2": [[0.7, 0.3, 0.2, 0.9, 0.6, 0.1], [0.7, 0.3, 0.2, 0.9, 0.6, 0.1]],
}


@pytest.fixture()
def stage(tmp_path):
    """``(config, run_dir)``: fake_run with a second gate model and every gate's test.csv."""
    config, run = make_run(tmp_path)
    config = copy.deepcopy(config)
    config["gate"]["models"]["cls2"] = dict(config["gate"]["models"]["cls"])
    for model, folds in GATE_TEST.items():
        for f, probs in enumerate(folds):
            d = run / "stage1" / "gate" / model / f"fold{f}"
            if model == "cls2":
                d.mkdir(parents=True)
                oof = pd.read_csv(run / "stage1" / "gate" / "cls" / f"fold{f}" / "oof.csv")
                oof.assign(prob=1 - oof["prob"]).to_csv(d / "oof.csv", index=False)
            pd.DataFrame({"image_id": TEST_IDS, "prob": probs}).to_csv(d / "test.csv", index=False)
    return config, run


def _submit(config, run, tmp_path) -> pd.Series:
    out = tmp_path / "submission.csv"
    run_submit(as_view(config), as_stage(config, run / "stage1"), run / "data", None, out)
    frame = pd.read_csv(out, dtype=str).set_index("ImageId")["EncodedPixels"]
    return frame.str.strip() != "-1"


def _decision(run, **setting) -> None:
    decision = {"pixel_threshold": 0.05, "min_area": 0, "weights": {"unet": 1.0}, **setting}
    (run / "stage1" / "thresholds.json").write_text(json.dumps(decision))


def test_submit_thresholds_the_mean_gate_probability_under_seg_gate(stage, tmp_path):
    config, run = stage
    # test probabilities are 0.1 everywhere: pixel 0.05 fills every image the rule keeps
    _decision(run, rule="seg_gate", mode="fusion", cls_threshold=0.5)
    kept = _submit(config, run, tmp_path)
    p_gate = np.mean([np.mean(folds, axis=0) for folds in GATE_TEST.values()], axis=0)
    assert p_gate[1] < 0.5 <= np.mean(GATE_TEST["cls"], axis=0)[1]
    assert kept.loc[TEST_IDS].tolist() == (p_gate >= 0.5).tolist()
    assert 0 < kept.sum() < len(TEST_IDS)  # neither LightGBM's 0.7 nor no gate at all


def test_submit_reads_a_thresholds_json_without_rule_as_before(stage, tmp_path):
    config, run = stage
    _decision(run, mode="fusion", cls_threshold=0.8)  # LightGBM's 0.7: every image empty
    assert not _submit(config, run, tmp_path).any()
    _decision(run, mode="fusion", cls_threshold=0.6)
    assert _submit(config, run, tmp_path).all()
    _decision(run, rule="seg_only", mode="seg_only", cls_threshold=None)
    assert _submit(config, run, tmp_path).all()


def test_thresholds_picks_the_best_nested_rule_and_writes_its_setting(stage):
    config, run = stage
    decision = run_thresholds(as_view(config), as_stage(config, run / "stage1"), run / "data")
    cv = json.loads((run / "stage1" / "cv.json").read_text())
    written = json.loads((run / "stage1" / "thresholds.json").read_text())
    assert written == json.loads(json.dumps(decision))
    rules = [r for r in ("seg_only", "seg_area", "seg_gate", "seg_gate_lgbm") if r in cv]
    assert len(rules) == 4 and "decision" not in cv
    nested = [cv["nested"][r] for r in rules]
    assert written["rule"] == cv["ensemble_rule"] == rules[int(np.argmax(nested))]
    assert cv["rule_choice"] == "nested"
    assert written["score"] == cv["ensemble"] == cv[written["rule"]]
    assert written["nested_score"] == cv["nested"]["ensemble"] == max(nested)
    assert written["p_finding_source"] == {"seg_gate": "gate", "seg_gate_lgbm": "fusion"}.get(
        written["rule"]
    )
    assert (run / "stage1" / "thresholds.png").read_bytes()[:4] == b"\x89PNG"


def test_a_forced_seg_gate_rule_reaches_the_submission(stage, tmp_path):
    config, run = stage
    config["postprocess"]["rule"] = "seg_gate"
    decision = run_thresholds(as_view(config), as_stage(config, run / "stage1"), run / "data")
    cv = json.loads((run / "stage1" / "cv.json").read_text())
    assert (decision["rule"], decision["mode"], decision["p_finding_source"]) == (
        "seg_gate",
        "fusion",
        "gate",
    )
    assert (cv["ensemble_rule"], cv["rule_choice"]) == ("seg_gate", "config")
    assert decision["cls_threshold"] is not None
    _submit(config, run, tmp_path)  # finds the gate test.csv files (None would raise)


def test_forcing_an_unavailable_rule_fails_before_any_work(stage):
    config, run = stage
    config["fusion"]["enabled"] = False
    config["postprocess"]["rule"] = "seg_gate_lgbm"
    with pytest.raises(ValueError, match=r"postprocess.rule: seg_gate_lgbm needs .*fusion.enabled"):
        run_thresholds(as_view(config), as_stage(config, run / "stage1"), run / "data")
    config["gate"]["models"] = {}
    config["postprocess"]["rule"] = "seg_gate"
    with pytest.raises(ValueError, match=r"postprocess.rule: seg_gate needs .*gate.models"):
        run_thresholds(as_view(config), as_stage(config, run / "stage1"), run / "data")
    assert "rule_choice" not in json.loads((run / "stage1" / "cv.json").read_text())


def test_config_areas_are_original_image_pixels(stage, tmp_path):
    """area_grid means the same region at every cache size: it is converted from original-image
    pixels (meta.csv's DICOM size) to cache pixels, and thresholds.json says both."""
    from medpipe.data.cache import cache_area_scale

    config, run = stage
    size = int(config["image_size"])
    assert cache_area_scale(run / "data", size) == pytest.approx((size / 1024) ** 2)
    big = tmp_path / "big"
    big.mkdir()
    pd.DataFrame({"orig_height": [2048, 2048, 1], "orig_width": [2048, 2048, 1]}).to_csv(
        big / "meta.csv", index=False
    )
    assert cache_area_scale(big, 256) == pytest.approx((256 / 2048) ** 2)  # the median film

    config = copy.deepcopy(config)
    config["postprocess"]["area_grid"] = [0, 1024.0 * 1024.0]  # 0 or the whole film
    decision = run_thresholds(as_view(config), as_stage(config, run / "stage1"), run / "data")
    assert decision["area_scale"] == pytest.approx((size / 1024) ** 2)
    assert decision["min_area_original_px"] in (0, 1024.0 * 1024.0)
    assert decision["min_area"] == pytest.approx(
        decision["min_area_original_px"] * (size / 1024) ** 2
    )
    grid = json.loads((run / "stage1" / "thresholds.json").read_text())
    assert grid["min_area"] == decision["min_area"]


def test_a_quarantined_test_file_that_names_its_image_gets_an_empty_row(stage, tmp_path):
    """The test set is meta.csv's test split plus quarantined files whose header named an image
    (one rule, medpipe.layout.identify_test_set): each still needs a row, written empty."""
    config, run = stage
    _decision(run, rule="seg_only", mode="seg_only")
    pd.DataFrame(
        {
            "source": ["broken.dcm", "garbage.bin"],
            "split": ["test", "test"],
            "reason": ["truncated file", "not a DICOM file"],
            "image_id": ["9.8.7.99", None],
            "orig_height": [64, None],
            "orig_width": [48, None],
        }
    ).to_csv(run / "data" / "quarantine.csv", index=False)
    out = tmp_path / "submission.csv"
    run_submit(as_view(config), as_stage(config, run / "stage1"), run / "data", None, out)
    rows = pd.read_csv(out, dtype=str).set_index("ImageId")["EncodedPixels"].str.strip()
    assert list(rows.index) == [*sorted(TEST_IDS), "9.8.7.99"]
    assert rows["9.8.7.99"] == "-1" and (rows[TEST_IDS] != "-1").all()


def _in_memory(config, run):
    """Today's answer the way it was computed before streaming: every map held at once."""
    from medpipe.data.cache import cache_area_scale
    from medpipe.decision.policy import ablation
    from medpipe.predictions.blend import blend
    from medpipe.predictions.sources import oof_pool, stage_sources
    from medpipe.predictions.stored import load_seg_probs, load_truths, values_for

    data = run / "data"
    folds = oof_pool(as_view(config), data)
    ids, probs, _ = load_seg_probs(
        stage_sources(as_view(config), as_stage(config, run / "stage1"), "segment"),
        "oof",
        folds=folds,
    )
    truths = load_truths(data, ids, int(config["image_size"]))
    scale = cache_area_scale(data, int(config["image_size"]))
    post = config["postprocess"]
    return (
        ids,
        probs,
        truths,
        ablation(
            blend(probs, {m: 1.0 for m in probs}),
            truths,
            cls_grid=post["cls_grid"],
            pixel_grid=post["pixel_grid"],
            area_grid=[float(a) * scale for a in post["area_grid"]],
            model_probs=probs,
            folds=values_for(ids, folds, "fold").astype(int),
        ),
    )


def test_streamed_oof_maps_are_the_in_memory_ones(stage):
    """OofMaps yields every OOF image once, fold by fold, with load_seg_probs' values and rows."""
    from medpipe.predictions.sources import oof_pool, stage_sources
    from medpipe.predictions.stored import OofMaps

    config, run = stage
    ids, probs, truths, _ = _in_memory(config, run)
    oof = OofMaps(
        stage_sources(as_view(config), as_stage(config, run / "stage1"), "segment"),
        oof_pool(as_view(config), run / "data"),
        run / "data",
        int(config["image_size"]),
    )
    assert oof.ids == ids
    seen = np.zeros(len(ids), dtype=int)
    for rows, maps, truth in oof.chunks():
        seen[rows] += 1
        np.testing.assert_array_equal(maps["unet"], probs["unet"][rows])
        np.testing.assert_array_equal(truth, truths[rows])
    assert (seen == 1).all()


def test_streamed_thresholds_decide_exactly_as_in_memory(stage):
    """The decision and every CV figure equal those of the whole-array search."""
    config, run = stage
    config = copy.deepcopy(config)
    config["gate"]["models"] = {}
    config["fusion"]["enabled"] = False
    _, _, _, expected = _in_memory(config, run)
    decision = run_thresholds(as_view(config), as_stage(config, run / "stage1"), run / "data")
    cv = json.loads((run / "stage1" / "cv.json").read_text())
    want = json.loads(json.dumps({k: v for k, v in expected.items() if k != "decision"}))
    assert {k: cv[k] for k in want} == want
    assert {k: v for k, v in decision.items() if k in expected["decision"] and k != "grid"} == {
        k: v for k, v in json.loads(json.dumps(expected["decision"])).items() if k != "grid"
    }


def test_streamed_dice_tables_do_not_depend_on_the_chunking():
    from medpipe.decision.search import dice_tables, dice_tables_streamed

    rng = np.random.default_rng(3)
    prob = rng.random((9, 16, 16)).astype(np.float16)
    truth = (rng.random((9, 16, 16)) > 0.7).astype(np.uint8)
    whole = dice_tables(prob, truth, [0.4, 0.6], [0, 3, 8], [0.5])
    order = rng.permutation(9)
    parts = [order[:2], order[2:7], order[7:]]
    streamed = dice_tables_streamed(
        ((r, prob[r], truth[r]) for r in parts), 9, [0.4, 0.6], [0, 3, 8], [0.5]
    )
    for field in ("dice", "empty_score", "confident"):
        np.testing.assert_array_equal(getattr(streamed, field), getattr(whole, field))
    with pytest.raises(ValueError, match="1 images had no chunk"):
        dice_tables_streamed(
            ((r, prob[r], truth[r]) for r in parts[:2] + [order[7:8]]), 9, [0.5], [0]
        )


def test_cv_json_records_each_gates_oof_auc_for_reproduce_md(stage):
    from sklearn.metrics import roc_auc_score

    from medpipe.predictions.sources import oof_pool, stage_sources
    from medpipe.predictions.stored import load_gate_probs
    from medpipe.reproducibility import _cv_of

    config, run = stage
    run_thresholds(as_view(config), as_stage(config, run / "stage1"), run / "data")
    cv = json.loads((run / "stage1" / "cv.json").read_text())
    folds = oof_pool(as_view(config), run / "data")
    probs = load_gate_probs(
        stage_sources(as_view(config), as_stage(config, run / "stage1"), "gate"), "oof", folds=folds
    )
    y = folds.set_index("image_id").loc[probs["image_id"], "has_finding"].to_numpy()
    assert cv["gates"]["cls"]["auc"] == pytest.approx(roc_auc_score(y, probs["cls"]))
    assert _cv_of(cv, "gate", "cls").startswith("OOF AUC ")  # was always "n/a"


def test_the_nested_cv_chooses_each_folds_ensemble_weights_without_that_fold(stage):
    """A second U-Net, noise on fold 0 and perfect on fold 1 (where the first misses two
    images): the weights that score fold 0 are chosen on fold 1 (and favour it), those that
    score fold 1 on fold 0 (and shun it)."""
    from medpipe.layout import read_folds, write_seg_predictions

    config, run = stage
    config = copy.deepcopy(config)
    config["segmentation"]["models"]["unet2"] = dict(config["segmentation"]["models"]["unet"])
    masks = np.load(run / "data" / "train_masks_32.npy")
    folds = read_folds(run / "data" / "folds.csv")
    rng = np.random.default_rng(5)
    for f in (0, 1):
        own = (folds["fold"] == f).to_numpy()
        good = masks[own] * 0.9 if f == 1 else rng.random(masks[own].shape)
        d = run / "stage1" / "segment" / "unet2" / f"fold{f}"
        d.mkdir(parents=True)
        ids = folds["image_id"].to_numpy()[own]
        write_seg_predictions(d / "oof.npz", ids, good, np.full(own.sum(), np.nan))
        write_seg_predictions(
            d / "test.npz", TEST_IDS, np.full((6, 32, 32), 0.1), np.full(6, np.nan)
        )
    run_thresholds(as_view(config), as_stage(config, run / "stage1"), run / "data")
    cv = json.loads((run / "stage1" / "cv.json").read_text())
    by_fold = cv["weights_by_fold"]
    assert set(by_fold) == {"0", "1"}
    assert by_fold["0"]["unet2"] > by_fold["0"]["unet"]  # chosen on fold 1: unet2 is perfect
    assert by_fold["1"]["unet2"] < by_fold["1"]["unet"]  # chosen on fold 0: unet2 is noise
    assert by_fold["0"] != cv["weights"] or by_fold["1"] != cv["weights"]
    assert 0 <= cv["nested"]["ensemble"] <= 1
