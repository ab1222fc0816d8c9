"""The whole DAG on tiny synthetic data: submission validity, CV summary, rerun behaviour."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from medpipe.io import rle
from tests.e2e.conftest import REPO, snakemake

pytestmark = pytest.mark.slow


def test_submission_is_valid_and_covers_every_test_image(tiny_run):
    sub = pd.read_csv(tiny_run / "runs/tiny/submission.csv", dtype=str, keep_default_na=False)
    assert list(sub.columns) == ["ImageId", "EncodedPixels"]
    hidden = pd.read_csv(
        tiny_run / "data/tiny/hidden/test-rle.csv", dtype=str, skipinitialspace=True
    )
    assert set(sub["ImageId"]) == set(hidden["ImageId"])
    assert sub["ImageId"].is_unique
    for encoded in sub["EncodedPixels"]:
        rle.decode(encoded, 256, 256)  # raises on a malformed or out-of-image run


def test_cv_summary_has_the_ablation(tiny_run):
    cv = json.loads((tiny_run / "runs/tiny/stage1/cv.json").read_text())
    for key in ("all_empty", "seg_only", "seg_gate", "seg_gate_lgbm"):
        assert key in cv, key


def test_second_run_has_nothing_to_do(tiny_run):
    proc = snakemake(tiny_run, "submission", "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _planned_rules(proc) -> set[str]:
    """Rule names in the job-count table that `snakemake -n` prints."""
    text = proc.stdout + proc.stderr
    table = text.split("Job stats:")[-1] if "Job stats:" in text else ""
    rules = set()
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            rules.add(parts[0])
    return rules


def _planned_jobs(proc) -> set[tuple[str, str]]:
    """``(rule, model)`` of every job `snakemake -n` plans (model "" for a job without one)."""
    jobs, rule = set(), None
    for line in (proc.stdout + proc.stderr).splitlines():
        line = line.strip()
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            rule = line.split()[1].rstrip(":")
            jobs.add((rule, ""))
        elif line.startswith("wildcards:") and rule is not None:
            fields = dict(f.split("=", 1) for f in line[len("wildcards:") :].split(", "))
            jobs.discard((rule, ""))
            jobs.add((rule, fields.get("model", "").strip()))
    return jobs


def test_editing_one_model_block_reruns_only_that_model(tiny_run, tmp_path):
    overlay = tmp_path / "gate-epochs.yaml"
    overlay.write_text("gate:\n  models:\n    gate_regnetx: {epochs: 2}\n")
    proc = snakemake(tiny_run, "submission", "-n", configfiles=(overlay,))
    rules = _planned_rules(proc)
    assert {"train_gate", "predict_gate"} <= rules
    assert not {"ingest", "make_folds"} & rules
    # the gate labels the pseudo-labels: only the @pl1 variant retrains, never the plain U-Net
    seg_jobs = {(r, m) for r, m in _planned_jobs(proc) if r in ("train_seg", "predict_seg")}
    assert seg_jobs == {("train_seg", "unet_regnetx@pl1"), ("predict_seg", "unet_regnetx@pl1")}


def test_the_pseudo_labelled_variant_sits_beside_its_model(tiny_run):
    stage = tiny_run / "runs/tiny/stage1"
    variant = stage / "segment" / "unet_regnetx@pl1"
    for fold in (0, 1):
        made = json.loads((variant / f"fold{fold}/pseudo/provenance.json").read_text())
        # labelled by the same fold's U-Net and gate, which never saw this fold's images
        assert made["made_by"]["segment"] == {
            **made["made_by"]["segment"],
            "model": "unet_regnetx",
            "fold": fold,
        }
        assert made["made_by"]["gate"] == {
            **made["made_by"]["gate"],
            "model": "gate_regnetx",
            "fold": fold,
        }
        rows = pd.read_csv(variant / f"fold{fold}/pseudo/rows.csv")
        metrics = json.loads((variant / f"fold{fold}/metrics.json").read_text())
        assert metrics["n_pseudo"] == len(rows) == made["n_finding"] + made["n_empty"]
        test_ids = set(
            pd.read_csv(tiny_run / "runs/tiny/data/meta.csv").query("split == 'test'")["image_id"]
        )
        assert set(rows["image_id"]) <= test_ids
    cv = json.loads((stage / "cv.json").read_text())
    for name in ("unet_regnetx", "unet_regnetx@pl1"):
        assert name in cv["models"] and name in cv["nested"]["models"]
        assert name in cv["weights"]
        assert all(name in w for w in cv["weights_by_fold"].values())


def test_editing_postprocess_reruns_only_thresholds_and_submit(tiny_run, tmp_path):
    overlay = tmp_path / "post.yaml"
    overlay.write_text("postprocess:\n  area_grid: [0, 20]\n")
    rules = _planned_rules(snakemake(tiny_run, "submission", "-n", configfiles=(overlay,)))
    assert "thresholds" in rules
    assert rules <= {"thresholds", "submit", "publish_submission", "submission"}


def test_invalid_config_names_the_key(tiny_run, tmp_path):
    overlay = tmp_path / "bad.yaml"
    overlay.write_text("folds: many\n")
    proc = snakemake(tiny_run, "submission", "-n", configfiles=(overlay,), check=False)
    assert proc.returncode != 0
    assert "folds" in proc.stdout + proc.stderr


@contextlib.contextmanager
def _edited(module: Path):
    """Append a comment to a package file (a real content change), then restore its bytes and
    mtime, so the shared run is exactly as before for the tests that follow."""
    before, stat = module.read_bytes(), module.stat()
    module.write_bytes(before + b"\n# an edit that a rerun trigger must see\n")
    try:
        yield
    finally:
        module.write_bytes(before)
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_editing_the_rle_codec_plans_submit(tiny_run):
    """io/rle.py encodes the submission (and decodes the labels at ingest): both are planned."""
    with _edited(REPO / "medpipe" / "io" / "rle.py"):
        rules = _planned_rules(snakemake(tiny_run, "submission", "-n"))
    assert {"submit", "publish_submission", "ingest"} <= rules
    assert "Nothing to be done" in snakemake(tiny_run, "submission", "-n").stdout


def test_editing_the_submission_writer_plans_only_submit(tiny_run):
    with _edited(REPO / "medpipe" / "submission.py"):
        rules = _planned_rules(snakemake(tiny_run, "submission", "-n"))
    assert {"submit", "publish_submission"} <= rules
    assert rules <= {"submit", "publish_submission", "submission"}


def test_editing_the_segmentation_builder_plans_the_gate_training(tiny_run):
    """The default gate is built on an smp encoder from models/segmentation.py."""
    with _edited(REPO / "medpipe" / "models" / "segmentation.py"):
        rules = _planned_rules(snakemake(tiny_run, "submission", "-n"))
    assert {"train_gate", "train_seg"} <= rules
    assert not {"ingest", "make_folds", "synthesize"} & rules
