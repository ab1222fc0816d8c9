"""Pseudo-labels for the multi-label classifier (``pseudo_label.models``): each ``@pl1`` fold
trains on its training folds plus the test images its own fold's model is confident about, with
their present classes as labels; the variant then joins the CNN blend."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medpipe.config import PseudoSettings, RunConfig, load_config
from medpipe.data.dataset import pseudo_label_rows
from medpipe.guards import LeakageError
from medpipe.layout import (
    CLASSIFY,
    PSEUDO_SPLIT,
    read_class_predictions,
    read_target_matrix,
    target_file,
)
from medpipe.steps.pseudo import confident_classes
from tests.e2e.conftest import REPO
from tests.e2e.multilabel_run import TINY_MULTILABEL, snakemake_multilabel

RUN = TINY_MULTILABEL["run_dir"]
# low bars: the tiny run's 2-epoch models are rarely sure of anything at 0.8
PSEUDO = {"models": ["resnet18_4ch"], "positive_above": 0.3, "negative_below": 0.29}


def test_an_image_is_kept_only_when_every_class_is_decided_and_one_is_present():
    s = PseudoSettings(negative_below=0.1, positive_above=0.8)
    prob = np.array([[0.9, 0.05, 0.02], [0.9, 0.5, 0.02], [0.05, 0.02, 0.01], [0.85, 0.95, 0.1]])
    assert confident_classes(prob, s).tolist() == [True, False, False, True]


@pytest.fixture(scope="module")
def pseudo_run(tiny_ml_run, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("ml-pseudo") / "run"
    shutil.copytree(tiny_ml_run, workdir, symlinks=True)
    overlay = workdir / "pseudo.yaml"
    overlay.write_text(yaml.safe_dump({**TINY_MULTILABEL, "pseudo_label": PSEUDO}))
    dry = snakemake_multilabel(workdir, "submission", "-n", configfiles=(overlay,))
    planned = dry.stdout + dry.stderr
    assert "rule pseudo_label_cls:" in planned, planned[-3000:]
    # the plain model is not retrained: only its @pl1 variant trains
    for block in planned.split("rule train_cls:")[1:]:
        assert "resnet18_4ch@pl1" in block.split("rule ")[0], block[:800]
    snakemake_multilabel(workdir, "submission", configfiles=(overlay,))
    return workdir


@pytest.mark.slow
def test_each_variant_fold_trains_on_its_own_folds_confident_test_images(pseudo_run):
    config = load_config([REPO / "configs" / "multilabel.yaml"], TINY_MULTILABEL)
    config["run_dir"] = str(pseudo_run / RUN)
    config["pseudo_label"] = PSEUDO
    cfg = RunConfig(config)
    stage, data = cfg.layout.stage(1), cfg.layout.data_dir(1)
    settings = cfg.pseudo_settings()
    folds = pd.read_csv(data / "folds.csv", dtype={"image_id": str})
    meta = pd.read_csv(data / "meta.csv", dtype={"image_id": str})
    test = meta[meta["split"] == "test"].set_index("image_id")
    cache = np.load(data / f"test_images_{cfg.image_size}.npy", mmap_mode="r")
    labelled = 0
    for fold in cfg.folds:
        variant = stage.fold(CLASSIFY, "resnet18_4ch@pl1", fold)
        provenance = json.loads(variant.pseudo_provenance.read_text())
        assert provenance["made_by"]["classify"]["model"] == "resnet18_4ch"
        assert provenance["made_by"]["classify"]["fold"] == fold  # only its own fold labels it
        rows = pd.read_csv(variant.pseudo_rows, dtype={"image_id": str}, keep_default_na=False)
        assert set(rows["image_id"]) <= set(test.index)  # test images only
        assert not set(rows["image_id"]) & set(folds["image_id"])
        # the labels are the fold model's confident classes, recomputed from its test table
        theirs = read_class_predictions(stage.fold(CLASSIFY, "resnet18_4ch", fold).test)
        theirs = theirs.set_index("image_id")
        prob = theirs.to_numpy(np.float64)
        kept = theirs.index[confident_classes(prob, settings)]
        assert list(rows["image_id"]) == list(kept)
        khot = read_target_matrix(target_file(variant.pseudo_dir, PSEUDO_SPLIT))
        expected = (theirs.loc[kept].to_numpy() >= settings.positive_above).astype(np.uint8)
        assert np.array_equal(khot, expected)
        images = np.load(variant.pseudo_cache("images", cfg.image_size))
        for row, image_id in enumerate(rows["image_id"]):
            assert np.array_equal(images[row], cache[int(test.loc[image_id, "cache_index"])])
        labelled += len(rows)
        record = json.loads(variant.metrics.read_text())
        assert record.get("n_pseudo", record.get("data", {}).get("n_pseudo")) == len(rows), record
        # a label made by another fold's model is refused before training reads it
        forged = {
            **provenance,
            "made_by": {"classify": {"model": "resnet18_4ch", "fold": 1 - fold}},
        }
        variant.pseudo_provenance.write_text(json.dumps(forged))
        try:
            with pytest.raises(LeakageError, match="only fold"):
                pseudo_label_rows(variant, data)
        finally:
            variant.pseudo_provenance.write_text(json.dumps(provenance))
    assert labelled > 0  # the test must exercise training on pseudo rows
    cv = json.loads((stage.dir / "cv.json").read_text())
    assert "resnet18_4ch@pl1" in cv["models"] and "resnet18_4ch" in cv["models"]
    assert (pseudo_run / RUN / "submission.csv").is_file()
