"""Run the multi-label task's DAG (configs/multilabel.yaml and overlays) in a temporary folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import REPO, succeeded

# The tiny multi-label run the e2e tests share: 2 folds x 2 epochs on 48 demo cells at 32².
TINY_MULTILABEL = {
    "run_dir": "runs/tiny-ml",
    "folds": 2,
    "image_size": 32,
    "data": {
        "root": "data/tiny-hpa",
        "synthetic": {"n_train": 48, "n_test": 12, "n_stage2_test": 0, "size": 64, "seed": 3},
    },
    "classifier": {"models": {"resnet18_4ch": {"epochs": 2, "batch_size": 16}}},
}


def snakemake_multilabel(
    workdir: Path, *args: str, configfiles: tuple[Path, ...] = (), check: bool = True
) -> subprocess.CompletedProcess:
    """``python -m snakemake`` on the repo's Snakefile with the multi-label default under
    ``configfiles``, in ``workdir``; a failure shows the run's logs."""
    cmd = [
        sys.executable, "-m", "snakemake", *args,
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--cores", "2",
        "--configfile", str(REPO / "configs" / "multilabel.yaml"), *map(str, configfiles),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check:
        succeeded(proc, workdir)
    return proc
