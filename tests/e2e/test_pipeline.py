"""The whole DAG on tiny synthetic data: submission validity, CV summary, rerun behaviour."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medpipe.decision.apply import apply_triplet
from medpipe.io import rle
from medpipe.layout import read_decision, read_seg_predictions
from medpipe.metrics import competition_dice
from medpipe.predictions.blend import blend
from tests.e2e.conftest import package_env, relocated_run, snakemake

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


RULES = ("seg_only", "seg_area", "seg_gate", "seg_gate_lgbm")  # simplest first, as ties go


def _oof_masks_of(stage: Path, data: Path, decision) -> tuple[np.ndarray, np.ndarray]:
    """``(decided masks, truth masks)`` of the OOF pool: each model's OOF maps (every image in
    exactly one of its folds), blended with the decision's weights, the decided rule applied."""
    maps: dict[str, dict[str, np.ndarray]] = {}
    for model in decision.weights:
        maps[model] = {}
        for oof in sorted((stage / "segment" / model).glob("fold*/oof.npz")):
            saved = read_seg_predictions(oof)
            maps[model].update(zip(saved["image_id"].astype(str), saved["prob"], strict=True))
    ids = sorted(next(iter(maps.values())))
    assert all(sorted(m) == ids for m in maps.values())
    probs = {model: np.stack([m[i] for i in ids]) for model, m in maps.items()}
    p_finding = None
    if decision.rule == "seg_gate_lgbm":
        fused = pd.read_csv(stage / "fusion/oof.csv", dtype={"image_id": str})
        p_finding = fused.set_index("image_id").loc[ids, "p_finding"].to_numpy()
    elif decision.rule == "seg_gate":
        gate = pd.concat(
            pd.read_csv(f, dtype={"image_id": str}) for f in stage.glob("gate/*/fold*/oof.csv")
        )
        p_finding = gate.groupby("image_id")["prob"].mean().loc[ids].to_numpy()
    masks = apply_triplet(blend(probs, decision.weights), p_finding, decision.thresholds())
    meta = pd.read_csv(data / "meta.csv", dtype={"image_id": str}).query("split == 'train'")
    rows = meta.set_index("image_id").loc[ids, "cache_index"].to_numpy()
    truths = np.load(data / f"train_masks_{masks.shape[-1]}.npy")[rows].astype(bool)
    return masks, truths


def test_cv_summary_has_the_ablation(tiny_run):
    """cv.json checked against what it summarises: the all-empty baseline and counts from the
    labels, every score a finite number in [0, 1], the submission's rule the best nested score
    (ties to the simpler rule), and that rule's OOF score made again by applying thresholds.json
    to the OOF maps."""
    stage, data = tiny_run / "runs/tiny/stage1", tiny_run / "runs/tiny/data"
    cv = json.loads((stage / "cv.json").read_text())
    pool = pd.read_csv(data / "folds.csv", dtype={"image_id": str})  # tiny.yaml: every fold
    assert cv["n_images"] == len(pool)
    assert cv["n_positive"] == int(pool["has_finding"].sum()) > 0
    assert cv["all_empty"] == pytest.approx(1 - pool["has_finding"].mean())
    nested = cv["nested"]
    scores = [cv[r] for r in RULES] + [nested[r] for r in RULES]
    for model in cv["models"]:
        scores += list(cv["models"][model].values()) + list(nested["models"][model].values())
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in scores), scores
    best = max(nested[r] for r in RULES)
    assert cv["rule_choice"] == "nested"
    assert cv["ensemble_rule"] == next(r for r in RULES if nested[r] >= best - 1e-12)
    rule = cv["ensemble_rule"]
    assert cv["ensemble"] == cv[rule] and nested["ensemble"] == nested[rule]
    decision = read_decision(stage / "thresholds.json")
    assert decision.rule == rule and decision.weights == cv["weights"]
    assert decision.get("score") == pytest.approx(cv[rule])
    assert decision.get("nested_score") == pytest.approx(nested[rule])
    masks, truths = _oof_masks_of(stage, data, decision)
    assert len(masks) == cv["n_images"]
    assert competition_dice(masks, truths) == pytest.approx(cv[rule], abs=1e-9)


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


def _jobs(proc) -> list[dict[str, str]]:
    """Every job `snakemake -n` plans: its ``rule`` and its fields (``input``, ``reason``,
    ``wildcards``, ...) as printed."""
    jobs: list[dict[str, str]] = []
    for line in (proc.stdout + proc.stderr).splitlines():
        stripped = line.strip()
        if stripped.startswith(("rule ", "localrule ")) and stripped.endswith(":"):
            jobs.append({"rule": stripped.split()[1].rstrip(":")})
        elif jobs and line.startswith("    ") and ": " in stripped:
            key, value = stripped.split(": ", 1)
            jobs[-1].setdefault(key, value)
    return jobs


def _planned_jobs(proc) -> set[tuple[str, str]]:
    """``(rule, model)`` of every job `snakemake -n` plans (model "" for a job without one)."""
    planned = set()
    for job in _jobs(proc):
        fields = dict(f.split("=", 1) for f in job.get("wildcards", "").split(", ") if "=" in f)
        planned.add((job["rule"], fields.get("model", "").strip()))
    return planned


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


@pytest.fixture
def relocated(tiny_run, tmp_path) -> tuple[Path, Path]:
    """``(workdir, repo)``: this test's copy of the shared run and of the workflow and package,
    which Snakemake takes for the run's own: a test edits its copied package, never the source
    tree or the shared run."""
    return relocated_run(tiny_run, tmp_path)


def _edit(repo: Path, module: str) -> Path:
    """Append a comment to the copied package's ``module`` (a real content change)."""
    path = repo / "medpipe" / module
    path.write_bytes(path.read_bytes() + b"\n# an edit that a rerun trigger must see\n")
    return path


def _planned_after_editing(relocated, module: str) -> tuple[set[str], list[dict[str, str]], Path]:
    workdir, repo = relocated
    edited = _edit(repo, module)
    proc = snakemake(workdir, "submission", "-n", repo=repo)
    return _planned_rules(proc), _jobs(proc), edited


def _rules_rerun_for(jobs: list[dict[str, str]], edited: Path) -> set[str]:
    """The rules whose own jobs are planned because of the edited file (not an upstream job)."""
    return {
        j["rule"]
        for j in jobs
        if "Updated input files:" in j.get("reason", "") and str(edited) in j["reason"]
    }


def _rules_reading(jobs: list[dict[str, str]], edited: Path) -> set[str]:
    """The rules whose jobs list the edited file among their inputs (their rerun triggers)."""
    return {j["rule"] for j in jobs if str(edited) in j.get("input", "").split(", ")}


def test_a_copy_of_the_run_and_its_workflow_has_nothing_to_do(relocated):
    """What the editing tests stand on: Snakemake takes the copies for the run's own (nothing to
    do before an edit), and a rule's command imports the copied package, not the source tree."""
    workdir, repo = relocated
    proc = snakemake(workdir, "submission", "-n", repo=repo)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    job = subprocess.run(
        [sys.executable, "-c", "import medpipe; print(medpipe.__file__)"],
        cwd=workdir,
        env=package_env(repo),
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(job.stdout.strip()) == repo / "medpipe" / "__init__.py"


def test_editing_the_rle_codec_plans_submit(relocated):
    """io/rle.py writes the synthetic labels, decodes them at ingest and encodes the submission:
    the edit reruns synthesize (and with it everything), and ingest, submit and publish read it."""
    rules, jobs, edited = _planned_after_editing(relocated, "io/rle.py")
    assert _rules_rerun_for(jobs, edited) == {"synthesize"}
    assert {"ingest", "submit", "publish_submission"} <= _rules_reading(jobs, edited)
    assert {"submit", "publish_submission", "ingest", "train_seg"} <= rules


def test_editing_the_submission_writer_plans_only_submit(relocated):
    rules, jobs, edited = _planned_after_editing(relocated, "submission.py")
    # Snakemake names one reason per job: publish reruns after submit, and reads the file too
    assert _rules_rerun_for(jobs, edited) == {"submit"}
    assert {"submit", "publish_submission"} <= _rules_reading(jobs, edited)
    assert rules == {"submit", "publish_submission", "submission"}


def test_editing_the_segmentation_builder_plans_the_gate_training(relocated):
    """The default gate is built on an smp encoder from models/segmentation.py."""
    rules, jobs, edited = _planned_after_editing(relocated, "models/segmentation.py")
    assert {"train_gate", "train_seg"} <= _rules_rerun_for(jobs, edited)
    assert {"train_gate", "train_seg"} <= rules
    assert not {"ingest", "make_folds", "synthesize"} & rules
