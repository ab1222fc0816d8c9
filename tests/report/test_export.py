"""NIfTI export of predicted masks: the files, their content and their pixel spacing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medpipe.cli import main
from medpipe.io.nifti import read_nifti
from medpipe.layout import read_seg_predictions
from medpipe.report.export import export_masks
from tests.report.fake_run import N_TEST, N_TRAIN, SIZE
from tests.sources import as_view


def test_oof_export_writes_prob_mask_truth_and_image_with_the_dicom_spacing(fake_run, tmp_path):
    config, run_dir = fake_run
    index = export_masks(as_view(config), run_dir, "oof", tmp_path / "nii", progress=False)
    assert len(index) == N_TRAIN
    row = index.set_index("image_id").loc["1.2.3.0"]
    prob, spacing = read_nifti(tmp_path / "nii" / row["prob_file"])
    assert spacing == pytest.approx((0.168 * 1024 / SIZE,) * 2)
    oof = read_seg_predictions(run_dir / "stage1/segment/unet/fold0/oof.npz")
    k = list(oof["image_id"]).index("1.2.3.0")
    np.testing.assert_allclose(prob, oof["prob"][k].astype(np.float32), atol=1e-3)
    mask, _ = read_nifti(tmp_path / "nii" / row["mask_file"])
    assert np.array_equal(mask.astype(bool), prob > 0.5)  # thresholds.json: pixel 0.5, fused p 0.9
    truth, _ = read_nifti(tmp_path / "nii" / row["truth_file"])
    image, _ = read_nifti(tmp_path / "nii" / row["image_file"])
    cache = np.load(run_dir / "data" / f"train_images_{SIZE}.npy")
    assert np.array_equal(image, cache[0])
    assert np.array_equal(truth, np.load(run_dir / "data" / f"train_masks_{SIZE}.npy")[0])


def test_test_export_applies_the_submission_rule(fake_run, tmp_path):
    config, run_dir = fake_run
    index = export_masks(
        as_view(config), run_dir, "test", tmp_path / "nii", progress=False, with_image=False
    )
    assert len(index) == N_TEST
    assert "truth_file" not in index.columns and "image_file" not in index.columns
    # test probabilities are 0.1 everywhere, below the pixel threshold: every mask is empty
    assert (index["predicted_pixels"] == 0).all()
    last = index.set_index("image_id").loc[f"9.8.7.{N_TEST - 1}"]  # meta gives it no spacing
    assert not last["spacing_known"]
    assert last["row_spacing_mm"] == pytest.approx(1024 / SIZE)


def test_export_filters_and_names_unknown_ids(fake_run, tmp_path):
    config, run_dir = fake_run
    index = export_masks(
        as_view(config), run_dir, "oof", tmp_path / "a", image_ids=["1.2.3.4"], progress=False
    )
    assert index["image_id"].tolist() == ["1.2.3.4"]
    assert (
        len(export_masks(as_view(config), run_dir, "oof", tmp_path / "b", limit=3, progress=False))
        == 3
    )
    with pytest.raises(ValueError, match="not in .*meta.csv"):
        export_masks(
            as_view(config), run_dir, "oof", tmp_path / "c", image_ids=["nope"], progress=False
        )


def test_export_masks_command(fake_run, tmp_path, capsys):
    config, run_dir = fake_run
    config_file = tmp_path / "config.json"  # JSON is YAML to the config loader
    config_file.write_text(json.dumps(config))
    out = tmp_path / "cli"
    rc = main(
        [
            "export-masks",
            "--config",
            str(config_file),
            "--which",
            "oof",
            "--limit",
            "2",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert len(pd.read_csv(out / "index.csv")) == 2
    assert "export-masks: 2 images" in capsys.readouterr().out


def test_a_seg_gate_rule_thresholds_the_gate_probability_oof_and_test(fake_run, tmp_path):
    config, run_dir = fake_run
    stage = run_dir / "stage1"
    decision = json.loads((stage / "thresholds.json").read_text())

    def predicted(which: str, ids=None) -> pd.Series:
        out = tmp_path / f"{which}{len(list(tmp_path.iterdir()))}"
        index = export_masks(
            as_view(config), run_dir, which, out, image_ids=ids, progress=False, with_image=False
        )
        return index.set_index("image_id")["predicted_pixels"]

    assert predicted("oof", ["1.2.3.1"]).item() > 0  # LightGBM's 0.8 lets the false positive in
    decision.update(rule="seg_gate", cls_threshold=0.5)
    (stage / "thresholds.json").write_text(json.dumps(decision))
    assert predicted("oof", ["1.2.3.1"]).item() == 0  # its gate OOF p is below 0.4

    gate_test = np.array([[0.9, 0.2, 0.6, 0.1, 0.5, 0.5], [0.9, 0.2, 0.4, 0.1, 0.5, 0.3]])
    for f, probs in enumerate(gate_test):
        pd.DataFrame({"image_id": [f"9.8.7.{i}" for i in range(N_TEST)], "prob": probs}).to_csv(
            stage / "gate" / "cls" / f"fold{f}" / "test.csv", index=False
        )
    decision["pixel_threshold"] = 0.05  # test probabilities are 0.1: a kept image is all mask
    (stage / "thresholds.json").write_text(json.dumps(decision))
    kept = predicted("test") > 0
    # the fold mean against 0.5, not LightGBM's 0.7 (which keeps every image)
    assert kept.tolist() == (gate_test.mean(axis=0) >= 0.5).tolist() == [1, 0, 1, 0, 1, 0]
