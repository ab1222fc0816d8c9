"""Helpers to run the real Snakemake workflow on the tiny config in a temporary directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = Path(__file__).resolve().parent / "tiny.yaml"


def snakemake(
    workdir: Path, *args: str, configfiles: tuple[Path, ...] = (), check: bool = True
) -> subprocess.CompletedProcess:
    """Run ``python -m snakemake`` on the repo's Snakefile in ``workdir`` (a subprocess is steadier
    than the Python API, which changes between minor versions)."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        *args,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        "--configfile",
        str(REPO / "configs" / "default.yaml"),
        str(TINY),
        *map(str, configfiles),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "runs").rglob("*.log"))
        )
        raise AssertionError(
            f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}\n{logs}"
        )
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One full stage-1 run of the tiny pipeline, shared by the end-to-end tests that only read it."""
    workdir = tmp_path_factory.mktemp("tiny-run")
    snakemake(workdir, "submission")
    return workdir


@pytest.fixture(scope="session")
def stage2_run(tiny_run) -> Path:
    """Stage 2 on top of the tiny stage-1 run (the same working directory, as a user would)."""
    ckpt_dir = tiny_run / "runs/tiny/stage1/gate/cls_r18"
    before = {
        p.name + "/" + p.parent.name: p.read_bytes() for p in ckpt_dir.glob("fold*/model.ckpt")
    }
    snakemake(tiny_run, "submission", configfiles=(REPO / "configs" / "stage2.yaml",))
    tiny_run.joinpath("kept-before.txt").write_text(
        "\n".join(
            f"{k}\t{__import__('hashlib').sha256(v).hexdigest()}" for k, v in sorted(before.items())
        )
    )
    return tiny_run
