"""medpipe.data.ingest_channels end to end on a small folder in the HPA layout written here: good
images of several sizes, the broken files real folders hold, a label file and a sample
submission that disagree with the folders in the ways real downloads do."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medpipe.data.cache import cache_file, pseudonymous_key
from medpipe.data.ingest_channels import (
    META_COLUMNS,
    QUARANTINE_COLUMNS,
    ChannelIngestError,
    ingest_channels,
    ingest_hpa,
)
from medpipe.io.hpa import channel_file
from medpipe.io.labels import LabelError
from medpipe.layout import data_files, read_meta, read_quarantine
from medpipe.layout.artifacts import open_channel_cache, read_target_matrix, write_target_matrix
from medpipe.layout.paths import target_file

S = 16  # cache size: 64-pixel images shrink 4x, 48-pixel ones 3x, 8-pixel ones grow
CHANNELS = ("red", "green", "blue", "yellow")


def write_image(folder: Path, image_id: str, side: int, seed: int) -> np.ndarray:
    """Four random planes, one PNG each; the (C, H, W) stack."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    planes = rng.integers(0, 256, (len(CHANNELS), side, side), dtype=np.uint8)
    for plane, channel in zip(planes, CHANNELS, strict=True):
        Image.fromarray(plane).save(channel_file(folder, image_id, channel))
    return planes


def reference(planes: np.ndarray, size: int = S) -> np.ndarray:
    """The cache row a direct Pillow call gives: box when shrinking, bilinear when growing."""
    method = Image.BOX if planes.shape[1] >= size else Image.BILINEAR
    return np.stack([np.asarray(Image.fromarray(p).resize((size, size), method)) for p in planes])


@pytest.fixture()
def hpa(tmp_path: Path) -> dict:
    """``root/{train,test}``, ``train.csv``, ``sample_submission.csv``; good and broken images."""
    root = tmp_path / "hpa"
    train, test = root / "train", root / "test"
    planes = {
        "t-big": write_image(train, "t-big", 64, 1),
        "t-odd": write_image(train, "t-odd", 48, 2),
        "t-tiny": write_image(train, "t-tiny", 8, 3),
        "t-same": write_image(train, "t-same", S, 4),
    }
    # broken images, between the good ones in Id order so the cache must be compacted
    write_image(train, "t-a-missing", 32, 5)
    channel_file(train, "t-a-missing", "yellow").unlink()
    write_image(train, "t-b-corrupt", 32, 6)
    channel_file(train, "t-b-corrupt", "green").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    write_image(train, "t-c-rgb", 32, 7)
    rgb = np.zeros((32, 32, 3), np.uint8)
    Image.fromarray(rgb).save(channel_file(train, "t-c-rgb", "blue"))
    write_image(train, "t-d-sizes", 32, 8)
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(channel_file(train, "t-d-sizes", "red"))
    for channel in CHANNELS:  # not square
        Image.fromarray(np.zeros((32, 40), np.uint8)).save(channel_file(train, "t-e-wide", channel))
    (train / "notes.txt").write_text("not an image")
    (train / ".hidden_red.png").write_bytes(b"")
    (root / "train.csv").write_text(
        "Id,Target\n"
        "t-big,16 0\n"
        "t-odd,3\n"
        "t-tiny,1 2 5\n"
        "t-same,0\n"
        "t-a-missing,4\n"
        "t-b-corrupt,4\n"
        "t-c-rgb,4\n"
        "t-d-sizes,4\n"
        "t-e-wide,4\n"
        "t-gone,2\n"  # line 11: a label row whose files were never downloaded
    )
    planes["x-second"] = write_image(test, "x-second", 32, 9)
    planes["x-first"] = write_image(test, "x-first", 64, 10)
    write_image(test, "x-stray", 32, 11)  # files whose Id the sample submission lacks
    (root / "sample_submission.csv").write_text(
        "Id,Predicted\nx-second,0\nx-lost,0\nx-first,0\n"  # x-lost: line 3, no files
    )
    return {"root": root, "train": train, "test": test, "planes": planes}


def run(hpa: dict, out: Path, **options) -> pd.DataFrame:
    options.setdefault("progress", False)
    return ingest_hpa(hpa["root"], out, S, CHANNELS, **options)


GOOD_TRAIN = ["t-big", "t-odd", "t-same", "t-tiny"]  # by Id


def test_cache_equals_a_direct_pillow_reference(hpa: dict, tmp_path: Path) -> None:
    out = tmp_path / "data"
    meta = run(hpa, out)
    train = open_channel_cache(cache_file(out, "train", "images", S), S, len(CHANNELS))
    assert train.dtype == np.uint8 and train.shape == (4, 4, S, S)
    rows = meta[meta["split"] == "train"]
    assert rows["image_id"].tolist() == GOOD_TRAIN
    for image_id, index in zip(rows["image_id"], rows["cache_index"], strict=True):
        np.testing.assert_array_equal(train[index], reference(hpa["planes"][image_id]))
    test = open_channel_cache(cache_file(out, "test", "images", S), S)
    assert test.shape == (2, 4, S, S)
    np.testing.assert_array_equal(test[0], reference(hpa["planes"]["x-second"]))
    np.testing.assert_array_equal(test[1], reference(hpa["planes"]["x-first"]))


def test_channel_order_is_the_configured_one(hpa: dict, tmp_path: Path) -> None:
    order = ("yellow", "green", "red")  # three channels: the blue files are not read
    meta = ingest_hpa(hpa["root"], tmp_path / "data", S, order, progress=False)
    cache = open_channel_cache(cache_file(tmp_path / "data", "train", "images", S), S, 3)
    planes = hpa["planes"]["t-big"]
    index = int(meta.loc[meta["image_id"] == "t-big", "cache_index"].iloc[0])
    expected = reference(planes)[[CHANNELS.index(c) for c in order]]
    np.testing.assert_array_equal(cache[index], expected)
    # t-c-rgb's only bad file is its blue one: without blue it is a good image
    assert "t-c-rgb" in set(meta["image_id"])


def test_meta_rows(hpa: dict, tmp_path: Path) -> None:
    run(hpa, tmp_path / "data")
    meta = read_meta(data_files(tmp_path / "data")["meta"])
    assert list(meta.columns) == META_COLUMNS
    train = meta[meta["split"] == "train"].set_index("image_id")
    assert train.loc["t-big", "target"] == "0 16"  # ascending, whatever the file's order
    assert train.loc["t-odd", "target"] == "3"  # a string, not the number 3
    assert train["n_labels"].tolist() == [2, 1, 1, 3]
    assert train["cache_index"].tolist() == [0, 1, 2, 3]
    assert train["orig_height"].tolist() == train["orig_width"].tolist() == [64, 48, 16, 8]
    assert train.loc["t-tiny", "source"] == "t-tiny"
    assert (train["patient_key"] == train.index).all()  # no group column: the Id itself
    test = meta[meta["split"] == "test"]
    assert test["image_id"].tolist() == ["x-second", "x-first"]  # the sample submission's order
    assert test["orig_height"].tolist() == [32, 64]
    assert test["target"].isna().all() and test["n_labels"].isna().all()
    assert test["cache_index"].tolist() == [0, 1]


def test_single_class_targets_read_back_as_strings(hpa: dict, tmp_path: Path) -> None:
    """ "3" beside a test row's empty target must not come back as 3.0."""
    (hpa["root"] / "train.csv").write_text("Id,Target\nt-big,3\nt-odd,1\nt-tiny,2\nt-same,0\n")
    shutil.rmtree(hpa["train"])
    for image_id in ("t-big", "t-odd", "t-tiny", "t-same"):
        write_image(hpa["train"], image_id, 16, 0)
    run(hpa, tmp_path / "data")
    meta = read_meta(data_files(tmp_path / "data")["meta"])
    assert meta["target"].tolist()[:4] == ["3", "1", "0", "2"]  # by Id: big, odd, same, tiny


def test_k_hot_targets_follow_the_cache(hpa: dict, tmp_path: Path) -> None:
    out = tmp_path / "data"
    run(hpa, out)
    khot = read_target_matrix(target_file(out, "train"), rows=4)
    assert khot.dtype == np.uint8 and khot.shape == (4, 17)  # classes 0..16 from the labels
    assert [list(np.flatnonzero(r)) for r in khot] == [[0, 16], [3], [0], [1, 2, 5]]
    assert not target_file(out, "test").exists()  # the test split has no labels


def test_class_names_fix_the_class_count(hpa: dict, tmp_path: Path) -> None:
    out = tmp_path / "data"
    run(hpa, out, classes=[f"class {i}" for i in range(28)])
    assert read_target_matrix(target_file(out, "train")).shape == (4, 28)
    with pytest.raises(LabelError, match=r"train.csv:2: .*class index 16 is out of range 0 to 9"):
        run(hpa, tmp_path / "other", classes=[f"class {i}" for i in range(10)])


def test_every_unreadable_image_is_quarantined_and_the_run_goes_on(
    hpa: dict, tmp_path: Path, caplog
) -> None:
    out = tmp_path / "data"
    with caplog.at_level(logging.WARNING, logger="medpipe.ingest"):
        meta = run(hpa, out)
    assert len(meta) == 6
    quarantine = read_quarantine(data_files(out)["quarantine"])
    assert list(quarantine.columns) == QUARANTINE_COLUMNS
    rows = {(r.split, r.source): r.reason for r in quarantine.itertuples()}
    expected = {
        ("train", "t-a-missing_yellow.png"): "missing channel file",
        ("train", "t-b-corrupt_green.png"): "not a readable image file",
        ("train", "t-c-rgb_blue.png"): "colour (RGB), expected 8-bit grayscale",
        ("train", "t-d-sizes_green.png"): "32 x 32, but t-d-sizes_red.png is 24 x 24",
        ("train", "t-e-wide_red.png"): "32 x 40 (height x width), expected a square image",
        ("train", "t-gone"): "train.csv:11 but no channel file in",
        ("test", "x-lost"): "sample_submission.csv:3 but no channel file (x-lost_{red,green,",
        ("test", "x-stray_red.png"): "Id x-stray is not in sample_submission.csv",
    }
    for key, reason in expected.items():
        assert key in rows, (key, sorted(rows))
        assert reason in rows[key], (key, rows[key])
    assert len(rows) == len(expected) + 3  # x-stray's other three channel files
    named = quarantine.set_index("source")["image_id"]
    assert named["t-b-corrupt_green.png"] == "t-b-corrupt" and named["x-lost"] == "x-lost"
    assert "ingest: train/t-a-missing_yellow.png: missing channel file (quarantined)" in (
        caplog.messages
    )
    assert not any("notes.txt" in m or ".hidden" in m for m in caplog.messages)
    assert not any("Traceback" in m for m in caplog.messages)


def test_two_workers_write_the_same_files_as_one(hpa: dict, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    run(hpa, one, workers=1)
    run(hpa, two, workers=2)
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir())
    assert {"meta.csv", "quarantine.csv", "train_targets.npy"} <= set(names)
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    run(hpa, one, workers=2)  # again into the same folder: the same bytes, no temp file left
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert sorted(p.name for p in one.iterdir()) == names


def test_progress_bar_shows_only_when_asked(hpa: dict, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    run(hpa, tmp_path / "quiet", progress=False)
    assert "11/11" not in capsys.readouterr().err
    run(hpa, tmp_path / "shown", progress=True)
    err = capsys.readouterr().err
    assert "ingest: 100%" in err and "11/11" in err  # 9 + 2 images tried, not x-lost, x-stray


def test_an_image_without_a_label_row_is_an_error_or_quarantined(hpa: dict, tmp_path: Path) -> None:
    write_image(hpa["train"], "t-unlabelled", 32, 12)
    with pytest.raises(LabelError, match="train.csv: no label row for Id t-unlabelled"):
        run(hpa, tmp_path / "data")
    assert not (tmp_path / "data").exists()  # refused before anything was written
    meta = run(hpa, tmp_path / "data", missing_labels="quarantine")
    assert "t-unlabelled" not in set(meta["image_id"])
    quarantine = read_quarantine(data_files(tmp_path / "data")["quarantine"])
    row = quarantine[quarantine["source"] == "t-unlabelled"].iloc[0]
    assert "no label row in train.csv" in row["reason"]


def test_a_broken_label_file_stops_before_any_decoding(hpa: dict, tmp_path: Path) -> None:
    (hpa["root"] / "train.csv").write_text("Id,Target\nt-big,0\nt-odd,zero\n")
    with pytest.raises(
        LabelError, match=r"train.csv:3: Target 'zero': 'zero' is not a class index"
    ):
        run(hpa, tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_a_label_file_for_other_images_is_refused(hpa: dict, tmp_path: Path) -> None:
    (hpa["root"] / "train.csv").write_text("Id,Target\nsomeone-else,0\n")
    with pytest.raises(LabelError, match="no image in .* has a label row"):
        run(hpa, tmp_path / "data")


def test_a_group_column_groups_by_its_salted_hash(hpa: dict, tmp_path: Path) -> None:
    labels = (hpa["root"] / "train.csv").read_text().splitlines()
    groups = {"t-big": "PAT-RAW-1", "t-odd": "PAT-RAW-1", "t-tiny": ""}
    rows = [labels[0] + ",Group"]
    rows += [f"{line},{groups.get(line.split(',')[0], 'PAT-RAW-2')}" for line in labels[1:]]
    (hpa["root"] / "train.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "data"
    meta = run(hpa, out, salt="s").set_index("image_id")
    assert meta.loc["t-big", "patient_key"] == meta.loc["t-odd", "patient_key"]
    assert meta.loc["t-big", "patient_key"] == pseudonymous_key("PAT-RAW-1", "s")
    assert meta.loc["t-same", "patient_key"] == pseudonymous_key("PAT-RAW-2", "s")
    assert meta.loc["t-tiny", "patient_key"] == "t-tiny"  # no group value: its own group
    for path in out.glob("*.csv"):
        assert "PAT-RAW" not in path.read_text(), path


def test_labelled_test_split_and_no_sample_submission(hpa: dict, tmp_path: Path) -> None:
    """A stage-2 style label file labels both splits; without a sample submission the test
    split's Ids come from its files alone, sorted."""
    labels = hpa["root"] / "labels.csv"
    text = (hpa["root"] / "train.csv").read_text()
    labels.write_text(text + "x-first,1\nx-second,2\nx-stray,3\n")
    out = tmp_path / "data"
    meta = ingest_channels(
        [("train", hpa["train"]), ("test", hpa["test"])], out, S, CHANNELS, labels=labels,
        progress=False,
    )  # fmt: skip
    assert meta.loc[meta["split"] == "test", "image_id"].tolist() == [
        "x-first",
        "x-second",
        "x-stray",
    ]
    khot = read_target_matrix(target_file(out, "test"), rows=3)
    assert [list(np.flatnonzero(r)) for r in khot] == [[1], [2], [3]]
    # a later ingest without labels leaves no stale targets behind
    ingest_channels([("test", hpa["test"])], out, S, CHANNELS, progress=False)
    assert not target_file(out, "test").exists()


def test_empty_targets_only_when_allowed(hpa: dict, tmp_path: Path) -> None:
    path = hpa["root"] / "train.csv"
    path.write_text(path.read_text().replace("t-odd,3", "t-odd,"))
    with pytest.raises(LabelError, match=r"train.csv:3: empty Target"):
        run(hpa, tmp_path / "a")
    meta = run(hpa, tmp_path / "b", allow_empty_target=True).set_index("image_id")
    assert meta.loc["t-odd", "n_labels"] == 0 and meta.loc["t-odd", "target"] == ""


def test_no_readable_image_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    write_image(folder, "only", 16, 0)
    channel_file(folder, "only", "red").write_bytes(b"")
    out = tmp_path / "data"
    with pytest.raises(ChannelIngestError, match="no readable image in .*1 quarantined"):
        ingest_channels([("train", folder)], out, S, CHANNELS, progress=False)
    assert read_quarantine(data_files(out)["quarantine"])["source"].tolist() == ["only_red.png"]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"size": 0}, "size must be >= 1"),
        ({"channels": ("red", "red")}, "expected distinct names"),
        ({"channels": ("red/x",)}, "must be letters"),
        ({"missing_labels": "skip"}, "expected error or quarantine"),
    ],
)
def test_bad_arguments_are_refused(hpa: dict, tmp_path: Path, kwargs: dict, problem: str) -> None:
    arguments = {"size": S, "channels": CHANNELS, **kwargs}
    with pytest.raises(ChannelIngestError, match=problem):
        ingest_channels([("train", hpa["train"])], tmp_path / "data", progress=False, **arguments)


def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ChannelIngestError, match=r"train: image folder not found: .*nowhere"):
        ingest_channels([("train", tmp_path / "nowhere")], tmp_path / "data", S, progress=False)


def test_the_readers_check_what_they_open(tmp_path: Path) -> None:
    path = tmp_path / "targets.npy"
    write_target_matrix(path, np.eye(3, dtype=np.uint8))
    assert read_target_matrix(path, rows=3).tolist() == np.eye(3).tolist()
    with pytest.raises(ValueError, match="3 rows, but meta.csv has 4"):
        read_target_matrix(path, rows=4)
    with pytest.raises(ValueError, match="K-hot targets must be uint8"):
        write_target_matrix(path, np.full((2, 2), 2, np.uint8))
    np.save(tmp_path / "bad.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="expected uint8"):
        read_target_matrix(tmp_path / "bad.npy")
    with pytest.raises(FileNotFoundError, match="K-hot targets"):
        read_target_matrix(tmp_path / "none.npy")
    np.save(tmp_path / "cache.npy", np.zeros((2, 4, 8, 8), np.uint8))
    assert open_channel_cache(tmp_path / "cache.npy", 8, 4).shape == (2, 4, 8, 8)
    with pytest.raises(ValueError, match=r"expected uint8 \(N, 3, 8, 8\)"):
        open_channel_cache(tmp_path / "cache.npy", 8, 3)
    with pytest.raises(ValueError, match=r"expected uint8 \(N, 4, 16, 16\)"):
        open_channel_cache(tmp_path / "cache.npy", 16)
    with pytest.raises(FileNotFoundError, match="cache not found"):
        open_channel_cache(tmp_path / "none.npy", 8)


MEMORY_PROBE = """
import os, resource, sys
from medpipe.data.ingest_channels import ingest_channels
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ingest_channels([("train", sys.argv[1])], sys.argv[2], 128, progress=False)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_memory_does_not_grow_with_the_number_of_images(tmp_path: Path) -> None:
    """600 images make a 39 MB cache; ingest's peak memory grows by far less (the rows are
    written through the page cache, never mapped or kept)."""
    source = tmp_path / "source"
    write_image(source, "one", 128, 0)
    folder = tmp_path / "train"
    folder.mkdir()
    for i in range(600):  # links: 600 images without writing 2,400 PNGs
        for channel in CHANNELS:
            channel_file(folder, f"img{i:04d}", channel).symlink_to(
                channel_file(source, "one", channel)
            )
    probe = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(folder), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert (tmp_path / "data" / "meta.csv").is_file()
    grown_mb = int(probe.stdout.split()[-1])
    assert grown_mb < 10, f"peak memory grew by {grown_mb} MB for a 39 MB cache"
