"""medpipe.io.hpa: the HPA label file, the sample submission and one image's channel PNGs, each
bad input refused with the file (and the line) named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medpipe.io.hpa import (
    ChannelReadError,
    channel_file,
    read_channels,
    read_sample_submission,
    read_targets,
)
from medpipe.io.labels import LabelError

CHANNELS = ("red", "green", "blue", "yellow")


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def write_image(
    folder: Path, image_id: str, side: int = 16, seed: int = 0
) -> dict[str, np.ndarray]:
    """Four random 8-bit planes, one PNG each; the planes by channel."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    planes = {}
    for channel in CHANNELS:
        planes[channel] = rng.integers(0, 256, (side, side), dtype=np.uint8)
        Image.fromarray(planes[channel]).save(channel_file(folder, image_id, channel))
    return planes


# ---------------------------------------------------------------- labels


def test_targets_become_k_hot_rows_in_file_order(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", "\ufeffId,Target\nb,16 0\n\na, 3 \nc,3 3\n")
    targets = read_targets(path)
    assert targets.ids == ("b", "a", "c")
    assert targets.n_classes == 17  # 0..max index seen
    assert targets.khot.dtype == np.uint8
    assert [list(np.flatnonzero(row)) for row in targets.khot] == [[0, 16], [3], [3]]
    assert targets.lines == {"b": 2, "a": 4, "c": 5}  # the blank line 3 is skipped
    assert targets.groups is None
    assert read_targets(path, n_classes=28).khot.shape == (3, 28)


def test_a_group_column_is_read_and_other_columns_are_ignored(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", "Id,Target,Group,Note\na,1,p1,x\nb,0,p1,y\nc,2,,z\n")
    targets = read_targets(path)
    assert targets.groups == ("p1", "p1", "")
    assert targets.n_classes == 3


@pytest.mark.parametrize(
    ("rows", "line", "problem"),
    [
        ("a,1\nb,28\n", 3, "class index 28 is out of range 0 to 27"),
        ("a,1\nb,1 x\n", 3, "'x' is not a class index"),
        ("a,1.5\n", 2, "'1.5' is not a class index"),
        ("a,-1\n", 2, "'-1' is not a class index"),
        ("a,\u0663\n", 2, "is not a class index"),  # an Arabic-Indic three: not ASCII
        ("a,1\nb,\n", 3, "empty Target"),
        ("a,1\nb,  \n", 3, "empty Target"),
        ("a,1\nb,2\na,3\n", 4, "duplicate Id a (first on line 2)"),
        ("a,1\nb,2,3\n", 3, "3 columns, expected 2"),
        ("a\n", 2, "1 columns, expected 2"),
        ("../a,1\n", 2, "invalid ImageId"),
    ],
)
def test_a_bad_label_row_is_refused_with_file_and_line(
    tmp_path: Path, rows: str, line: int, problem: str
) -> None:
    path = write_csv(tmp_path / "train.csv", "Id,Target\n" + rows)
    with pytest.raises(LabelError) as err:
        read_targets(path, n_classes=28)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert problem in message
    assert "\n" not in message


def test_every_problem_is_counted_and_the_first_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", "Id,Target\na,x\nb,\nc,1\nc,2\n")
    with pytest.raises(
        LabelError, match=r"train.csv:2: .*'x'.*\(and 2 more problems in this file\)"
    ):
        read_targets(path)


def test_a_runaway_class_index_without_a_class_list_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", "Id,Target\na,16 0\nb,1600\n")
    with pytest.raises(LabelError, match=r"train.csv:3: class index 1600 with no class list"):
        read_targets(path)
    assert read_targets(path, n_classes=2000).n_classes == 2000  # named classes: as many as asked


def test_an_empty_target_can_be_allowed(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", "Id,Target\na,\nb,2\n")
    targets = read_targets(path, allow_empty=True)
    assert targets.khot.tolist() == [[0, 0, 0], [0, 0, 1]]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty file, expected header Id,Target"),
        ("ImageId,Target\na,1\n", ":1: header is ImageId,Target, expected Id,Target"),
        ("Target,Id\na,1\n", ":1: header is Target,Id"),
        ("Id,Target\n", "no label rows below the header"),
    ],
)
def test_a_bad_label_file_is_refused(tmp_path: Path, text: str, problem: str) -> None:
    path = write_csv(tmp_path / "train.csv", text)
    with pytest.raises(LabelError, match=str(path)) as err:
        read_targets(path)
    assert problem in str(err.value)


def test_a_missing_label_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match="nowhere.csv: file not found"):
        read_targets(tmp_path / "nowhere.csv")


def test_a_bad_class_count_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", "Id,Target\na,0\n")
    with pytest.raises(LabelError, match="at least 1"):
        read_targets(path, n_classes=0)


# ---------------------------------------------------------------- sample submission


def test_sample_submission_keeps_its_order(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "s.csv", "Id,Predicted\nz,0\na,0\n\nm,\n")
    test_ids = read_sample_submission(path)
    assert test_ids.ids == ("z", "a", "m")
    assert test_ids.where("m") == f"{path}:5"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Id,Target\na,0\n", ":1: header is Id,Target, expected Id,Predicted"),
        ("Id,Predicted,More\na,0,1\n", ":1: header is Id,Predicted,More"),
        ("Id,Predicted\na,0\nb,0\na,0\n", ":4: duplicate Id a (first on line 2)"),
        ("Id,Predicted\na,0,0\n", ":2: 3 columns, expected 2"),
        ("Id,Predicted\n", "no test Ids below the header"),
        ("", "empty file"),
    ],
)
def test_a_bad_sample_submission_is_refused(tmp_path: Path, text: str, problem: str) -> None:
    path = write_csv(tmp_path / "s.csv", text)
    with pytest.raises(LabelError) as err:
        read_sample_submission(path)
    assert str(err.value).startswith(str(path)) and problem in str(err.value)


# ---------------------------------------------------------------- channel images


def test_channels_are_stacked_in_the_order_asked(tmp_path: Path) -> None:
    planes = write_image(tmp_path, "abc", side=24)
    image = read_channels(tmp_path, "abc", CHANNELS)
    assert image.dtype == np.uint8 and image.shape == (4, 24, 24)
    for c, channel in enumerate(CHANNELS):
        np.testing.assert_array_equal(image[c], planes[channel])
    order = ("yellow", "red", "green")
    np.testing.assert_array_equal(
        read_channels(tmp_path, "abc", order), np.stack([planes[c] for c in order])
    )


def _break(path: Path, how: str) -> None:
    plane = np.arange(256, dtype=np.uint8).reshape(16, 16)
    if how == "missing":
        path.unlink()
    elif how == "junk":
        path.write_bytes(b"not a png at all")
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:120])
    elif how == "jpeg":
        Image.fromarray(plane).save(path, format="JPEG")
    elif how == "rgb":
        Image.fromarray(plane).convert("RGB").save(path)
    elif how == "palette":
        Image.fromarray(plane).convert("P").save(path)
    elif how == "alpha":
        Image.fromarray(plane).convert("LA").save(path)
    elif how == "16-bit":
        Image.fromarray(plane.astype(np.uint16) * 200).save(path)
    elif how == "1-bit":
        Image.fromarray(plane).convert("1").save(path)
    elif how == "other size":
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "problem"),
    [
        ("missing", "missing channel file"),
        ("junk", "not a readable image file"),
        ("empty", "not a readable image file"),
        ("truncated", "unreadable PNG"),
        ("jpeg", "JPEG data, expected a PNG"),
        ("rgb", "colour (RGB), expected 8-bit grayscale"),
        ("palette", "palette colour"),
        ("alpha", "grayscale with alpha"),
        ("16-bit", "16-bit, expected 8-bit grayscale"),
        ("1-bit", "1-bit, expected 8-bit grayscale"),
        ("other size", "8 x 8, but abc_red.png is 16 x 16: the channels of an image must share"),
    ],
)
def test_a_bad_channel_file_is_named(tmp_path: Path, how: str, problem: str) -> None:
    write_image(tmp_path, "abc")
    bad = channel_file(tmp_path, "abc", "blue")
    _break(bad, how)
    with pytest.raises(ChannelReadError) as err:
        read_channels(tmp_path, "abc", CHANNELS)
    assert err.value.file == bad
    assert str(err.value) == f"{bad}: {err.value.problem}"
    assert problem in err.value.problem
    assert "\n" not in str(err.value)


def test_a_non_square_image_is_named(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    for channel in CHANNELS:
        Image.fromarray(np.zeros((16, 20), np.uint8)).save(channel_file(tmp_path, "w", channel))
    with pytest.raises(ChannelReadError) as err:
        read_channels(tmp_path, "w", CHANNELS)
    assert err.value.file == channel_file(tmp_path, "w", "red")
    assert "16 x 20 (height x width), expected a square image" in str(err.value)
