"""Submission writing, validation (one test per rejection reason), DICOM ids and scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from medpipe.io import rle
from medpipe.submission import (
    SubmissionError,
    expected_ids_from_dicom_dir,
    score_submission,
    validate_submission,
    write_submission,
)

IDS = ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
SIZES = {i: (8, 8) for i in IDS}


def write(tmp_path: Path, text: str, name: str = "submission.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def blob(top: int, left: int, size: int = 3, shape: tuple[int, int] = (8, 8)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top : top + size, left : left + size] = True
    return mask


def valid_text() -> str:
    return f"ImageId,EncodedPixels\n{IDS[0]},{rle.encode(blob(1, 1))}\n{IDS[1]},-1\n{IDS[2]},0 4\n"


# ---------------------------------------------------------------- validate


def test_valid_file_passes(tmp_path: Path) -> None:
    frame = validate_submission(write(tmp_path, valid_text()), IDS, SIZES)
    assert frame["ImageId"].tolist() == IDS
    assert frame["EncodedPixels"].tolist()[1] == "-1"


def test_wrong_header(tmp_path: Path) -> None:
    path = write(tmp_path, valid_text().replace("ImageId,EncodedPixels", "ImageId, EncodedPixels"))
    with pytest.raises(SubmissionError, match="header is 'ImageId, EncodedPixels', expected"):
        validate_submission(path, IDS, SIZES)


def test_byte_order_mark_header_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(valid_text().encode("utf-8-sig"))
    with pytest.raises(SubmissionError, match="byte-order mark"):
        validate_submission(path, IDS)


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError, match="empty file"):
        validate_submission(write(tmp_path, ""), IDS)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError, match="no such file"):
        validate_submission(tmp_path / "nope.csv")


def test_duplicate_row_names_the_id(tmp_path: Path) -> None:
    path = write(tmp_path, valid_text() + f"{IDS[1]},0 2\n")
    with pytest.raises(
        SubmissionError, match=rf"submission.csv:5: duplicate row for ImageId {IDS[1]} .*line 3"
    ):
        validate_submission(path, IDS, SIZES)


def test_missing_images_named_with_count(tmp_path: Path) -> None:
    expected = IDS + [f"9.9.{k}" for k in range(7)]
    with pytest.raises(
        SubmissionError, match=r"7 of 10 test images missing: 9\.9\.0, 9\.9\.1, .*9\.9\.4, \.\.\."
    ):
        validate_submission(write(tmp_path, valid_text()), expected)


def test_extra_image_not_in_test_set(tmp_path: Path) -> None:
    path = write(tmp_path, valid_text() + "4.5.6,-1\n")
    with pytest.raises(SubmissionError, match=r"1 images not in the test set: 4\.5\.6"):
        validate_submission(path, IDS, SIZES)


@pytest.mark.parametrize(
    ("encoded", "reason"),
    [
        ("5 3 7", "odd number"),
        ("x 2", "not a list of integers"),
        ("-3 2", "negative"),
        ("", "empty"),
    ],
)
def test_malformed_rle_names_the_row(tmp_path: Path, encoded: str, reason: str) -> None:
    path = write(tmp_path, valid_text().replace(f"{IDS[2]},0 4", f"{IDS[2]},{encoded}"))
    with pytest.raises(
        SubmissionError, match=rf"submission.csv:4: ImageId {IDS[2]}: malformed RLE: .*{reason}"
    ):
        validate_submission(path, IDS)


def test_run_beyond_image_names_the_row(tmp_path: Path) -> None:
    path = write(tmp_path, valid_text().replace(f"{IDS[2]},0 4", f"{IDS[2]},60 5"))
    validate_submission(path, IDS)  # without sizes the run cannot be checked
    with pytest.raises(
        SubmissionError, match=rf"submission.csv:4: ImageId {IDS[2]}: RLE runs beyond the 8x8 image"
    ):
        validate_submission(path, IDS, SIZES)


def test_wrong_column_count(tmp_path: Path) -> None:
    path = write(tmp_path, valid_text() + "4.5.6,-1,extra\n")
    with pytest.raises(SubmissionError, match=r":5: expected 2 columns"):
        validate_submission(path)


# ---------------------------------------------------------------- write


def test_write_validate_round_trip(tmp_path: Path) -> None:
    masks = [blob(0, 0), np.zeros((8, 8), bool), blob(4, 5, 4)]
    path = tmp_path / "out" / "submission.csv"
    write_submission(path, IDS, masks)
    assert path.read_text().splitlines()[0] == "ImageId,EncodedPixels"
    frame = validate_submission(path, IDS, SIZES)
    assert frame["EncodedPixels"].tolist()[1] == "-1"
    for encoded, mask in zip(frame["EncodedPixels"], masks, strict=True):
        np.testing.assert_array_equal(rle.decode(encoded, 8, 8), mask)
    assert [p.name for p in path.parent.iterdir()] == ["submission.csv"]  # no temp left


def test_write_accepts_rle_strings_and_stacked_masks(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    write_submission(path, IDS[:2], ["0 3", " -1 "])
    assert path.read_text() == f"ImageId,EncodedPixels\n{IDS[0]},0 3\n{IDS[1]},-1\n"
    write_submission(path, IDS[:2], np.stack([blob(0, 0), blob(2, 2)]))
    assert len(validate_submission(path, IDS[:2], SIZES)) == 2


def test_write_errors_leave_no_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    with pytest.raises(SubmissionError, match="duplicate ImageId"):
        write_submission(path, [IDS[0], IDS[0]], ["-1", "-1"])
    with pytest.raises(SubmissionError, match="different number"):
        write_submission(path, IDS, ["-1"])
    with pytest.raises(SubmissionError, match=f"ImageId {IDS[1]}: malformed RLE"):
        write_submission(path, IDS[:2], ["-1", "1 2 3"])
    with pytest.raises(SubmissionError, match="binarize first"):
        write_submission(path, IDS[:1], [np.full((8, 8), 0.2)])
    with pytest.raises(SubmissionError, match="cannot be written"):
        write_submission(path, ["a,b"], ["-1"])
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "submission.csv"
    write_submission(path, IDS[:1], ["-1"])
    before = path.read_text()
    with pytest.raises(SubmissionError):
        write_submission(path, IDS[:2], ["0 1", "bad"])
    assert path.read_text() == before


# ---------------------------------------------------------------- DICOM ids


def write_dicom(path: Path, sop_uid: str | None, rows: int, cols: int) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid or "1.2.999"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    if sop_uid:
        ds.SOPInstanceUID = sop_uid
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 8, 8, 7
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.zeros((rows, cols), np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_expected_ids_from_dicom_dir(tmp_path: Path) -> None:
    write_dicom(tmp_path / "study" / "series" / "1.2.3.1.dcm", "1.2.3.1", 16, 12)
    write_dicom(tmp_path / "study" / "noext", "1.2.3.2", 10, 10)  # real files often lack .dcm
    write_dicom(tmp_path / "ID_0011fe81e.dcm", "1.2.3.4", 8, 6)  # stage 2: id is the stem
    write_dicom(tmp_path / "anon.dcm", None, 4, 4)  # no SOPInstanceUID: the stem
    (tmp_path / "broken.dcm").write_bytes(b"not a dicom at all")
    (tmp_path / "notes.txt").write_text("hello")
    sizes = expected_ids_from_dicom_dir(tmp_path)
    assert sizes == {
        "1.2.3.1": (16, 12),
        "1.2.3.2": (10, 10),
        "ID_0011fe81e": (8, 6),
        "anon": (4, 4),
    }


def test_expected_ids_from_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a directory"):
        expected_ids_from_dicom_dir(tmp_path / "missing")


# ---------------------------------------------------------------- score


def labels_csv(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Two positives (one with two regions, as train-rle.csv has), two negatives."""
    truths = {
        "a": blob(0, 0) | blob(5, 5),
        "b": blob(2, 3),
        "c": np.zeros((8, 8), bool),
        "d": np.zeros((8, 8), bool),
    }
    text = (
        "ImageId, EncodedPixels\n"
        f"a, {rle.encode(blob(0, 0))}\n"
        f"b, {rle.encode(truths['b'])}\n"
        "c, -1\n"
        f"a, {rle.encode(blob(5, 5))}\n"
        "d, -1\n"
    )
    return write(tmp_path, text, "labels.csv"), truths


def test_score_perfect_submission_is_one(tmp_path: Path) -> None:
    labels, truths = labels_csv(tmp_path)
    sub = tmp_path / "sub.csv"
    write_submission(sub, list(truths), list(truths.values()))
    assert score_submission(sub, labels, default_size=(8, 8)) == 1.0


def test_score_all_empty_is_the_negative_fraction(tmp_path: Path) -> None:
    labels, truths = labels_csv(tmp_path)
    sub = tmp_path / "sub.csv"
    write_submission(sub, list(truths), ["-1"] * len(truths))
    assert score_submission(sub, labels, default_size=(8, 8)) == pytest.approx(2 / 4)


def test_score_partial_and_missing_rows(tmp_path: Path) -> None:
    labels, truths = labels_csv(tmp_path)
    sub = tmp_path / "sub.csv"
    # a: only one of its two regions (dice 2*9/(9+18)); b missing (empty, 0); c, d right; e unlabelled
    write_submission(sub, ["a", "c", "d", "e"], [blob(0, 0), "-1", "-1", "0 3"])
    expected = (2 * 9 / 27 + 0 + 1 + 1) / 4
    assert score_submission(sub, labels, sizes={k: (8, 8) for k in truths}) == pytest.approx(
        expected
    )


def test_score_uses_sizes_per_image(tmp_path: Path) -> None:
    labels = write(tmp_path, f"ImageId,EncodedPixels\nwide,{rle.encode(blob(0, 8, 2, (4, 12)))}\n")
    sub = tmp_path / "sub.csv"
    write_submission(sub, ["wide"], [blob(0, 8, 2, (4, 12))])
    assert score_submission(sub, labels, sizes={"wide": (4, 12)}) == 1.0
    assert score_submission(sub, labels, default_size=(4, 12)) == 1.0
    with pytest.raises(SubmissionError, match="beyond"):
        score_submission(sub, labels, sizes={"wide": (2, 2)})


def test_score_rejects_an_invalid_submission(tmp_path: Path) -> None:
    labels, _ = labels_csv(tmp_path)
    sub = write(tmp_path, "ImageId,EncodedPixels\na,-1\na,-1\n", "dup.csv")
    with pytest.raises(SubmissionError, match="duplicate"):
        score_submission(sub, labels, default_size=(8, 8))


def test_score_breakdown_names_the_baseline_and_what_the_score_is_made_of(tmp_path) -> None:
    from medpipe.submission import score_breakdown

    labels, truths = labels_csv(tmp_path)
    sub = tmp_path / "sub.csv"
    # same as the partial case: a half-found, b missed, c and d (empty) kept empty
    write_submission(sub, ["a", "c", "d", "e"], [blob(0, 0), "-1", "-1", "0 3"])
    parts = score_breakdown(sub, labels, sizes={k: (8, 8) for k in truths})
    assert parts["n_images"] == 4 and parts["n_positive"] == 2
    assert parts["all_empty"] == pytest.approx(2 / 4)
    assert parts["dice_pos"] == pytest.approx((2 * 9 / 27 + 0) / 2)
    assert parts["empty_kept"] == 1.0
    assert parts["score"] == pytest.approx(
        score_submission(sub, labels, sizes=dict.fromkeys(truths, (8, 8)))
    )


def test_score_command_fails_below_the_quality_floor(tmp_path, capsys) -> None:
    """CI's floor: `medpipe score --min-margin` exits 1 when the models add too little over an
    all-empty submission, and prints both numbers either way."""
    from medpipe.cli import main

    labels, truths = labels_csv(tmp_path)
    empty = tmp_path / "empty.csv"
    write_submission(empty, list(truths), ["-1"] * len(truths))
    perfect = tmp_path / "perfect.csv"
    write_submission(perfect, list(truths), list(truths.values()))
    # labels_csv's images are 8x8: a DICOM folder is not needed for the baseline arithmetic
    assert main(["score", str(empty), "--labels", str(labels), "--min-margin", "0.04"]) == 1
    out = capsys.readouterr()
    assert "all-empty: 0.5000" in out.out and "below all-empty" in out.err
    assert out.out.strip().splitlines()[-1] == "score: 0.5000"
    assert main(["score", str(perfect), "--labels", str(labels), "--min-margin", "0.04"]) == 0
    assert "above all-empty: +0.5000" in capsys.readouterr().out
