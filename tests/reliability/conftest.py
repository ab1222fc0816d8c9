"""Shared helpers for the reliability tests: a valid config file for the tiny fabricated data."""

from __future__ import annotations

from pathlib import Path

import yaml

from medpipe.config import deep_merge
from tests.training.tiny_data import SIZE, gate_config, small_seg_config

REPO = Path(__file__).resolve().parents[2]


def write_config(path: Path, **overrides) -> Path:
    """configs/default.yaml with the tiny models of tests/training (model ``m``), CPU,
    deterministic, no loader workers; ``overrides`` merge on top."""
    base = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    tiny = {
        "image_size": SIZE,
        "seed": 7,
        "deterministic": True,
        "device": "cpu",
        "num_workers": 0,
        "segmentation": {"models": {"m": small_seg_config()}},
        "gate": {"models": {"g": gate_config()}},
    }
    config = deep_merge(deep_merge(base, tiny), overrides)
    path.write_text(yaml.safe_dump(config))
    return path
