"""Model builders from config blocks: segmentation (smp) and the gate classifier (timm)."""

from __future__ import annotations

from medpipe.models.gate import Gate, build_gate
from medpipe.models.segmentation import SegmentModel, build_segment_model

__all__ = ["Gate", "SegmentModel", "build_gate", "build_segment_model"]
