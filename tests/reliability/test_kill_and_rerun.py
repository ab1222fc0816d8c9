"""Recovery with the README's own command: a run stopped by Ctrl-C, then one killed with kill -9,
each rerun with the very same command line (no --unlock, no --rerun-incomplete, no profile flag:
the workflow profile and medpipe.runlock carry them), resumes training where it stopped, says so
on the console, and finishes with a valid submission.

The command is the README's (`snakemake --cores N submission` plus the config files), run from a
temporary folder (`--snakefile`/`--directory`), on a small DAG: the U-Net alone, four epochs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.reliability.conftest import REPO

pytestmark = pytest.mark.slow

TINY = REPO / "tests/e2e/tiny.yaml"
EPOCHS = 4
OVERLAY = {
    "segmentation": {"models": {"unet_regnetx": {"epochs": EPOCHS}}},
    "gate": {"models": {"gate_regnetx": None}},  # a U-Net-only DAG: fewer jobs to wait for
    "fusion": {"enabled": False},
    "pseudo_label": {"models": []},
    "postprocess": {"cls_grid": [0.5]},
}


def command(workdir: Path) -> list[str]:
    return [
        sys.executable, "-m", "snakemake", "--cores", "2", "submission",
        "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(REPO / "configs/default.yaml"), str(TINY), str(workdir / "small.yaml"),
    ]  # fmt: skip


def start(workdir: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command(workdir),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: a terminal's Ctrl-C or a kill reaches all
    )


def wait_until(what: str, ready, proc: subprocess.Popen, log: Path, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended before {what}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def test_ctrl_c_then_kill_9_then_the_same_command_finishes(tmp_path: Path) -> None:
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(OVERLAY))
    folds = tmp_path / "runs/tiny/stage1/segment/unet_regnetx"

    def mid_training() -> bool:  # an epoch saved, the fold not finished
        return any(
            (d / "last.ckpt").exists() and not (d / "metrics.json").exists()
            for d in folds.glob("fold*")
        )

    first_log = tmp_path / "first.log"
    first = start(tmp_path, first_log)
    wait_until("a saved epoch", mid_training, first, first_log)
    os.killpg(first.pid, signal.SIGINT)  # Ctrl-C in the terminal
    first.wait(timeout=300)
    assert not (tmp_path / "runs/tiny/submission.csv").exists()

    second_log = tmp_path / "second.log"
    second = start(tmp_path, second_log)
    wait_until("a resumed training", lambda: "resumed from last.ckpt" in second_log.read_text(),
               second, second_log)  # fmt: skip
    assert "IncompleteFilesException" not in second_log.read_text()
    os.killpg(second.pid, signal.SIGKILL)  # kill -9: no clean-up at all
    second.wait(timeout=60)
    assert list((tmp_path / ".snakemake/locks").iterdir()), "a kill -9 leaves Snakemake's lock"

    third = subprocess.run(command(tmp_path), capture_output=True, text=True, timeout=1800)
    out = third.stdout + third.stderr
    assert third.returncode == 0, out[-6000:]
    assert "was killed without releasing its lock; released it" in out
    assert "resumed from last.ckpt after epoch" in out
    # one console line per epoch of each training job (the log files hold the rest)
    assert (
        f"train segment unet_regnetx fold 0: epoch {EPOCHS}/{EPOCHS}"
        in out + second_log.read_text() + first_log.read_text()
    )
    assert "submission: runs/tiny/submission.csv" in out
    assert "out-of-fold score, nested" in out

    submission = pd.read_csv(tmp_path / "runs/tiny/submission.csv")
    assert len(submission) == 12 and submission["ImageId"].is_unique
    for fold in folds.glob("fold*"):
        history = pd.read_csv(fold / "log.csv")
        assert list(history["epoch"]) == list(range(EPOCHS)), f"{fold}: epochs lost or repeated"
    again = subprocess.run([*command(tmp_path), "-n"], capture_output=True, text=True)
    assert "Nothing to be done" in again.stdout + again.stderr
