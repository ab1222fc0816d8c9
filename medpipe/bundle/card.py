"""The bundle's model card (``docs/README.md``): intended use, training data, CV, limitations.

The training data is summarised by counts only: no image id, patient key or file name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from medpipe.layout import RunLayout, read_meta

__all__ = ["model_card"]

_RULES = ("seg_only", "seg_area", "seg_gate", "seg_gate_lgbm")


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and value == value else "n/a"


def _data_summary(run: RunLayout, stage: int) -> list[str]:
    path = run.meta(stage)
    if not path.is_file():
        return ["- (the run's image table was not found)"]
    meta = read_meta(path)
    lines = []
    for split, part in meta.groupby("split", sort=True):
        line = f"- `{split}`: {len(part)} images, {part['patient_key'].nunique()} patients"
        labelled = part["has_finding"].notna() if "has_finding" in part else None
        if labelled is not None and labelled.any():
            positives = int((part.loc[labelled, "has_finding"].astype(float) > 0).sum())
            line += f", {positives} with a finding ({positives / int(labelled.sum()):.1%})"
        lines.append(line)
    for column, label in (("view", "views"), ("sex", "sex"), ("modality", "modalities")):
        if column in meta:
            counts = meta[column].fillna("unknown").replace("", "unknown").value_counts()
            lines.append(f"- {label}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if {"orig_height", "orig_width"} <= set(meta.columns):
        sides = meta["orig_height"].astype(str) + "x" + meta["orig_width"].astype(str)
        lines.append(
            "- DICOM sizes: " + ", ".join(f"{k} ({v})" for k, v in sides.value_counts().items())
        )
    return lines


def _cv_table(cv: Mapping[str, Any]) -> list[str]:
    nested = cv.get("nested") or {}
    lines = ["| rule | OOF score | nested-CV score |", "|---|---|---|"]
    for rule in ("all_empty", *_RULES):
        if rule in cv:
            lines.append(f"| {rule} | {_number(cv.get(rule))} | {_number(nested.get(rule))} |")
    for model, scores in (cv.get("models") or {}).items():
        lines.append(
            f"| model {model} (seg_only) | {_number(scores.get('seg_only'))} | "
            f"{_number((nested.get('models') or {}).get(model, {}).get('seg_only'))} |"
        )
    lines.append(
        f"\nThe submission's rule: **{cv.get('ensemble_rule', '?')}** (chosen by "
        f"{cv.get('rule_choice', '?')}), OOF {_number(cv.get('ensemble'))}, nested "
        f"{_number(nested.get('ensemble'))}; {cv.get('n_images', '?')} OOF images, "
        f"{cv.get('n_positive', '?')} with a finding."
    )
    return lines


def model_card(run: RunLayout, cfg, stage: int, decision, spec: Mapping[str, Any], layout) -> str:
    """The card's Markdown text."""
    cv_path = run.cv(stage)
    cv = json.loads(cv_path.read_text()) if cv_path.is_file() else {}
    models = spec["models"]
    lines = [
        "# medpipe model bundle: pneumothorax segmentation (SIIM-ACR format)",
        "",
        "## Intended use",
        "Research and Kaggle-style competition use: segmentation of pneumothorax on frontal "
        "chest radiographs (DICOM, DX/CR), written as a SIIM-ACR submission. **Not a medical "
        "device**; not validated for clinical decisions.",
        "",
        "Run it with `medpipe infer --bundle <this folder> --dicom-dir DIR --out predictions.csv`; "
        "check it with `medpipe infer --bundle <this folder> --self-test`.",
        "",
        "## The models",
        f"- stage {stage}, cache size {spec['image_size']}x{spec['image_size']}, folds "
        f"{spec['folds']}",
    ]
    for family, entries in models.items():
        for name, entry in entries.items():
            block = entry["config"]
            lines.append(
                f"- {family} `{name}`: {block.get('arch', block.get('logit_from', ''))} "
                f"encoder {block.get('encoder', '?')}, hflip TTA {bool(block.get('tta_hflip'))}, "
                f"{len(entry['folds'])} folds"
            )
    lines += [
        f"- decision: rule `{decision.rule}` (mode {decision.mode}), thresholds "
        f"{json.dumps(decision.thresholds())}, ensemble weights {json.dumps(decision.weights)}",
        "",
        "## Training data (counts only)",
        *_data_summary(run, stage),
        "",
        "## Cross-validation",
        *(_cv_table(cv) if cv else ["(the run has no CV summary)"]),
        "",
        "## Limitations",
        "- Trained on the exporting run's data only; images from other scanners, sites, "
        "paediatric or lateral films are outside what it has seen.",
        "- The cross-validated scores are on the training distribution; a run on synthetic "
        "data says nothing about real radiographs.",
        "- Colour, multi-frame and unreadable files are quarantined, not predicted; a "
        "quarantined file whose header names an image gets an empty row.",
        "- Byte-identical outputs to the run are promised on CPU with the pinned versions "
        "(configs/metadata.json); a GPU or other versions give slightly different "
        "probabilities.",
        "",
        "## Files",
        f"See `{layout.relative(layout.manifest)}` for the SHA-256 of every file and "
        f"`{layout.relative(layout.inference)}` for the preprocessing and models.",
        "",
    ]
    return "\n".join(lines)
