"""The multi-label task's whole DAG on tiny demo cells (configs/multilabel.yaml, 2 folds x 2
epochs at 32²): a valid ``Id,Predicted`` submission in the sample's order, the decision's
record, the scorer's baselines, and rerun behaviour (a dry run changes nothing; a postprocess
edit reruns only the decision)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medpipe.cli import main
from medpipe.layout import HpaInputLayout
from medpipe.multilabel.metric import EVERY_CLASS, MOST_FREQUENT
from tests.e2e.multilabel_run import TINY_MULTILABEL, snakemake_multilabel
from tests.e2e.test_pipeline import _planned_rules

pytestmark = pytest.mark.slow

RUN = "runs/tiny-ml"


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".snakemake" not in p.parts
    }


def test_the_submission_is_valid_and_in_the_sample_order(tiny_ml_run):
    root = HpaInputLayout(tiny_ml_run / TINY_MULTILABEL["data"]["root"])
    submission = pd.read_csv(tiny_ml_run / RUN / "submission.csv", dtype=str, keep_default_na=False)
    sample = pd.read_csv(root.sample_submission, dtype=str)
    assert list(submission.columns) == ["Id", "Predicted"]
    assert submission["Id"].tolist() == sample["Id"].tolist()
    k = len(
        json.loads((tiny_ml_run / RUN / "stage1" / "thresholds.json").read_text())["thresholds"]
    )
    for value in submission["Predicted"]:
        labels = [int(v) for v in value.split()]
        assert labels == sorted(set(labels)) and all(0 <= v < k for v in labels)
    assert (
        main(
            [
                "validate-submission",
                str(tiny_ml_run / RUN / "submission.csv"),
                "--task",
                "multilabel",
            ]
        )
        == 0
    )


def test_the_decision_records_its_rule_and_every_candidates_nested_score(tiny_ml_run):
    decision = json.loads((tiny_ml_run / RUN / "stage1" / "thresholds.json").read_text())
    assert decision["rule"] in decision["candidates"]
    scores = {name: c["nested_score"] for name, c in decision["candidates"].items()}
    assert {"global", "per_class", "shrunk"} <= set(scores)
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    # the rule chosen is the best nested score, or a simpler one within the tie tolerance
    assert scores[decision["rule"]] >= max(scores.values()) - 1e-3
    assert all(0.0 < t < 1.0 for t in decision["thresholds"])


def test_score_prints_macro_f1_against_the_trivial_baselines(tiny_ml_run, capsys):
    root = HpaInputLayout(tiny_ml_run / TINY_MULTILABEL["data"]["root"])
    code = main(
        ["score", str(tiny_ml_run / RUN / "submission.csv"), "--labels", str(root.hidden_labels(1))]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"{EVERY_CLASS}: " in out and f"{MOST_FREQUENT}: " in out, out
    assert "class 0: F1 " in out and "score: " in out, out


def test_a_dry_run_changes_nothing_and_has_nothing_to_do(tiny_ml_run, tmp_path):
    overlay = tmp_path / "tiny-ml.yaml"
    overlay.write_text(yaml.safe_dump(TINY_MULTILABEL))
    before = _digests(tiny_ml_run / RUN)
    proc = snakemake_multilabel(tiny_ml_run, "submission", "-n", configfiles=(overlay,))
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert _digests(tiny_ml_run / RUN) == before


def test_editing_postprocess_reruns_only_the_decision(tiny_ml_run, tmp_path):
    overlay = tmp_path / "post.yaml"
    overlay.write_text(yaml.safe_dump({**TINY_MULTILABEL, "postprocess": {"caps": [2]}}))
    rules = _planned_rules(
        snakemake_multilabel(tiny_ml_run, "submission", "-n", configfiles=(overlay,))
    )
    assert "thresholds" in rules
    assert rules <= {"thresholds", "submit", "publish_submission", "submission"}, rules
