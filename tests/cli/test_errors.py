"""A command given a path that is not there says so in one line and exits non-zero: no
traceback, whichever command. And the installed ``medpipe`` console script runs ``main``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medpipe.cli import main

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "default.yaml")
MISSING = "/nonexistent/medpipe-test"

# Every command, with its input paths missing (a valid config where it takes one, so the missing
# data path is what it meets), and the words its one line must hold.
CASES = {
    "synth": (["--out", "/proc/no/such/dir", "--n-train", "2", "--n-test", "1"], "/proc/no"),
    "ingest": (["--dicom-dir", MISSING, "--out", "{tmp}"], "DICOM folder not found"),
    "ingest-channels": (["--root", MISSING, "--out", "{tmp}"], MISSING),
    "folds": (["--meta", MISSING, "--out", "{tmp}/folds.csv"], MISSING),
    "train-seg": (
        ["--config", CONFIG, "--model", "unet_regnetx", "--fold", "0", "--data-dir", MISSING,
         "--out", "{tmp}"],
        f"{MISSING}/folds.csv",
    ),
    "train-gate": (
        ["--config", CONFIG, "--model", "gate_regnetx", "--fold", "0", "--data-dir", MISSING,
         "--out", "{tmp}"],
        f"{MISSING}/folds.csv",
    ),
    "train-cls": (
        ["--config", CONFIG, "--model", "m", "--fold", "0", "--data-dir", MISSING,
         "--out", "{tmp}"],
        f"{MISSING}/folds.csv",
    ),
    "predict": (
        ["--config", MISSING, "--task", "segment", "--model", "m", "--fold", "0",
         "--data-dir", MISSING, "--ckpt", MISSING, "--out", "{tmp}"],
        "config file not found",
    ),
    "validate-submission": ([MISSING], MISSING),
    "plan": (["--config", CONFIG, "--data-root", MISSING], MISSING),
    "score": ([MISSING, "--labels", MISSING], MISSING),
    "stage2-folds": (["--folds", MISSING, "--meta", MISSING, "--out", "{tmp}/f.csv"], MISSING),
    "pseudo-label": (
        ["--config", MISSING, "--model", "m@pl1", "--fold", "0", "--data-dir", MISSING,
         "--stage-dir", MISSING],
        MISSING,
    ),
    "choose-variants": (
        ["--config", MISSING, "--data-dir", MISSING, "--stage-dir", MISSING], MISSING
    ),
    "reproduce-doc": (
        ["--config", CONFIG, "--run-dir", MISSING, "--out", "{tmp}/REPRODUCE.md"], MISSING
    ),
    "verify-reproduction": ([MISSING], MISSING),
    "features": (
        ["--config", CONFIG, "--data-dir", MISSING, "--stage-dir", MISSING, "--out",
         "{tmp}/f.csv"],
        MISSING,
    ),
    "fuse": (
        ["--config", CONFIG, "--features", MISSING, "--data-dir", MISSING, "--out-dir", "{tmp}"],
        MISSING,
    ),
    "thresholds": (["--config", CONFIG, "--data-dir", MISSING, "--stage-dir", MISSING], MISSING),
    "fuse-cls": (
        ["--config", str(REPO / "configs" / "multilabel.yaml"), "--data-dir", MISSING,
         "--stage-dir", MISSING, "--out-dir", "{tmp}"],
        MISSING,
    ),
    "submit": (
        ["--config", CONFIG, "--data-dir", MISSING, "--stage-dir", MISSING, "--out",
         "{tmp}/s.csv"],
        MISSING,
    ),
    "publish": ([MISSING, "{tmp}/s.csv"], MISSING),
    "report": (["--config", CONFIG, "--run-dir", MISSING], MISSING),
    "export-masks": (["--config", CONFIG, "--run-dir", MISSING], MISSING),
    "export": ([MISSING, "--out", "{tmp}/bundle"], MISSING),
    "infer": (["--bundle", MISSING, "--dicom-dir", MISSING, "--out", "{tmp}/s.csv"], MISSING),
    "import-external": (
        ["--config", MISSING, "--name", "team", "--data-dir", MISSING, "--stage-dir", MISSING],
        MISSING,
    ),
}  # fmt: skip

KNOWN_BUGS: dict[str, str] = {}


def _run(argv: list[str], capsys) -> tuple[int, str]:
    """``main``'s exit status and stderr, as the console script would end (a SystemExit with a
    message is printed, status 1)."""
    try:
        rc = main(argv)
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
            rc = 1
        else:
            rc = stop.code
    return rc, capsys.readouterr().err


def test_every_command_has_a_case():
    from tests.cli.test_parsers import COMMANDS

    assert set(CASES) == set(COMMANDS)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[n]))
        if n in KNOWN_BUGS
        else n
        for n in sorted(CASES)
    ],
)
def test_a_missing_path_is_one_line_and_a_failure(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing a command writes lands in the repository
    argv, words = CASES[name]
    rc, err = _run([name, *(a.replace("{tmp}", str(tmp_path)) for a in argv)], capsys)
    assert rc not in (0, None), err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert words in lines[0]
    assert "Traceback" not in err


def test_the_console_script_runs_the_commands(tmp_path):
    script = Path(sys.executable).with_name("medpipe")
    ok = subprocess.run([script, "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0 and "score" in ok.stdout
    bad = subprocess.run(
        [script, "score", MISSING, "--labels", MISSING], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"medpipe score: error: {MISSING}: no such file"]
