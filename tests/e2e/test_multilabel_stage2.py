"""Stage 2 of the multi-label task end to end, on a copy of the tiny multi-label run: the released
labels ingested, the classifier retrained on train + the stage-1 test images, the stage-2 test
set predicted in the stage-2 sample submission's order, REPRODUCE.md with the task's artifacts
and their hashes, and verify-reproduction on the untouched and on a tampered run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medpipe.io.hashing import sha256_file
from medpipe.layout import HpaInputLayout
from medpipe.tasks import get_task
from tests.e2e.multilabel_run import TINY_MULTILABEL, snakemake_multilabel

pytestmark = pytest.mark.slow

N_STAGE2_TEST = 6
# Stage 2 on the fixture's data: the released files added, the generator off (its settings
# would otherwise rerun stage 1), the classifier retrained on the released labels.
STAGE2 = {
    "stage": 2,
    "data": {"synthetic": None},
    "stage2": {"retrain": {"resnet18_4ch": True}},
}


def _release_stage2(root: Path, scratch: Path) -> None:
    """Write the stage-2 files of the fixture's draw into ``root``: the generator with the same
    seed and a stage-2 test set draws the same train and test images first."""
    synth = dict(TINY_MULTILABEL["data"]["synthetic"], n_stage2_test=N_STAGE2_TEST)
    subprocess.run(
        [
            sys.executable, "-m", "medpipe.cli", "synth", "--task", "multilabel", "--out", str(scratch),
            "--n-train", str(synth["n_train"]), "--n-test", str(synth["n_test"]),
            "--n-stage2-test", str(N_STAGE2_TEST), "--size", str(synth["size"]),
            "--seed", str(synth["seed"]),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    new, old = HpaInputLayout(scratch), HpaInputLayout(root)
    for same in (new.train_labels, new.sample_submission):  # the stage-1 part is the fixture's
        assert same.read_bytes() == (root / same.name).read_bytes()
    shutil.copytree(new.image_dir("stage2_test"), old.image_dir("stage2_test"))
    for name in ("stage2_labels", "stage2_sample_submission"):
        shutil.copy2(getattr(new, name), getattr(old, name))
    shutil.copy2(new.hidden_labels(2), old.hidden_labels(2))


@pytest.fixture(scope="module")
def ml_stage2_run(tiny_ml_run, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("ml-stage2") / "run"
    shutil.copytree(tiny_ml_run, workdir, symlinks=True)
    root = workdir / TINY_MULTILABEL["data"]["root"]
    _release_stage2(root, tmp_path_factory.mktemp("ml-stage2-data"))
    overlay = workdir / "stage2.yaml"
    overlay.write_text(yaml.safe_dump(STAGE2))
    hidden = HpaInputLayout(root).hidden_labels(2)
    vault = workdir / "sealed-stage2.csv"
    os.replace(hidden, vault)
    hidden.mkdir()  # a rule that opens the hidden stage-2 labels fails
    try:
        snakemake_multilabel(workdir, "submission", configfiles=(workdir / "tiny-ml.yaml", overlay))
    finally:
        hidden.rmdir()
        os.replace(vault, hidden)
    return workdir


def _run(workdir: Path) -> Path:
    return workdir / TINY_MULTILABEL["run_dir"]


def test_stage2_submission_is_valid_in_the_stage2_sample_order(ml_stage2_run):
    run, layout = _run(ml_stage2_run), HpaInputLayout(ml_stage2_run / "data/tiny-hpa")
    submission = run / "stage2/submission.csv"
    task = get_task("multilabel")
    frame = task.validate_submission(submission, layout.stage2_sample_submission)
    sample = pd.read_csv(layout.stage2_sample_submission, dtype=str)
    assert frame["Id"].tolist() == sample["Id"].tolist()
    assert len(frame) == N_STAGE2_TEST
    assert (run / "submission.csv").read_bytes() == submission.read_bytes()
    stage1 = pd.read_csv(run / "stage1/submission.csv", dtype=str)  # kept, not overwritten
    assert not set(stage1["Id"]) & set(frame["Id"])


def test_stage2_trains_on_the_released_labels(ml_stage2_run):
    run, layout = _run(ml_stage2_run), HpaInputLayout(ml_stage2_run / "data/tiny-hpa")
    folds = pd.read_csv(run / "stage2/data/folds.csv", dtype=str, keep_default_na=False)
    stage1_test = pd.read_csv(layout.sample_submission, dtype=str)["Id"]
    released = pd.read_csv(layout.stage2_labels, dtype=str, keep_default_na=False)
    added = folds[folds["image_id"].isin(stage1_test)]
    assert len(added) == len(stage1_test) and (added["fold"] == "-1").all()
    targets = released.set_index("Id")["Target"].map(lambda t: sorted(map(int, t.split())))
    assert [sorted(map(int, t.split())) for t in added["target"]] == targets[
        added["image_id"]
    ].tolist()
    stage1_folds = pd.read_csv(run / "data/folds.csv", dtype=str, keep_default_na=False)
    assert folds.iloc[: len(stage1_folds)].equals(stage1_folds)  # the OOF images are stage 1's
    for fold in (0, 1):  # retrained: new weights in stage2/, from more images
        ckpt = run / f"stage2/classify/resnet18_4ch/fold{fold}/model.ckpt"
        assert ckpt.is_file()
        assert sha256_file(ckpt) != sha256_file(
            run / f"stage1/classify/resnet18_4ch/fold{fold}/model.ckpt"
        )


def test_reproduce_doc_names_the_multilabel_artifacts_with_their_hashes(ml_stage2_run):
    run = _run(ml_stage2_run)
    doc = (run / "stage2/REPRODUCE.md").read_text()
    assert "- task: `multilabel`" in doc
    assert "red, green, blue, yellow" in doc
    assert re.search(r"classes: K = \d+", doc)
    assert "stage2_sample_submission.csv" in doc and "stage2_test/ (sorted path" in doc
    assert "train-rle.csv" not in doc and "MISSING" not in doc
    named = dict(re.findall(r"\| (stage2/[^ |]+) \| ([0-9a-f]{64}) \|$", doc, re.MULTILINE))
    for path in (
        "stage2/classify/resnet18_4ch/fold0/oof.csv",
        "stage2/classify/resnet18_4ch/fold1/test.csv",
        "stage2/fusion/test.csv",
        "stage2/thresholds.json",
        "stage2/submission.csv",
        "stage2/classify/resnet18_4ch/fold0/model.ckpt",
    ):
        assert path in named, path
    for path, sha in named.items():
        assert sha256_file(run / path) == sha, path


def _verify(workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medpipe.cli", "verify-reproduction", TINY_MULTILABEL["run_dir"]],
        cwd=workdir,
        capture_output=True,
        text=True,
    )


def test_verify_reproduction_ok_then_names_a_changed_prediction(ml_stage2_run, tmp_path):
    proc = _verify(ml_stage2_run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "verify-reproduction: OK" in proc.stdout

    tampered = tmp_path / "run"
    shutil.copytree(ml_stage2_run, tampered, symlinks=True)
    changed = "stage2/classify/resnet18_4ch/fold1/test.csv"
    path = _run(tampered) / changed
    frame = pd.read_csv(path, dtype={"image_id": str})
    frame.loc[0, "p_0"] = 1.0 - frame.loc[0, "p_0"]
    frame.to_csv(path, index=False)
    proc = _verify(tampered)
    assert proc.returncode == 1
    assert "MISMATCH" in proc.stderr and changed in proc.stderr


def test_report_stage2_table_compares_the_classifier_before_and_after(ml_stage2_run):
    from medpipe.config import RunConfig, load_config
    from medpipe.report.run import FinishedRun
    from medpipe.report.stage2 import retrain_table

    run_dir = _run(ml_stage2_run)
    cfg = RunConfig(load_config(str(run_dir / "config.resolved.yaml")))
    finished = FinishedRun(cfg, run_dir, 2)
    cv1, cv2 = (finished.read_json(finished.layout.cv(s), "cv.json") for s in (1, 2))
    row = retrain_table(finished, cv1, cv2).set_index("model").loc["resnet18_4ch"]
    assert row["stage 2"] == "retrained" and row["metric"] == "macro F1 at 0.5"
    assert row["CV stage 1"] == cv1["models"]["resnet18_4ch"]["oof_f1_at_0.5"]
    assert row["CV stage 2"] == cv2["models"]["resnet18_4ch"]["oof_f1_at_0.5"]


def test_the_multilabel_report_of_stage2_has_the_stage2_section(ml_stage2_run, tmp_path):
    from medpipe.config import RunConfig, load_config
    from medpipe.report.multilabel import build_report

    run_dir = _run(ml_stage2_run)
    cfg = RunConfig(load_config(str(run_dir / "config.resolved.yaml")))
    html = build_report(cfg, run_dir, tmp_path / "report.html", stage=2, progress=False)
    page = Path(html).read_text()
    stage2 = page.split("<h2>Stage 2</h2>", 1)[1]
    assert "resnet18_4ch" in stage2 and "retrained" in stage2


def test_retrain_auto_keeps_the_variant_with_the_better_oof_macro_auc(ml_stage2_run, tmp_path):
    """``retrain: auto``: both the retrained classifier and its stage-1 weights (``@kept``)
    predict the stage-2 folds; retrain_choice.json holds each one's OOF macro ROC AUC,
    recomputed here from their fold files, and the better one is kept."""
    from sklearn.metrics import roc_auc_score

    from medpipe.layout import read_class_predictions

    workdir = tmp_path / "run"
    shutil.copytree(ml_stage2_run, workdir, symlinks=True)
    overlay = workdir / "auto.yaml"
    overlay.write_text(yaml.safe_dump({**STAGE2, "stage2": {"retrain": {"resnet18_4ch": "auto"}}}))
    snakemake_multilabel(
        workdir,
        "submission",
        configfiles=(workdir / "tiny-ml.yaml", workdir / "stage2.yaml", overlay),
    )
    run = _run(workdir)
    choice = json.loads((run / "stage2/retrain_choice.json").read_text())["resnet18_4ch"]
    folds = pd.read_csv(run / "stage2/data/folds.csv", dtype=str, keep_default_na=False)
    pool = folds[folds["fold"].astype(int) >= 0].set_index("image_id")
    k = 1 + max(int(i) for t in pool["target"] for i in t.split())
    for variant, name in (("retrained", "resnet18_4ch"), ("kept", "resnet18_4ch@kept")):
        frames = [
            read_class_predictions(run / f"stage2/classify/{name}/fold{f}/oof.csv")
            for f in sorted(pool["fold"].astype(int).unique())
        ]
        oof = pd.concat(frames).set_index("image_id").loc[pool.index]
        truth = np.array([[str(c) in t.split() for c in range(k)] for t in pool["target"]], int)
        both = [c for c in range(k) if 0 < truth[:, c].sum() < len(truth)]
        probs = oof[[f"p_{c}" for c in range(k)]].to_numpy()
        expected = roc_auc_score(truth[:, both], probs[:, both], average="macro")
        assert choice[variant]["cv"] == pytest.approx(expected, abs=1e-9)
    better = "kept" if choice["kept"]["cv"] > choice["retrained"]["cv"] else "retrained"
    assert choice["choice"] == better and choice["task"] == "classify"
    get_task("multilabel").validate_submission(
        run / "stage2/submission.csv",
        HpaInputLayout(workdir / "data/tiny-hpa").stage2_sample_submission,
    )
