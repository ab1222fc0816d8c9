"""The tiny pipeline through ``--executor slurm`` and profiles/slurm on a real one-node SLURM.

Checks that every job went through SLURM (``sacct --completion`` lists them; slurmctld's records
name each rule), that the GPU rules asked for a GPU and the CPU rules did not, and that the
submission and the trained weights are identical to a local run of the same config.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.cluster.slurm import LocalSlurm, SlurmUnavailable, find_tool
from tests.e2e.conftest import REPO, TINY

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

GPU_RULES = {"train_seg", "train_gate", "predict_seg", "predict_gate"}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Iterator[LocalSlurm]:
    if find_tool("slurmctld") is None:
        pytest.skip("slurmctld not installed (apt-get install slurm-wlm munge; .ci/run does)")
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as err:
        cluster.stop()
        pytest.skip(f"cannot start a local SLURM here: {err}")
    yield cluster
    cluster.stop()


def run_on_slurm(cluster: LocalSlurm, workdir: Path, target: str) -> str:
    """``snakemake <target>`` with the SLURM profile, the tiny config and the same --cores as the
    local e2e run (the cores set each job's threads, and so its arithmetic)."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        target,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--cores",
        "2",
        # No slurmdbd here, so sacct cannot report running jobs; squeue can (MinJobAge=3600).
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--configfile",
        str(REPO / "configs" / "default.yaml"),
        str(TINY),
    ]
    proc = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=1800)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted(workdir.glob(".snakemake/slurm_logs/**/*.log"))
        )
        raise AssertionError(
            f"snakemake on SLURM failed ({proc.returncode}):\n{text[-6000:]}\n{logs}"
        )
    return text


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_tiny_pipeline_on_slurm_matches_a_local_run(slurm, tiny_run, tmp_path) -> None:
    workdir = tmp_path / "on-slurm"
    workdir.mkdir()
    log = run_on_slurm(slurm, workdir, "synthesize") + run_on_slurm(slurm, workdir, "submission")

    # Every job Snakemake ran was an sbatch job of this cluster, and finished.
    submitted = {int(j) for j in re.findall(r"submitted with SLURM jobid (\d+)", log)}
    assert len(submitted) >= 15, log[-3000:]
    run_ids = set(re.findall(r"SLURM run ID: (\S+)", log))
    completed = [j for j in slurm.completed() if j["JobName"] in run_ids]
    assert {int(j["JobID"]) for j in completed} == submitted
    assert {j["State"] for j in completed} == {"COMPLETED"}

    # slurmctld's record of each job: its rule (the plugin's --comment) and the GPUs it asked for.
    jobs = {int(j["JobId"]): j for j in slurm.jobs()}
    rules: dict[str, set[str]] = {}
    for job_id in submitted:
        job = jobs[job_id]
        rule = re.match(r"rule_(.+?)(_wildcards_.*)?$", job["Comment"]).group(1)
        rules.setdefault(rule, set()).add(job.get("TresPerJob", ""))
    assert GPU_RULES <= set(rules), rules
    for rule, tres in rules.items():
        if rule in GPU_RULES:
            assert tres == {"gres:gpu:1"}, (rule, tres)
        else:
            assert not any("gpu" in t for t in tres), (rule, tres)

    # The same bytes and the same weights as the local run of the same config.
    local, remote = tiny_run / "runs/tiny", workdir / "runs/tiny"
    assert (remote / "submission.csv").read_bytes() == (local / "submission.csv").read_bytes()
    checkpoints = sorted(p.relative_to(local) for p in local.glob("stage1/*/*/fold*/model.ckpt"))
    assert checkpoints
    for rel in checkpoints:
        ours, theirs = _state_dict(remote / rel), _state_dict(local / rel)
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), rel
