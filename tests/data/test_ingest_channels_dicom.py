"""The multi-label ingest on DICOM input (``image_format="dicom"``): one ``<Id>.dcm`` film per
image into the same cache layout with C = 1."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from medpipe.data.cache import pseudonymous_key
from medpipe.data.ingest_channels import ChannelIngestError, ingest_stage
from tests.data.dicom_multilabel import CLASSES, write_dicom_multilabel

SIZE = 32
SALT = "test-salt"


@pytest.fixture(scope="module")
def films_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("dicom-ml")
    return root, write_dicom_multilabel(root, n_train=16, n_test=6, size=64)


@pytest.fixture
def films(films_root: tuple[Path, list], tmp_path: Path) -> tuple[Path, list]:
    """A private copy: tests may break files."""
    root, written = films_root
    copy = tmp_path / "in"
    shutil.copytree(root, copy)
    return copy, [
        f.__class__(**{**f.__dict__, "path": copy / f.path.relative_to(root)}) for f in written
    ]


def ingest(root: Path, out: Path, **options) -> pd.DataFrame:
    return ingest_stage(
        root,
        out,
        SIZE,
        channels=["gray"],
        classes=list(CLASSES),
        image_format="dicom",
        salt=SALT,
        progress=False,
        **options,
    )


def test_one_channel_cache_k_hot_targets_and_hashed_patients(films, tmp_path: Path) -> None:
    root, written = films
    out = tmp_path / "data"
    meta = ingest(root, out)
    train = [f for f in written if f.split == "train"]
    test = [f for f in written if f.split == "test"]
    images = np.load(out / f"train_images_{SIZE}.npy")
    assert images.shape == (len(train), 1, SIZE, SIZE) and images.dtype == np.uint8
    assert np.load(out / f"test_images_{SIZE}.npy").shape == (len(test), 1, SIZE, SIZE)
    assert all(images[i].std() > 5 for i in range(len(images)))  # films, not zero rows
    khot = np.load(out / "train_targets.npy")
    expected = np.zeros((len(train), len(CLASSES)), np.uint8)
    for i, film in enumerate(sorted(train, key=lambda f: f.image_id)):
        expected[i, list(film.target)] = 1
    assert np.array_equal(khot, expected)
    rows = meta[meta["split"] == "test"]
    assert list(rows["image_id"]) == [f.image_id for f in test]  # the sample submission's order
    assert (meta[meta["split"] == "train"]["target"].tolist()) == [
        " ".join(map(str, f.target)) for f in sorted(train, key=lambda f: f.image_id)
    ]
    by_id = {f.image_id: f for f in written}
    assert list(meta["patient_key"]) == [
        pseudonymous_key(by_id[i].patient_id, SALT) for i in meta["image_id"]
    ]
    assert meta["patient_key"].nunique() == len(written) // 2  # two films a patient
    assert list(meta[["orig_height", "orig_width"]].drop_duplicates().itertuples(index=False)) == [
        (64, 64)
    ]
    for path in out.iterdir():  # the raw PatientID is written nowhere
        assert b"ML-PAT-" not in path.read_bytes(), path.name
    assert pd.read_csv(out / "quarantine.csv").empty


def test_a_broken_film_is_quarantined_and_named(films, tmp_path: Path, caplog) -> None:
    root, written = films
    truncated = next(f for f in written if f.split == "train" and f.image_id != "film003")
    data = truncated.path.read_bytes()
    truncated.path.write_bytes(data[: len(data) // 2])
    garbage = next(f for f in written if f.split == "test")
    garbage.path.write_bytes(b"not a DICOM file at all" * 20)
    out = tmp_path / "data"
    with caplog.at_level(logging.WARNING, logger="medpipe.ingest"):
        meta = ingest(root, out)
    quarantine = pd.read_csv(out / "quarantine.csv")
    assert sorted(quarantine["source"]) == sorted([truncated.path.name, garbage.path.name])
    reasons = dict(zip(quarantine["source"], quarantine["reason"], strict=True))
    assert "truncated" in reasons[truncated.path.name]
    assert "not a DICOM file" in reasons[garbage.path.name]
    assert set(quarantine["image_id"]) == {truncated.image_id, garbage.image_id}
    assert truncated.image_id not in set(meta["image_id"])
    assert garbage.image_id not in set(meta["image_id"])
    n_train = sum(f.split == "train" for f in written)
    assert np.load(out / f"train_images_{SIZE}.npy").shape[0] == n_train - 1
    assert np.load(out / "train_targets.npy").shape == (n_train - 1, len(CLASSES))
    named = [m for m in caplog.messages if truncated.path.name in m]
    assert len(named) == 1 and "quarantined" in named[0]
    assert not any("Traceback" in m for m in caplog.messages)


def test_monochrome1_is_inverted_as_the_siim_ingest_does(tmp_path: Path) -> None:
    plain, inverted = tmp_path / "plain", tmp_path / "inverted"
    write_dicom_multilabel(plain, n_train=6, n_test=2, monochrome1=())
    write_dicom_multilabel(inverted, n_train=6, n_test=2, monochrome1=(3,))
    film = "train/film003.dcm"  # uncompressed: the stored values are exact
    a, b = pydicom.dcmread(plain / film), pydicom.dcmread(inverted / film)
    assert (a.PhotometricInterpretation, b.PhotometricInterpretation) == (
        "MONOCHROME2",
        "MONOCHROME1",
    )
    assert np.array_equal(b.pixel_array, 255 - a.pixel_array)  # inverted on disk
    cached = []
    for root in (plain, inverted):
        ingest(root, root / "data")
        cached.append(np.load(root / "data" / f"train_images_{SIZE}.npy"))
    assert np.array_equal(cached[0], cached[1])  # and shown the same way: bone bright


def test_dicom_needs_one_channel_name(films, tmp_path: Path) -> None:
    root, _ = films
    with pytest.raises(ChannelIngestError, match="one channel"):
        ingest_stage(root, tmp_path / "data", SIZE, channels=["red", "green"], image_format="dicom")
    with pytest.raises(ChannelIngestError, match="image_format='jpeg'"):
        ingest_stage(root, tmp_path / "data", SIZE, image_format="jpeg")
