"""A lock left by a killed Snakemake is released by the next run; a live one never is."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from medpipe import runlock


def _locked(workdir: Path) -> Path:
    locks = workdir / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("some/file\n")
    (locks / "0.output.lock").write_text("other/file\n")
    return locks


def _owner(workdir: Path, pid: int, host: str | None = None) -> None:
    owner = {"pid": pid, "host": host or socket.gethostname(), "started": 0}
    (workdir / ".snakemake" / runlock.OWNER_FILE).write_text(json.dumps(owner))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_no_lock_no_message(tmp_path):
    assert runlock.release_stale_lock(tmp_path) is None


def test_the_lock_of_a_dead_run_is_released(tmp_path):
    locks = _locked(tmp_path)
    pid = _dead_pid()
    _owner(tmp_path, pid)
    note = runlock.release_stale_lock(tmp_path)
    assert note and f"pid {pid}" in note and "released" in note
    assert not list(locks.iterdir())
    assert not (tmp_path / ".snakemake" / runlock.OWNER_FILE).exists()


def test_a_live_snakemake_keeps_its_lock(tmp_path):
    locks = _locked(tmp_path)
    # a live process whose command line says snakemake, as the real holder's does
    live = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "snakemake"],
    )
    try:
        deadline = time.monotonic() + 30
        while b"snakemake" not in Path(f"/proc/{live.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline  # exec'd but not yet visible on a loaded machine
            time.sleep(0.05)
        _owner(tmp_path, live.pid)
        note = runlock.release_stale_lock(tmp_path)
        assert note and "another snakemake" in note and str(live.pid) in note
        assert len(list(locks.iterdir())) == 2
    finally:
        live.kill()
        live.wait()


def test_a_reused_pid_that_is_not_snakemake_counts_as_dead(tmp_path):
    locks = _locked(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _owner(tmp_path, other.pid)
        assert "released" in runlock.release_stale_lock(tmp_path)
        assert not list(locks.iterdir())
    finally:
        other.kill()
        other.wait()


def test_an_unrecorded_or_remote_lock_is_kept_with_the_unlock_command(tmp_path):
    locks = _locked(tmp_path)
    note = runlock.release_stale_lock(tmp_path)
    assert "snakemake --unlock --cores 1" in note
    _owner(tmp_path, os.getpid(), host="another-node")
    note = runlock.release_stale_lock(tmp_path)
    assert "another-node" in note and "snakemake --unlock --cores 1" in note
    assert len(list(locks.iterdir())) == 2


def test_claim_and_release_record_this_process(tmp_path):
    runlock.claim(tmp_path)
    owner = json.loads((tmp_path / ".snakemake" / runlock.OWNER_FILE).read_text())
    assert owner["pid"] == os.getpid()
    runlock.release(tmp_path)
    assert not (tmp_path / ".snakemake" / runlock.OWNER_FILE).exists()
