"""A teammate's class probabilities in a multi-label run (``ensemble.external``, ``kind:
classes``): checked against the run's folds and images, imported as classifier folds, and weighed
by the thresholds decision as sources of their own (the teammate alone, and its mean with the
CNN blend), chosen by nested CV like the fused source."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medpipe.config import ConfigError, RunConfig, load_config
from medpipe.layout import HpaInputLayout
from medpipe.multilabel.decide import choose_source
from medpipe.multilabel.tables import n_classes, source_names
from medpipe.steps.external import ExternalSourceError, check_source
from tests.e2e.conftest import REPO
from tests.e2e.multilabel_run import TINY_MULTILABEL, snakemake_multilabel

RUN = TINY_MULTILABEL["run_dir"]


# ------------------------------------------------------------------ the decision, on arrays
def _draw(n: int = 240, k: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, k)) < 0.25).astype(np.uint8)
    truth[np.arange(n), rng.integers(0, k, n)] = 1
    cnn = np.clip(0.35 * truth + 0.65 * rng.random((n, k)), 0, 1)  # a weak CNN
    folds = np.arange(n) % 3
    return rng, truth, cnn, folds


def test_the_source_names_put_the_teammate_after_the_runs_own_and_refuse_a_clash():
    assert source_names(False, ["team"]) == ["cnn", "cnn+team", "team"]
    assert source_names(True, []) == ["cnn", "fused", "mean"]
    with pytest.raises(ValueError, match="ensemble.external.fused: the name of a probability"):
        source_names(True, ["fused"])


def test_a_strong_teammate_is_chosen_and_a_useless_one_is_not():
    rng, truth, cnn, folds = _draw()
    strong = np.clip(0.8 * truth + 0.2 * rng.random(truth.shape), 0, 1)
    decision = choose_source(cnn, None, truth, folds, teammates={"team": strong})
    assert decision["source"] in ("team", "cnn+team")
    assert set(decision["sources"]) == {"cnn", "cnn+team", "team"}
    assert decision["nested_score"] > decision["sources"]["cnn"]["nested_score"] + 0.1
    useless = rng.random(truth.shape)  # no signal: the CNN's own blend stays (a tie goes to it)
    decision = choose_source(cnn, None, truth, folds, teammates={"team": useless})
    assert decision["source"] == "cnn"


# ------------------------------------------------------------------ on the tiny run
def _teammate(workdir: Path, folder: Path, *, strength: float, seed: int = 0) -> Path:
    """A teammate's oof.csv and test.csv for the run's folds and test images: probabilities
    near the truth (``strength`` of the way from noise), the test ones from the demo's hidden
    answers, as a teammate with a better model would send."""
    rng = np.random.default_rng(seed)
    data = workdir / RUN / "data"
    folds = pd.read_csv(data / "folds.csv", dtype={"image_id": str, "target": str})
    meta = pd.read_csv(data / "meta.csv", dtype={"image_id": str})
    k = n_classes(data)
    hidden = pd.read_csv(
        HpaInputLayout(workdir / TINY_MULTILABEL["data"]["root"]).hidden_labels(1),
        dtype=str,
        keep_default_na=False,
    )

    def probs(targets):
        khot = np.zeros((len(targets), k))
        for row, t in enumerate(targets):
            for i in str(t if isinstance(t, str) else "").split():
                khot[row, int(i)] = 1
        return np.round(strength * khot + (1 - strength) * rng.random(khot.shape), 6)

    folder.mkdir(parents=True, exist_ok=True)
    columns = [f"p_{c}" for c in range(k)]
    oof = pd.DataFrame(probs(folds["target"].tolist()), columns=columns)
    oof.insert(0, "fold", folds["fold"].astype(int))
    oof.insert(0, "image_id", folds["image_id"])
    oof.to_csv(folder / "oof.csv", index=False)
    test_ids = meta.loc[meta["split"] == "test", "image_id"].tolist()
    target = dict(zip(hidden["Id"], hidden["Target"], strict=True))
    rows = []
    for f in sorted(folds["fold"].unique()):  # one row per image and teammate fold: averaged
        part = pd.DataFrame(probs([target[i] for i in test_ids]), columns=columns)
        part.insert(0, "fold", int(f))
        part.insert(0, "image_id", test_ids)
        rows.append(part)
    pd.concat(rows).to_csv(folder / "test.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def with_teammate(tiny_ml_run, tmp_path_factory) -> Path:
    """The tiny run, copied, with a strong teammate's source imported and the decision rerun."""
    workdir = tmp_path_factory.mktemp("ml-external") / "run"
    shutil.copytree(tiny_ml_run, workdir, symlinks=True)
    source = _teammate(workdir, workdir / "team", strength=0.8)
    overlay = workdir / "overlay.yaml"
    settings = {
        **TINY_MULTILABEL,
        "ensemble": {"external": {"team": {"path": str(source), "kind": "classes"}}},
    }
    overlay.write_text(yaml.safe_dump(settings))
    dry = snakemake_multilabel(workdir, "submission", "-n", configfiles=(overlay,))
    planned = dry.stdout + dry.stderr
    # only the import and the steps after the decision run again: not training, not fusion
    assert "rule import_external:" in planned, planned[-3000:]
    for rule in ("train_cls", "predict_cls", "fuse_cls", "ingest_channels"):
        assert f"rule {rule}:" not in planned, (rule, planned[-3000:])
    snakemake_multilabel(workdir, "submission", configfiles=(overlay,))
    return workdir


@pytest.mark.slow
def test_the_teammate_is_imported_and_weighed_by_the_decision(with_teammate, tiny_ml_run):
    stage = with_teammate / RUN / "stage1"
    folds = sorted(stage.glob("external/team/fold*/oof.csv"))
    assert len(folds) == TINY_MULTILABEL["folds"]
    oof = pd.read_csv(folds[0])
    assert [c for c in oof.columns if c.startswith("emb_")] == []  # probabilities only
    decision = json.loads((stage / "thresholds.json").read_text())
    cv = json.loads((stage / "cv.json").read_text())
    assert set(cv["sources"]) == {"cnn", "fused", "mean", "cnn+team", "team"}
    assert decision["source"] in ("team", "cnn+team")  # far better than the 2-epoch CNN
    assert "team" in cv["models"]

    # the submission applies the teammate's test probabilities: it scores above the run's own
    hidden = HpaInputLayout(with_teammate / TINY_MULTILABEL["data"]["root"]).hidden_labels(1)

    def score(run: Path) -> float:
        from medpipe.tasks import get_task

        return get_task("multilabel").score(run / RUN / "submission.csv", hidden).score

    assert score(with_teammate) > score(tiny_ml_run) + 0.1


@pytest.mark.slow
def test_a_source_that_does_not_fit_the_run_is_refused_naming_the_file(with_teammate, tmp_path):
    config = load_config([REPO / "configs" / "multilabel.yaml"], TINY_MULTILABEL)
    source = tmp_path / "bad"
    shutil.copytree(with_teammate / "team", source)
    config["run_dir"] = str(with_teammate / RUN)
    config["ensemble"] = {"external": {"bad": {"path": str(source), "kind": "classes"}}}
    cfg = RunConfig(config)
    stage, data = cfg.layout.stage(1), cfg.layout.data_dir(1)
    check_source(cfg, stage, data, "bad")  # the copy fits

    oof = pd.read_csv(source / "oof.csv", dtype={"image_id": str})
    moved = oof.copy()
    moved.loc[0, "fold"] = 1 - int(moved.loc[0, "fold"])
    moved.to_csv(source / "oof.csv", index=False)
    with pytest.raises(
        ExternalSourceError, match=r"oof\.csv: image .* is in fold .* in folds\.csv"
    ):
        check_source(cfg, stage, data, "bad")

    wider = oof.assign(**{f"p_{len([c for c in oof if c.startswith('p_')])}": 0.5})
    wider.to_csv(source / "oof.csv", index=False)
    with pytest.raises(
        ExternalSourceError, match=r"oof\.csv: column 'p_\d+': the run has \d+ classes"
    ):
        check_source(cfg, stage, data, "bad")

    oof.assign(p_0=1.5).to_csv(source / "oof.csv", index=False)
    with pytest.raises(ExternalSourceError, match=r"has p_0 1\.5: values must lie in \[0, 1\]"):
        check_source(cfg, stage, data, "bad")

    oof.to_csv(source / "oof.csv", index=False)
    test = pd.read_csv(source / "test.csv", dtype={"image_id": str})
    test[test["image_id"] != test["image_id"].iloc[0]].to_csv(source / "test.csv", index=False)
    with pytest.raises(
        ExternalSourceError, match=r"test\.csv: 1 'test' images of meta\.csv have no row"
    ):
        check_source(cfg, stage, data, "bad")

    config["ensemble"] = {"external": {"mean": {"path": str(source), "kind": "classes"}}}
    with pytest.raises(ConfigError, match="ensemble.external.mean: the name of a probability"):
        check_source(RunConfig(config), stage, data, "mean")
