"""The report on the real tiny pipeline: `snakemake all` builds it on the shared stage-2 run (one
extra rule, no retraining), it renders in Chromium, `snakemake --report` works, and the NIfTI
export reads back with the run's pixel spacing."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest

from medpipe.cli import main
from medpipe.io.nifti import read_nifti
from tests.conftest import sealed_hidden_labels
from tests.e2e.conftest import REPO, snakemake
from tests.report.browser import decoded_images

pytestmark = pytest.mark.slow

STAGE2 = (REPO / "configs" / "stage2.yaml",)


@pytest.fixture(scope="module")
def report_run(stage2_run, tmp_path_factory):
    """`all` on a copy of the stage-2 run (the shared one stays as its tests expect it): the
    report is all that is left to do (no training)."""
    workdir = tmp_path_factory.mktemp("report-run") / "work"
    shutil.copytree(stage2_run, workdir, symlinks=True)
    with sealed_hidden_labels(workdir):
        proc = snakemake(workdir, "all", configfiles=STAGE2)
    return workdir, proc.stdout + proc.stderr


def test_all_adds_the_report_without_retraining(report_run):
    workdir, log = report_run
    assert re.search(r"rule report:", log)
    # nothing the report needs may send the models back to training or prediction
    for rule in ("train_seg", "train_gate", "predict_seg", "predict_gate"):
        assert not re.search(rf"rule {rule}:", log), f"{rule} reran"
    html = (workdir / "runs/tiny/reports/report.html").read_text()
    for title in ("Overview", "Data", "Training", "Decisions", "Cases", "Stage 2"):
        assert f"<h2>{title}</h2>" in html
    assert "kept (stage-1 checkpoints)" in html and "retrained" in html
    assert len(list((workdir / "runs/tiny/reports/plots").glob("*.png"))) >= 10


def test_report_renders_in_a_browser(report_run, tmp_path):
    workdir, _ = report_run
    decoded, total, title = decoded_images(workdir / "runs/tiny/reports/report.html", tmp_path)
    assert total >= 10 and decoded == total
    assert "stage 2" in title


def test_report_never_shows_patient_keys(report_run):
    workdir, _ = report_run
    html = (workdir / "runs/tiny/reports/report.html").read_text()
    keys = pd.read_csv(workdir / "runs/tiny/data/meta.csv", dtype=str)["patient_key"]
    assert not [k for k in keys if k in html]


def test_stage1_report_from_the_command(report_run, tmp_path):
    workdir, _ = report_run
    out = tmp_path / "stage1.html"
    rc = main(
        [
            "report",
            "--config",
            str(workdir / "runs/tiny/config.resolved.yaml"),
            "--run-dir",
            str(workdir / "runs/tiny"),
            "--stage",
            "1",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    html = out.read_text()
    assert "This is a stage-1 run" in html and "Not available" not in html


def test_snakemake_report_collects_the_marked_outputs(report_run, tmp_path):
    workdir, _ = report_run
    out = tmp_path / "snakemake-report.html"
    snakemake(workdir, "all", "--report", str(out), configfiles=STAGE2)
    text = out.read_text()
    for category in ("Submission", "Decisions", "Report plots", "Training"):
        assert category in text, category


def test_exported_nifti_carries_the_run_spacing(report_run, tmp_path):
    workdir, _ = report_run
    run = workdir / "runs/tiny"
    rc = main(
        [
            "export-masks",
            "--config",
            str(run / "config.resolved.yaml"),
            "--run-dir",
            str(run),
            "--which",
            "test",
            "--limit",
            "2",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert rc == 0
    index = pd.read_csv(tmp_path / "index.csv", dtype={"image_id": str})
    meta = pd.read_csv(run / "stage2/data/meta.csv", dtype={"image_id": str}).set_index("image_id")
    for row in index.itertuples():
        m = meta.loc[row.image_id]
        prob, spacing = read_nifti(tmp_path / row.prob_file)
        assert prob.shape == (64, 64) and 0 <= prob.min() and prob.max() <= 1
        expected = (m["spacing"] if np.isfinite(m["spacing"]) else 1.0) * m["orig_height"] / 64
        assert spacing == pytest.approx((expected, expected))
