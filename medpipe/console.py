"""A job's few lines for the user's console, while everything else goes to the job's log.

Every rule sends its command's output to a log file (``> {log} 2>&1``), so a training job is
silent on the console for minutes. The workflow opens descriptor 3 on Snakemake's own stderr
for each job (``exec 3>&2`` as the shell prefix, stages/common.smk) and names it in
``MEDPIPE_CONSOLE_FD``; :func:`say` writes there: one line per epoch, a resume, a summary.
Outside Snakemake nothing is set and :func:`say` writes nothing.
"""

from __future__ import annotations

import os

__all__ = ["CONSOLE_FD_ENV", "CONSOLE_FD", "say"]

CONSOLE_FD_ENV = "MEDPIPE_CONSOLE_FD"
# The descriptor the workflow's shell prefix opens for every job.
CONSOLE_FD = 3


def say(line: str) -> bool:
    """Write one line to the console descriptor, if the workflow opened one; True if written.

    Example:
        >>> say("train unet fold 0: epoch 3/16")  # outside Snakemake: nothing, False
        False
    """
    fd = os.environ.get(CONSOLE_FD_ENV)
    if not fd:
        return False
    try:
        os.write(int(fd), (line.rstrip("\n") + "\n").encode())
    except (OSError, ValueError):  # not opened for this process (e.g. a command run by hand)
        return False
    return True
