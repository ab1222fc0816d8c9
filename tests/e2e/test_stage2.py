"""Stage 2 end to end on tiny data: retrain one model, keep the other, REPRODUCE.md, verification."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from tests.e2e.conftest import REPO, snakemake
from tests.sources import as_view

pytestmark = pytest.mark.slow

SECTIONS = [
    "## Expected result",
    "## Hardware",
    "## Software",
    "## Code",
    "## Commands that rebuild it from a fresh clone",
    "## Seeds",
    "## Inputs",
    "## Retrain decisions",
    "## Checkpoints used for the stage-2 predictions",
    "## Wall time per rule",
    "## Resolved config",
]


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_stage2_submission_covers_the_stage2_test_set(stage2_run):
    run = stage2_run / "runs/tiny"
    sub = pd.read_csv(run / "submission.csv", dtype=str, keep_default_na=False)
    hidden = pd.read_csv(
        stage2_run / "data/tiny/hidden/stage2-test-rle.csv", dtype=str, skipinitialspace=True
    )
    assert set(sub["ImageId"]) == set(hidden["ImageId"])
    assert all(i.startswith("ID_") for i in sub["ImageId"])
    assert (run / "submission.csv").read_bytes() == (run / "stage2/submission.csv").read_bytes()
    # stage 1 is kept, not overwritten
    stage1 = pd.read_csv(run / "stage1/submission.csv", dtype=str)
    assert not set(stage1["ImageId"]) & set(sub["ImageId"])


def test_kept_model_checkpoints_are_untouched_and_retrained_ones_are_new(stage2_run):
    run = stage2_run / "runs/tiny"
    manifest = json.loads((run / "stage2/reproduce.json").read_text())
    kept = [r for r in manifest["checkpoints"] if r["model"] == "gate_regnetx"]
    retrained = [r for r in manifest["checkpoints"] if r["model"] == "unet_regnetx"]
    before = dict(
        line.split("\t") for line in (stage2_run / "kept-before.txt").read_text().splitlines()
    )
    for row in kept:
        assert row["path"].startswith("stage1/"), row
        assert row["sha256"] == _sha(run / row["path"]) == before[f"model.ckpt/fold{row['fold']}"]
    for row in retrained:
        assert row["path"].startswith("stage2/"), row
    assert not (run / "stage2/gate/gate_regnetx/fold0/model.ckpt").exists()


def test_reproduce_doc_has_every_section(stage2_run):
    doc = (stage2_run / "runs/tiny/stage2/REPRODUCE.md").read_text()
    for section in SECTIONS:
        assert section in doc, section
    assert _sha(stage2_run / "runs/tiny/stage2/submission.csv") in doc
    lock = (stage2_run / "runs/tiny/stage2/requirements.lock").read_text()
    assert lock.count("==") > 20
    # an unrelated "medpipe" is on the public index: the lock never asks for it by name
    assert not [line for line in lock.splitlines() if line.lower().startswith("medpipe==")]
    # the ensemble score names the rule the submission used (cv.json's ensemble_rule)
    cv2 = json.loads((stage2_run / "runs/tiny/stage2/cv.json").read_text())
    assert f"stage 2 {cv2['ensemble']} ({cv2['ensemble_rule']})" in doc
    # the rebuild commands are the ones this run was started with, not a guess
    files = "--configfile configs/default.yaml tests/e2e/tiny.yaml configs/stage2.yaml"
    assert f"submission {files}\n" in doc
    assert f"submission {files} --config stage=1\n" in doc
    # pseudonymous data only: the synthetic PatientNames never reach the document
    assert "^" not in doc.split("## Resolved config")[0]


def test_stage2_rerun_from_scratch_gives_a_byte_identical_submission(stage2_run, tmp_path):
    """CPU + deterministic: a second stage 2 (re-ingest, refolds, retrain, refit) matches byte for byte."""
    again = tmp_path / "again"
    shutil.copytree(stage2_run, again, ignore=shutil.ignore_patterns(".snakemake"))
    shutil.rmtree(again / "runs/tiny/stage2")
    (again / "runs/tiny/submission.csv").unlink()
    snakemake(again, "submission", configfiles=(REPO / "configs" / "stage2.yaml",))
    first = stage2_run / "runs/tiny/stage2"
    second = again / "runs/tiny/stage2"
    assert (second / "segment/unet_regnetx/fold0/model.ckpt").exists()  # really retrained
    for name in ("submission.csv", "thresholds.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_verify_reproduction_matches_then_fails_loudly_on_an_altered_checkpoint(
    stage2_run, tmp_path
):
    """On a copy of the shared run: the altered checkpoint is the copy's."""
    workdir = tmp_path / "work"
    shutil.copytree(stage2_run, workdir, symlinks=True)
    run = workdir / "runs/tiny"
    cmd = [
        sys.executable,
        "-m",
        "medpipe.cli",
        "verify-reproduction",
        str(run),
        "--config",
        str(run / "config.resolved.yaml"),
    ]
    ok = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK" in ok.stdout
    ckpt = run / "stage1/gate/gate_regnetx/fold0/model.ckpt"
    ckpt.write_bytes(ckpt.read_bytes() + b"tampered")
    bad = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "MISMATCH" in bad.stderr
    assert "stage1/gate/gate_regnetx/fold0/model.ckpt" in bad.stderr


def test_verify_retrain_of_one_fold_gives_the_recorded_weights(stage2_run):
    """`--retrain 0` trains fold 0 of the retrained model again on CPU, with the run's own
    resolved config as the default, and finds the same tensors."""
    run = stage2_run / "runs/tiny"
    cmd = [sys.executable, "-m", "medpipe.cli", "verify-reproduction", str(run), "--retrain", "0"]
    ok = subprocess.run(cmd, cwd=stage2_run, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "fold 0 retrained on CPU has the recorded weights" in ok.stdout


def test_verify_retrain_names_the_fold_whose_weights_differ(stage2_run, tmp_path, monkeypatch):
    import torch

    from medpipe.config import load_config
    from medpipe.reproducibility import weights_sha256
    from medpipe.steps.verify import verify_retrain

    copy = tmp_path / "run"
    shutil.copytree(stage2_run / "runs/tiny", copy)
    ckpt = copy / "stage2/segment/unet_regnetx/fold0/model.ckpt"
    before = weights_sha256(ckpt)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["optimizer_states"] = []  # not weights: the hash must not change
    torch.save(state, ckpt)
    assert weights_sha256(ckpt) == before
    name = next(k for k, v in state["state_dict"].items() if v.is_floating_point())
    state["state_dict"][name] = state["state_dict"][name] + 1e-3
    torch.save(state, ckpt)
    assert weights_sha256(ckpt) != before
    monkeypatch.chdir(stage2_run)
    config = load_config([str(copy / "config.resolved.yaml")])
    problems = verify_retrain(as_view(config), copy, 0, tmp_path / "work")
    assert len(problems) == 1, problems
    assert "segment unet_regnetx fold 0" in problems[0]
    assert "stage2/segment/unet_regnetx/fold0/model.ckpt" in problems[0]
    assert verify_retrain(as_view({**config, "deterministic": False}), copy, 0, tmp_path / "w2")[
        0
    ].startswith("--retrain needs deterministic: true")
    assert "trained folds" in verify_retrain(as_view(config), copy, 7, tmp_path / "w3")[0]


def test_retrain_auto_keeps_the_variant_with_the_better_stage2_cv(stage2_run):
    """configs/stage2.yaml: unet_regnetx is `auto`: both variants predicted the same stage-2
    folds, the choice follows their CVs, and thresholds, the manifest and REPRODUCE.md use it."""
    from medpipe.config import load_config
    from medpipe.layout import RunLayout
    from medpipe.steps.variants import variant_cv

    run = stage2_run / "runs/tiny"
    stage = run / "stage2"
    choice = json.loads((stage / "retrain_choice.json").read_text())
    row = choice["unet_regnetx"]
    expected = "kept" if row["kept"]["cv"] > row["retrained"]["cv"] else "retrained"
    assert row["choice"] == expected
    config = load_config([str(run / "config.resolved.yaml")])
    layout = RunLayout(run)
    for variant, name in (("retrained", "unet_regnetx"), ("kept", "unet_regnetx@kept")):
        dirs = layout.folds_of(2, "segment", name, [0, 1])
        assert all(d.oof.is_file() and d.test.is_file() for d in dirs)
        again = variant_cv(as_view(config), layout.data_dir(2), "segment", dirs)
        assert again["cv"] == pytest.approx(row[variant]["cv"])
    cv2 = json.loads((stage / "cv.json").read_text())
    assert cv2["models"]["unet_regnetx"]["seg_only"] == pytest.approx(row[expected]["oof"])
    manifest = json.loads((stage / "reproduce.json").read_text())
    used = {r["model"] for r in manifest["checkpoints"] if r["task"] == "segment"}
    chosen = "unet_regnetx@kept" if expected == "kept" else "unet_regnetx"
    assert used == {chosen, "unet_regnetx@pl1"}  # the pseudo-labelled variant: always its own
    doc = (stage / "REPRODUCE.md").read_text()
    assert f"retrained {row['retrained']['cv']:.4f} vs kept {row['kept']['cv']:.4f}" in doc


def test_stage2_pseudo_labels_the_stage2_test_set_with_the_stage2_models(stage2_run):
    """The @pl1 variant is retrained with the U-Net: its stage-2 labels come from the stage-2
    folds' own models, of the new test set (the stage-1 test images now have real labels)."""
    stage = stage2_run / "runs/tiny/stage2"
    meta = pd.read_csv(stage2_run / "runs/tiny/stage2/data/meta.csv", dtype={"image_id": str})
    stage2_test = set(meta.loc[meta["split"] == "stage2_test", "image_id"])
    for fold in (0, 1):
        pseudo = stage / "segment/unet_regnetx@pl1" / f"fold{fold}/pseudo"
        made = json.loads((pseudo / "provenance.json").read_text())
        assert made["stage"] == 2 and made["split"] == "stage2_test"
        assert made["made_by"]["segment"]["model"] == "unet_regnetx"
        assert {m["fold"] for m in made["made_by"].values()} == {fold}
        rows = pd.read_csv(pseudo / "rows.csv", dtype={"image_id": str})
        assert set(rows["image_id"]) <= stage2_test
        assert (stage / "segment/unet_regnetx@pl1" / f"fold{fold}/model.ckpt").is_file()
