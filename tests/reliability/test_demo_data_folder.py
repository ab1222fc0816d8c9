"""Demo data never lands in a user's own data folder, and `plan` never plans an absent folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medpipe.cli import main
from medpipe.synthetic.folder import MARKER, check_demo_folder
from tests.e2e.conftest import REPO

TINY = REPO / "tests/e2e/tiny.yaml"


def test_an_empty_or_missing_or_marked_folder_takes_demo_data(tmp_path):
    check_demo_folder(tmp_path / "missing")
    (tmp_path / "empty" / "hidden").mkdir(parents=True)  # as Snakemake makes output folders
    check_demo_folder(tmp_path / "empty")
    marked = tmp_path / "marked"
    marked.mkdir()
    (marked / MARKER).write_text("")
    (marked / "train-rle.csv").write_text("ImageId, EncodedPixels\n")
    check_demo_folder(marked)


def test_a_folder_with_someone_elses_files_is_refused_with_the_fix(tmp_path):
    (tmp_path / "my_films").mkdir()
    (tmp_path / "my_films" / "1.dcm").write_bytes(b"DICM")
    with pytest.raises(FileExistsError) as err:
        check_demo_folder(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "my_films/1.dcm" in message
    assert "synthetic: null" in message


def test_synth_refuses_a_folder_it_did_not_make_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="synthetic: null"):
        main(["synth", "--out", str(tmp_path), "--n-train", "4", "--n-test", "2", "--size", "64"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_the_workflow_refuses_to_plan_synth_into_real_data(tmp_path):
    """An overlay that sets data.root but not `synthetic: null` stops before any job, even -n."""
    real = tmp_path / "my-siim"
    (real / "dicom-images-train").mkdir(parents=True)
    (real / "dicom-images-train" / "1.dcm").write_bytes(b"DICM")
    (real / "train-rle.csv").write_text("ImageId, EncodedPixels\n")
    overlay = tmp_path / "mine.yaml"
    overlay.write_text(yaml.safe_dump({"data": {"root": str(real)}}))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "submission", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(tmp_path), "--cores", "1", "--configfile",
         str(REPO / "configs/default.yaml"), str(TINY), str(overlay)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert str(real) in out and "synthetic: null" in out, out[-2000:]
    assert sorted(p.name for p in real.iterdir()) == ["dicom-images-train", "train-rle.csv"]


def test_plan_on_a_missing_or_empty_data_folder_is_an_error(tmp_path, capsys):
    for root in (tmp_path / "absent", tmp_path / "empty"):
        if root.name == "empty":
            (root / "dicom-images-train").mkdir(parents=True)
        code = main(
            ["plan", "--config", str(REPO / "configs/default.yaml"), "--data-root", str(root)]
        )
        err = capsys.readouterr().err
        assert code == 2
        assert str(root / "dicom-images-train") in err and "nothing to plan" in err


def test_plan_still_plans_the_synthetic_default_before_it_exists(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/synthetic here: the config's counts are planned
    config = Path(REPO / "configs/default.yaml")
    assert main(["plan", "--config", str(config)]) == 0
    assert "train 360" in capsys.readouterr().out
