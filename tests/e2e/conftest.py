"""Helpers to run the real Snakemake workflow on the tiny config in a temporary directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


# The shared runs (tiny_run, stage2_run) live in tests/conftest.py: tests/reliability reads them too.
