"""Session fixtures shared by the tests: one tiny pipeline run each for
stage 1 and stage 2 (defined once here, so a session never runs the pipeline twice). Stage 2 runs
on a copy of the stage-1 working folder: each run stays at its stage, whatever the test order.
Tests that change a run (tamper with a file, run another target) work on their own copy.

Both runs seal the hidden test labels, which no rule may read: each hidden label file is
replaced by a directory of the same name while Snakemake runs, so any rule that opens it fails
(IsADirectoryError, even as root), and is put back afterwards for the tests that score.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from medpipe.layout import HpaInputLayout
from tests.e2e.conftest import REPO, snakemake
from tests.e2e.multilabel_run import TINY_MULTILABEL, snakemake_multilabel

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
def stage2_run(tiny_run, tmp_path_factory) -> Path:
    """Stage 2 on its own copy of the tiny stage-1 run's working folder (run in place there, as a
    user would), so ``tiny_run`` stays at stage 1 whichever test asks for which run first."""
    workdir = tmp_path_factory.mktemp("stage2-run") / "work"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    ckpt_dir = workdir / "runs/tiny/stage1/gate/gate_regnetx"
    before = {
        p.name + "/" + p.parent.name: p.read_bytes() for p in ckpt_dir.glob("fold*/model.ckpt")
    }
    with sealed_hidden_labels(workdir) as sealed:
        snakemake(workdir, "submission", configfiles=(REPO / "configs" / "stage2.yaml",))
    (workdir / "sealed-stage2.txt").write_text("\n".join(sealed) + "\n")
    workdir.joinpath("kept-before.txt").write_text(
        "\n".join(f"{k}\t{hashlib.sha256(v).hexdigest()}" for k, v in sorted(before.items()))
    )
    return workdir


@pytest.fixture(scope="session")
def tiny_ml_run(tmp_path_factory) -> Path:
    """One tiny multi-label run (configs/multilabel.yaml under TINY_MULTILABEL), shared by the
    tests that only read it; its hidden test labels are unreadable while the DAG runs."""
    workdir = tmp_path_factory.mktemp("tiny-ml")
    overlay = workdir / "tiny-ml.yaml"
    overlay.write_text(yaml.safe_dump(TINY_MULTILABEL))
    snakemake_multilabel(workdir, "synthesize_cells", configfiles=(overlay,))
    hidden = HpaInputLayout(workdir / TINY_MULTILABEL["data"]["root"]).hidden_labels(1)
    vault = workdir / "sealed.csv"
    os.replace(hidden, vault)
    hidden.mkdir()  # a rule that opens the hidden labels fails
    try:
        snakemake_multilabel(workdir, "submission", configfiles=(overlay,))
    finally:
        hidden.rmdir()
        os.replace(vault, hidden)
    return workdir
