"""Crashes lose nothing at the workflow level, and config values cannot inject shell commands.

A Snakemake run killed with SIGKILL (the whole process group, as an OOM killer or a lost SSH
session would) leaves a lock and "incomplete" markers; ``snakemake --unlock`` and a rerun with
``--rerun-incomplete`` (on in profiles/local) complete it without manual clean-up. The run uses a
``run_dir`` and ``data.root`` holding ``;``, a space and ``$(...)``: every rule quotes them
(``{x:q}``), so nothing is executed and the outputs land at the literal paths.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.reliability.conftest import REPO

pytestmark = pytest.mark.slow

TINY = REPO / "tests/e2e/tiny.yaml"
RUN = "runs/a; touch INJECTED #b $(touch INJECTED2)"
ROOT = "data/x; touch INJECTED3 #"


def command(workdir: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "snakemake", *args, "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(REPO / "configs/default.yaml"),
        str(TINY), str(workdir / "hostile.yaml"),
    ]  # fmt: skip


def run(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(command(workdir, *args), capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    import yaml

    overlay = {"run_dir": RUN, "data": {"root": ROOT}}
    (tmp_path / "hostile.yaml").write_text(yaml.safe_dump(overlay))
    return tmp_path


def injected(workdir: Path) -> list[Path]:
    return [p for p in workdir.rglob("INJECTED*")]


def test_dry_run_prints_every_command_with_hostile_paths_quoted(workdir: Path) -> None:
    """Every rule of the stage-1 DAG: the hostile run_dir stays one shell word."""
    proc = run(workdir, "submission", "-n", "-p")
    out = proc.stdout + proc.stderr
    commands = [
        line.split("Shell command:", 1)[1].strip()
        for line in out.splitlines()
        if "Shell command: medpipe " in line
    ]
    assert len({c.split()[1] for c in commands}) >= 8, out[-3000:]  # synth, ingest, ..., publish
    for line in commands:
        words = shlex.split(line)
        assert "touch" not in words, line
        assert not any(w.startswith("INJECTED") for w in words), line


def test_killed_run_completes_after_unlock_and_rerun(workdir: Path) -> None:
    first = subprocess.Popen(
        command(workdir, "make_folds", "--cores", "2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes the jobs with it
    )
    ingest_log = workdir / RUN / "logs/ingest.log"
    deadline = time.monotonic() + 300
    while not ingest_log.exists():  # killed while ingest is writing its cache
        assert first.poll() is None, "the first run ended before ingest started"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    assert list((workdir / ".snakemake/locks").iterdir()), "a SIGKILL leaves the lock"
    assert not (workdir / RUN / "data/folds.csv").exists()

    locked = run(workdir, "make_folds", "--cores", "2", check=False)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    run(workdir, "make_folds", "--unlock", "--cores", "1")
    done = run(workdir, "make_folds", "--profile", str(REPO / "profiles/local"))
    assert "ingest" in done.stdout + done.stderr  # the killed job was redone, not trusted

    data = workdir / RUN / "data"
    meta = pd.read_csv(data / "meta.csv")
    folds = pd.read_csv(data / "folds.csv")
    assert len(meta) == 48 + 12 and len(folds) == 48
    assert not list(data.glob(".*tmp*")), "temp files of the killed job are gone or replaced"
    assert (workdir / ROOT / "train-rle.csv").is_file()
    assert not injected(workdir), injected(workdir)
    assert "Nothing to be done" in run(workdir, "make_folds", "-n").stdout
