"""Multi-GPU inside a job is Lightning DDP: here two CPU processes with the gloo backend.

The run happens in a subprocess, as in a pipeline job: with ``strategy: ddp`` Lightning starts
rank 1 by running the same command again, so this file doubles as that command
(``python tests/training/test_ddp.py SPEC.json``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _run_spec(spec: dict) -> None:
    """Rank 0 and, re-executed by Lightning, rank 1: train one fold as the spec says."""
    from medpipe.training import train_fold
    from tests.training.tiny_data import gate_config, run_config

    # The gate: every parameter takes part in the loss, as plain DDP requires (the 3-level test
    # U-Net keeps unused encoder stages and would need ddp_find_unused_parameters_true).
    model = gate_config(epochs=spec["epochs"], batch_size=4)
    run = run_config(trainer={"devices": 2, "strategy": spec["strategy"]})
    metrics = train_fold("gate", "cls", model, run, Path(spec["data"]), 0, Path(spec["out"]))
    print("METRICS", json.dumps(metrics, default=str), flush=True)


# What a rule sees inside a Snakemake SLURM job: one srun task, whatever the GPUs.
SLURM_STEP = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "medpipe-run",
    "SLURM_NTASKS": "1",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NODELIST": "localhost",
}


def _start(
    data: Path, out: Path, strategy: str, epochs: int, env: dict | None = None
) -> subprocess.Popen:
    spec = out.parent / f"{out.name}-{strategy}.json"
    spec.write_text(
        json.dumps({"data": str(data), "out": str(out), "strategy": strategy, "epochs": epochs})
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, __file__, str(spec)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # one process group: a kill takes both ranks, like SIGKILL of a job
    )


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output[-6000:]
    return output


def test_two_process_ddp_trains_resumes_and_writes_the_outputs_once(tmp_path) -> None:
    from tests.training.tiny_data import write_data_dir

    data, out = write_data_dir(tmp_path / "data"), tmp_path / "fold0"
    # First attempt (ddp: rank 1 is this file run again) inside a one-task SLURM step, as a
    # Snakemake SLURM job runs it; killed once epoch 0 is checkpointed.
    proc = _start(data, out, "ddp", epochs=3, env=SLURM_STEP)
    deadline = time.monotonic() + 600
    while not (out / "last.ckpt").is_file() and proc.poll() is None:
        assert time.monotonic() < deadline, "no last.ckpt after 10 minutes"
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0][-4000:]
    os.killpg(proc.pid, signal.SIGKILL)
    first, _ = proc.communicate()
    assert "distributed_backend=gloo" in first and "Starting with 2 processes" in first, first[
        -3000:
    ]

    # Second attempt with ddp_spawn: both launchers, and the resume holds across them.
    second = _finish(_start(data, out, "ddp_spawn", epochs=3))
    assert "Restoring states from the checkpoint path" in second, second[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["strategy"] == "DDPStrategy"
    assert metrics["epochs"] == 3 and metrics["best_epoch"] in (0, 1, 2)
    assert metrics["n_train"] == 16  # 24 images, fold 0 holds 8
    for name in ("model.ckpt", "last.ckpt", "log.csv", "progress.png", "resume.json"):
        assert (out / name).is_file(), name
    log = pd.read_csv(out / "log.csv")
    assert list(log["epoch"]) == [0, 1, 2]  # the history survived the kill, once per epoch
    # Both ranks share the epoch: each trains on half of the 16 images, the log counts them all.
    assert set(log["train_images"]) == {16}
    # One step log per attempt, written by rank 0 only.
    versions = sorted(p.name for p in (out / "csv").iterdir())
    assert versions == ["version_0", "version_1"], versions
    # Rank 0 alone selects and writes the checkpoints: no rank-suffixed or temporary files.
    assert sorted(p.name for p in out.glob("*.ckpt")) == ["last.ckpt", "model.ckpt"]


if __name__ == "__main__":
    _run_spec(json.loads(Path(sys.argv[1]).read_text()))
