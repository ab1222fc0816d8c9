"""The salt reaches ingest through $MEDPIPE_SALT, never a command line that Snakemake prints,
stores in .snakemake/ or shows in `ps`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medpipe.cli import main
from tests.e2e.conftest import snakemake

SALT = "Sea-Salt-7f3a9c"


def test_printed_ingest_commands_hold_no_salt(tmp_path: Path) -> None:
    overlay = tmp_path / "salt.yaml"
    overlay.write_text(f"data: {{salt: {SALT}}}\nstage: 2\n")
    proc = snakemake(tmp_path, "submission", "-n", "-p", configfiles=(overlay,))
    printed = proc.stdout + proc.stderr
    assert printed.count("medpipe ingest") == 2, printed[-3000:]  # stage 1 and stage 2 ingest
    assert SALT not in printed
    assert "--salt" not in printed


def _ingest(dicom: Path, labels: Path, out: Path, *flags: str) -> pd.DataFrame:
    argv = ["ingest", "--dicom-dir", str(dicom), "--split", "train", "--labels", str(labels)]
    assert main([*argv, "--out", str(out), "--size", "32", "--workers", "1", *flags]) == 0
    return pd.read_csv(out / "meta.csv", dtype=str).sort_values("image_id")


def test_ingest_takes_the_salt_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    assert main(["synth", "--out", str(tmp_path / "syn"), "--n-train", "6", "--n-test", "2",
                 "--size", "64", "--seed", "1", "--workers", "1"]) == 0  # fmt: skip
    dicom, labels = tmp_path / "syn/dicom-images-train", tmp_path / "syn/train-rle.csv"
    by_flag = _ingest(dicom, labels, tmp_path / "flag", "--salt", SALT)
    monkeypatch.setenv("MEDPIPE_SALT", SALT)
    by_env = _ingest(dicom, labels, tmp_path / "env")
    monkeypatch.setenv("MEDPIPE_SALT", "another-salt")
    other = _ingest(dicom, labels, tmp_path / "other")
    assert list(by_env["patient_key"]) == list(by_flag["patient_key"])
    assert not set(other["patient_key"]) & set(by_flag["patient_key"])
