"""Training: one Lightning module shared by segmentation and the gate, and ``train_fold``."""

from __future__ import annotations

from medpipe.training.fit import train_fold
from medpipe.training.module import FoldModule
from medpipe.training.tasks import GateTask, SegmentationTask, get_task

__all__ = ["FoldModule", "GateTask", "SegmentationTask", "get_task", "train_fold"]
