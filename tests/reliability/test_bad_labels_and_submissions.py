"""Bad labels, configs, data roots and submissions: one clear error line that names the row, the
key or the file, through the same commands the pipeline runs (no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from medpipe.cli import main
from tests.reliability.conftest import REPO, write_config
from tests.reliability.test_bad_dicom import film


@pytest.fixture()
def siim(tmp_path: Path) -> dict:
    """Three readable films (64 x 64) in a train folder and their ImageIds."""
    train = tmp_path / "dicom-images-train"
    train.mkdir()
    ids = []
    for i in range(3):
        path = train / f"{i}.dcm"
        path.write_bytes(film(True))
        ids.append(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
    return {"train": train, "ids": ids, "root": tmp_path}


def ingest_error(siim: dict, lines: list[str], capsys) -> str:
    labels = siim["root"] / "train-rle.csv"
    labels.write_text("\n".join(lines) + "\n")
    argv = ["ingest", "--dicom-dir", str(siim["train"]), "--labels", str(labels)]
    code = main([*argv, "--out", str(siim["root"] / "out"), "--size", "16", "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert not (siim["root"] / "out" / "meta.csv").exists()
    return err


def test_malformed_rle_row_is_named(siim: dict, capsys) -> None:
    a, b, c = siim["ids"]
    err = ingest_error(
        siim, ["ImageId, EncodedPixels", f"{a}, -1", f"{b}, 5 3 1", f"{c}, -1"], capsys
    )
    assert "train-rle.csv:3: ImageId" in err and "odd" in err.lower()


def test_rle_beyond_the_image_is_named(siim: dict, capsys) -> None:
    a, b, c = siim["ids"]
    rows = ["ImageId, EncodedPixels", f"{a}, -1", f"{b}, -1", f"{c}, 4000 200"]
    err = ingest_error(siim, rows, capsys)
    assert f"train-rle.csv:4: ImageId {c}: RLE does not fit its 64 x 64 image" in err


def test_unknown_image_id_is_named_with_its_row(siim: dict, capsys) -> None:
    a, b, c = siim["ids"]
    rows = ["ImageId, EncodedPixels", f"{a}, -1", f"{b}, -1", f"{c}, -1", "1.2.999.1, -1"]
    err = ingest_error(siim, rows, capsys)
    assert "train-rle.csv:5: ImageId 1.2.999.1 (and 0 more) has label rows but no image" in err


def test_duplicate_header_is_named(siim: dict, capsys) -> None:
    a, b, c = siim["ids"]
    rows = ["ImageId, EncodedPixels", f"{a}, -1", "ImageId, EncodedPixels", f"{b}, -1"]
    assert "train-rle.csv:3: duplicate header row" in ingest_error(siim, rows, capsys)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "a/b", "1.2\\3", ".."])
def test_path_like_image_id_in_labels_is_refused(siim: dict, capsys, bad: str) -> None:
    rows = ["ImageId, EncodedPixels", *(f"{i}, -1" for i in siim["ids"]), f"{bad}, -1"]
    assert f"train-rle.csv:5: invalid ImageId {bad!r}" in ingest_error(siim, rows, capsys)


def test_invalid_config_names_the_key(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "bad.yaml", image_size="large", data={"salt": ""})
    argv = ["--config", str(config), "--data-dir", str(tmp_path), "--stage-dir", str(tmp_path)]
    code = main(["features", *argv, "--out", str(tmp_path / "features.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "image_size: 'large' is not of type 'integer'" in err
    assert "data.salt: '' should be non-empty" in err


def test_missing_data_root_says_so_and_suggests_synth(tmp_path: Path) -> None:
    overlay = tmp_path / "real.yaml"
    overlay.write_text("data: {root: /nonexistent/siim, synthetic: null}\nrun_dir: runs/x\n")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(tmp_path), "--configfile", str(REPO / "configs/default.yaml"),
         str(overlay)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "data.root = '/nonexistent/siim' does not exist" in out
    assert "medpipe synth --out" in out


def test_missing_dicom_folder_in_ingest_suggests_synth(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="DICOM folder not found: .*medpipe synth --out"):
        main(["ingest", "--dicom-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])


# ---------------------------------------------------------------- submissions


@pytest.fixture()
def test_dir(siim: dict) -> dict:
    return {"dir": siim["train"], "ids": siim["ids"]}


def validate(tmp_path: Path, test_dir: dict, rows: list[str], capsys) -> tuple[int, str]:
    path = tmp_path / "submission.csv"
    path.write_text("\n".join(rows) + "\n")
    code = main(["validate-submission", str(path), "--dicom-dir", str(test_dir["dir"])])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_valid_submission_passes(tmp_path: Path, test_dir: dict, capsys) -> None:
    a, b, c = test_dir["ids"]
    rows = ["ImageId,EncodedPixels", f"{a},-1", f"{b},10 5", f"{c},-1"]
    assert validate(tmp_path, test_dir, rows, capsys)[0] == 0


@pytest.mark.parametrize(
    ("defect", "message"),
    [
        ("missing", "1 of 3 test images missing"),
        ("duplicate", "duplicate row for ImageId"),
        ("malformed", "malformed RLE"),
        ("beyond", "RLE runs beyond the 64x64 image"),
        ("header", "header is 'ImageId,Pixels', expected 'ImageId,EncodedPixels'"),
        ("path", "holds a path separator or '..'"),
    ],
)
def test_each_submission_defect_has_its_own_message(
    tmp_path: Path, test_dir: dict, capsys, defect: str, message: str
) -> None:
    a, b, c = test_dir["ids"]
    header, rows = "ImageId,EncodedPixels", [f"{a},-1", f"{b},10 5", f"{c},-1"]
    if defect == "missing":
        rows = rows[:2]
    elif defect == "duplicate":
        rows.append(f"{a},-1")
    elif defect == "malformed":
        rows[1] = f"{b},10 5 7"
    elif defect == "beyond":
        rows[1] = f"{b},4090 10"
    elif defect == "header":
        header = "ImageId,Pixels"
    elif defect == "path":
        rows.append("../1.2.3,-1")
    code, out = validate(tmp_path, test_dir, [header, *rows], capsys)
    assert code == 1
    assert "INVALID" in out and message in out, out
