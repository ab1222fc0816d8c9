"""The multi-label task on DICOM input is a config choice: the whole DAG on a tiny set of
``<Id>.dcm`` chest films with an ``Id,Target`` label file (``data.image_format: dicom``,
``data.channels: [gray]``), 2 folds x 1 epoch at 32², ends in a valid submission; the salt
(which hashes the PatientIDs) is a rerun trigger of the ingest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medpipe.cli import main
from medpipe.layout import RunLayout
from tests.data.dicom_multilabel import CLASSES, write_dicom_multilabel
from tests.e2e.multilabel_run import snakemake_multilabel
from tests.e2e.test_pipeline import _planned_rules

pytestmark = pytest.mark.slow

RUN = "runs/tiny-dicom-ml"
ROOT = "data/tiny-dicom-ml"
OVERLAY = {
    "run_dir": RUN,
    "folds": 2,
    "image_size": 32,
    "data": {
        "root": ROOT,
        "synthetic": None,
        "image_format": "dicom",
        "channels": ["gray"],
        "classes": list(CLASSES),
    },
    "classifier": {"models": {"resnet18_4ch": {"epochs": 1, "batch_size": 8}}},
}


def _overlay(folder: Path, name: str = "dicom-ml.yaml", **data) -> Path:
    overlay = folder / name
    config = {**OVERLAY, "data": {**OVERLAY["data"], **data}}
    overlay.write_text(yaml.safe_dump(config))
    return overlay


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("dicom-ml")
    films = write_dicom_multilabel(workdir / ROOT, n_train=24, n_test=8, size=64)
    broken = next(f for f in films if f.split == "train")
    broken.path.write_bytes(broken.path.read_bytes()[:300])  # quarantined, the run goes on
    snakemake_multilabel(workdir, "submission", configfiles=(_overlay(workdir),))
    return workdir


def test_the_dicom_run_ends_in_a_valid_submission(dicom_run):
    submission = dicom_run / RUN / "submission.csv"
    assert main(["validate-submission", str(submission), "--task", "multilabel"]) == 0
    rows = pd.read_csv(submission, dtype=str, keep_default_na=False)
    sample = pd.read_csv(dicom_run / ROOT / "sample_submission.csv", dtype=str)
    assert rows["Id"].tolist() == sample["Id"].tolist()
    for value in rows["Predicted"]:
        assert all(0 <= int(v) < len(CLASSES) for v in value.split())


def test_the_cache_is_one_channel_and_the_broken_film_is_quarantined(dicom_run):
    data = RunLayout(dicom_run / RUN).data_dir(1)
    assert np.load(data / "train_images_32.npy", mmap_mode="r").shape == (23, 1, 32, 32)
    assert np.load(data / "test_images_32.npy", mmap_mode="r").shape == (8, 1, 32, 32)
    assert np.load(data / "train_targets.npy").shape == (23, len(CLASSES))
    quarantine = pd.read_csv(data / "quarantine.csv")
    assert quarantine["source"].tolist() == ["film000.dcm"]
    meta = pd.read_csv(data / "meta.csv", dtype=str)
    assert meta["patient_key"].str.fullmatch(r"[0-9a-f]{16}").all()  # hashed PatientIDs


def test_nothing_to_redo_but_a_new_salt_reingests(dicom_run, tmp_path):
    same = snakemake_multilabel(dicom_run, "submission", "-n", configfiles=(_overlay(tmp_path),))
    assert "Nothing to be done" in same.stdout + same.stderr
    salted = _overlay(tmp_path, "salted.yaml", salt="another-salt")
    assert "ingest_channels" in _planned_rules(
        snakemake_multilabel(dicom_run, "submission", "-n", configfiles=(salted,))
    )


def test_dicom_with_channels_of_a_png_set_is_refused_before_running(dicom_run, tmp_path):
    overlay = _overlay(tmp_path, "four.yaml", channels=["red", "green", "blue", "yellow"])
    proc = snakemake_multilabel(dicom_run, "submission", "-n", configfiles=(overlay,), check=False)
    assert proc.returncode != 0
    assert "data.channels: [gray]" in proc.stdout + proc.stderr
