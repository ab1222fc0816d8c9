"""Config values cannot inject shell commands: a ``run_dir`` and ``data.root`` holding ``;``, a
space and ``$(...)`` stay one shell word in every rule (``{x:q}``), so nothing is executed.

Crash recovery through the README's own command: tests/reliability/test_kill_and_rerun.py.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

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
