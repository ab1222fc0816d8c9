"""medpipe.data.ingest and medpipe.data.cache end to end on a small SIIM-like folder written here:
8-bit JPEG Baseline DICOMs (as the release encodes them), a label CSV, and the broken files real
exports contain."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid

from medpipe.data.cache import open_images, open_masks, pseudonymous_key
from medpipe.data.ingest import META_COLUMNS, IngestError, ingest
from medpipe.io import rle
from medpipe.io.dicom import header_image
from medpipe.io.labels import LabelError

S = 16  # cache size: 64-pixel films shrink 4x
SALT = "test-salt"


def write_film(
    path: Path, value: int, patient_id: str, shape: tuple[int, int] = (64, 64), **header: object
) -> str:
    """A flat 8-bit JPEG Baseline film whose grey level identifies it in the cache."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    uid = str(header.pop("SOPInstanceUID", generate_uid()))
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, uid
    ds.PatientID, ds.PatientName = patient_id, f"Name^{patient_id}"
    ds.PatientAge, ds.PatientSex, ds.ViewPosition, ds.Modality = "045Y", "F", "PA", "CR"
    ds.PixelSpacing = ["0.168", "0.168"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    for keyword, item in header.items():
        setattr(ds, keyword, item)
    buffer = io.BytesIO()
    Image.fromarray(np.full(shape, value, np.uint8)).save(buffer, format="JPEG", quality=95)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return uid


def two_regions() -> np.ndarray:
    mask = np.zeros((64, 64), bool)
    mask[4:20, 4:20] = True
    mask[40:60, 30:50] = True
    return mask


@pytest.fixture()
def siim(tmp_path: Path) -> dict:
    """train/ (labelled, nested, with broken files) and test/ (unlabelled, one stage-2 name)."""
    train, test = tmp_path / "dicom-images-train", tmp_path / "dicom-images-test"
    ids = {}
    ids["plain"] = write_film(train / "1.1/1.1.1/a.dcm", 40, "PAT-RAW-0001")
    ids["two"] = write_film(train / "1.1/1.1.2/b.dcm", 80, "PAT-RAW-0001")
    ids["tiny"] = write_film(train / "1.2/1.2.1/c", 120, "PAT-RAW-0002")  # no extension
    ids["mono1"] = write_film(
        train / "1.3/1.3.1/d.dcm", 200, "PAT-RAW-0003", PhotometricInterpretation="MONOCHROME1"
    )
    ids["wide"] = write_film(train / "1.4/1.4.1/e.dcm", 160, "PAT-RAW-0004", shape=(48, 80))
    (train / "1.5").mkdir()
    (train / "1.5/garbage.bin").write_bytes(np.random.default_rng(0).bytes(3000))
    (train / "1.5/empty.dcm").write_bytes(b"")
    full = (train / "1.1/1.1.1/a.dcm").read_bytes()
    ids["cut"] = "1.2.840.99.1"
    (train / "1.5" / f"{ids['cut']}.dcm").write_bytes(full[:-100])  # inside the JPEG
    (train / "DICOMDIR").write_bytes(b"\0" * 200)
    (train / ".DS_Store").write_bytes(b"junk")  # hidden: never read, never quarantined
    ids["test"] = write_film(test / "2.1/2.1.1/f.dcm", 100, "PAT-RAW-0005")
    write_film(test / "ID_0011fe81e.dcm", 60, "PAT-RAW-0006")
    ids["stage2"] = "ID_0011fe81e"

    tiny = np.zeros((64, 64), bool)
    tiny[30, 30] = True  # 1/16 of a cache pixel: would vanish at S=16
    mask = two_regions()
    labels = tmp_path / "train-rle.csv"
    lines = ["ImageId, EncodedPixels"]
    lines += [f"{ids['plain']}, -1", f"{ids['mono1']}, -1", f"{ids['wide']}, -1"]
    lines += [f"{ids['two']}, {rle.encode(mask & (np.arange(64) < 32)[:, None])}"]
    lines += [f"{ids['two']}, {rle.encode(mask & (np.arange(64) >= 32)[:, None])}"]
    lines += [f"{ids['tiny']}, {rle.encode(tiny)}", f"{ids['cut']}, -1"]
    labels.write_text("\n".join(lines) + "\n")
    return {"train": train, "test": test, "labels": labels, "ids": ids, "root": tmp_path}


def run(siim: dict, out: Path, workers: int = 1, labels: bool = True) -> pd.DataFrame:
    return ingest(
        [("train", siim["train"]), ("test", siim["test"])],
        out,
        size=S,
        labels=siim["labels"] if labels else None,
        workers=workers,
        salt=SALT,
    )


def test_meta_cache_and_quarantine(siim: dict, tmp_path: Path, caplog) -> None:
    out = tmp_path / "data"
    with caplog.at_level(logging.WARNING, logger="medpipe.ingest"):
        meta = run(siim, out)
    ids = siim["ids"]
    assert sorted(p.name for p in out.iterdir()) == [
        "meta.csv",
        "quarantine.csv",
        f"test_images_{S}.npy",
        f"train_images_{S}.npy",
        f"train_masks_{S}.npy",
    ]  # no temp files left behind
    written = pd.read_csv(out / "meta.csv", dtype={"image_id": str, "patient_key": str})
    assert list(written.columns) == META_COLUMNS
    assert len(written) == len(meta) == 7
    by_id = written.set_index("image_id")
    assert set(by_id.index) == {
        ids[k] for k in ("plain", "two", "tiny", "mono1", "wide", "test", "stage2")
    }
    assert by_id.loc[ids["tiny"], "source"] == "1.2/1.2.1/c"
    assert by_id.loc[ids["stage2"], "source"] == "ID_0011fe81e.dcm"
    assert (by_id.loc[ids["wide"], "orig_height"], by_id.loc[ids["wide"], "orig_width"]) == (48, 80)
    row = by_id.loc[ids["plain"]]
    assert (row["age"], row["sex"], row["view"], row["modality"]) == (45, "F", "PA", "CR")
    assert row["spacing"] == pytest.approx(0.168)
    assert row["transfer_syntax"] == "JPEG Baseline (Process 1)"

    for split, expected in (
        ("train", {"plain": 40, "two": 80, "tiny": 120, "mono1": 55, "wide": 160}),
        ("test", {"test": 100, "stage2": 60}),
    ):
        images = open_images(out, split, S)
        assert (
            images.shape == ((written["split"] == split).sum(), S, S) and images.dtype == np.uint8
        )
        rows = by_id[by_id["split"] == split]
        assert sorted(rows["cache_index"]) == list(range(len(rows)))
        for key, value in expected.items():  # MONOCHROME1 200 is shown as 255 - 200
            assert abs(float(images[rows.loc[ids[key], "cache_index"]].mean()) - value) < 2, key

    quarantine = pd.read_csv(out / "quarantine.csv")
    assert list(quarantine.columns) == [
        "source",
        "split",
        "reason",
        "image_id",
        "orig_height",
        "orig_width",
    ]
    reasons = dict(zip(quarantine["source"], quarantine["reason"], strict=True))
    # the truncated film's header still names its image (the test set keeps a row for it)
    named = quarantine.dropna(subset=["image_id"]).set_index("source")
    cut = f"1.5/{ids['cut']}.dcm"
    assert list(named.index) == [cut]
    assert named.loc[cut, "image_id"] == header_image(siim["train"] / cut)[0]
    assert reasons == {
        "DICOMDIR": "DICOMDIR (a directory index, not an image)",
        "1.5/garbage.bin": "not a DICOM file",
        "1.5/empty.dcm": "empty file (0 bytes)",
        f"1.5/{ids['cut']}.dcm": "truncated file (ends inside a sequence or the pixel data)",
    }
    assert set(quarantine["split"]) == {"train"}
    assert "ingest: 1.5/garbage.bin: not a DICOM file (quarantined)" in caplog.messages
    assert any(ids["cut"] in m and "quarantined" in m for m in caplog.messages)  # its label row


def test_masks_regions_and_tiny_findings(siim: dict, tmp_path: Path) -> None:
    out = tmp_path / "data"
    meta = run(siim, out).set_index("image_id")
    ids = siim["ids"]
    masks = open_masks(out, "train", S)
    assert masks.shape == (5, S, S) and masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}

    two = meta.loc[ids["two"]]
    assert (two["has_finding"], two["n_regions"]) == (1, 2)
    expected = two_regions().reshape(S, 4, S, 4).mean(axis=(1, 3)) >= 0.5  # exact 4x area
    np.testing.assert_array_equal(masks[two["cache_index"]], expected)

    tiny = meta.loc[ids["tiny"]]
    assert (tiny["has_finding"], tiny["n_regions"]) == (1, 1)
    kept = np.argwhere(masks[tiny["cache_index"]])
    np.testing.assert_array_equal(kept, [[30 // 4, 30 // 4]])  # the pixel that covers it

    plain = meta.loc[ids["plain"]]
    assert (plain["has_finding"], plain["n_regions"]) == (0, 0)
    assert masks[plain["cache_index"]].sum() == 0

    test_rows = meta[meta["split"] == "test"]
    assert test_rows["has_finding"].isna().all() and test_rows["n_regions"].isna().all()
    assert not (out / f"test_masks_{S}.npy").exists()


def test_patient_key_is_salted_hash_and_raw_ids_are_never_written(
    siim: dict, tmp_path: Path
) -> None:
    out = tmp_path / "data"
    meta = run(siim, out).set_index("image_id")
    ids = siim["ids"]
    assert meta.loc[ids["plain"], "patient_key"] == pseudonymous_key("PAT-RAW-0001", SALT)
    assert meta.loc[ids["plain"], "patient_key"] == meta.loc[ids["two"], "patient_key"]
    assert meta.loc[ids["plain"], "patient_key"] != meta.loc[ids["tiny"], "patient_key"]
    for path in out.iterdir():
        data = path.read_bytes()
        assert b"PAT-RAW" not in data and b"Name^" not in data, path.name


def test_pseudonymous_key() -> None:
    key = pseudonymous_key("17-0042", "a")
    assert len(key) == 16 and int(key, 16) >= 0
    assert key == pseudonymous_key("17-0042", "a") != pseudonymous_key("17-0042", "b")
    assert "17-0042" not in key


def test_two_workers_write_the_same_cache_as_one(siim: dict, tmp_path: Path) -> None:
    one = run(siim, tmp_path / "one", workers=1)
    two = run(siim, tmp_path / "two", workers=2)
    pd.testing.assert_frame_equal(one, two)
    for name in (f"train_images_{S}.npy", f"train_masks_{S}.npy", f"test_images_{S}.npy"):
        np.testing.assert_array_equal(
            np.load(tmp_path / "one" / name), np.load(tmp_path / "two" / name)
        )
    assert (tmp_path / "one/quarantine.csv").read_text() == (
        tmp_path / "two/quarantine.csv"
    ).read_text()


def test_without_labels_no_masks_and_empty_label_columns(siim: dict, tmp_path: Path) -> None:
    meta = run(siim, tmp_path / "data", labels=False)
    assert meta["has_finding"].isna().all()
    assert not list((tmp_path / "data").glob("*_masks_*"))


def test_image_without_label_row_is_an_error(siim: dict, tmp_path: Path) -> None:
    extra = write_film(siim["train"] / "1.9/1.9.1/z.dcm", 90, "PAT-RAW-0009")
    with pytest.raises(LabelError, match=f"no label row for ImageId {extra}"):
        run(siim, tmp_path / "data")
    assert not (tmp_path / "data" / "meta.csv").exists()
    assert not list((tmp_path / "data").glob("*.npy"))  # temp caches removed too


def test_image_without_label_row_can_be_quarantined_instead(siim: dict, tmp_path: Path) -> None:
    write_film(siim["train"] / "1.9/1.9.1/z.dcm", 90, "PAT-RAW-0009")
    out = tmp_path / "data"
    meta = ingest(
        [("train", siim["train"])], out, size=S, labels=siim["labels"], missing_labels="quarantine"
    )
    quarantine = pd.read_csv(out / "quarantine.csv").set_index("source")
    assert quarantine.loc["1.9/1.9.1/z.dcm", "reason"].startswith("no label row in train-rle.csv")
    assert list(meta["cache_index"]) == list(range(5))
    images = open_images(out, "train", S)
    assert len(images) == len(open_masks(out, "train", S)) == 5
    assert all(abs(float(images[i].mean()) - 90) > 5 for i in range(5))  # its row is gone


def test_label_row_without_image_is_an_error(siim: dict, tmp_path: Path) -> None:
    with siim["labels"].open("a") as handle:
        handle.write("1.2.840.77.7, -1\n")
    with pytest.raises(LabelError, match=r"ImageId 1\.2\.840\.77\.7 .*has label rows but no image"):
        run(siim, tmp_path / "data")


def test_rle_that_does_not_fit_its_image_is_an_error(siim: dict, tmp_path: Path) -> None:
    text = (
        siim["labels"]
        .read_text()
        .replace(f"{siim['ids']['plain']}, -1", f"{siim['ids']['plain']}, 4000 200")
    )
    siim["labels"].write_text(text)
    for workers in (1, 2):  # raised inside a worker process, it must reach the caller
        with pytest.raises(LabelError, match=f"ImageId {siim['ids']['plain']}: RLE does not fit"):
            run(siim, tmp_path / f"data{workers}", workers=workers)
        assert not list((tmp_path / f"data{workers}").glob("*.npy"))


def test_duplicate_sop_instance_uid_is_quarantined(siim: dict, tmp_path: Path) -> None:
    write_film(siim["test"] / "copy.dcm", 33, "PAT-RAW-0007", SOPInstanceUID=siim["ids"]["test"])
    meta = run(siim, tmp_path / "data")
    assert (meta["image_id"] == siim["ids"]["test"]).sum() == 1
    quarantine = pd.read_csv(tmp_path / "data/quarantine.csv")
    row = quarantine[quarantine["source"] == "copy.dcm"].iloc[0]
    assert row["split"] == "test" and row["reason"].startswith("duplicate ImageId")
    assert len(open_images(tmp_path / "data", "test", S)) == 2  # its cache row was dropped


def test_a_reader_bug_is_quarantined_in_one_line(
    siim: dict, tmp_path: Path, caplog, monkeypatch
) -> None:
    """An unexpected exception on one file quarantines it; a multi-line message stays one line."""
    from medpipe.data import ingest as ingest_module

    read = ingest_module.read_dicom

    def flaky(path, **kwargs):
        if Path(path).name == "b.dcm":
            raise RuntimeError("decoder bug\n  second line")
        return read(path, **kwargs)

    monkeypatch.setattr(ingest_module, "read_dicom", flaky)
    with caplog.at_level(logging.WARNING, logger="medpipe.ingest"):
        run(siim, tmp_path / "data", labels=False)
    quarantine = pd.read_csv(tmp_path / "data/quarantine.csv").set_index("source")
    reason = quarantine.loc["1.1/1.1.2/b.dcm", "reason"]
    assert reason == "unexpected RuntimeError: decoder bug second line"
    lines = [m for m in caplog.messages if "1.1/1.1.2/b.dcm" in m]
    assert lines == [f"ingest: 1.1/1.1.2/b.dcm: {reason} (quarantined)"]


def test_no_readable_file_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "dicoms"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    with pytest.raises(IngestError, match="no readable DICOM image"):
        ingest([("train", folder)], tmp_path / "data", size=S)
    assert pd.read_csv(tmp_path / "data/quarantine.csv")["reason"].tolist() == ["not a DICOM file"]


def test_cache_is_opened_read_only_and_checked(siim: dict, tmp_path: Path) -> None:
    out = tmp_path / "data"
    run(siim, out)
    images = open_images(out, "train", S)
    assert isinstance(images, np.memmap)
    with pytest.raises(ValueError):
        images[0, 0, 0] = 1
    np.save(out / f"bad_images_{S}.npy", np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="expected uint8"):
        open_images(out, "bad", S)
    with pytest.raises(FileNotFoundError, match="cache not found"):
        open_masks(out, "test", S)


def test_pixel_content_survives_a_round_trip_through_pydicom(siim: dict, tmp_path: Path) -> None:
    """The cache row equals pydicom's own decode of the film, box-resized: nothing shifted."""
    out = tmp_path / "data"
    meta = run(siim, out).set_index("image_id")
    path = siim["train"] / "1.4/1.4.1/e.dcm"
    reference = pydicom.dcmread(path).pixel_array
    resized = np.asarray(Image.fromarray(reference).resize((S, S), Image.BOX), dtype=float)
    row = open_images(out, "train", S)[meta.loc[siim["ids"]["wide"], "cache_index"]]
    assert np.abs(row - resized).max() <= 2
