"""Label CSV parsing: the spellings found in the released SIIM files, OR-merging, and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medpipe.io import rle
from medpipe.io.labels import LabelError, check_image_id, mask_for, read_labels


def write(tmp_path: Path, text: str, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("header", ["ImageId, EncodedPixels", "ImageId,EncodedPixels"])
def test_both_header_spellings(tmp_path: Path, header: str) -> None:
    labels = read_labels(write(tmp_path, f"{header}\n1.2.3,0 2\n"))
    assert labels == {"1.2.3": ["0 2"]}


@pytest.mark.parametrize("empty", ["-1", " -1"])
def test_both_empty_spellings(tmp_path: Path, empty: str) -> None:
    labels = read_labels(write(tmp_path, f"ImageId, EncodedPixels\n1.2.3,{empty}\n"))
    assert labels == {"1.2.3": []}


def test_whitespace_is_stripped(tmp_path: Path) -> None:
    text = "ImageId , EncodedPixels \n  1.2.3 ,  5 2 3 1  \n1.2.4,  -1 \n\n"
    labels = read_labels(write(tmp_path, text), 4, 4)
    assert labels == {"1.2.3": ["5 2 3 1"], "1.2.4": []}


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("ImageId,EncodedPixels\n1.2.3,-1\n".encode("utf-8-sig"))
    assert read_labels(path) == {"1.2.3": []}


def test_several_rows_are_or_merged(tmp_path: Path) -> None:
    a = np.zeros((8, 8), bool)
    a[1:3, 1:3] = True
    b = np.zeros((8, 8), bool)
    b[5:7, 4:8] = True
    text = f"ImageId, EncodedPixels\nimg, {rle.encode(a)}\nother, -1\nimg, {rle.encode(b)}\n"
    labels = read_labels(write(tmp_path, text), 8, 8)
    assert len(labels["img"]) == 2
    np.testing.assert_array_equal(mask_for(labels["img"], 8, 8), a | b)
    assert not mask_for(labels["other"], 8, 8).any()


def test_malformed_rle_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "ImageId,EncodedPixels\nok,-1\nbad,5 3 7\n")
    with pytest.raises(LabelError, match=rf"{path.name}:3: ImageId bad: malformed RLE: .*odd"):
        read_labels(path, 4, 4)


def test_rle_beyond_image_names_the_row(tmp_path: Path) -> None:
    path = write(tmp_path, "ImageId,EncodedPixels\nbig,0 17\n")
    with pytest.raises(LabelError, match=r":2: .*beyond the image"):
        read_labels(path, 4, 4)


def test_duplicate_header_row(tmp_path: Path) -> None:
    path = write(tmp_path, "ImageId,EncodedPixels\na,-1\nImageId, EncodedPixels\nb,-1\n")
    with pytest.raises(LabelError, match=r":3: duplicate header row"):
        read_labels(path)


def test_wrong_header_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match="header"):
        read_labels(write(tmp_path, "Id,Pixels\na,-1\n"))
    with pytest.raises(LabelError, match="empty file"):
        read_labels(write(tmp_path, "", "empty.csv"))


def test_wrong_column_count_names_the_row(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match=r":2: expected 2 columns, got 3"):
        read_labels(write(tmp_path, "ImageId,EncodedPixels\na,-1,x\n"))


@pytest.mark.parametrize("bad", ["../evil", "a/b", "a\\b", "..", "x..y"])
def test_path_like_image_ids_are_rejected(tmp_path: Path, bad: str) -> None:
    path = write(tmp_path, f"ImageId,EncodedPixels\n{bad},-1\n")
    with pytest.raises(LabelError, match=r":2: invalid ImageId"):
        read_labels(path)


def test_check_image_id_accepts_uids_and_stage2_ids() -> None:
    assert check_image_id("1.2.276.0.7230010.3.1.4.8323329.6904") == (
        "1.2.276.0.7230010.3.1.4.8323329.6904"
    )
    assert check_image_id("ID_0011fe81e") == "ID_0011fe81e"
    with pytest.raises(LabelError):
        check_image_id("")
