"""A throw-away one-node SLURM cluster on localhost, for testing the SLURM profile for real.

munged, slurmctld and slurmd run from a temporary directory with a generated slurm.conf: the
node has the machine's CPUs, two placeholder GPUs (GRES backed by empty files, so SLURM can
schedule the rules that ask for ``--gpus=1``; they run on the CPU) and no cgroup enforcement
(proctrack/linuxproc, task/none), which containers usually cannot offer. There is no slurmdbd:
``sacct`` reads the job-completion log (``JobCompType=jobcomp/filetxt``, ``sacct --completion``),
and the executor plugin polls job states with ``squeue`` (``MinJobAge`` keeps finished jobs
visible for an hour).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["LocalSlurm", "SlurmUnavailable", "find_tool"]

SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
DAEMONS = ("munged", "slurmctld", "slurmd")


class SlurmUnavailable(RuntimeError):
    """The cluster could not be started here (the message names the command and its error)."""


def find_tool(name: str) -> str | None:
    """``name`` on PATH or in the sbin folders, where Debian installs the daemons."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tail(path: Path, lines: int = 15) -> str:
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""
    )


class LocalSlurm:
    """Start with :meth:`start`, stop with :meth:`stop`; :attr:`env` is the client environment.

    Example:
        >>> cluster = LocalSlurm(tmp_path).start()  # doctest: +SKIP
        >>> subprocess.run(["sinfo"], env=cluster.env)  # doctest: +SKIP
        >>> cluster.stop()  # doctest: +SKIP
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.socket = self.root / "munge" / "munge.socket.2"
        self.node = socket.gethostname().split(".")[0]
        self.cpus = max(len(os.sched_getaffinity(0)), 2)
        self._started: list[Path] = []  # pid files of the daemons this object started

    @property
    def env(self) -> dict[str, str]:
        """Environment for SLURM clients and Snakemake: our slurm.conf, our srun wrapper first.

        The jobstep executor drops every ``SLURM_*`` variable (SLURM_CONF too) before its
        nested ``srun``; a real cluster finds /etc/slurm/slurm.conf, ours needs the wrapper.
        """
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = os.pathsep.join([str(self.root / "bin"), env.get("PATH", ""), *SBIN])
        return env

    def _write_config(self) -> None:
        user = getpass.getuser()
        for sub in ("munge", "state", "spool", "log", "bin"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        for i in range(2):
            (self.root / f"fakegpu{i}").touch()
        (self.root / "gres.conf").write_text(
            f"NodeName={self.node} Name=gpu File={self.root}/fakegpu[0-1]\n"
        )
        r = self.root
        self.conf.write_text(
            f"""ClusterName=medpipe-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={r}/log/jobcomp.txt
MinJobAge=3600
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
GresTypes=gpu
# The profile's per-rule memory is sized for GPU nodes; memory is not consumable here (CR_Core),
# and config_overrides lets the node claim it without draining.
SlurmdParameters=config_overrides
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=64000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        )
        srun = self.root / "bin" / "srun"
        srun.write_text(
            f'#!/bin/sh\nSLURM_CONF={self.conf} exec {find_tool("srun") or "srun"} "$@"\n'
        )
        srun.chmod(0o755)

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise SlurmUnavailable(
                f"`{' '.join(cmd)}` exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}"
            )

    def start(self, timeout: float = 60.0) -> LocalSlurm:
        """Start munged, slurmctld and slurmd, and wait until the node is idle."""
        missing = [d for d in DAEMONS if find_tool(d) is None]
        if missing:
            raise SlurmUnavailable(
                f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)"
            )
        self._write_config()
        m = self.root / "munge"
        self._run(
            find_tool("munged"),
            "--force",
            f"--socket={self.socket}",
            f"--key-file={m / 'munge.key'}",
            f"--pid-file={m / 'munged.pid'}",
            f"--log-file={m / 'munged.log'}",
            f"--seed-file={m / 'munged.seed'}",
        )
        self._started.append(m / "munged.pid")
        self._run(find_tool("slurmctld"), "-i")
        self._started.append(self.root / "slurmctld.pid")
        self._run(find_tool("slurmd"))
        self._started.append(self.root / "slurmd.pid")
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            proc = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True
            )
            state = proc.stdout.strip()
            if state in ("idle", "mixed", "allocated"):
                return self
            time.sleep(1)
        raise SlurmUnavailable(
            f"node {self.node} did not become idle within {timeout:.0f} s (sinfo: {state!r}); "
            f"slurmctld.log:\n{_tail(self.root / 'log/slurmctld.log')}\n"
            f"slurmd.log:\n{_tail(self.root / 'log/slurmd.log')}"
        )

    def stop(self) -> None:
        """Stop the daemons this object started (by their pid files), newest first."""
        for pid_file in reversed(self._started):
            try:
                os.kill(int(pid_file.read_text().split()[0]), 15)
            except (OSError, ValueError, IndexError):
                pass
        self._started.clear()

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still holds (``scontrol show job``), as key=value dicts."""
        proc = subprocess.run(
            ["scontrol", "-o", "show", "job"], env=self.env, capture_output=True, text=True
        )
        jobs = []
        for line in proc.stdout.splitlines():
            fields = dict(
                part.split("=", 1) for part in line.split() if "=" in part and part[0].isupper()
            )
            if "JobId" in fields:
                jobs.append(fields)
        return jobs

    def completed(self) -> list[dict[str, str]]:
        """Jobs in the completion log, through ``sacct --completion`` (there is no slurmdbd)."""
        proc = subprocess.run(
            ["sacct", "--completion", "--parsable2", "--format=JobID,JobName,State,Partition"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        header, *rows = proc.stdout.strip().splitlines()
        keys = header.split("|")
        return [dict(zip(keys, row.split("|"), strict=False)) for row in rows]
