"""A run's record is written once: a dry run with another overlay, ``plan``, ``report``,
``export-masks`` and ``export`` leave the run's files as they were, and the bundle comes from
what the weights were trained with (issue 25, item 1).

Every test works on a copy of the shared tiny run (its working folder), never on the run itself.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medpipe.bundle.export import export_bundle
from medpipe.bundle.infer import Bundle, run_infer
from medpipe.bundle.records import RecordError
from medpipe.bundle.runcheck import RunMismatch
from medpipe.layout import SEGMENT, RunLayout
from medpipe.predictions.blend import blend
from medpipe.predictions.sources import stage_sources
from medpipe.predictions.stored import TestMaps
from tests.e2e.conftest import snakemake
from tests.sources import as_stage, as_view

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(run_dir, tmp_path_factory) -> Path:
    """A copy of the shared tiny run's working folder (mtimes kept, so Snakemake sees it done)."""
    copy = tmp_path_factory.mktemp("own-run") / "work"
    shutil.copytree(run_dir.parents[1], copy, symlinks=True)
    return copy


def _hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _medpipe(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "medpipe.cli", *args], cwd=cwd, capture_output=True, text=True
    )
    assert proc.returncode == 0, f"medpipe {args[0]}: {proc.stderr[-3000:]}"
    return proc


def _stored_max_prob(run: RunLayout, config: dict, weights: dict) -> pd.Series:
    test = TestMaps(stage_sources(as_view(config), as_stage(config, run.stage_dir(1)), SEGMENT))
    top = [
        blend(probs, weights).reshape(sl.stop - sl.start, -1).max(axis=1)
        for sl, probs in test.chunks()
    ]
    return pd.Series(np.concatenate(top).astype(np.float64), index=test.ids)


def test_a_dry_run_with_another_size_then_export_reproduces_the_run(workdir, tmp_path):
    """The issue's sequence: a dry run with ``image_size: 96`` changes no file of the run; the
    bundle preprocesses at the trained 64², and reproduces the run's submission byte for byte."""
    run = RunLayout(workdir / "runs" / "tiny")
    before = _hashes(run.run_dir)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("image_size: 96\n")
    dry = snakemake(workdir, "-n", "submission", configfiles=(overlay,))
    assert "train_seg" in dry.stdout + dry.stderr  # the overlay took: 96 would retrain
    assert _hashes(run.run_dir) == before

    bundle = export_bundle(run.run_dir, tmp_path / "bundle", selftest=False)
    spec = Bundle(bundle).spec
    assert spec["image_size"] == 64
    assert spec["run_check"]["images"] >= 8 and spec["run_check"]["max_prob_difference"] == 0.0
    result = run_infer(
        bundle,
        workdir / "data" / "tiny" / "dicom-images-test",
        tmp_path / "submission.csv",
        device="cpu",
        threads=1,  # as the tiny run's predict jobs (2 cores, performance.parallel_jobs 2)
        progress=False,
    )
    assert result.submission.read_bytes() == run.submission.read_bytes()
    config = yaml.safe_load(run.resolved_config.read_text())
    config["run_dir"] = str(run.run_dir)
    expected = _stored_max_prob(run, config, Bundle(bundle).decision.weights)
    got = pd.read_csv(result.probabilities, dtype={"image_id": str}).set_index("image_id")
    assert np.array_equal(got["max_prob"].reindex(expected.index).to_numpy(), expected.to_numpy())
    assert expected.max() > 0  # maps, not a vacuous comparison of empty masks
    assert _hashes(run.run_dir) == before


def test_plan_report_export_masks_and_export_change_no_file_of_the_run(workdir, tmp_path):
    """As a user types them, from the run's working folder: each may add its own outputs below
    reports/, none rewrites a file the run already had."""
    run = RunLayout(workdir / "runs" / "tiny")
    before = _hashes(run.run_dir)
    config = "runs/tiny/config.resolved.yaml"
    plan = _medpipe(workdir, "plan", "--config", config)
    assert "unet_regnetx" in plan.stdout
    _medpipe(workdir, "report", "--config", config, "--no-progress")
    masks = ["export-masks", "--config", config, "--which", "test", "--limit", "2"]
    _medpipe(workdir, *masks, "--no-progress")
    exported = _medpipe(workdir, "export", "runs/tiny", "--out", str(tmp_path / "bundle"))
    assert "checked on" in exported.stdout and "the run's stored outputs" in exported.stdout
    after = _hashes(run.run_dir)
    assert {k: after.get(k) for k in before} == before
    added = sorted(set(after) - set(before))
    assert added and all(name.startswith("reports/") for name in added), added


def _run_copy(workdir: Path, dest: Path) -> RunLayout:
    """A copy of the run folder alone, for a test that edits it (export finds the data through
    --dicom-dir)."""
    shutil.copytree(workdir / "runs" / "tiny", dest / "runs" / "tiny", symlinks=True)
    return RunLayout(dest / "runs" / "tiny")


def _edit_config(run: RunLayout, edit) -> None:
    config = yaml.safe_load(run.resolved_config.read_text())
    edit(config)
    run.resolved_config.write_text(yaml.safe_dump(config))


def test_export_refuses_a_config_that_disagrees_with_the_records(workdir, tmp_path, capsys):
    from medpipe.cli import main

    run = _run_copy(workdir, tmp_path)
    _edit_config(run, lambda c: c.update(image_size=96))
    with pytest.raises(RecordError) as err:
        export_bundle(run.run_dir, tmp_path / "bundle", selftest=False)
    assert (
        "image_size: fold 0 of unet_regnetx was trained with 64, the run's config now says 96"
        in str(err.value)
    )
    assert "set image_size back to 64" in str(err.value)
    assert not (tmp_path / "bundle").exists()

    _edit_config(run, lambda c: c.update(image_size=64))
    _edit_config(run, lambda c: c["segmentation"]["models"]["unet_regnetx"].update(tta_hflip=False))
    assert main(["export", str(run.run_dir), "--out", str(tmp_path / "bundle")]) == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "Traceback" not in message
    assert "segmentation.models.unet_regnetx.tta_hflip: fold 0 of unet_regnetx was trained" in (
        message
    )


def test_a_fold_without_a_record_is_refused_or_taken_from_the_run_config(workdir, tmp_path):
    run = _run_copy(workdir, tmp_path)
    for record in run.run_dir.rglob("fold*/config.yaml"):
        record.unlink()  # a run made before medpipe recorded them
    with pytest.raises(RecordError, match=r"fold0/config\.yaml: no record .* --assume-run-config"):
        export_bundle(run.run_dir, tmp_path / "bundle", selftest=False)
    dicoms = workdir / "data" / "tiny" / "dicom-images-test"
    bundle = export_bundle(
        run.run_dir, tmp_path / "bundle", selftest=False, assume_run_config=True, dicom_dir=dicoms
    )
    assert Bundle(bundle).spec["run_check"]["max_prob_difference"] == 0.0


def _wrong(monkeypatch, change) -> None:
    """Export with a bug that builds the bundle from other settings than the records'."""
    import medpipe.bundle.export as export

    real = export.trained_settings

    def wrong(*args, **kwargs):
        settings = real(*args, **kwargs)
        change(settings)
        return settings

    monkeypatch.setattr(export, "trained_settings", wrong)


def test_a_bundle_at_the_wrong_size_is_not_exported(workdir, tmp_path, monkeypatch):
    _wrong(monkeypatch, lambda s: setattr(s, "image_size", 96))
    with pytest.raises(
        RunMismatch, match=r"predicts at 96x96, the run's stored test maps are 64x64"
    ):
        export_bundle(workdir / "runs" / "tiny", tmp_path / "bundle", selftest=False)
    assert not (tmp_path / "bundle").exists()


def test_a_bundle_without_the_runs_tta_is_not_exported(workdir, tmp_path, monkeypatch):
    """Same size, other outputs: caught by predicting the run's own test images."""
    _wrong(monkeypatch, lambda s: s.blocks["segment"]["unet_regnetx"].update(tta_hflip=False))
    with pytest.raises(RunMismatch, match=r"maximum probability differs from the run's stored"):
        export_bundle(workdir / "runs" / "tiny", tmp_path / "bundle", selftest=False)
    assert not (tmp_path / "bundle").exists()


def test_a_run_without_its_stored_test_predictions_is_named(workdir, tmp_path):
    run = _run_copy(workdir, tmp_path)
    missing = run.stage(1).fold(SEGMENT, "unet_regnetx", 1).test
    missing.unlink()
    with pytest.raises(RunMismatch, match=r"fold1/test.npz: the run's stored test predictions are"):
        export_bundle(run.run_dir, tmp_path / "bundle", selftest=False)
    assert not (tmp_path / "bundle").exists()


def test_a_gated_rule_is_checked_on_p_finding_and_the_rows(workdir, tmp_path):
    """Under a LightGBM rule that keeps some masks, the check compares p(finding) and every
    row; a decision that is not the one the run's submission was written with is refused."""
    import json

    from medpipe.layout import read_fused
    from medpipe.steps.submit import run_submit

    run = _run_copy(workdir, tmp_path)
    config = yaml.safe_load(run.resolved_config.read_text())
    config["run_dir"] = str(run.run_dir)
    p = read_fused(run.fused(1, "test"))["p_finding"].to_numpy()
    weights = json.loads(run.thresholds(1).read_text())["weights"]
    decision = {"rule": "seg_gate_lgbm", "mode": "fusion", "p_finding_source": "fusion"}
    decision.update(pixel_threshold=0.3, min_area=0.0, weights=weights)
    run.thresholds(1).write_text(json.dumps({**decision, "cls_threshold": float(np.median(p))}))
    frame = run_submit(
        as_view(config),
        as_stage(config, run.stage_dir(1)),
        run.data_dir(1),
        None,
        run.stage(1).submission,
    )
    shutil.copyfile(run.stage(1).submission, run.submission)
    assert (frame["EncodedPixels"] != "-1").any()  # masks to compare, not only empty rows
    dicoms = workdir / "data" / "tiny" / "dicom-images-test"
    bundle = export_bundle(run.run_dir, tmp_path / "bundle", selftest=False, dicom_dir=dicoms)
    check = Bundle(bundle).spec["run_check"]
    assert check["p_finding_difference"] == 0.0 and check["rows_identical"]

    # thresholds.json rewritten after the submission was: the bundle would not be the run
    run.thresholds(1).write_text(json.dumps({**decision, "cls_threshold": float(p.min()) - 1}))
    with pytest.raises(RunMismatch, match=r"submission.csv: with the run's own probabilities"):
        export_bundle(run.run_dir, tmp_path / "other", selftest=False, dicom_dir=dicoms)
