"""Helpers to run the real Snakemake workflow on the tiny config in a temporary directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = Path(__file__).resolve().parent / "tiny.yaml"


# What a copy of the workflow needs: the Snakefile (Snakemake puts its folder first on sys.path,
# so the Snakefile imports the package beside it), its includes, configs, profiles, the package.
WORKFLOW = ("Snakefile", "stages", "configs", "profiles", "medpipe")


def snakemake(
    workdir: Path,
    *args: str,
    configfiles: tuple[Path, ...] = (),
    check: bool = True,
    repo: Path = REPO,
) -> subprocess.CompletedProcess:
    """Run ``python -m snakemake`` on the repo's Snakefile in ``workdir`` (a subprocess is steadier
    than the Python API, which changes between minor versions). ``repo``: a copy of the workflow
    (:func:`relocated_run`) to drive instead; its package is then also first on the jobs' path."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        *args,
        "--snakefile",
        str(repo / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        "--configfile",
        str(repo / "configs" / "default.yaml"),
        str(TINY),
        *map(str, configfiles),
    ]
    # From the copy's root, as a user runs from a clone: the folder Python starts in comes first
    # on sys.path, before the copy (on PYTHONPATH, where Snakemake then does not add it again).
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=package_env(repo),
        cwd=None if repo == REPO else repo,
    )
    if check:
        succeeded(proc, workdir)
    return proc


def succeeded(proc: subprocess.CompletedProcess, workdir: Path) -> None:
    """Fail with Snakemake's output and the ends of the run's job logs unless ``proc`` succeeded."""
    if proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "runs").rglob("*.log"))
        )
        raise AssertionError(
            f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}\n{logs}"
        )


def package_env(repo: Path) -> dict[str, str] | None:
    """The environment in which ``python``, and so every rule's ``medpipe`` command, imports the
    package of ``repo`` (None: the installed one, the working tree's)."""
    if repo == REPO:
        return None
    path = os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def relocated_run(run: Path, dest: Path) -> tuple[Path, Path]:
    """``(workdir, repo)``: a copy of the finished run ``run`` and a copy of the workflow and
    package as the working tree has them, which Snakemake takes for the run's own.

    A test edits the copied package, never the source tree, and a test killed half-way leaves
    nothing changed. Each rule lists the package files it imports as inputs (absolute paths,
    medpipe.code_inputs), and Snakemake's record of the run keeps them: the copy's record names
    the copied files instead, so only a real edit of a copy reruns anything.
    """
    repo, workdir = dest / "repo", dest / "run"
    repo.mkdir(parents=True)
    for name in WORKFLOW:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif (REPO / name).is_file():
            shutil.copy2(REPO / name, repo / name)
    shutil.copytree(run, workdir, symlinks=True)
    old, new = f"{REPO / 'medpipe'}{os.sep}", f"{repo / 'medpipe'}{os.sep}"
    for record in (workdir / ".snakemake" / "metadata").iterdir():
        record.write_text(record.read_text().replace(old, new))
    return workdir, repo


# The shared runs (tiny_run, stage2_run) live in tests/conftest.py: tests/reliability reads them too.
