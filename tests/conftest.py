"""Session fixtures shared by tests/e2e and tests/reliability: one tiny pipeline run each for
stage 1 and stage 2 (defined once here, so a session never runs the pipeline twice).

Both runs seal the hidden test labels, which no rule may read: each hidden label file is
replaced by a directory of the same name while Snakemake runs, so any rule that opens it fails
(IsADirectoryError, even as root), and is put back afterwards for the tests that score.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, snakemake

HIDDEN = ("test-rle.csv", "stage2-test-rle.csv")


@contextlib.contextmanager
def sealed_hidden_labels(workdir: Path, data_root: str = "data/tiny") -> Iterator[list[str]]:
    """Swap each hidden label file for an unreadable directory; restore it (same mtime) after."""
    hidden = workdir / data_root / "hidden"
    vault = workdir / ".sealed"
    vault.mkdir(exist_ok=True)
    sealed = [name for name in HIDDEN if (hidden / name).is_file()]
    for name in sealed:
        os.replace(hidden / name, vault / name)  # a rename keeps the mtime Snakemake compares
        (hidden / name).mkdir()
    try:
        yield sealed
    finally:
        for name in sealed:
            (hidden / name).rmdir()
            os.replace(vault / name, hidden / name)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One full stage-1 run of the tiny pipeline, shared by the tests that only read it."""
    workdir = tmp_path_factory.mktemp("tiny-run")
    snakemake(workdir, "synthesize")
    with sealed_hidden_labels(workdir) as sealed:
        snakemake(workdir, "submission")
    (workdir / "sealed-stage1.txt").write_text("\n".join(sealed) + "\n")
    return workdir


@pytest.fixture(scope="session")
def stage2_run(tiny_run) -> Path:
    """Stage 2 on top of the tiny stage-1 run (the same working directory, as a user would)."""
    ckpt_dir = tiny_run / "runs/tiny/stage1/gate/gate_regnetx"
    before = {
        p.name + "/" + p.parent.name: p.read_bytes() for p in ckpt_dir.glob("fold*/model.ckpt")
    }
    with sealed_hidden_labels(tiny_run) as sealed:
        snakemake(tiny_run, "submission", configfiles=(REPO / "configs" / "stage2.yaml",))
    (tiny_run / "sealed-stage2.txt").write_text("\n".join(sealed) + "\n")
    tiny_run.joinpath("kept-before.txt").write_text(
        "\n".join(f"{k}\t{hashlib.sha256(v).hexdigest()}" for k, v in sorted(before.items()))
    )
    return tiny_run
