"""Who holds a working folder's Snakemake lock, so a run killed with ``kill -9`` does not leave
the user stuck.

Snakemake locks the working folder while it runs (``.snakemake/locks/``) and releases it when it
stops, even on Ctrl-C, but not when it is killed outright: the next run then fails with a
``LockException`` until someone runs ``snakemake --unlock --cores 1``. Snakemake does not record
which process holds the lock, so the workflow records it here (``onstart``), and the next run
(while the Snakefile is read, before Snakemake checks the lock) releases a lock whose holder is
gone from this machine, and says so. A lock held by a live process, or one this module did not
record, is left alone with a one-line explanation of what to do.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from medpipe.io.atomic import atomic_write_text

__all__ = ["OWNER_FILE", "claim", "release", "release_stale_lock"]

OWNER_FILE = "medpipe-lock-owner.json"
UNLOCK = "snakemake --unlock --cores 1"


def _state_dir(workdir: str | Path) -> Path:
    return Path(workdir) / ".snakemake"


def _lock_files(workdir: str | Path) -> list[Path]:
    locks = _state_dir(workdir) / "locks"
    return sorted(p for p in locks.glob("*") if p.is_file()) if locks.is_dir() else []


def claim(workdir: str | Path = ".") -> None:
    """Record this process (the running Snakemake) as the holder of the folder's lock."""
    path = _state_dir(workdir) / OWNER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    atomic_write_text(json.dumps(owner), path)


def release(workdir: str | Path = ".") -> None:
    """Forget the holder (the run ends; Snakemake removes its own lock files)."""
    path = _state_dir(workdir) / OWNER_FILE
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if owner.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live Snakemake on this machine (a reused pid is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): trust the signal
    return b"snakemake" in cmdline


def release_stale_lock(workdir: str | Path = ".") -> str | None:
    """Release the folder's lock when the run that holds it is dead; return what to tell the user.

    Returns None when there is no lock. A lock whose recorded holder is alive, on another
    machine, or was never recorded is kept, and the message says what to do.

    Example:
        >>> release_stale_lock("/nonexistent") is None
        True
    """
    locks = _lock_files(workdir)
    if not locks:
        return None
    path = _state_dir(workdir) / OWNER_FILE
    try:
        owner = json.loads(path.read_text())
        pid, host = int(owner["pid"]), str(owner["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return (
            f"medpipe: this folder is locked ({locks[0].parent}) by a Snakemake run medpipe did "
            f"not record; if no other snakemake runs here, release it with `{UNLOCK}`"
        )
    if host != socket.gethostname():
        return (
            f"medpipe: this folder is locked by a Snakemake run on {host} (pid {pid}); if it is "
            f"no longer running, release the lock with `{UNLOCK}`"
        )
    if pid != os.getpid() and _alive(pid):
        return (
            f"medpipe: another snakemake (pid {pid}) is running in this folder; wait for it or "
            f"stop it (Ctrl-C in its terminal, or `kill {pid}`), then rerun"
        )
    for lock in locks:
        lock.unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    return (
        f"medpipe: the last run here (pid {pid}) was killed without releasing its lock; "
        "released it, and this run resumes where that one stopped"
    )
