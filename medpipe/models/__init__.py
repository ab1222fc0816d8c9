"""Model builders from config blocks: segmentation (smp) and the gate classifier (timm)."""

from __future__ import annotations

from medpipe.models.gate import Gate, build_gate
from medpipe.models.segmentation import Segmenter, build_segmenter

__all__ = ["Gate", "Segmenter", "build_gate", "build_segmenter"]
