"""Training: one Lightning module shared by segmentation and the gate, and ``train_fold``.

The names load on first use (PEP 562): ``medpipe predict`` imports ``medpipe.runtime``
and the families, and must not pay Lightning's import (seconds per job) for a module it never runs.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["FoldModule", "train_fold"]

_HOME = {
    "train_fold": "medpipe.training.fit",
    "FoldModule": "medpipe.training.module",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
