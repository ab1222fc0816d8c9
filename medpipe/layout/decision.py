"""``thresholds.json``: the submission's decision, as a typed object with one decoder.

The thresholds rule writes it; submit, the report and the bundle read it. Files written before
``rule`` and ``mode`` were recorded are decoded here, once: a ``cls_threshold`` meant LightGBM's
p(finding) gated the masks (rule ``seg_gate_lgbm``), otherwise the area rule.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medpipe.io.atomic import atomic_write_text

__all__ = ["Decision", "read_decision", "write_decision", "dumps"]

# The mode each rule is applied in (which thresholds it has).
RULE_MODE = {
    "seg_only": "seg_only",
    "seg_area": "area",
    "seg_gate": "fusion",
    "seg_gate_lgbm": "fusion",
}
_LEGACY_RULE = {"fusion": "seg_gate_lgbm", "area": "seg_area", "seg_only": "seg_only"}
# What applying the rule needs, per mode.
_TRIPLET_KEYS = {
    "fusion": ("cls_threshold", "pixel_threshold", "min_area"),
    "area": ("top_score_threshold", "min_confident_area", "pixel_threshold", "min_area"),
    "seg_only": ("pixel_threshold", "min_area"),
}


@dataclass(frozen=True)
class Decision:
    """The rule, its thresholds (cache pixels for areas) and the ensemble weights."""

    rule: str
    mode: str
    weights: dict[str, float]
    fields: Mapping[str, Any] = field(repr=False)  # the file's content, as written

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "thresholds.json") -> Decision:
        mode = data.get("mode") or ("fusion" if data.get("cls_threshold") is not None else "area")
        rule = data.get("rule") or _LEGACY_RULE.get(mode)
        if rule not in RULE_MODE:
            raise ValueError(f"{where}: unknown rule {rule!r} (known: {', '.join(RULE_MODE)})")
        if mode not in _TRIPLET_KEYS:
            raise ValueError(f"{where}: unknown mode {mode!r}")
        missing = [k for k in _TRIPLET_KEYS[mode] if data.get(k) is None and k != "min_area"]
        if missing:
            raise ValueError(f"{where}: rule {rule} (mode {mode}) lacks {missing}")
        weights = {str(k): float(v) for k, v in (data.get("weights") or {}).items()}
        return cls(rule=rule, mode=mode, weights=weights, fields=dict(data))

    @property
    def uses_gate(self) -> bool:
        """Whether the masks are gated by a p(finding): the gate's mean or LightGBM's."""
        return self.rule in ("seg_gate", "seg_gate_lgbm")

    def thresholds(self) -> dict[str, Any]:
        """What applying the rule reads: the mode and its thresholds (areas in cache pixels)."""
        out: dict[str, Any] = {"mode": self.mode}
        for key in _TRIPLET_KEYS[self.mode]:
            out[key] = self.fields.get(key)
        return out

    def get(self, key: str, default: Any = None) -> Any:
        """Any other recorded value (scores, ``area_scale``, ``*_original_px``)."""
        return self.fields.get(key, default)


def dumps(data: Any) -> str:
    """The JSON text medpipe writes for decisions and CV summaries (numpy scalars as numbers)."""
    return (
        json.dumps(data, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
        + "\n"
    )


def read_decision(path: str | Path) -> Decision:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the decision not found (rule thresholds)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    return Decision.from_dict(data, str(path))


def read_decision_fields(path: str | Path) -> dict[str, Any]:
    """A stage's ``thresholds.json`` as written, for a task whose decision is not SIIM's rule
    (the multi-label thresholds: :mod:`medpipe.multilabel.decision`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the decision not found (rule thresholds)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def write_decision(path: str | Path, fields: Mapping[str, Any]) -> Decision:
    """Check ``fields`` decode, then write them atomically; returns the decoded decision."""
    decision = Decision.from_dict(fields, str(path))
    atomic_write_text(dumps(dict(fields)), path)
    return decision
