"""Crashes lose nothing: a training process killed with SIGKILL mid-run resumes from its last
checkpoint and, on CPU with ``deterministic: true``, ends with the weights of an uninterrupted
run (tests/training/test_fit.py checks the same in-process with a simulated kill)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.reliability.conftest import write_config
from tests.training.tiny_data import small_seg_config, write_data_dir

pytestmark = pytest.mark.slow

EPOCHS = 3


def train(config: Path, data_dir: Path, out: Path) -> subprocess.Popen:
    log = (out.parent / f"{out.name}.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "medpipe.cli", "train-seg", "--config", str(config),
         "--model", "m", "--fold", "0", "--data-dir", str(data_dir), "--out", str(out)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def wait(proc: subprocess.Popen, out: Path, timeout: float = 600) -> None:
    assert proc.wait(timeout=timeout) == 0, (out.parent / f"{out.name}.log").read_text()[-3000:]


def state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_sigkilled_training_resumes_to_identical_weights(tmp_path: Path) -> None:
    data_dir = write_data_dir(tmp_path / "data")
    config = write_config(
        tmp_path / "config.yaml", segmentation={"models": {"m": small_seg_config(epochs=EPOCHS)}}
    )
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = train(config, data_dir, whole)  # runs alongside the one that gets killed
    victim = train(config, data_dir, killed)
    deadline = time.monotonic() + 600
    while not (killed / "last.ckpt").exists():  # the first epoch's checkpoint
        assert victim.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint after 10 minutes"
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    saved_epoch = torch.load(killed / "last.ckpt", weights_only=True)["epoch"]
    assert saved_epoch < EPOCHS - 1, "the kill came after training had finished"
    assert not (killed / "metrics.json").exists()

    wait(train(config, data_dir, killed), killed)  # the rerun Snakemake would start
    wait(reference, whole)
    log = (tmp_path / "killed.log").read_text()
    assert "training from scratch" not in log, "the rerun did not resume"
    assert "Restoring states from the checkpoint" in log
    for name in ("last.ckpt", "model.ckpt"):
        a, b = state(whole / name), state(killed / name)
        assert a.keys() == b.keys()
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert not different, f"{name}: {len(different)} tensors differ, e.g. {different[:3]}"
    a, b = pd.read_csv(whole / "log.csv"), pd.read_csv(killed / "log.csv")
    assert list(b["epoch"]) == list(range(EPOCHS))
    pd.testing.assert_series_equal(a["val_dice"], b["val_dice"])
