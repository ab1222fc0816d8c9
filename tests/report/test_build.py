"""The report on fabricated runs: every section present, absent inputs noted, no patient keys."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from medpipe.report import build_report
from medpipe.report.cases import classify, pick_cases
from medpipe.report.decisions import calibration_bins
from medpipe.report.training import ablation_table
from tests.report.fake_run import PATIENT_MARK, make_run
from tests.sources import as_view

SECTIONS = ("Overview", "Data", "Training", "Decisions", "Cases", "Stage 2")


def _build(config, run_dir, tmp_path):
    out = build_report(
        as_view(config),
        run_dir,
        tmp_path / "report.html",
        plots_dir=tmp_path / "plots",
        progress=False,
    )
    return out.read_text()


def test_full_run_has_every_section_and_plot(fake_run, tmp_path):
    html = _build(*fake_run, tmp_path)
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in html
    plots = {p.stem for p in (tmp_path / "plots").glob("*.png")}
    assert {
        "data_contact_sheet",
        "data_labels",
        "data_metadata",
        "curves_segment_unet",
        "curves_gate_cls",
        "ablation",
        "fusion_importance",
        "gate_roc_calibration",
        "cases_area_scatter",
        "cases_best_tp",
        "cases_fp",
        "cases_fn",
    } <= plots
    # every plot written to disk is also embedded in the page (plus the threshold heat map)
    assert html.count("data:image/png;base64,") == len(plots) + 1
    assert "no PixelData element" in html  # the quarantine table
    assert "Not available" not in html


def test_the_pseudonymous_keys_never_reach_the_page(fake_run, tmp_path):
    html = _build(*fake_run, tmp_path)
    assert PATIENT_MARK not in html
    assert "patient_key" not in html


def test_disabled_fusion_and_missing_gate_are_said_not_crashed(tmp_path):
    config, run_dir = make_run(tmp_path, fusion=False, gate=False)
    html = _build(config, run_dir, tmp_path)
    assert "fusion is disabled" in html
    assert "no gate model" in html
    assert "<h2>Cases</h2>" in html
    assert "cases_fn" in {p.stem for p in (tmp_path / "plots").glob("*.png")}


def test_a_run_without_training_outputs_still_gives_a_page(tmp_path):
    config, run_dir = make_run(tmp_path)
    for path in sorted(run_dir.glob("stage1/**/*"), reverse=True):
        if path.is_file():
            path.unlink()
    html = _build(config, run_dir, tmp_path)
    assert html.count('class="note"') >= 5
    assert "thresholds.json not found" in html
    assert "<h2>Data</h2>" in html and "data_contact_sheet" in {
        p.stem for p in (tmp_path / "plots").glob("*.png")
    }


def test_stage2_section_compares_retrained_and_kept_models(tmp_path):
    config, run_dir = make_run(tmp_path, stage2=True)
    html = _build(config, run_dir, tmp_path)
    section = html[html.index("<h2>Stage 2</h2>") :]
    assert "retrained" in section and "kept (stage-1 checkpoints)" in section
    assert re.search(
        r"<td>unet</td><td>retrained</td>.*?<td class=num>0\.7100</td><td class=num>0\.7200</td>",
        section,
    )
    assert "stage2_cv" in {p.stem for p in (tmp_path / "plots").glob("*.png")}


def test_stage1_run_says_stage2_is_not_part_of_it(fake_run, tmp_path):
    html = _build(*fake_run, tmp_path)
    assert "This is a stage-1 run" in html[html.index("<h2>Stage 2</h2>") :]


def test_classify_and_pick_cases():
    kinds = classify(np.array([5, 5, 0, 0]), np.array([3, 0, 4, 0]))
    assert kinds.tolist() == ["TP", "FP", "FN", "TN"]
    scores = pd.DataFrame(
        {
            "image_id": list("abcdefg"),
            "kind": ["TP", "TP", "TP", "FP", "FP", "FN", "TN"],
            "dice": [0.9, 0.2, 0.5, 0, 0, 0, 1],
            "pred_area": [5, 5, 5, 10, 50, 0, 0],
            "truth_area": [5, 5, 5, 0, 0, 9, 0],
            "max_prob": [1, 1, 1, 0.9, 0.8, 0.1, 0],
        }
    )
    picks = pick_cases(scores, 2)
    assert picks["best_tp"]["image_id"].tolist() == ["a", "c"]
    assert picks["worst_tp"]["image_id"].tolist() == ["b"]  # never the same image twice
    assert picks["fp"]["image_id"].tolist() == ["e", "d"]  # largest predicted area first
    assert picks["fn"]["image_id"].tolist() == ["f"]


def test_picks_held_chunk_by_chunk_are_the_picks_of_all_images():
    """The report keeps only the held picks' maps between chunks: it must lose no pick."""
    from medpipe.report.cases import hold_picks

    rng = np.random.default_rng(4)
    for trial in range(20):
        n_images = int(rng.integers(5, 300))
        truth = rng.integers(0, 3, n_images) * rng.integers(1, 500, n_images)
        pred = rng.integers(0, 3, n_images) * rng.integers(1, 500, n_images)
        scores = pd.DataFrame(
            {
                "image_id": [f"{trial}.{k:04d}" for k in rng.permutation(n_images)],
                "kind": classify(pred, truth),
                "dice": np.round(rng.random(n_images), 2),  # ties happen
                "pred_area": pred,
                "truth_area": truth,
                "max_prob": np.round(rng.random(n_images), 1),
            }
        )
        held = pd.DataFrame()
        for chunk in np.array_split(np.arange(n_images), int(rng.integers(1, 12))):
            held = hold_picks(held, scores.iloc[chunk], 3)
        assert len(held) <= 4 * 3
        want, got = pick_cases(scores, 3), pick_cases(held, 3)
        for kind in want:
            assert got[kind]["image_id"].tolist() == want[kind]["image_id"].tolist(), kind


def test_calibration_bins_of_a_calibrated_classifier_sit_on_the_diagonal():
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)
    bins = calibration_bins(y, p)
    assert len(bins) == 10
    assert np.abs(bins["predicted"] - bins["observed"]).max() < 0.05
    assert bins["images"].sum() == 20000


def test_ablation_table_is_relative_to_the_all_empty_baseline():
    cv = {
        "all_empty": 0.7,
        "seg_only": 0.75,
        "seg_gate": 0.8,
        "ensemble_rule": "seg_gate",
        "nested": {"seg_only": 0.74},
    }
    table = ablation_table(cv).set_index("variant")
    assert list(table.index) == ["all_empty", "seg_only", "seg_gate"]
    assert table.loc["seg_gate", "vs all-empty"] == 0.8 - 0.7
    assert table.loc["seg_gate", "submission rule"] == "yes"
    assert table.loc["seg_only", "OOF nested"] == 0.74


def test_retrain_table_copes_with_a_model_without_stage1_score(tmp_path):
    from medpipe.report.run import FinishedRun
    from medpipe.report.stage2 import retrain_table

    config, run_dir = make_run(tmp_path, stage2=True, gate=False)
    table = retrain_table(
        FinishedRun(as_view(config), run_dir, 2), {}, {"models": {"unet": {"seg_only": 0.7}}}
    )
    row = table.set_index("model").loc["unet"]
    assert np.isnan(row["CV stage 1"]) and row["CV stage 2"] == 0.7 and np.isnan(row["change"])


def test_overview_says_how_far_the_run_is_above_all_empty(tmp_path):
    """Out of fold (nested, from cv.json) and, where test labels exist, on the test set, with
    the Dice on positive images."""
    import copy
    import json

    config, run_dir = make_run(tmp_path / "run")
    sub = pd.read_csv(run_dir / "stage1" / "submission.csv", dtype=str)
    # Labels: the submission's one finding is right, and one more test image has a missed one.
    labels = sub.copy()
    labels.loc[0, "EncodedPixels"] = "100 4"
    labels.to_csv(tmp_path / "test-labels.csv", index=False)
    config = copy.deepcopy(config)
    config["report"] = {"test_labels": str(tmp_path / "test-labels.csv")}
    cv = json.loads((run_dir / "stage1" / "cv.json").read_text())
    html = _build(config, run_dir, tmp_path)
    n = len(sub)
    margin = (n - 1) / n - (n - 2) / n
    assert f"{(n - 1) / n:.4f} ({margin:+.4f} vs all-empty)" in html
    assert "test Dice on positive images" in html and "0.5000 (2 of" in html
    nested = cv["nested"]["ensemble"]
    assert f"{nested:.4f} ({nested - cv['all_empty']:+.4f} vs all-empty)" in html
    # Without labels the page says so instead of guessing.
    config["report"] = {}
    config["data"] = {**config["data"], "synthetic": None}
    (tmp_path / "plain").mkdir()
    assert "no test labels" in _build(config, run_dir, tmp_path / "plain")
