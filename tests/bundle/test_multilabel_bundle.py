"""The multi-label bundle: ``medpipe export`` of the tiny multi-label run (tests/conftest.py,
``tiny_ml_run``) and ``medpipe infer`` on folders in the Kaggle HPA layout: the run's own test
folder gives its submission byte for byte and the probabilities its decision thresholded; a
missing channel file is quarantined by name; an altered bundle file is refused by name before
anything loads; infer loads no training stack."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medpipe.bundle.layout import BundleLayout
from medpipe.bundle.manifest import ManifestError
from medpipe.bundle.multilabel import MultilabelBundle, run_infer
from medpipe.cli import main
from medpipe.layout import CLASSIFY, RunLayout, read_decision_fields
from tests.bundle.test_infer_run import TRAINING_STACK, _imports_of_infer
from tests.e2e.multilabel_run import TINY_MULTILABEL

pytestmark = pytest.mark.slow

RUN = TINY_MULTILABEL["run_dir"]
DATA = TINY_MULTILABEL["data"]["root"]


@pytest.fixture(scope="module")
def work(request, tmp_path_factory) -> Path:
    """A copy of the tiny multi-label run's working folder (export reads it from there);
    ``MEDPIPE_ML_BUNDLE_TEST_RUN`` may name a finished one, to iterate without the pipeline."""
    source = os.environ.get("MEDPIPE_ML_BUNDLE_TEST_RUN")
    source = Path(source) if source else request.getfixturevalue("tiny_ml_run")
    dest = tmp_path_factory.mktemp("ml-bundle") / "work"
    shutil.copytree(source, dest, symlinks=True)
    return dest


@pytest.fixture(scope="module")
def ml_bundle(work) -> Path:
    out = work.parent / "bundle"
    assert main(["export", str(work / RUN), "--out", str(out)]) == 0
    return out


def _expected_probabilities(work: Path) -> np.ndarray:
    """What the run's submit thresholded, rebuilt from the run's own stored tables."""
    from medpipe.config import RunConfig, read_yaml
    from medpipe.multilabel.tables import (
        blend_mean,
        fused_probabilities,
        source_probabilities,
        test_probabilities,
    )
    from medpipe.predictions.sources import stage_sources

    run = RunLayout(work / RUN)
    raw = read_yaml(run.resolved_config)
    raw["run_dir"] = str(run.run_dir)
    cfg = RunConfig(raw)
    stage = run.stage(1)
    decision = read_decision_fields(stage.thresholds)
    ids, probs = test_probabilities(stage_sources(cfg, stage, CLASSIFY))
    source = decision.get("source", "cnn")
    fused = fused_probabilities(stage.fused("test"), ids) if source != "cnn" else None
    chosen = source_probabilities(source, blend_mean(probs, decision.get("weights")), fused)
    return pd.DataFrame(chosen, index=ids)


def test_infer_on_the_runs_test_folder_reproduces_its_submission(work, ml_bundle, tmp_path):
    layout = BundleLayout(ml_bundle)
    spec = json.loads(layout.inference.read_text())
    assert spec["task"] == "multilabel" and spec["run_check"]["rows_equal"]
    decision = read_decision_fields(layout.decision)
    # the tiny run's decision keeps the fused source: the boosters and their index travel
    assert decision.get("source", "cnn") != "cnn" and spec["fusion"]["boosters"] >= 1
    assert (layout.fusion_dir / "boosters.json").is_file()
    listed = json.loads(layout.manifest.read_text())["files"]
    on_disk = {p.relative_to(ml_bundle).as_posix() for p in ml_bundle.rglob("*") if p.is_file()}
    assert set(listed) == on_disk - {"manifest.json"}
    assert all(len(v["sha256"]) == 64 and v["bytes"] > 0 for v in listed.values())

    out = tmp_path / "submission.csv"
    result = run_infer(ml_bundle, work / DATA, out, device="cpu", progress=False)
    run_submission = RunLayout(work / RUN).stage(1).submission
    assert out.read_bytes() == run_submission.read_bytes()
    assert result.n_quarantined == 0
    got = pd.read_csv(result.probabilities, dtype={"Id": str}, float_precision="round_trip")
    got = got.set_index("Id")
    want = _expected_probabilities(work)
    got = got.loc[want.index, [c for c in got.columns if c.startswith("p_")]]
    np.testing.assert_array_equal(got.to_numpy(np.float64), want.to_numpy(np.float64))


def test_a_missing_channel_file_is_quarantined_by_name(work, ml_bundle, tmp_path):
    folder = tmp_path / "hpa"
    shutil.copytree(work / DATA / "test", folder / "test")
    shutil.copyfile(work / DATA / "sample_submission.csv", folder / "sample_submission.csv")
    ids = pd.read_csv(folder / "sample_submission.csv", dtype=str)["Id"].tolist()
    gone = folder / "test" / f"{ids[1]}_green.png"
    gone.unlink()
    out = tmp_path / "sub.csv"
    result = run_infer(ml_bundle, folder, out, device="cpu", progress=False)
    assert result.n_quarantined == 1
    quarantined = pd.read_csv(result.quarantine)
    assert len(quarantined) == 1 and gone.name in quarantined["source"].iloc[0]
    sub = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert sub["Id"].tolist() == ids  # every Id, in the sample submission's order
    assert sub.loc[1, "Predicted"] == ""
    run_rows = pd.read_csv(
        RunLayout(work / RUN).stage(1).submission, dtype=str, keep_default_na=False
    )
    assert sub.drop(index=1)["Id"].tolist() == run_rows.drop(index=1)["Id"].tolist()


def test_a_folder_without_a_sample_submission_is_one_line(ml_bundle, tmp_path, capsys):
    (tmp_path / "hpa" / "test").mkdir(parents=True)
    argv = ["infer", "--bundle", str(ml_bundle), "--input-dir", str(tmp_path / "hpa")]
    assert main([*argv, "--out", str(tmp_path / "s.csv"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sample_submission.csv" in err, err


@pytest.mark.parametrize("name", ["configs/decision.json", "fusion/boosters.json"])
def test_an_altered_bundle_file_is_refused_by_name(work, ml_bundle, tmp_path, capsys, name):
    copy = tmp_path / "bundle"
    shutil.copytree(ml_bundle, copy)
    target = copy / name
    text = target.read_text()
    target.write_text(text.replace("0.", "0.9", 1))
    with pytest.raises(ManifestError, match=name.replace(".", r"\.")):
        MultilabelBundle(copy)
    out = tmp_path / "s.csv"
    argv = ["infer", "--bundle", str(copy), "--input-dir", str(work / DATA), "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err, err
    assert not out.exists()


def test_infer_loads_no_training_stack(work, ml_bundle, tmp_path):
    # the SIIM test's probe, run on the multi-label bundle (--dicom-dir names its input folder)
    out = tmp_path / "a.csv"
    loaded = _imports_of_infer(ml_bundle, work / DATA, out)
    assert {"torch", "lightgbm", "medpipe.bundle"} <= loaded  # the probe sees what ran
    assert not loaded & set(TRAINING_STACK), loaded & set(TRAINING_STACK)
    run_submission = RunLayout(work / RUN).stage(1).submission
    assert out.read_bytes() == run_submission.read_bytes()
