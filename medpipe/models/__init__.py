"""Model builders from config blocks: segmentation (smp) and the gate classifier (timm), and
their pretrained encoder weights from local files (``weights``)."""

from __future__ import annotations

from medpipe.models.gate import Gate, build_gate
from medpipe.models.segmentation import SegmentModel, build_segment_model
from medpipe.models.weights import WeightsError

__all__ = ["Gate", "SegmentModel", "WeightsError", "build_gate", "build_segment_model"]
