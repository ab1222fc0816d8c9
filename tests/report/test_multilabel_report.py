"""The multi-label report (medpipe/report/multilabel.py, stages/multilabel_report.smk) on a copy
of the tiny multi-label run (tests/conftest.py, ``tiny_ml_run``): the target ``all`` adds the
report job and nothing else; the page's per-class F1 table holds what the run's OOF
predictions and the hidden test labels give, recomputed here; every plot is embedded; no
patient key appears; and off the demo data the hidden labels are not read."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from medpipe.config import RunConfig, load_config
from medpipe.layout import HpaInputLayout, RunLayout
from medpipe.multilabel.decision import apply_decision
from medpipe.report.multilabel import build_report
from tests.e2e.multilabel_run import TINY_MULTILABEL, snakemake_multilabel

pytestmark = pytest.mark.slow

RUN = TINY_MULTILABEL["run_dir"]
DATA = TINY_MULTILABEL["data"]["root"]
PLOTS = {
    "pr_curves",
    "label_cooccurrence",
    "thresholds",
    "cases_best",
    "cases_worst",
    "curves_classify_resnet18_4ch",
}


class _Tables(HTMLParser):
    """Every ``<table>`` of a page as rows of cell texts (header row first)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell or []))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _table_with(page: str, column: str) -> pd.DataFrame:
    parser = _Tables()
    parser.feed(page)
    rows = next(t for t in parser.tables if column in t[0])
    return pd.DataFrame(rows[1:], columns=rows[0])


def _job_counts(stdout: str) -> dict[str, int]:
    """Snakemake's "Job stats" table of a dry run: rule -> jobs."""
    stats = stdout.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", stats, re.M)}


@pytest.fixture(scope="module")
def work(request, tmp_path_factory) -> dict:
    """A copy of the tiny run's working folder, then ``all`` on it: its dry run before and
    after; ``MEDPIPE_ML_REPORT_TEST_RUN`` may name a finished run (without the report)."""
    source = os.environ.get("MEDPIPE_ML_REPORT_TEST_RUN")
    source = Path(source) if source else request.getfixturevalue("tiny_ml_run")
    dest = tmp_path_factory.mktemp("ml-report") / "work"
    shutil.copytree(source, dest, symlinks=True)
    overlay = (dest / "tiny-ml.yaml",)
    before = snakemake_multilabel(dest, "all", "-n", configfiles=overlay).stdout
    snakemake_multilabel(dest, "all", configfiles=overlay)
    after = snakemake_multilabel(dest, "all", "-n", configfiles=overlay).stdout
    return {"dir": dest, "before": before, "after": after}


@pytest.fixture(scope="module")
def page(work) -> str:
    return RunLayout(work["dir"] / RUN).report_html.read_text()


def test_all_adds_the_report_job_and_nothing_else(work):
    assert _job_counts(work["before"]) == {"report": 1, "all": 1}, work["before"][-2000:]
    assert "Nothing to be done" in work["after"], work["after"][-2000:]


def _oof_probabilities(run: Path, decision: dict) -> tuple[pd.DataFrame, np.ndarray]:
    """The OOF pool and the probabilities the decision thresholded, from the fold files."""
    folds = pd.read_csv(run / "data/folds.csv", dtype={"image_id": str, "target": str})
    folds["target"] = folds["target"].fillna("")
    blend = 0
    for model, weight in decision["weights"].items():
        parts = []
        for fold_dir in sorted((run / "stage1/classify" / model).glob("fold*")):
            own = folds.loc[folds["fold"] == int(fold_dir.name[4:]), "image_id"]
            table = pd.read_csv(fold_dir / "oof.csv", dtype={"image_id": str})
            parts.append(table[table["image_id"].isin(own)])
        table = pd.concat(parts).set_index("image_id").loc[folds["image_id"]]
        blend = blend + weight * table.filter(regex=r"^p_\d+$").to_numpy(np.float64)
    fused = pd.read_csv(run / "stage1/fusion/oof.csv", dtype={"image_id": str})
    fused = fused.set_index("image_id").loc[folds["image_id"]].filter(regex=r"^p_\d+$").to_numpy()
    source = decision.get("source", "cnn")
    probs = {"cnn": blend, "fused": fused, "mean": (blend + fused) / 2}[source]
    return folds, probs


def _khot(targets, k: int) -> np.ndarray:
    out = np.zeros((len(targets), k), dtype=np.uint8)
    for row, target in enumerate(targets):
        out[row, [int(c) for c in str(target).split()]] = 1
    return out


def test_the_per_class_table_is_the_runs_oof_and_test_f1(work, page):
    run = work["dir"] / RUN
    decision = json.loads((run / "stage1/thresholds.json").read_text())
    folds, probs = _oof_probabilities(run, decision)
    k = probs.shape[1]
    truth = _khot(folds["target"], k)
    pred = apply_decision(decision, probs)
    oof_f1 = f1_score(truth, pred, average=None, zero_division=1.0)
    # the thresholds step recorded the same macro F1 on the same predictions
    cv = json.loads((run / "stage1/cv.json").read_text())
    assert oof_f1.mean() == pytest.approx(cv["ensemble"], abs=1e-9)

    labels = pd.read_csv(work["dir"] / DATA / "hidden/test_labels.csv", dtype=str)
    submission = pd.read_csv(run / "submission.csv", dtype=str, keep_default_na=False)
    submitted = submission.set_index("Id").loc[labels["Id"], "Predicted"]
    test_f1 = f1_score(
        _khot(labels["Target"], k), _khot(submitted, k), average=None, zero_division=1.0
    )

    table = _table_with(page, "OOF F1")
    assert table["class"].astype(int).tolist() == list(range(k))
    np.testing.assert_allclose(table["OOF F1"].astype(float), oof_f1, atol=5e-5)
    np.testing.assert_allclose(table["test F1"].astype(float), test_f1, atol=5e-5)
    assert table["OOF true"].astype(int).tolist() == truth.sum(axis=0).tolist()
    assert table["OOF predicted"].astype(int).tolist() == pred.sum(axis=0).tolist()
    np.testing.assert_allclose(table["threshold"].astype(float), decision["thresholds"], atol=5e-5)


def test_every_plot_is_embedded_and_written(work, page):
    plots = RunLayout(work["dir"] / RUN).plots_dir
    assert {p.stem for p in plots.glob("*.png")} == PLOTS
    for png in plots.glob("*.png"):
        assert base64.b64encode(png.read_bytes()).decode() in page, png.name
    assert page.count('<img src="data:image/png;base64,') == len(PLOTS)
    assert 'class="note"' not in page  # no block said "not available"
    for heading in ("Per-class F1", "Precision-recall curves", "Label co-occurrence", "Cases"):
        assert f">{heading}</h2>" in page


def _copy_run(work, tmp_path) -> Path:
    dest = tmp_path / "work"
    shutil.copytree(work["dir"], dest, symlinks=True)
    return dest


def _config(dest: Path, **data) -> RunConfig:
    raw = load_config([str(RunLayout(dest / RUN).resolved_config)])
    raw["data"] = {**raw["data"], "root": str(dest / DATA), **data}
    return RunConfig(raw)


def test_no_patient_key_reaches_the_page(work, tmp_path):
    dest = _copy_run(work, tmp_path)
    layout = RunLayout(dest / RUN)
    keys = []
    for table in (layout.meta(1), layout.folds(1)):
        frame = pd.read_csv(table, dtype=str, keep_default_na=False)
        frame["patient_key"] = [f"PIDSENTINEL{i:04d}X" for i in range(len(frame))]
        keys += frame["patient_key"].tolist()
        frame.to_csv(table, index=False)
    out = build_report(_config(dest), layout.run_dir, tmp_path / "r.html", progress=False)
    text = out.read_text()
    assert "PIDSENTINEL" not in text and ">patient_key<" not in text
    assert not any(key in text for key in keys)


def test_off_the_demo_the_hidden_labels_are_not_read(work, tmp_path):
    dest = _copy_run(work, tmp_path)
    hidden = HpaInputLayout(dest / DATA).hidden_labels(1)
    hidden.unlink()
    hidden.mkdir()  # opening it fails
    cfg = _config(dest, synthetic=None)
    out = build_report(cfg, dest / RUN, tmp_path / "r.html", progress=False)
    text = out.read_text()
    assert "no test labels (report.test_labels)" in text
    assert "test F1" not in _table_with(text, "OOF F1").columns
